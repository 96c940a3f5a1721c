// createApp: the Hono app every runtime serves. /ws (admission, then the runtime's upgrade),
// /healthz and /stats. Runtime-free: the runtime's parts come in through a RuntimeAdapter.
import { Hono, type Context } from 'hono';
import type { WSEvents } from 'hono/ws';
import { closeReason, refusalStatus, type RefusalReason } from './errors.ts';
import { upgradeRequired, wantsWebSocket } from './handshake.ts';
import type { Hub } from './hub.ts';

/** What a runtime provides: its upgrade helper (Hono's contract) and the client's address. */
export interface RuntimeAdapter {
  /** Runtime name shown in /stats: 'node', 'deno', 'bun', 'workerd'. */
  readonly runtime: string;
  /**
   * Hono's `upgradeWebSocket(c, events)`. Contract with the core: a Response with status >= 400 means
   * no socket will open; otherwise the adapter calls `events.onOpen` when the socket opens, or
   * `events.onClose` if the handshake fails after this point. A reservation that hears neither expires.
   */
  upgradeWebSocket(c: Context, events: WSEvents<unknown>): Promise<Response>;
  /** The client's IP address. */
  remoteAddress(c: Context): string;
}

export function createApp(hub: Hub, adapter: RuntimeAdapter): Hono {
  const app = new Hono();
  const { registry } = hub;
  const retryAfter = String(hub.options.retryAfter);

  const refuse = (reason: RefusalReason) =>
    new Response(reason === 'draining' ? 'server is shutting down, retry later\n' : 'server is full, retry later\n', {
      status: refusalStatus[reason],
      // Connection: close — a refused client should not keep a socket (and an fd) open on the server.
      headers: { 'Retry-After': retryAfter, 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' },
    });

  app.get(hub.options.path, async (c) => {
    if (!wantsWebSocket(c.req.header('upgrade'))) return upgradeRequired();
    const admission = registry.admit(adapter.remoteAddress(c));
    if (typeof admission === 'string') return refuse(admission);
    let response: Response;
    try {
      response = await adapter.upgradeWebSocket(c, admission as unknown as WSEvents<unknown>);
    } catch (error) {
      registry.release(admission, closeReason('handshake-failed', undefined, 'upgrade threw', error));
      hub.log.error('upgrade.error', { id: admission.id, error });
      return new Response('upgrade failed\n', { status: 500 });
    }
    if (response.status >= 400) registry.release(admission, closeReason('handshake-failed', undefined, `answered ${response.status}`));
    return response;
  });

  app.get('/healthz', (c) => {
    const state = registry.state;
    return c.json({ status: state === 'running' ? 'ok' : state }, state === 'running' ? 200 : 503);
  });

  app.get('/stats', (c) => c.json({ runtime: adapter.runtime, ...hub.stats() }));

  return app;
}
