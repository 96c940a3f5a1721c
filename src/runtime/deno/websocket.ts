// Hono's `upgradeWebSocket` for Deno, on Deno.upgradeWebSocket. Deno's own WebSocket layer is lax
// (it upgrades a bad key or version), so the handshake is checked first with the same rules as on
// Node. What cannot be fixed from outside the runtime is listed in the README ("Runtime differences").
import type { HubEvents } from '../../contracts.ts';
import { CloseCode } from '../../errors.ts';
import { defineHubWebSocket } from '../../handshake.ts';

const EVENTS = Symbol('hubbub.events');
type Tagged = WebSocket & { [EVENTS]?: HubEvents };

/**
 * Hono's upgradeWebSocket for Deno. `heartbeatInterval` (ms) becomes Deno's `idleTimeout`: Deno
 * pings a silent peer and closes it (1001) when no pong comes; the adapter reports that as `idle`.
 */
export function createDenoWebSocket(options: { heartbeatInterval: number }) {
  const idleTimeout = options.heartbeatInterval > 0 ? Math.max(1, Math.round(options.heartbeatInterval / 1000)) : 0;
  return defineHubWebSocket((c, events, upgrade) => {
    const protocol = upgrade?.protocol;
    const { response, socket } = Deno.upgradeWebSocket(c.req.raw, protocol ? { protocol, idleTimeout } : { idleTimeout });
    const tagged = socket as Tagged;
    tagged.binaryType = 'arraybuffer';
    tagged[EVENTS] = events;
    // Shared listeners: `this` is the socket. No closure per connection.
    tagged.onopen = onOpen;
    tagged.onmessage = onMessage;
    tagged.onclose = onClose;
    // No onerror: Deno fires `error` (without a close code) before `close` on a reset or a bad frame,
    // and `close` always follows; the ending is classified there, from its code, as on Node.
    return response;
  });
}

/** The reason Deno gives when its idle timeout closes a socket whose peer did not answer a ping. */
const IDLE_REASON = 'No response from ping frame.';

function onOpen(this: Tagged, event: Event): void {
  this[EVENTS]!.onOpen(event, this);
}
function onMessage(this: Tagged, event: MessageEvent): void {
  this[EVENTS]!.onMessage(event, this);
}
function onClose(this: Tagged, event: CloseEvent): void {
  const events = this[EVENTS]!;
  if (event.code === CloseCode.GOING_AWAY && event.reason === IDLE_REASON) events.onIdleTimeout();
  events.onClose(event, this);
}
