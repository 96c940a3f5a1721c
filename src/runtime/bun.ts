// Bun runtime: Bun.serve serves the app; upgrades go through Bun's `server.upgrade()` behind Hono's
// `upgradeWebSocket` contract (the approach of Hono's own Bun adapter, 'hono/bun'), with Bun's native
// WebSocket limits:
//  - `maxPayloadLength` = maxPayload: Bun closes a bigger message with 1009 itself (deflated or not);
//  - the core's heartbeat pings through `ws.ping()` and hears pongs through the shared `pong` handler,
//    so a silent peer is dropped (terminate, reason idle) after two intervals, to the millisecond, as
//    on Node; Bun's own `idleTimeout` (whole seconds, checked every 4 s) is only a backstop at three
//    intervals and reports back as `idle` too;
//  - `backpressureLimit` bounds what one slow reader can make the server buffer.
// Bun's upgrade layer does not check the key or version the way `ws` does, so the handshake is checked
// here first with the same rules as on Node and Deno. The handlers are shared: the events object rides
// on `ws.data`, so an idle socket costs no closure. This file is the only one that knows about Bun.
import { defineWebSocketHelper, type WSEvents } from 'hono/ws';
import { createApp } from '../app.ts';
import { runCli, type ServedHub } from '../cli.ts';
import { checkHandshake } from '../handshake.ts';
import type { Hub } from '../hub.ts';

// ---- The little of Bun's API this file uses (tsc for Node has no Bun types; Bun ignores these). ----

/** Bun's ServerWebSocket: it has everything the core's SocketLike needs, so it is passed as is. */
interface BunServerWebSocket<T> {
  readonly data: T;
  readonly readyState: number;
  send(data: string | Uint8Array, compress?: boolean): number;
  close(code?: number, reason?: string): void;
  terminate(): void;
  ping(data?: string | Uint8Array): number;
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
  /** Seconds an HTTP connection may stay silent (not WebSockets, which have their own). 0 = never. */
  idleTimeout?: number;
  fetch(request: Request, server: BunServer): Response | Promise<Response> | undefined;
  error?(error: Error): Response | Promise<Response>;
  websocket: BunWebSocketHandler<T>;
}

declare const Bun: { serve<T>(options: BunServeOptions<T>): BunServer; readonly version: string };

// ---- The WebSocket layer ----

type Events = WSEvents<unknown> & { onPong?(): void; onIdleTimeout?(): void };
interface SocketData {
  readonly events: Events;
}
type Socket = BunServerWebSocket<SocketData>;

/** The close reasons Bun (uWebSockets) reports to `close` for endings it decides itself (code 1006). */
const TOO_BIG_REASON = 'Received too big message';
const IDLE_REASON = 'WebSocket timed out from inactivity';

const OPEN = { type: 'open' } as Event;
const TOO_BIG = { error: new Error('message too big'), code: 1009 };

export interface BunWebSocketOptions {
  /** Largest message accepted, in bytes, inflated size included (Bun `maxPayloadLength`). @default 65536 */
  maxPayload?: number;
  /** hubbub's heartbeat interval (ms); Bun's idle timeout is set to three of them as a backstop. 0 = off. @default 30000 */
  heartbeatInterval?: number;
  /** Negotiate permessage-deflate (Bun's shared compressor: no per-socket zlib window). @default false */
  perMessageDeflate?: boolean;
  /** Bytes buffered for one slow reader before `send` drops messages (Bun `backpressureLimit`). @default 1 MiB */
  backpressureLimit?: number;
}

/** Hono's `upgradeWebSocket` for Bun and the shared `websocket` handlers to give Bun.serve. */
export function createBunWebSocket(options: BunWebSocketOptions = {}) {
  const upgradeWebSocket = defineWebSocketHelper<unknown>((c, events) => {
    const refusal = checkHandshake(c.req.method, c.req.raw.headers);
    if (refusal) return refusal;
    const server = c.env as BunServer | undefined;
    if (!server?.upgrade) return new Response('WebSocket upgrades need the Bun server as env\n', { status: 500 });
    // Like ws: the first protocol the client offers is the one chosen.
    const protocol = c.req.header('sec-websocket-protocol')?.split(',')[0]?.trim();
    const data: SocketData = { events: events as Events };
    // Bun writes the 101 and calls `open` synchronously, inside upgrade(); false: the client is gone.
    if (!server.upgrade(c.req.raw, protocol ? { data, headers: { 'Sec-WebSocket-Protocol': protocol } } : { data })) {
      return new Response('WebSocket upgrade failed\n', { status: 400, headers: { Connection: 'close' } });
    }
    // Bun ignores the answer of an upgraded request; it only has to be below 400 for the core.
    return new Response(null);
  });

  const heartbeat = options.heartbeatInterval ?? 30_000;
  const websocket: BunWebSocketHandler<SocketData> = {
    open: onOpen,
    message: onMessage,
    close: onClose,
    pong: onPong,
    maxPayloadLength: options.maxPayload ?? 64 * 1024,
    // Bun counts in seconds (at most 960) and checks every 4 s; the core's heartbeat drops a silent
    // peer first. Bun's pings only matter when three intervals exceed its 960 s ceiling.
    idleTimeout: heartbeat > 0 ? Math.min(960, Math.ceil((3 * heartbeat) / 1000)) : 0,
    sendPings: heartbeat > 0,
    backpressureLimit: options.backpressureLimit ?? 1024 * 1024,
    closeOnBackpressureLimit: false,
    perMessageDeflate: options.perMessageDeflate ?? false,
  };
  return { upgradeWebSocket, websocket };
}

// Shared handlers: the events object is on `ws.data`. No closure per connection.
function onOpen(ws: Socket): void {
  ws.data.events.onOpen?.(OPEN, ws as never);
}

function onMessage(ws: Socket, message: string | Uint8Array): void {
  // Bun hands binary messages over as Buffers (Uint8Array): the core takes them as they are.
  ws.data.events.onMessage?.({ data: message } as never, ws as never);
}

function onPong(ws: Socket): void {
  ws.data.events.onPong?.();
}

function onClose(ws: Socket, code: number, reason: string): void {
  const events = ws.data.events;
  // Bun closed it itself (1009 sent to the peer / idle, dropped) but reports 1006 with a reason.
  if (code === 1006 && reason === TOO_BIG_REASON) events.onError?.(TOO_BIG as never, ws as never);
  else if (code === 1006 && reason === IDLE_REASON) events.onIdleTimeout?.();
  events.onClose?.({ code, reason } as never, ws as never);
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
  const { maxPayload, heartbeatInterval, perMessageDeflate, headersTimeout } = hub.options;
  const { upgradeWebSocket, websocket } = createBunWebSocket({ maxPayload, heartbeatInterval, perMessageDeflate });
  const app = createApp(hub, {
    runtime: 'bun',
    upgradeWebSocket: upgradeWebSocket as never,
    remoteAddress: (c) => remoteAddress((c.env as BunServer | undefined)?.requestIP(c.req.raw)?.address),
    processStats: () => {
      const m = process.memoryUsage();
      return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external };
    },
    collectGarbage: () => {
      // Bun.gc(true) is a synchronous full collection.
      const gc = (Bun as unknown as { gc?: (force: boolean) => void }).gc;
      gc?.(true);
      return gc !== undefined;
    },
  });
  const server = Bun.serve<SocketData>({
    port: hub.options.port,
    hostname: hub.options.host,
    // Bun has no headers timeout; its HTTP idle timeout (whole seconds, at most 255) drops a client
    // that stops sending mid-request. It does not apply to upgraded sockets.
    idleTimeout: Math.min(255, Math.max(1, Math.ceil(headersTimeout / 1000))),
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
