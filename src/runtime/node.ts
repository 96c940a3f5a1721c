// Node runtime: @hono/node-server serves the app; WebSocket upgrades go through a lean
// `upgradeWebSocket` built on `ws`, with the same contract and API shape as @hono/node-ws
// (`createNodeWebSocket` → { upgradeWebSocket, injectWebSocket, wss }). It differs where
// @hono/node-ws 1.3.1 falls short for a server that holds a crowd (measured, see BENCHMARKS.md):
//  - a refused upgrade is written as a full HTTP response (status, headers such as Retry-After, body),
//    not a bare status line;
//  - the socket's listeners are shared functions that do not capture the Hono Context, so a long-lived
//    socket does not keep its upgrade Request alive (~2.4 KB per connection);
//  - a handshake that fails inside `ws` (or a client gone mid-handshake) is reported to the events
//    (onClose before onOpen), so its slot comes back at once instead of leaking a waiter forever;
//  - the raw socket has an error listener from the 'upgrade' event on, so a reset while the app
//    decides cannot crash the process.
// This file is the only one that knows about Node; switching the Node WebSocket layer is this file.
import { serve } from '@hono/node-server';
import type { Hono } from 'hono';
import { defineWebSocketHelper, type WSEvents } from 'hono/ws';
import { STATUS_CODES, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import * as wsExports from 'ws';
import { WebSocketServer, type WebSocket } from 'ws';
import { createApp } from '../app.ts';
import { runCli, type ServedHub } from '../cli.ts';
import type { FanOut, SocketLike } from '../connection.ts';
import type { MessageData } from '../handler.ts';
import { checkHandshake } from '../handshake.ts';
import type { Hub } from '../hub.ts';
import { createLogger } from '../log.ts';
import { renderMetrics } from '../metrics.ts';
import { parseCommandLine, resolveOptions, type HubOptions } from '../options.ts';
import cluster from 'node:cluster';
import { isClusterWorker, runPrimary, workerSide } from './cluster.ts';

/** Where the accepted events wait between the app's answer and the handshake, and then live. */
const EVENTS = Symbol('hubbub.events');

type Events = WSEvents<unknown>;
interface NodeEnv {
  incoming: IncomingMessage;
  outgoing: undefined;
  [EVENTS]?: Events;
}
type Tagged<T> = T & { [EVENTS]?: Events };

export interface NodeWebSocketOptions {
  /** Largest message accepted, in bytes, compressed or not (ws `maxPayload`). @default 65536 */
  maxPayload?: number;
  /** Negotiate permessage-deflate (without context takeover, so each socket keeps no zlib window). @default false */
  perMessageDeflate?: boolean;
}

export function createNodeWebSocket(options: NodeWebSocketOptions = {}) {
  const wss = new WebSocketServer({
    noServer: true,
    clientTracking: false, // the registry tracks sockets; a second Set would cost memory per socket
    maxPayload: options.maxPayload ?? 64 * 1024,
    // ws bounds the inflated size of a message by maxPayload too, so a deflate bomb ends with 1009.
    perMessageDeflate: options.perMessageDeflate
      ? { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 1024, concurrencyLimit: 10 }
      : false,
  });

  const upgradeWebSocket = defineWebSocketHelper<unknown>((c, events) => {
    const refusal = checkHandshake(c.req.method, c.req.raw.headers);
    if (refusal) return refusal;
    const env = c.env as NodeEnv | undefined;
    if (!env?.incoming) return new Response('WebSocket upgrades need injectWebSocket(server)\n', { status: 500 });
    env[EVENTS] = events;
    return new Response(null); // the 'upgrade' listener completes the handshake
  });

  function injectWebSocket(server: Server, app: { fetch: Hono['fetch'] }): void {
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      socket.on('error', destroyOnError);
      handleUpgrade(app, wss, request, socket, head).catch((error) => {
        socket.destroy();
        process.emitWarning(`hubbub: upgrade failed: ${(error as Error)?.stack ?? error}`);
      });
    });
  }

  return { wss, upgradeWebSocket, injectWebSocket };
}

async function handleUpgrade(app: { fetch: Hono['fetch'] }, wss: WebSocketServer, request: IncomingMessage, socket: Tagged<Duplex>, head: Buffer): Promise<void> {
  let webRequest: Request;
  try {
    const headers = new Headers();
    const raw = request.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
    webRequest = new Request(`http://${request.headers.host ?? 'localhost'}${request.url ?? '/'}`, { headers, method: request.method ?? 'GET' });
  } catch {
    return writeResponse(socket, new Response('Bad Request\n', { status: 400 }));
  }
  const env: NodeEnv = { incoming: request, outgoing: undefined };
  const response = await app.fetch(webRequest, env);
  const events = env[EVENTS];
  if (!events) return writeResponse(socket, response);
  if (socket.destroyed || !socket.readable || !socket.writable) {
    events.onClose?.(LOST, undefined as never);
    return;
  }
  // ws answers a handshake it rejects itself and destroys the socket without calling back.
  socket[EVENTS] = events;
  socket.once('close', onHandshakeSocketClose);
  wss.handleUpgrade(request, socket, head, (ws) => {
    socket.removeListener('close', onHandshakeSocketClose);
    socket.removeListener('error', destroyOnError);
    socket[EVENTS] = undefined;
    attach(ws, events);
  });
}

const LOST = { code: 1006, reason: '' } as unknown as CloseEvent;
const OPEN = { type: 'open' } as Event;

function destroyOnError(this: Duplex): void {
  this.destroy();
}

function onHandshakeSocketClose(this: Tagged<Duplex>): void {
  const events = this[EVENTS];
  this[EVENTS] = undefined;
  events?.onClose?.(LOST, undefined as never);
}

// Shared listeners: `this` is the socket, the events hang on it. No closure per connection.
function attach(ws: Tagged<WebSocket>, events: Events): void {
  ws[EVENTS] = events;
  ws.on('message', onWsMessage);
  ws.on('close', onWsClose);
  ws.on('error', onWsError);
  ws.on('pong', onWsPong);
  events.onOpen?.(OPEN, ws as never);
}

function onWsPong(this: Tagged<WebSocket>): void {
  (this[EVENTS] as { onPong?: () => void }).onPong?.();
}

function onWsMessage(this: Tagged<WebSocket>, data: Buffer, isBinary: boolean): void {
  this[EVENTS]!.onMessage?.({ data: isBinary ? data : data.toString(), bytes: data.length } as never, this as never);
}

function onWsClose(this: Tagged<WebSocket>, code: number, reason: Buffer): void {
  this[EVENTS]!.onClose?.({ code, reason: reason.toString() } as never, this as never);
}

function onWsError(this: Tagged<WebSocket>, error: Error): void {
  this[EVENTS]!.onError?.({ error, code: wsStatusCode(error) } as never, this as never);
}

/** ws tags protocol errors with the close code it sent (a symbol it does not export). */
function wsStatusCode(error: Error): number | undefined {
  for (const key of Object.getOwnPropertySymbols(error)) {
    if (key.description === 'status-code') return (error as unknown as Record<symbol, number>)[key];
  }
  return undefined;
}

const HOP_BY_HOP = new Set(['connection', 'content-length', 'transfer-encoding', 'keep-alive', 'upgrade']);

/** Writes a refused upgrade as a complete HTTP/1.1 response, then closes the socket. */
async function writeResponse(socket: Duplex, response: Response): Promise<void> {
  const body = Buffer.from(await response.arrayBuffer());
  let head = `HTTP/1.1 ${response.status} ${STATUS_CODES[response.status] ?? ''}\r\n`;
  response.headers.forEach((value, name) => {
    if (!HOP_BY_HOP.has(name) && name !== 'set-cookie') head += `${name}: ${value}\r\n`;
  });
  for (const cookie of response.headers.getSetCookie()) head += `set-cookie: ${cookie}\r\n`;
  head += `Connection: close\r\nContent-Length: ${body.length}\r\n\r\n`;
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  // As ws does: destroy once the answer is flushed, so a client that never closes cannot hold the socket.
  socket.once('finish', socket.destroy);
  socket.end(Buffer.concat([Buffer.from(head, 'latin1'), body]));
}

interface PreparedFrame {
  readonly data: MessageData;
  /** One complete unmasked WebSocket frame, shared by every socket it is written to. */
  readonly frame: Buffer;
}
// ws exports its Sender (the framer) but @types/ws does not declare it.
const { Sender } = wsExports as unknown as { Sender: { frame(data: Buffer, options: object): Buffer[] } };

interface SenderState {
  _state: number;
  _queue: unknown[];
}

/**
 * Fan-out on Node: encode and frame a message once, then write the same bytes to every socket,
 * instead of `ws.send` encoding and framing it again for each one. Falls back to `ws.send` for a
 * socket whose sender is busy (compressing, or holding queued frames), so order is kept.
 */
export const nodeFanOut: FanOut<PreparedFrame> = {
  prepare(data) {
    const text = typeof data === 'string';
    const bytes = text ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const parts = Sender.frame(bytes, { fin: true, opcode: text ? 1 : 2, mask: false, readOnly: false, rsv1: false });
    return { data, frame: parts.length === 1 ? parts[0]! : Buffer.concat(parts) };
  },
  sendPrepared(socket: SocketLike, prepared) {
    const ws = socket as unknown as WebSocket & { _sender: SenderState; _socket: Duplex };
    const sender = ws._sender;
    if (ws.readyState === 1 && sender._state === 0 && sender._queue.length === 0) ws._socket.write(prepared.frame);
    else ws.send(prepared.data);
  },
};

function remoteAddress(incoming: IncomingMessage | undefined): string {
  const address = incoming?.socket?.remoteAddress;
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

export interface NodeServer extends ServedHub {
  readonly server: Server;
  readonly port: number;
  readonly app: Hono;
}

/** Serves a hub on Node at `hub.options.host:port`. Resolves once listening. */
export async function serveNode(hub: Hub): Promise<NodeServer> {
  await hub.start();
  const { maxPayload, perMessageDeflate, headersTimeout } = hub.options;
  const { upgradeWebSocket, injectWebSocket } = createNodeWebSocket({ maxPayload, perMessageDeflate });
  // In cluster mode the limit is the whole cluster's, held by the primary.
  let serverRef: Server | undefined;
  const processStats = () => {
    const m = process.memoryUsage();
    const internals = process as unknown as { _getActiveHandles?: () => unknown[] };
    return {
      rssBytes: m.rss,
      heapUsedBytes: m.heapUsed,
      externalBytes: m.external,
      activeHandles: internals._getActiveHandles?.().length ?? -1,
      upgradeListeners: serverRef?.listenerCount('upgrade') ?? 0,
      processListeners: process.listenerCount('SIGINT') + process.listenerCount('SIGTERM'),
    };
  };
  const clusterSide = isClusterWorker() ? workerSide(hub, (labels) => renderMetrics(hub, 'node', processStats(), labels)) : undefined;
  // (A limit shared through Redis, set by hub.start(), takes precedence: each worker is then a node.)
  hub.registry.slots ??= clusterSide?.slots;
  const app = createApp(hub, {
    ...(clusterSide ? { clusterStats: clusterSide.clusterStats, clusterMetrics: clusterSide.clusterMetrics } : {}),
    runtime: 'node',
    upgradeWebSocket: upgradeWebSocket as never,
    remoteAddress: (c) => remoteAddress((c.env as NodeEnv | undefined)?.incoming),
    fanOut: nodeFanOut,
    processStats,
    collectGarbage: () => {
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      return gc !== undefined;
    },
  });
  return new Promise((resolve, reject) => {
    const server = serve({
      fetch: app.fetch,
      port: hub.options.port,
      hostname: hub.options.host,
      serverOptions: {
        // A client trickling its headers is dropped; it never reaches admission, so it holds no slot.
        headersTimeout,
        requestTimeout: Math.max(headersTimeout, 30_000),
        // Node checks those timeouts on this interval (30 s by default).
        connectionsCheckingInterval: Math.min(1000, headersTimeout),
      },
    }) as Server;
    serverRef = server;
    server.once('error', reject);
    server.once('listening', () => {
      server.removeListener('error', reject);
      server.on('error', (error) => hub.log.error('server.error', { error }));
      injectWebSocket(server, app);
      const { port } = server.address() as AddressInfo;
      const shownHost = hub.options.host.includes(':') ? `[${hub.options.host}]` : hub.options.host;
      resolve({
        server,
        port,
        app,
        url: `http://${shownHost}:${port}`,
        close: () =>
          new Promise<void>((done) => {
            server.close(() => done());
            server.closeAllConnections();
          }),
      });
    });
  });
}

/** The options, if the command line is a valid `serve`; runCli reports errors itself. */
function peekOptions(argv: readonly string[]): HubOptions | undefined {
  try {
    const command = parseCommandLine(argv, process.env);
    return command.kind === 'serve' ? resolveOptions(command.options) : undefined;
  } catch {
    return undefined;
  }
}

/** `hubbub` on Node: `node dist/node.js [flags]`; with `--workers N` the primary of a cluster. */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  if (argv[0] === 'loadtest') return (await import('../loadtest/main.ts')).main(argv.slice(1));
  const worker = isClusterWorker();
  if (!worker) {
    const options = peekOptions(argv);
    if (options && options.workers !== 1) return runPrimary(options, createLogger(options.logLevel));
  }
  return runCli({
    runtime: 'node',
    role: worker ? `worker ${cluster.worker?.id ?? '?'}` : undefined,
    // Connection ids unique across the cluster: `<worker id>-<n>`.
    hubInit: worker ? { idPrefix: `${cluster.worker?.id ?? process.pid}-` } : undefined,
    argv,
    env: process.env,
    cwd: () => process.cwd(),
    serve: serveNode,
    onSignal: (signals, listener) => {
      // A cluster worker is stopped by its primary (SIGTERM); a terminal's SIGINT to the whole
      // process group must not count as a first signal in every worker.
      for (const signal of signals) if (!worker || signal === 'SIGTERM') process.on(signal, () => listener(signal));
    },
    exit: (code) => process.exit(code),
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  });
}
