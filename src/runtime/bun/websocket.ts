// Hono's `upgradeWebSocket` for Bun, on Bun's `server.upgrade()` (as Hono's own 'hono/bun' does), and
// the shared `websocket` handlers for Bun.serve. Bun's native limits are used where they match the
// core's (maxPayloadLength); where the core decides (heartbeat, slow consumers), Bun's own idle
// timeout and backpressure limit are only backstops above it. The events object is `ws.data` itself:
// an idle socket costs no closure and no wrapper.
import type { HubEvents } from '../../contracts.ts';
import { CloseCode } from '../../errors.ts';
import { defineHubWebSocket } from '../../handshake.ts';
import type { BunServer, BunServerWebSocket, BunWebSocketHandler } from './api.ts';

/** hubbub's events object (the Connection) is the socket's `data` itself: no wrapper per socket. */
export type Socket = BunServerWebSocket<HubEvents>;

/** The close reasons Bun (uWebSockets) gives `close` for endings it decides itself (code 1006). */
const TOO_BIG_REASON = 'Received too big message';
const IDLE_REASON = 'WebSocket timed out from inactivity';

/** Bun's backpressureLimit as a multiple of maxBackpressure: above the core's hard cap (4 ×). */
const BACKSTOP_FACTOR = 8;

const OPEN = { type: 'open' };
const TOO_BIG = { error: new Error('message too big'), code: CloseCode.MESSAGE_TOO_BIG };

export interface BunWebSocketOptions {
  /** Largest message accepted, in bytes, inflated size included (Bun `maxPayloadLength`). @default 65536 */
  maxPayload?: number;
  /** hubbub's heartbeat interval (ms); Bun's idle timeout is set to three of them as a backstop. 0 = off. @default 30000 */
  heartbeatInterval?: number;
  /** Negotiate permessage-deflate (Bun: no context takeover, a shared compressor). @default false */
  perMessageDeflate?: boolean;
  /** hubbub's maxBackpressure (bytes); Bun's `backpressureLimit` is set to 8 times it. 0 = no limit. @default 1 MiB */
  maxBackpressure?: number;
}

/** Hono's `upgradeWebSocket` for Bun and the shared `websocket` handlers to give Bun.serve. */
export function createBunWebSocket(options: BunWebSocketOptions = {}) {
  const upgradeWebSocket = defineHubWebSocket((c, events, upgrade) => {
    const server = c.env as BunServer | undefined;
    if (!server?.upgrade) return new Response('WebSocket upgrades need the Bun server as env\n', { status: 500 });
    // Bun writes the 101 and calls `open` synchronously, inside upgrade(); false means the client is
    // already gone. The subprotocol is the core's choice: Bun answers the header given here, omits an
    // empty one, and without one would echo the client's first offer.
    const protocol = upgrade?.protocol;
    const offered = protocol !== undefined || c.req.raw.headers.has('sec-websocket-protocol');
    if (!server.upgrade(c.req.raw, offered ? { data: events, headers: { 'Sec-WebSocket-Protocol': protocol ?? '' } } : { data: events })) {
      return new Response('WebSocket upgrade failed\n', { status: 400, headers: { Connection: 'close' } });
    }
    // Bun ignores the answer to an upgraded request; for the core it only has to be below 400.
    return new Response(null);
  });

  const heartbeat = options.heartbeatInterval ?? 30_000;
  const websocket: BunWebSocketHandler<HubEvents> = {
    open: onOpen,
    message: onMessage,
    close: onClose,
    pong: onPong,
    maxPayloadLength: options.maxPayload ?? 64 * 1024,
    // Seconds, at most 960; Bun pings shortly before it expires, so a peer that answers is kept even
    // where three intervals exceed 960 s. The core's heartbeat drops a silent peer well before.
    idleTimeout: heartbeat > 0 ? Math.min(960, Math.ceil((3 * heartbeat) / 1000)) : 0,
    sendPings: heartbeat > 0,
    // Bun drops a send (returns 0, nothing counted) once the queue is already over this. The core
    // sends while the queue is at most 4 × maxBackpressure (within its grace, connection.ts), so the
    // backstop sits at 8 × and the core's slow-consumer policy always decides first.
    backpressureLimit: BACKSTOP_FACTOR * (options.maxBackpressure ?? 1024 * 1024),
    closeOnBackpressureLimit: false,
    perMessageDeflate: options.perMessageDeflate ?? false,
  };
  return { upgradeWebSocket, websocket };
}

// Shared handlers: the events object is `ws.data`. No closure per connection.
function onOpen(ws: Socket): void {
  addBufferedAmount(ws);
  ws.data.onOpen(OPEN, ws);
}

function onMessage(ws: Socket, message: string | Uint8Array): void {
  // Bun hands binary messages over as Buffers (Uint8Array): the core takes them as they are.
  ws.data.onMessage({ data: message }, ws);
}

function onPong(ws: Socket): void {
  ws.data.onPong();
}

function onClose(ws: Socket, code: number, reason: string): void {
  const events = ws.data;
  // Bun ended it itself (sent 1009 / dropped an idle peer) and reports 1006 with its reason.
  if (code === CloseCode.ABNORMAL && reason === TOO_BIG_REASON) events.onError(TOO_BIG, ws);
  else if (code === CloseCode.ABNORMAL && reason === IDLE_REASON) events.onIdleTimeout();
  events.onClose({ code, reason }, ws);
}

let bufferedAmountAdded = false;

/**
 * The core reads a socket's send queue as `bufferedAmount` (ws, web WebSocket); Bun's ServerWebSocket
 * has `getBufferedAmount()`. A getter on its prototype, once, bridges them without a wrapper or a
 * property per socket.
 */
function addBufferedAmount(ws: Socket): void {
  if (bufferedAmountAdded) return;
  bufferedAmountAdded = true;
  const proto = Object.getPrototypeOf(ws) as object;
  if ('bufferedAmount' in proto) return;
  Object.defineProperty(proto, 'bufferedAmount', {
    configurable: true,
    get(this: Socket) {
      return this.getBufferedAmount();
    },
  });
}
