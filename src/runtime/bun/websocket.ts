// Hono's `upgradeWebSocket` for Bun, on Bun's `server.upgrade()` (as Hono's own 'hono/bun' does), and
// the shared `websocket` handlers for Bun.serve. Bun's native limits are used where they match the
// core's (maxPayloadLength); where the core decides (heartbeat, slow consumers), Bun's own idle
// timeout and backpressure limit are only backstops above it. The events object is `ws.data` itself:
// an idle socket costs no closure and no wrapper.
import type { HubEvents } from '../../contracts.ts';
import { CloseCode } from '../../errors.ts';
import { defineHubWebSocket, upgradedAnswer } from '../../handshake.ts';
import type { BunServer, BunServerWebSocket, BunWebSocketHandler } from './api.ts';

/** hubbub's events object (the Connection) is the socket's `data` itself: no wrapper per socket. */
export type Socket = BunServerWebSocket<HubEvents>;

/** The close reasons Bun (uWebSockets) gives `close` for endings it decides itself (code 1006). */
const TOO_BIG_REASON = 'Received too big message';

/**
 * After a close handshake (sent or answered), uWebSockets half-closes and waits for the peer's FIN
 * for its "ping timeout" (4 s with idleTimeout 0; 16 s with Bun's default idleTimeout 120), while Bun
 * reports the socket closed at once. The core counts it against the limit this long: 4 s and a margin.
 */
const CLOSE_LINGER_MS = 5000;

/** Bun's backpressureLimit as a multiple of maxBackpressure: above the core's hard cap (4 ×). */
const BACKSTOP_FACTOR = 8;

/**
 * What Bun's native topics may hold for a socket beyond what its buffered amount shows: uWebSockets
 * queues published messages under 16 KiB per socket and writes them every 32 messages and at the end
 * of the loop's turn (measured on Bun 1.4), so the core's checks (hub.ts, #publishNative) can see a queue up to
 * 32 × 16 KiB short. The backstop keeps at least that much above the hard cap.
 */
const NATIVE_TOPIC_LAG = 32 * 16 * 1024;

const OPEN = { type: 'open' };
const TOO_BIG = { error: new Error('message too big'), code: CloseCode.MESSAGE_TOO_BIG };

export interface BunWebSocketOptions {
  /** Largest message accepted, in bytes, inflated size included (Bun `maxPayloadLength`). @default 65536 */
  maxPayload?: number;
  /** Negotiate permessage-deflate (Bun: no context takeover, a shared compressor). @default false */
  perMessageDeflate?: boolean;
  /** hubbub's maxBackpressure (bytes); Bun's `backpressureLimit` is set to 8 times it (at least 4 times and 512 KiB). 0 = no limit. @default 1 MiB */
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
    // Bun ignores the answer to an upgraded request (serve hands it undefined); the core reads its status.
    return upgradedAnswer();
  });

  const websocket: BunWebSocketHandler<HubEvents> = {
    open: onOpen,
    message: onMessage,
    close: onClose,
    pong: onPong,
    maxPayloadLength: options.maxPayload ?? 64 * 1024,
    // The heartbeat is the core's (ws.ping(), the pong handler). Bun's own idle timeout stays off:
    // any idleTimeout over 15 s also stretches how long uWebSockets keeps a closed socket's TCP
    // connection waiting for the peer (to 8 or 16 s, from 4), outside what the limit can see.
    idleTimeout: 0,
    sendPings: false,
    // Bun drops a send (returns 0, nothing counted) once the queue is already over this. The core
    // sends while the queue is at most 4 × maxBackpressure (within its grace, connection.ts), so the
    // backstop sits at 8 × (and at least the native topics' lag above 4 ×) and the core's
    // slow-consumer policy always decides first.
    backpressureLimit: backstop(options.maxBackpressure ?? 1024 * 1024),
    closeOnBackpressureLimit: false,
    perMessageDeflate: options.perMessageDeflate ?? false,
  };
  return { upgradeWebSocket, websocket };
}

/** Bun's backpressureLimit for hubbub's maxBackpressure (0: no limit, none here either). */
function backstop(maxBackpressure: number): number {
  if (maxBackpressure === 0) return 0;
  return Math.max(BACKSTOP_FACTOR * maxBackpressure, 4 * maxBackpressure + NATIVE_TOPIC_LAG);
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
  // Bun ended it itself (sent 1009) and reports 1006 with its reason. (Its idle timeout is off.)
  if (code === CloseCode.ABNORMAL && reason === TOO_BIG_REASON) events.onError(TOO_BIG, ws);
  // 1006 without a reason: the TCP connection is gone (lost, or terminated). Any other ending went
  // through a close handshake (either side's, or Bun's 1009), after which the connection lingers.
  const gone = code === CloseCode.ABNORMAL && reason === '';
  events.onClose(gone ? { code, reason } : { code, reason, lingers: CLOSE_LINGER_MS }, ws);
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
