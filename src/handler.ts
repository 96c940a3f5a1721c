// The Handler contract: what an application plugs into the hub. Runtime-free.
import type { ConnectionClosed } from './errors.ts';

/** Data of one message: text frames arrive as strings, binary frames as bytes. */
export type MessageData = string | Uint8Array;

/** Who a connection belongs to, as the `authenticate` hook decided. `id` keys the per-principal cap. */
export interface Principal {
  readonly id: string;
  readonly [key: string]: unknown;
}

/** What a handler sees of one connection. */
export interface HandlerContext {
  /** Unique id of this connection within the hub (`hub.close(id)` kicks it). */
  readonly id: string;
  /** The client's address as the runtime saw it. */
  readonly remoteAddress: string;
  /**
   * Aborted exactly once when the connection ends, for any reason. `signal.reason` is a
   * `ConnectionClosed` error with `kind` and `closeCode`. Hand it to `fetch`, timers and streams.
   */
  readonly signal: AbortSignal;
  /** Milliseconds since the epoch when the socket opened. */
  readonly openedAt: number;
  /** What `authenticate` returned for this connection; undefined without the hook. */
  readonly principal: Principal | undefined;
  /** Free slot for the handler's per-connection state. */
  data: unknown;
  /** Sends a message; a no-op once the connection has ended (or, under the `drop` policy, while its send queue is full). */
  send(data: MessageData): void;
  /** Subscribes this connection to a topic (see `hub.publish`). False if already subscribed. */
  subscribe(topic: string): boolean;
  /** Unsubscribes; every subscription also ends with the connection. False if not subscribed. */
  unsubscribe(topic: string): boolean;
  /** Closes this connection (the signal is aborted with kind `server-close`). */
  close(code?: number, reason?: string): void;
}

/**
 * An application's callbacks. Each may be async. If `onOpen` or `onMessage` throws or rejects,
 * that socket alone is closed with 1011 and the error is logged with the connection id.
 */
export interface Handler {
  /**
   * Runs before the upgrade, after the cheap checks (limit, rates, origin). Return a Principal to
   * admit the client (it becomes `ctx.principal`), or a Response (401, 403, …) to refuse it with
   * that answer. Anything else is refused with 401; a throw is logged and answered 500.
   */
  authenticate?(request: Request, info: { readonly remoteAddress: string }): Principal | Response | undefined | Promise<Principal | Response | undefined>;
  onOpen?(ctx: HandlerContext): void | Promise<void>;
  onMessage?(ctx: HandlerContext, data: MessageData): void | Promise<void>;
  /**
   * Shapes a published message for this node's subscribers, with the topic's local sequence number
   * (the pubsub protocol wraps it in its envelope). Runs once per publish per node, local or remote.
   */
  formatPublish?(topic: string, seq: number, data: MessageData): MessageData;
  /** Called once when an open connection ends, with the same reason the signal was aborted with. */
  onClose?(ctx: HandlerContext, reason: ConnectionClosed): void | Promise<void>;
}

const encoder = new TextEncoder();
const PREFIX = 'Server received: ';
const PREFIX_BYTES = encoder.encode(PREFIX);

/** The seed's behaviour: every message comes back as `Server received: <msg>`, binary stays binary. */
export const echoHandler: Handler = {
  onMessage(ctx, data) {
    if (typeof data === 'string') {
      ctx.send(PREFIX + data);
      return;
    }
    const reply = new Uint8Array(PREFIX_BYTES.length + data.byteLength);
    reply.set(PREFIX_BYTES, 0);
    reply.set(data, PREFIX_BYTES.length);
    ctx.send(reply);
  },
};
