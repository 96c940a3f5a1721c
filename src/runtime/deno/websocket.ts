// Hono's `upgradeWebSocket` for Deno, on Deno.upgradeWebSocket. Deno's own WebSocket layer is lax
// (it upgrades a bad key or version), so the handshake is checked first with the same rules as on
// Node. What cannot be fixed from outside the runtime is listed in the README ("Runtime differences").
import type { HubEvents } from '../../contracts.ts';
import { CloseCode } from '../../errors.ts';
import { defineHubWebSocket } from '../../handshake.ts';
import type { Logger } from '../../log.ts';

const EVENTS = Symbol('hubbub.events');
/** Set on a socket the server asked to drop (only those: idle sockets carry nothing extra). */
const DROPPING = Symbol('hubbub.dropping');
type Tagged = WebSocket & { [EVENTS]?: HubEvents; [DROPPING]?: true; terminate?(): false };

/**
 * Hono's upgradeWebSocket for Deno. `heartbeatInterval` (ms) becomes Deno's `idleTimeout`: Deno
 * pings a silent peer and closes it (1001) when no pong comes; the adapter reports that as `idle`.
 */
export function createDenoWebSocket(options: { heartbeatInterval: number }, log?: Logger) {
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
    if (keepsReadingWhileClosing(tagged, log)) {
      tagged.close = closeAndKeepReading;
      tagged.terminate = letDenoDrop;
    }
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
  // A peer the server is dropping sent a frame: CLOSING now makes Deno end the socket at its next one.
  if (this[DROPPING]) return void ((this as unknown as Record<symbol, number>)[readyStateSlot!] = CLOSING);
  this[EVENTS]!.onMessage(event, this);
}
function onClose(this: Tagged, event: CloseEvent): void {
  const events = this[EVENTS]!;
  if (event.code === CloseCode.GOING_AWAY && event.reason === IDLE_REASON) events.onIdleTimeout();
  events.onClose(event, this);
}

/**
 * Deno's `close()` loses its close frame to a peer that is still sending (a busy client at
 * shutdown, a flood being closed with 1008): it sets readyState to CLOSING and queues the frame in
 * an op that looks the socket up only when it is first polled, a turn later; when a frame from the
 * peer is handled first, Deno's read loop, seeing CLOSING, closes the socket at once (a close event
 * with code 0), the op no longer finds it, and the peer gets a FIN or a reset without a close frame:
 * 1006. (Deno 2.9, ext/websocket: `_eventLoop` in 01_websocket.js, `op_ws_close` in lib.rs.)
 * Putting readyState back to OPEN right after `close()` keeps that read loop reading: the frame
 * is written after everything queued before it, what the peer sends meanwhile is dispatched and
 * ignored (the connection is released), and the socket ends when the peer answers, as on Node.
 * The real state lives in a symbol-keyed slot of Deno's WebSocket, found on the first socket.
 */
let readyStateSlot: symbol | null | undefined;

function keepsReadingWhileClosing(socket: WebSocket, log: Logger | undefined): boolean {
  if (readyStateSlot === undefined) {
    const slot = Object.getOwnPropertySymbols(socket).find((s) => s.description === '[[readyState]]');
    readyStateSlot = slot !== undefined && (socket as unknown as Record<symbol, unknown>)[slot] === socket.readyState ? slot : null;
    if (readyStateSlot === null) log?.warn('deno.close-frame', { note: "Deno's WebSocket has no [[readyState]] slot: a peer that keeps sending may miss the server's close frame (1006)" });
  }
  return readyStateSlot !== null;
}

const OPEN = 1;
const CLOSING = 2;

function closeAndKeepReading(this: Tagged, code?: number, reason?: string): void {
  WebSocket.prototype.close.call(this, code, reason);
  const state = this as unknown as Record<symbol, number>;
  if (state[readyStateSlot!] === CLOSING) state[readyStateSlot!] = OPEN;
}

/**
 * Deno cannot drop a socket from JavaScript. What does: a frame from the peer while readyState is
 * CLOSING (the next frame after this one, see onMessage), or, for a peer that sends nothing, Deno's
 * idle timeout (`--heartbeat-interval`), which runs only while the socket reads as OPEN. So the
 * socket stays OPEN, and `false` tells the registry that it is not gone yet: it keeps counting
 * against the limit until its close event.
 */
function letDenoDrop(this: Tagged): false {
  this[DROPPING] = true;
  return false;
}
