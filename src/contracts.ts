// The contracts between hubbub and what plugs into it: the handler an application writes, the
// socket a runtime hands over, and the events a runtime adapter drives. Types only; they import
// nothing of the core but the error types and the logger's.
import type { ConnectionClosed } from './errors.ts';
import type { Logger } from './log.ts';

/** What a subscribe came to (the cap it hit, if refused). */
/** 'unavailable': the shared store (Redis) could not be read in time; the subscribe was undone. */
export type SubscribeOutcome = 'subscribed' | 'already-subscribed' | 'subscription-limit' | 'topic-limit' | 'closed' | 'unavailable';

/** Data of one message: text frames arrive as strings, binary frames as bytes. */
export type MessageData = string | Uint8Array;

/**
 * Where a topic's stream stands: `offset` counts its publications (0 before the first; each one
 * gets the next), `epoch` names the stream (it changes when the counter or the history was lost).
 */
export interface StreamPosition {
  readonly offset: number;
  readonly epoch: string;
}

export interface SubscribeOptions {
  /** The last position the client saw: the publications after it are delivered first (recovery). */
  readonly since?: StreamPosition | undefined;
  /**
   * Called once the outcome is known and before any recovered publication is delivered: the pubsub
   * protocol sends its `subscribed` answer here, so that it comes before the replay.
   */
  beforeReplay?(result: SubscribeResult): void;
}

export interface SubscribeResult {
  readonly outcome: SubscribeOutcome;
  /** The topic's position; with a recovery, the one after the last recovered publication. */
  readonly position: StreamPosition;
  /** With `since`: true when every publication after it was delivered (same epoch, history reaching back, within `recoveryMax`). */
  readonly recovered: boolean;
  /** Publications delivered by the recovery. */
  readonly replayed: number;
}

/** A subscriber of a topic, as presence shows it: its connection id and, with `authenticate`, its principal's id. */
export interface PresenceMember {
  readonly id: string;
  readonly principal?: string;
}

/** Who is subscribed to a topic (on every node with the Redis store, else on this one): how many, and the first `limit` of them. */
export interface Presence {
  readonly topic: string;
  readonly count: number;
  readonly members: readonly PresenceMember[];
}

/** What `hub.publish` did: the publication's position, and how many local subscribers got it. */
export interface PublishResult extends StreamPosition {
  /** Local deliveries made by the publish; absent with the Redis store, through which every node (this one too) gets it. */
  readonly delivered?: number;
}

/** Who a connection belongs to, as the `authenticate` hook decided. `id` keys the per-principal cap. */
export interface Principal {
  readonly id: string;
  readonly [key: string]: unknown;
}

/** The topics a token lets its connection use (its topics claim, `--jwt-topics-claim`). */
export interface TopicGrants {
  readonly subscribe: readonly string[];
  readonly publish: readonly string[];
  /** Whether a pattern of the list for `action` matches `topic` (`*`: any run of characters; `$` topics only by `$` patterns). */
  allows(action: 'subscribe' | 'publish', topic: string): boolean;
}

/** A verified connection token (JWT auth: `--jwt-secret` or `--jwks-url`). */
export interface TokenInfo {
  /** Its `sub`: the principal's id. */
  readonly subject: string;
  /** Its `exp` in milliseconds since the epoch; undefined when it has none (it never expires). */
  readonly expiresAt: number | undefined;
  /** Every claim of its payload. */
  readonly claims: Readonly<Record<string, unknown>>;
  /** Its topics claim, when it has one; without it the default rules apply. */
  readonly topics: TopicGrants | undefined;
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
  /** The connection's verified token with JWT auth (the latest one, after a refresh); undefined without JWT auth. */
  readonly token: TokenInfo | undefined;
  /**
   * Replaces the connection's token with a fresh one (JWT auth): verified like the first, and for
   * the same `sub`. Resolves to it (the expiry is then its `exp`); rejects with a HubError
   * (`ERR_BAD_TOKEN`) saying why, and the old token stands.
   */
  refreshToken(token: string): Promise<TokenInfo>;
  /** Free slot for the handler's per-connection state: an empty object until the handler sets it. */
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- the application's own shape
  data: any;
  /** Sends a message; a no-op once the connection has ended (or, under the `drop` policy, while its send queue is full). */
  send(data: MessageData): void;
  /**
   * Subscribes this connection to a topic (see `hub.publish`). False if it was already subscribed,
   * or the subscribe was refused (`trySubscribe` says why).
   */
  subscribe(topic: string): boolean;
  /**
   * Subscribes with a position: the publications after `since` that history still holds (up to
   * `recoveryMax`) are delivered first, in order, before any newer one, with no gap and no duplicate
   * at the seam. `recovered` says whether that was all of them; if not, the application should
   * reload its state from elsewhere (`position` is where the stream stands).
   */
  subscribe(topic: string, options: SubscribeOptions): Promise<SubscribeResult>;
  /** Subscribes, and says what came of it: over `maxSubscriptions` or `maxTopics` the subscribe is refused. */
  trySubscribe(topic: string): SubscribeOutcome;
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
   * Runs before the upgrade, after the cheap checks (limit, rates, origin) and, with JWT auth,
   * after the token was verified (`info.principal` is then `{ id: sub, claims }`). Return a
   * Principal to admit the client (it becomes `ctx.principal`), or a Response (401, 403, …) to
   * refuse it with that answer. Anything else is refused with 401; a throw is logged and answered 500.
   */
  authenticate?(request: Request, info: { readonly remoteAddress: string; readonly principal?: Principal | undefined }): Principal | Response | undefined | Promise<Principal | Response | undefined>;
  /**
   * Picks the subprotocol to answer from those the client offered (`Sec-WebSocket-Protocol`), or
   * undefined for none. Without this hook the server answers none: it never agrees to a protocol the
   * handler did not choose. An answer that was not offered is ignored (and logged).
   */
  selectProtocol?(offered: readonly string[], request: Request): string | undefined;
  onOpen?(ctx: HandlerContext): void | Promise<void>;
  onMessage?(ctx: HandlerContext, data: MessageData): void | Promise<void>;
  /**
   * Shapes a published message for this node's subscribers, with its offset in the topic's stream
   * (the pubsub protocol wraps it in its envelope). Runs once per publish per node, local or
   * remote, and once per recovered publication.
   */
  formatPublish?(topic: string, offset: number, data: MessageData): MessageData;
  /**
   * With `presenceEvents`: shapes the message the other subscribers of `topic` get when a
   * connection joins it (subscribes) or leaves it (unsubscribes, or ends). Without this hook there
   * are no presence events.
   */
  formatPresence?(event: 'join' | 'leave', topic: string, member: PresenceMember): MessageData;
  /**
   * A topic's stream was lost under its subscribers (Redis lost its data, or this node missed more
   * than history holds): what each subscriber gets before the publications that follow `position`.
   * The pubsub protocol sends `subscribed` with `recovered: false` (reload your state).
   */
  formatReset?(topic: string, position: StreamPosition): MessageData;
  /**
   * JWT auth: the connection's token expires in `inMs` milliseconds (called 30 s before, or at once
   * when less remains). Unless `ctx.refreshToken` gets a fresh one by then, the connection is closed
   * with 4001 at its `exp`. The pubsub protocol sends `{"type":"expiring","in":…}`.
   */
  onTokenExpiring?(ctx: HandlerContext, inMs: number): void;
  /** Called once when an open connection ends, with the same reason the signal was aborted with. */
  onClose?(ctx: HandlerContext, reason: ConnectionClosed): void | Promise<void>;
}

export interface PublishOptions {
  /** A connection (or its id) that should not receive this message, typically the publisher. */
  except?: HandlerContext | string;
}

/** What a handler factory is given: the hub's public API (the `Hub` class implements it). */
export interface HubApi {
  readonly log: Logger;
  /**
   * Sends a message to every subscriber of `topic`, on this node and (through the backplane) on the
   * others, and keeps it in the topic's history. Resolves to its position (and the local deliveries).
   * With the in-memory streams the local deliveries are made before it returns; with the Redis
   * store, once Redis has numbered it. Rejects if the store cannot take it (Redis unreachable).
   */
  publish(topic: string, data: MessageData, options?: PublishOptions): Promise<PublishResult>;
  /** Where `topic`'s stream stands now. */
  position(topic: string): Promise<StreamPosition>;
  /** Up to `limit` publications of `topic` after offset `since` (the newest when absent), as kept in history. */
  history(topic: string, options?: { since?: number; limit?: number }): Promise<{ position: StreamPosition; publications: readonly { offset: number; data: MessageData }[] }>;
  /**
   * Who is subscribed to `topic`: the count, and up to `limit` (1000) members. With the Redis store,
   * on every live node (rejects while Redis is away); otherwise on this node.
   */
  presence(topic: string, options?: { limit?: number }): Promise<Presence>;
  /** A live connection by id. */
  connection(id: string): HandlerContext | undefined;
  /** Kicks a connection: its signal is aborted with kind `kicked`, the socket closed with `code` (4000). */
  close(id: string, options?: { code?: number; reason?: string }): boolean;
}

/** Builds a handler for a hub (`--handler ./module.js` may export one). */
export type HandlerFactory = (hub: HubApi) => Handler;

/**
 * What the core needs of a socket. Hono's `WSContext`, `ws`'s WebSocket, Bun's ServerWebSocket (with
 * `bufferedAmount` bridged) and the web `WebSocket` all fit, so adapters hand over their runtime's
 * socket without wrapping it.
 */
export interface SocketLike {
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  readonly readyState: number;
  /**
   * Drops the socket at once without a closing handshake, where the runtime can. `false`: the
   * runtime could not drop it now (Deno); it goes later, and counts against the limit until its close event.
   */
  terminate?(): void | false;
  /** Sends a ping, where the runtime lets the application do so (Node, Bun). */
  ping?(): void;
  /** Bytes queued for sending (ws, web WebSocket). Used for the slow-consumer limit. */
  readonly bufferedAmount?: number;
}

/** A message as adapters report it: `bytes` is the size on the wire where the runtime knows it. */
export interface MessageEventLike {
  readonly data: unknown;
  readonly bytes?: number;
}

/** A close as adapters report it: `code` 0, 1006 or absent all mean that no close frame arrived. */
export interface CloseEventLike {
  readonly code?: number;
  readonly reason?: string;
  /**
   * Milliseconds the runtime may still hold the TCP connection after this report (Bun: uWebSockets
   * reports a close handshake done at once, then waits that long for the peer's FIN). The socket
   * counts against the limit until then. Absent or 0: the connection is gone.
   */
  readonly lingers?: number;
}

/** An error as adapters report it; `code` is the close code the WebSocket layer answered it with, where known. */
export interface ErrorEventLike {
  readonly error?: unknown;
  readonly code?: number | undefined;
}

/**
 * The events a runtime adapter drives for one socket: Hono's `WSEvents` (onOpen, onMessage, onClose,
 * onError), typed with what hubbub's adapters really pass (the runtime's own socket, not a WSContext;
 * plain event objects), plus two events Hono has no name for. The Connection is this object.
 */
export interface HubEvents {
  onOpen(event: unknown, socket: SocketLike): void;
  onMessage(event: MessageEventLike, socket: SocketLike): void;
  onClose(event: CloseEventLike | undefined, socket: SocketLike | undefined): void;
  onError(event: ErrorEventLike | undefined, socket: SocketLike | undefined): void;
  /** The peer answered a ping. */
  onPong(): void;
  /** The runtime's own idle timeout ended the socket (Deno, Bun's backstop). */
  onIdleTimeout(): void;
}

/**
 * A runtime's fast path for fan-out: `prepare` turns a message into something sent many times
 * without re-encoding it (on Node, a complete WebSocket frame), `sendPrepared` sends it to one socket.
 */
export interface FanOut<P = unknown> {
  prepare(data: MessageData): P;
  sendPrepared(socket: SocketLike, prepared: P): void;
  /** Runs `send`, whose many sends to one socket go out in one write where the runtime can batch them (a recovery's replay). */
  corked?(socket: SocketLike, send: () => void): void;
  /** The runtime's own topics (Bun): a publication to many sockets in one native call. */
  topics?: NativeTopics;
}

/**
 * A runtime's own pub/sub (Bun's `ws.subscribe` / `server.publish`), mirroring hubbub's topics so
 * that a publication is one native call instead of a send per socket. The core keeps deciding who
 * gets what (slow consumers, exclusions, recovery) and counts every delivery; it only takes a
 * socket out of the native topics while it must not get what they carry.
 */
export interface NativeTopics {
  subscribe(socket: SocketLike, topic: string): void;
  unsubscribe(socket: SocketLike, topic: string): void;
  /** Sends `data` to every socket natively subscribed to `topic` but `except` (itself natively subscribed to it). */
  publish(topic: string, data: MessageData, except?: SocketLike): void;
}
