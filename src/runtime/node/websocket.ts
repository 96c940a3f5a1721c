// Hono's `upgradeWebSocket` for Node, built on `ws`, with the API shape of @hono/node-ws
// (`createNodeWebSocket` → { upgradeWebSocket, injectWebSocket, wss }). docs/ARCHITECTURE.md says why
// hubbub has its own: refusals are complete HTTP answers, listeners capture no Hono Context, a
// handshake that dies inside `ws` is reported, and the raw socket has an error listener at once.
import type { Hono } from 'hono';
import { STATUS_CODES, type IncomingMessage, type Server } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type ServerOptions } from 'ws';
import type { HubEvents } from '../../contracts.ts';
import { CloseCode } from '../../errors.ts';
import { defineHubWebSocket, upgradedAnswer } from '../../handshake.ts';
import { upgradeRequest } from './request.ts';

/** Where the accepted events wait between the app's answer and the handshake, and then live. */
const EVENTS = Symbol('hubbub.events');
/** The subprotocol the core chose, on the request, for ws's handleProtocols. */
const PROTOCOL = Symbol('hubbub.protocol');

/** The env @hono/node-server hands the app, plus the events the upgrade helper leaves for the 'upgrade' listener. */
export interface NodeEnv {
  incoming: IncomingMessage;
  outgoing: undefined;
  [EVENTS]?: HubEvents;
  [PROTOCOL]?: string | undefined;
}
type Tagged<T> = T & { [EVENTS]?: HubEvents | undefined; [PROTOCOL]?: string | undefined };

export interface NodeWebSocketOptions {
  /** Largest message accepted, in bytes, compressed or not (ws `maxPayload`). @default 65536 */
  maxPayload?: number;
  /** Negotiate permessage-deflate (without context takeover, so each socket keeps no zlib window). @default false */
  perMessageDeflate?: boolean;
  /**
   * Milliseconds a peer has to end TCP once both close frames are out (ws `closeTimeout`), then the
   * socket is destroyed. It bounds a close the client began; the core bounds those it begins itself.
   * @default 5000
   */
  closeTimeout?: number;
}

export function createNodeWebSocket(options: NodeWebSocketOptions = {}) {
  // ws has had `closeTimeout` since 8.19; @types/ws (8.18) does not know it yet.
  const serverOptions: ServerOptions & { closeTimeout: number } = {
    noServer: true,
    clientTracking: false, // the registry tracks sockets; a second Set would cost memory per socket
    // The subprotocol is the core's choice (the handler's selectProtocol), never simply the first offered.
    handleProtocols: (_offered, request) => (request as Tagged<IncomingMessage>)[PROTOCOL] ?? false,
    maxPayload: options.maxPayload ?? 64 * 1024,
    closeTimeout: options.closeTimeout ?? 5000,
    WebSocket: HubWebSocket,
    // ws bounds the inflated size of a message by maxPayload too, so a deflate bomb ends with 1009.
    perMessageDeflate: options.perMessageDeflate
      ? { serverNoContextTakeover: true, clientNoContextTakeover: true, threshold: 1024, concurrencyLimit: 10 }
      : false,
  };
  const wss = new WebSocketServer(serverOptions);

  const upgradeWebSocket = defineHubWebSocket((c, events, options) => {
    const env = c.env as NodeEnv | undefined;
    if (!env?.incoming) return new Response('WebSocket upgrades need injectWebSocket(server)\n', { status: 500 });
    env[EVENTS] = events;
    env[PROTOCOL] = options?.protocol;
    return upgradedAnswer(); // the 'upgrade' listener completes the handshake
  });

  function injectWebSocket(server: Server, app: { fetch: Hono['fetch'] }): void {
    server.on('upgrade', (request: IncomingMessage, socket: Duplex, head: Buffer) => {
      try {
        handleUpgrade(app, wss, request, socket, head);
      } catch (error) {
        upgradeFailed(socket, error);
      }
    });
  }

  return { wss, upgradeWebSocket, injectWebSocket };
}

function upgradeFailed(socket: Duplex, error: unknown): void {
  socket.destroy();
  process.emitWarning(`hubbub: upgrade failed: ${(error as Error)?.stack ?? error}`);
}

/**
 * Runs the app for an upgrade request, then completes or refuses the handshake. Synchronous when
 * the app's answer is (no token to verify, no authenticate hook, no cluster slot to ask for): no
 * promise, no microtask, no listener on the socket in between. Only while the app's answer is
 * awaited does the raw socket need an error listener of its own (nothing can emit one before).
 */
function handleUpgrade(app: { fetch: Hono['fetch'] }, wss: WebSocketServer, request: IncomingMessage, socket: Tagged<Duplex>, head: Buffer): void {
  const webRequest = upgradeRequest(request);
  if (!webRequest) return writeResponse(socket, new Response('Bad Request\n', { status: 400 }));
  const env: NodeEnv = { incoming: request, outgoing: undefined };
  const answer = app.fetch(webRequest, env);
  if (!(answer instanceof Promise)) return complete(wss, request, socket, head, env, answer);
  socket.on('error', destroyOnError);
  answer.then(
    (response) => {
      socket.removeListener('error', destroyOnError);
      complete(wss, request, socket, head, env, response);
    },
    (error) => upgradeFailed(socket, error),
  ).catch((error) => upgradeFailed(socket, error));
}

function complete(wss: WebSocketServer, request: IncomingMessage, socket: Tagged<Duplex>, head: Buffer, env: NodeEnv, response: Response): void {
  const events = env[EVENTS];
  if (!events) return writeResponse(socket, response);
  if (socket.destroyed || !socket.readable || !socket.writable) {
    events.onClose(LOST, undefined);
    return;
  }
  (request as Tagged<IncomingMessage>)[PROTOCOL] = env[PROTOCOL];
  let opened = false;
  wss.handleUpgrade(request, socket, head, (ws) => {
    opened = true;
    if (socket[EVENTS]) {
      socket.removeListener('close', onHandshakeSocketClose);
      socket[EVENTS] = undefined;
    }
    attach(ws, events);
  });
  if (opened) return;
  // ws answers a handshake it rejects itself and destroys the socket without calling back.
  if (socket.destroyed) return events.onClose(LOST, undefined);
  // Not done yet (ws completes later, e.g. with permessage-deflate): hear if the socket dies first.
  socket[EVENTS] = events;
  socket.once('close', onHandshakeSocketClose);
}

const LOST = { code: CloseCode.ABNORMAL, reason: '' };
const OPEN = { type: 'open' };

function destroyOnError(this: Duplex): void {
  this.destroy();
}

function onHandshakeSocketClose(this: Tagged<Duplex>): void {
  const events = this[EVENTS];
  this[EVENTS] = undefined;
  events?.onClose(LOST, undefined);
}

/**
 * ws's WebSocket, which hands its events to the hub's events object itself instead of through
 * listeners: no listener is registered per socket, so its EventEmitter keeps no table of them (with
 * four listeners, 256 bytes of every idle connection), and the events object is a field of its own.
 * Listeners added by anyone else still hear every event.
 */
class HubWebSocket extends WebSocket {
  [EVENTS]: HubEvents | undefined = undefined;

  // Two arguments at most for the events below: no rest array per message.
  override emit(type: string | symbol, a?: any, b?: any, ...rest: any[]): boolean {
    const events = this[EVENTS];
    if (events) {
      switch (type) {
        case 'message':
          events.onMessage({ data: b ? a : (a as Buffer).toString(), bytes: (a as Buffer).length }, this);
          break;
        case 'close':
          events.onClose({ code: a as number, reason: (b as Buffer).toString() }, this);
          break;
        case 'error':
          events.onError({ error: a as Error, code: wsStatusCode(a as Error) }, this);
          // Handled: an 'error' with no listener must not throw.
          return this.listenerCount('error') > 0 ? super.emit(type, a, b, ...rest) : true;
        case 'pong':
          events.onPong();
          break;
      }
    }
    // Anyone else's listeners (EventEmitter keeps the count: no lookup while there are none).
    return (this as unknown as { _eventsCount: number })._eventsCount > 0 ? super.emit(type, a, b, ...rest) : false;
  }
}

function attach(ws: WebSocket, events: HubEvents): void {
  (ws as HubWebSocket)[EVENTS] = events;
  events.onOpen(OPEN, ws);
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
function writeResponse(socket: Duplex, response: Response): void {
  // The socket may fail while the body is read or the answer written: nothing else listens yet.
  if (!socket.listeners('error').includes(destroyOnError)) socket.on('error', destroyOnError);
  writeAnswer(socket, response).catch((error) => upgradeFailed(socket, error));
}

async function writeAnswer(socket: Duplex, response: Response): Promise<void> {
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
