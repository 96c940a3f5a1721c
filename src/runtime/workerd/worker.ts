// The Worker: hands every request to a Durable Object (one global object, or one per `?room=` with
// HUBBUB_ROOMS=true), except the internal paths, which only the hub's own tooling reaches.
import type { HubEnv } from './api.ts';
import { INTERNAL_PREFIX } from './object.ts';

const ROOM = /^[\w.-]{1,64}$/;
const GLOBAL_OBJECT = 'global';

export const worker = {
  fetch(request: Request, env: HubEnv): Promise<Response> | Response {
    const url = new URL(request.url);
    if (url.pathname.startsWith(INTERNAL_PREFIX)) return new Response('Not Found\n', { status: 404 });
    let name = GLOBAL_OBJECT;
    const room = isOn(env.HUBBUB_ROOMS) ? url.searchParams.get('room') : null;
    if (room !== null) {
      if (!ROOM.test(room)) return new Response('room must be 1-64 letters, digits, ".", "_" or "-"\n', { status: 400 });
      name = `room:${room}`;
    }
    return env.HUB.get(env.HUB.idFromName(name)).fetch(request);
  },
};

function isOn(value: unknown): boolean {
  return typeof value === 'string' && /^(true|1|yes|on)$/i.test(value);
}
