// The Durable Object (`HubObject`) that holds a hub on workerd: the same `createApp(hub, adapter)`
// as every runtime, with sockets accepted through the Hibernation API. Each socket carries a small
// attachment (address, principal, topics, when it opened) from which a new instance rebuilds its
// Connection after an eviction. The adapter also does what workerd does not on a hibernatable socket:
// answers a client's close frame, answers an invalid close code with 1002, reads the code of
// workerd's own protocol errors, declines permessage-deflate, and sweeps on events, not on a timer
// that would keep the object awake. What workerd cannot do is in the README, "Runtime differences".
import type { Hono } from 'hono';
import { createApp } from '../../app.ts';
import { Connection, ConnectionState } from '../../connection.ts';
import type { Handler, HandlerFactory, Principal } from '../../contracts.ts';
import { CloseCode, isValidPeerCloseCode } from '../../errors.ts';
import { defineHubWebSocket } from '../../handshake.ts';
import { createHub, randomIdPart, type Hub } from '../../hub.ts';
import { createLogger } from '../../log.ts';
import { parseCommandLine } from '../../options.ts';
import type { DurableObjectState, HubEnv, WebSocketPairConstructor, WorkerWebSocket } from './api.ts';

declare const WebSocketPair: WebSocketPairConstructor;

/** What a socket carries through hibernation (kept small: workerd allows 2,048 bytes). */
interface Attachment {
  /** Client address. */
  ip: string;
  /** When the socket opened (ms). */
  at: number;
  principal?: Principal;
  topics?: string[];
}

type HandlerSpec = Handler | HandlerFactory;

const OPEN = { type: 'open' };

/** Paths only the hub's own tooling reaches, through the binding; the Worker answers them 404. */
export const INTERNAL_PREFIX = '/__hubbub/';
/** An extension answer that names none workerd knows: it then negotiates none (and sends no header). */
const NO_EXTENSIONS = 'none';

export class HubObject {
  /** Handlers bundled into this worker, by the name HUBBUB_HANDLER gives (besides `echo` and `pubsub`). */
  static handlers: Readonly<Record<string, HandlerSpec>> = {};

  readonly ctx: DurableObjectState;
  readonly hub: Hub | undefined;
  readonly app: Hono | undefined;
  /** Why the hub could not be built (a bad option): every request is answered 500 with it. */
  readonly startupError: string | undefined;
  /** The Connection of each accepted socket, for the hibernation event handlers. */
  readonly #connections = new WeakMap<WorkerWebSocket, Connection>();
  #attachmentWarned = false;

  constructor(ctx: DurableObjectState, env: HubEnv) {
    this.ctx = ctx;
    const handlers = (this.constructor as typeof HubObject).handlers;
    try {
      const command = parseCommandLine([], stringVars(env));
      if (command.kind !== 'serve') throw new Error('unreachable: no flags were given');
      const options = command.options;
      if (options.adminPort !== undefined && options.adminPort >= 0) throw new Error('HUBBUB_ADMIN_PORT is not available on workerd: the Worker has one listener (use HUBBUB_ADMIN_TOKEN to guard /stats and /metrics)');
      if (options.tlsCert || options.tlsKey) throw new Error('HUBBUB_TLS_CERT and HUBBUB_TLS_KEY are not available on workerd: TLS is the platform\'s (Cloudflare terminates it; wrangler dev serves https with --local-protocol https)');
      if (options.backplane) throw new Error('HUBBUB_BACKPLANE is not available on workerd: a Durable Object holds no broker connection (use rooms, HUBBUB_ROOMS)');
      const name = typeof options.handler === 'string' ? options.handler : 'echo';
      if (Object.hasOwn(handlers, name)) options.handler = handlers[name]!;
      // No sweeper timer (a pending timer keeps the object awake): `#tick` sweeps on events. Ids get a
      // prefix per instance, so that ids from before and after an eviction never meet in the logs.
      const hub = createHub(options, undefined, { sweeper: 'manual', idPrefix: `${randomIdPart(4)}-` });
      this.hub = hub;
      this.app = createApp(hub, {
        runtime: 'workerd',
        upgradeWebSocket: this.#upgradeWebSocket,
        remoteAddress: (c) => c.req.header('cf-connecting-ip') ?? '127.0.0.1',
        processStats: () => ({ webSockets: this.ctx.getWebSockets().length }),
      });
      // Connects what the hub connects at start (nothing, without a backplane) before the first event.
      void ctx.blockConcurrencyWhile(() => hub.start());
      // Subscriptions are saved in the socket's attachment as they change, so they survive an eviction.
      hub.topics.subscriptionsChanged = (conn) => this.#saveAttachment(conn);
      for (const ws of ctx.getWebSockets()) this.#restore(ws);
      if (hub.registry.liveConnections.size > 0) hub.log.info('hibernation.restored', { live: hub.registry.liveConnections.size });
    } catch (error) {
      this.startupError = (error as Error).message;
      createLogger('error').error('startup.error', { error });
    }
  }

  async fetch(request: Request): Promise<Response> {
    if (!this.hub || !this.app) return new Response(`hubbub: ${this.startupError}\n`, { status: 500, headers: { Connection: 'close' } });
    this.#tick();
    const url = new URL(request.url);
    if (url.pathname.startsWith(INTERNAL_PREFIX)) return this.#internal(url, request);
    return this.app.fetch(request);
  }

  webSocketMessage(ws: WorkerWebSocket, message: string | ArrayBuffer): void {
    this.#tick();
    this.#connectionOf(ws)?.onMessage({ data: message }, ws);
  }

  webSocketClose(ws: WorkerWebSocket, code: number, reason: string, wasClean: boolean): void {
    const conn = this.#connectionOf(ws);
    this.#connections.delete(ws);
    // workerd hands over any code a client sends. One a client may not send is a protocol error, as ws
    // treats it: answered 1002 and counted as `error`.
    if (wasClean && code !== CloseCode.NO_STATUS && !isValidPeerCloseCode(code)) {
      closeQuietly(ws, CloseCode.PROTOCOL_ERROR);
      conn?.onError({ error: new Error(`invalid close code ${code}`), code: CloseCode.PROTOCOL_ERROR }, ws);
    } else if (wasClean) replyToClose(ws, code, reason);
    conn?.onClose({ code, reason }, ws);
  }

  /**
   * workerd's own protocol errors (a bad frame, a message over its 32 MiB limit). It has already sent
   * its close frame; the code it used is only in the message ("protocolError.statusCode = 1009").
   */
  webSocketError(ws: WorkerWebSocket, error: unknown): void {
    const code = Number(/statusCode = (\d{4})/.exec(String((error as Error | undefined)?.message))?.[1]) || undefined;
    this.#connectionOf(ws)?.onError({ error, code }, ws);
  }

  /** Hono's upgradeWebSocket on the Hibernation API: the socket is the object's, the events are the Connection. */
  readonly #upgradeWebSocket = defineHubWebSocket((c, events, options) => {
    // The core hands over its Connection as the events; the object keeps it with the socket.
    if (!(events instanceof Connection)) throw new TypeError('workerd upgrade: the events must be a hubbub Connection');
    const conn = events;
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    this.#connections.set(server, conn);
    conn.onOpen(OPEN, server);
    this.#saveAttachment(conn);
    const headers: Record<string, string> = {};
    // The core's choice (the handler's selectProtocol), or none.
    if (options?.protocol) headers['Sec-WebSocket-Protocol'] = options.protocol;
    // workerd would negotiate permessage-deflate by itself, and inflate each message up to its own
    // 32 MiB limit whatever --max-payload says (a deflate bomb costs it that much memory). An answer
    // that names the extensions decides instead: one without permessage-deflate, always.
    if (c.req.header('sec-websocket-extensions')) headers['Sec-WebSocket-Extensions'] = NO_EXTENSIONS;
    return new Response(null, { status: 101, webSocket: client, headers } as ResponseInit);
  });

  #connectionOf(ws: WorkerWebSocket): Connection | undefined {
    return this.#connections.get(ws);
  }

  /** A socket accepted by an earlier instance of this object: a Connection again, without onOpen. */
  #restore(ws: WorkerWebSocket): void {
    const hub = this.hub!;
    if (ws.readyState !== 1) return; // closing: its webSocketClose comes, and finds nothing to release
    const attachment = ws.deserializeAttachment() as Attachment | null;
    if (!attachment || typeof attachment.ip !== 'string') {
      // Saved nothing (its principal could not be stored): without it the caps could not count this
      // socket, so it goes; the client reconnects.
      closeQuietly(ws, CloseCode.INTERNAL_ERROR, 'connection state lost');
      return;
    }
    const restored = hub.registry.restore({ socket: ws, remoteAddress: attachment.ip, principal: attachment.principal, openedAt: attachment.at });
    if (!(restored instanceof Connection)) {
      // A limit was lowered across a deploy: the sockets over it are closed.
      closeQuietly(ws, CloseCode.TRY_AGAIN_LATER, 'over capacity after restart');
      return;
    }
    this.#connections.set(ws, restored);
    for (const topic of attachment.topics ?? []) restored.subscribe(topic);
  }

  #saveAttachment(conn: Connection): void {
    const socket = conn.socket as WorkerWebSocket | undefined;
    if (!socket || conn.state !== ConnectionState.Open) return;
    const attachment: Attachment = { ip: conn.remoteAddress, at: conn.openedAt };
    if (conn.principal) attachment.principal = conn.principal;
    if (conn.topics?.size) attachment.topics = [...conn.topics];
    try {
      socket.serializeAttachment(attachment);
    } catch (error) {
      // Over 2,048 bytes (many or long topic names) or not cloneable: this socket's topics would not survive an eviction.
      if (!this.#attachmentWarned) this.hub!.log.warn('hibernation.attachment', { id: conn.id, error });
      this.#attachmentWarned = true;
    }
  }

  /**
   * Runs the hub's sweeper when a new second has begun (message-rate window, rate-bucket pruning,
   * reservation expiry). Driven by events, not a timer: an upgrade completes within its request, so
   * nothing waits for a tick between events.
   */
  #tick(): void {
    const now = Date.now();
    if (Math.floor(now / 1000) !== this.hub!.registry.rateWindow) this.hub!.sweep(now);
  }

  /** Reached only through the binding (the Worker answers these paths 404): the dev launcher's drain. */
  async #internal(url: URL, request: Request): Promise<Response> {
    if (url.pathname !== `${INTERNAL_PREFIX}shutdown` || request.method !== 'POST') return new Response('Not Found\n', { status: 404 });
    const timeout = Number(url.searchParams.get('timeout') ?? Number.NaN);
    return Response.json(await this.hub!.shutdown(Number.isFinite(timeout) ? timeout : undefined));
  }
}

/** A HubObject class with more handlers bundled in, selectable by name through HUBBUB_HANDLER. */
export function hubObjectWith(handlers: Readonly<Record<string, HandlerSpec>>): typeof HubObject {
  return class extends HubObject {
    static override handlers = { ...HubObject.handlers, ...handlers };
  };
}

/**
 * Completes the closing handshake the client started: workerd does not answer a close frame on a
 * hibernatable socket by itself, and a client waits (10 s with ws) for the answer. The code and
 * reason are echoed, as ws does; a close frame without a code (1005) is answered without one.
 */
function replyToClose(ws: WorkerWebSocket, code: number, reason: string): void {
  if (code === CloseCode.NO_STATUS) closeQuietly(ws);
  else closeQuietly(ws, code, reason);
}

function closeQuietly(ws: WorkerWebSocket, code?: number, reason?: string): void {
  try {
    if (code === undefined) ws.close();
    else ws.close(code, reason);
  } catch {
    // already closed by the server (it started this closing handshake)
  }
}

/** Vars as the strings parseCommandLine reads (a TOML number or boolean var arrives as a JSON value). */
function stringVars(env: HubEnv): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (typeof value === 'string') vars[name] = value;
    else if (typeof value === 'number' || typeof value === 'boolean') vars[name] = String(value);
  }
  return vars;
}
