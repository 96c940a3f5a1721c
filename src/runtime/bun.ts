// Bun runtime: Bun.serve serves the app; upgrades go through Bun's `server.upgrade()` behind Hono's
// `upgradeWebSocket` contract (the approach of Hono's own Bun adapter, 'hono/bun'), with Bun's native
// WebSocket limits:
//  - `maxPayloadLength` = maxPayload: Bun closes a bigger message with 1009 itself, inflated size
//    included; the adapter reports it to the core as `message-too-big`;
//  - the core's heartbeat pings through `ws.ping()` and hears pongs through the shared `pong` handler,
//    so a silent peer is dropped (terminate, reason idle) after two intervals, to the millisecond, as
//    on Node. Bun's own `idleTimeout` (whole seconds, checked every 4 s, 8 s at least) is only a
//    backstop at three intervals, and reports back as `idle` too;
//  - the core's slow-consumer policy reads the send queue through `bufferedAmount` and decides (and
//    counts); Bun's `backpressureLimit` is only a backstop set above anything the core lets through,
//    so Bun never drops a message silently.
// Bun's upgrade() refuses a bad key or version by returning false, without saying which; the handshake
// is checked here first with the same rules as on Node and Deno, so the answers are the same. The
// handlers are shared and the events object is `ws.data` itself, so an idle socket costs no closure
// and no wrapper. This file is the only one that knows about Bun.
import { defineWebSocketHelper, type WSEvents } from 'hono/ws';
import { createApp } from '../app.ts';
import { runCli, type ServedHub } from '../cli.ts';
import { checkHandshake } from '../handshake.ts';
import type { Hub } from '../hub.ts';

// ---- The little of Bun's API this file uses (tsc for Node has no Bun types; Bun ignores these). ----

/** Bun's ServerWebSocket. With `bufferedAmount` added (below) it is the core's SocketLike as it is. */
interface BunServerWebSocket<T> {
  readonly data: T;
  readonly readyState: number;
  send(data: string | Uint8Array, compress?: boolean): number;
  close(code?: number, reason?: string): void;
  terminate(): void;
  ping(data?: string | Uint8Array): number;
  getBufferedAmount(): number;
}

interface BunServer {
  readonly port: number;
  readonly hostname: string;
  upgrade(request: Request, options?: { data?: unknown; headers?: HeadersInit }): boolean;
  requestIP(request: Request): { address: string; family: string; port: number } | null;
  stop(closeActiveConnections?: boolean): Promise<void>;
}

interface BunWebSocketHandler<T> {
  open?(ws: BunServerWebSocket<T>): void;
  message?(ws: BunServerWebSocket<T>, message: string | Uint8Array): void;
  close?(ws: BunServerWebSocket<T>, code: number, reason: string): void;
  pong?(ws: BunServerWebSocket<T>, data: Uint8Array): void;
  maxPayloadLength?: number;
  idleTimeout?: number;
  sendPings?: boolean;
  backpressureLimit?: number;
  closeOnBackpressureLimit?: boolean;
  perMessageDeflate?: boolean;
}

interface BunServeOptions<T> {
  port?: number;
  hostname?: string;
  /** Seconds an HTTP connection may stay silent, a pending response included (not WebSockets). 0 = never. */
  idleTimeout?: number;
  fetch(request: Request, server: BunServer): Response | Promise<Response> | undefined;
  error?(error: Error): Response | Promise<Response>;
  websocket: BunWebSocketHandler<T>;
}

declare const Bun: { serve<T>(options: BunServeOptions<T>): BunServer; gc(force: boolean): void };

// ---- The WebSocket layer ----

/** hubbub's events object (the Connection) is the socket's `data` itself: no wrapper per socket. */
type Events = WSEvents<unknown> & { onPong?(): void; onIdleTimeout?(): void };
type Socket = BunServerWebSocket<Events>;

/** The close reasons Bun (uWebSockets) gives `close` for endings it decides itself (code 1006). */
const TOO_BIG_REASON = 'Received too big message';
const IDLE_REASON = 'WebSocket timed out from inactivity';

/** Bun's backpressureLimit as a multiple of maxBackpressure: above the core's hard cap (4 ×). */
const BACKSTOP_FACTOR = 8;

const OPEN = { type: 'open' } as Event;
const TOO_BIG = { error: new Error('message too big'), code: 1009 };

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
  const upgradeWebSocket = defineWebSocketHelper<unknown>((c, events) => {
    const refusal = checkHandshake(c.req.method, c.req.raw.headers);
    if (refusal) return refusal;
    const server = c.env as BunServer | undefined;
    if (!server?.upgrade) return new Response('WebSocket upgrades need the Bun server as env\n', { status: 500 });
    // Bun answers with the first subprotocol the client offers, as ws does. It writes the 101 and calls
    // `open` synchronously, inside upgrade(); false means the client is already gone.
    if (!server.upgrade(c.req.raw, { data: events satisfies Events })) {
      return new Response('WebSocket upgrade failed\n', { status: 400, headers: { Connection: 'close' } });
    }
    // Bun ignores the answer to an upgraded request; for the core it only has to be below 400.
    return new Response(null);
  });

  const heartbeat = options.heartbeatInterval ?? 30_000;
  const websocket: BunWebSocketHandler<Events> = {
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
  ws.data.onOpen?.(OPEN, ws as never);
}

function onMessage(ws: Socket, message: string | Uint8Array): void {
  // Bun hands binary messages over as Buffers (Uint8Array): the core takes them as they are.
  ws.data.onMessage?.({ data: message } as never, ws as never);
}

function onPong(ws: Socket): void {
  ws.data.onPong?.();
}

function onClose(ws: Socket, code: number, reason: string): void {
  const events = ws.data;
  // Bun ended it itself (sent 1009 / dropped an idle peer) and reports 1006 with its reason.
  if (code === 1006 && reason === TOO_BIG_REASON) events.onError?.(TOO_BIG as never, ws as never);
  else if (code === 1006 && reason === IDLE_REASON) events.onIdleTimeout?.();
  events.onClose?.({ code, reason } as never, ws as never);
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

function remoteAddress(address: string | undefined): string {
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

export interface BunServed extends ServedHub {
  readonly port: number;
  readonly server: BunServer;
}

/** Serves a hub on Bun at `hub.options.host:port`. Resolves once listening. */
export async function serveBun(hub: Hub): Promise<BunServed> {
  const { maxPayload, heartbeatInterval, perMessageDeflate, maxBackpressure, headersTimeout } = hub.options;
  const { upgradeWebSocket, websocket } = createBunWebSocket({ maxPayload, heartbeatInterval, perMessageDeflate, maxBackpressure });
  const app = createApp(hub, {
    runtime: 'bun',
    upgradeWebSocket: upgradeWebSocket as never,
    remoteAddress: (c) => remoteAddress((c.env as BunServer | undefined)?.requestIP(c.req.raw)?.address),
    processStats: () => {
      const m = process.memoryUsage();
      return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external };
    },
    collectGarbage: () => {
      Bun.gc(true); // synchronous full collection; always available
      return true;
    },
  });
  const server = Bun.serve<Events>({
    port: hub.options.port,
    hostname: hub.options.host,
    // Bun's request heads must arrive within its own fixed ~10 s (uWebSockets), whatever
    // headersTimeout says. Its idleTimeout also cuts a response still pending (a slow authenticate
    // hook), so it gets what Node's requestTimeout gets: headersTimeout, and at least 30 s.
    idleTimeout: Math.min(255, Math.ceil(Math.max(headersTimeout, 30_000) / 1000)),
    fetch: (request, server) => app.fetch(request, server),
    error: (error) => {
      hub.log.error('request.error', { error });
      return new Response('Internal Server Error\n', { status: 500 });
    },
    websocket,
  });
  const shownHost = server.hostname.includes(':') ? `[${server.hostname}]` : server.hostname;
  return {
    server,
    port: server.port,
    url: `http://${shownHost}:${server.port}`,
    close: () => server.stop(true),
  };
}

/** `hubbub` on Bun: `bun run bun.ts [flags]`. */
export function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  return runCli({
    runtime: 'bun',
    argv,
    env: process.env,
    cwd: () => process.cwd(),
    serve: serveBun,
    onSignal: (signals, listener) => {
      for (const signal of signals) process.on(signal, () => listener(signal));
    },
    exit: (code) => process.exit(code),
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  });
}
