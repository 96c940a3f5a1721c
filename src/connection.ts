// One connection: the Hono WebSocket events object the adapter drives, and the context the
// handler sees, in one small object (no per-connection closures). Runtime-free.
import { closeReason, type CloseKind, type ConnectionClosed, CloseCode, HubError, isSendableCloseCode } from './errors.ts';
import type { Handler, HandlerContext, MessageData, Principal } from './handler.ts';
import type { Logger } from './log.ts';
import type { Registry } from './registry.ts';
import type { TopicIndex } from './topics.ts';

/**
 * What the core needs of a socket. Hono's `WSContext`, `ws`'s WebSocket and the web `WebSocket`
 * all fit, so adapters may hand over their runtime's socket without wrapping it.
 */
export interface SocketLike {
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  readonly readyState: number;
  /** Drops the socket at once without a closing handshake, where the runtime can. */
  terminate?(): void;
  /** Sends a ping, where the runtime lets the application do so (Node). */
  ping?(): void;
  /** Bytes queued for sending (ws, web WebSocket). Used for the slow-consumer limit. */
  readonly bufferedAmount?: number;
}

/**
 * A runtime's fast path for fan-out: `prepare` turns a message into something sent many times
 * without re-encoding it (on Node, a complete WebSocket frame), `sendPrepared` sends it to one socket.
 */
export interface FanOut<P = unknown> {
  prepare(data: MessageData): P;
  sendPrepared(socket: SocketLike, prepared: P): void;
}

/** The parts of a hub a connection calls back into. */
export interface HubCore {
  readonly registry: Registry;
  readonly handler: Handler;
  readonly log: Logger;
  readonly topics: TopicIndex;
}

export const ConnectionState = {
  /** Admitted, waiting for the upgrade to complete. Holds a slot. */
  Reserved: 0,
  /** Socket open, handler attached. Holds a slot. */
  Open: 1,
  /** Ended; the slot is free, the signal aborted. */
  Released: 2,
} as const;
export type ConnectionState = (typeof ConnectionState)[keyof typeof ConnectionState];

/** Hono's close event carries `code`; our adapters may pass just `{ code }`. */
interface CloseEventLike {
  readonly code?: number;
  readonly reason?: string;
}

/** How long a send queue may stay over `maxBackpressure`, and how far over it may go, before the slow-consumer policy applies. */
const SLOW_CONSUMER_GRACE_MS = 1000;
const SLOW_CONSUMER_HARD_FACTOR = 4;

export class Connection implements HandlerContext {
  readonly id: string;
  readonly remoteAddress: string;
  /** When the reservation was made (ms); used to expire reservations that never open. */
  readonly admittedAt: number;
  openedAt = 0;
  state: ConnectionState = ConnectionState.Reserved;
  socket: SocketLike | undefined = undefined;
  data: unknown = undefined;
  principal: Principal | undefined = undefined;
  /** Holds a slot of the registry's shared SlotPool (cluster mode). */
  pooled = false;
  /** Topics this connection is subscribed to; created on the first subscribe. */
  topics: Set<string> | undefined = undefined;
  /** The registry heartbeat during which the peer was last heard (message or pong). */
  heardAt = 0;
  /** When the send queue went over `maxBackpressure` (ms), 0 while under it. */
  overLimitSince = 0;
  /** Messages received in the current rate window, and which window that is. */
  messagesInWindow = 0;
  rateWindow = 0;
  /** Set once, by the registry's release. */
  releaseReason: ConnectionClosed | undefined = undefined;
  readonly core: HubCore;
  // Created on first use of `signal`: most sockets of a large idle crowd never need one.
  #controller: AbortController | undefined = undefined;

  constructor(core: HubCore, id: string, remoteAddress: string, admittedAt: number) {
    this.core = core;
    this.id = id;
    this.remoteAddress = remoteAddress;
    this.admittedAt = admittedAt;
  }

  get signal(): AbortSignal {
    if (this.#controller) return this.#controller.signal;
    if (this.releaseReason) return AbortSignal.abort(this.releaseReason);
    this.#controller = new AbortController();
    this.core.registry.signalsPending++;
    return this.#controller.signal;
  }

  /** Called by the registry's release, exactly once. */
  abortSignal(reason: ConnectionClosed): void {
    if (!this.#controller) return;
    this.core.registry.signalsPending--;
    this.#controller.abort(reason);
  }

  send(data: MessageData): void {
    if (this.state !== ConnectionState.Open || !this.#hasRoom()) return;
    this.socket!.send(data);
    const registry = this.core.registry;
    registry.messagesOut++;
    registry.bytesOut += byteLength(data);
  }

  /** Sends a message prepared once for many sockets (hub.publish). False if not sent. */
  deliver<P>(fanOut: FanOut<P> | undefined, data: MessageData, prepared: P, bytes: number): boolean {
    if (this.state !== ConnectionState.Open || !this.#hasRoom()) return false;
    if (fanOut) fanOut.sendPrepared(this.socket!, prepared);
    else this.socket!.send(data);
    const registry = this.core.registry;
    registry.messagesOut++;
    registry.bytesOut += bytes;
    return true;
  }

  /**
   * The slow-consumer limit. A queue over `maxBackpressure` bytes that has not drained within a
   * second, or that grows past four times the limit, makes this a slow consumer: the message is
   * not sent and the policy applies. `drop` counts it (the client sees a gap in sequence numbers),
   * `close` ends the connection with 1013. The grace lets a fast reader ride out a burst the server
   * itself has not flushed yet (Deno writes asynchronously); the 4× cap bounds memory regardless.
   */
  #hasRoom(): boolean {
    const registry = this.core.registry;
    const max = registry.limits.maxBackpressure;
    const queued = max === 0 ? 0 : (this.socket!.bufferedAmount ?? 0);
    if (queued <= max) {
      this.overLimitSince = 0;
      return true;
    }
    const now = Date.now();
    if (this.overLimitSince === 0) this.overLimitSince = now;
    if (queued <= max * SLOW_CONSUMER_HARD_FACTOR && now - this.overLimitSince < SLOW_CONSUMER_GRACE_MS) return true;
    if (registry.limits.slowConsumer === 'drop') registry.dropped++;
    else registry.release(this, closeReason('slow-consumer', undefined, 'send queue over the limit'));
    return false;
  }

  subscribe(topic: string): boolean {
    if (this.state !== ConnectionState.Open) return false;
    return this.core.topics.subscribe(this, topic);
  }

  unsubscribe(topic: string): boolean {
    return this.core.topics.unsubscribe(this, topic);
  }

  close(code: number = CloseCode.NORMAL, reason?: string): void {
    if (!isSendableCloseCode(code)) throw new HubError('ERR_INVALID_OPTION', `close code ${code} cannot be sent (use 1000, 1001-1003, 1007-1014 or 3000-4999)`);
    this.core.registry.release(this, closeReason('server-close', code, reason));
  }

  /** Ends the connection because the handler failed: 1011 for this socket only, logged with its id. */
  fail(stage: 'onOpen' | 'onMessage', error: unknown): void {
    if (this.state === ConnectionState.Released) return;
    this.core.log.error('handler.error', { id: this.id, stage, error });
    this.core.registry.release(this, closeReason('handler-error', undefined, `${stage} failed`, error));
  }

  // ---- Hono WSEvents: called by the runtime adapter ----

  onOpen(_event: unknown, socket: SocketLike): void {
    if (!this.core.registry.open(this, socket)) return;
    const { handler } = this.core;
    if (!handler.onOpen) return;
    try {
      const result = handler.onOpen(this);
      if (result) result.then(undefined, (error) => this.fail('onOpen', error));
    } catch (error) {
      this.fail('onOpen', error);
    }
  }

  onMessage(event: { readonly data: unknown; readonly bytes?: number }, _socket: SocketLike): void {
    if (this.state !== ConnectionState.Open) return;
    const { registry, handler } = this.core;
    const limits = registry.limits;
    this.heardAt = registry.heartbeats;
    registry.messagesIn++;
    if (limits.messageRate > 0) {
      if (this.rateWindow !== registry.rateWindow) {
        this.rateWindow = registry.rateWindow;
        this.messagesInWindow = 0;
      }
      if (++this.messagesInWindow > limits.messageRate) {
        registry.release(this, closeReason('rate-limited', undefined, 'message rate exceeded'));
        return;
      }
    }
    const raw = event.data;
    const data: MessageData = typeof raw === 'string' || raw instanceof Uint8Array ? raw : new Uint8Array(raw as ArrayBuffer);
    registry.bytesIn += event.bytes ?? byteLength(data);
    // ws enforces maxPayload while reading; runtimes without a limit (Deno) are held to it here.
    if (exceeds(data, limits.maxPayload)) {
      registry.release(this, closeReason('message-too-big', undefined, 'message too big'));
      return;
    }
    if (!handler.onMessage) return;
    try {
      const result = handler.onMessage(this, data);
      if (result) result.then(undefined, (error) => this.fail('onMessage', error));
    } catch (error) {
      this.fail('onMessage', error);
    }
  }

  /** hubbub extension to Hono's events: the peer answered a ping. */
  onPong(): void {
    this.heardAt = this.core.registry.heartbeats;
  }

  /** hubbub extension: the runtime's own idle timeout ended the socket (Deno). */
  onIdleTimeout(): void {
    this.core.registry.release(this, closeReason('idle', CloseCode.GOING_AWAY, 'no response to ping'));
  }

  onClose(event: CloseEventLike | undefined, _socket: unknown): void {
    const registry = this.core.registry;
    if (this.state === ConnectionState.Released) {
      registry.socketGone(this);
      return;
    }
    // No code, 0 (Deno after a reset) or 1006 all mean: no close frame arrived.
    const code = event?.code || CloseCode.ABNORMAL;
    let kind: CloseKind;
    if (this.state === ConnectionState.Reserved) kind = 'handshake-failed';
    else kind = code === CloseCode.ABNORMAL ? 'connection-lost' : 'client-close';
    registry.release(this, closeReason(kind, code, event?.reason || undefined));
    registry.socketGone(this);
  }

  onError(event: unknown, _socket: unknown): void {
    if (this.state === ConnectionState.Released) return;
    // Adapters may say which close code the WebSocket layer answered the error with (ws does).
    const { error = event, code } = (event ?? {}) as { error?: unknown; code?: number };
    this.core.log.debug('connection.error', { id: this.id, error });
    const kind: CloseKind = code === CloseCode.MESSAGE_TOO_BIG ? 'message-too-big' : 'error';
    this.core.registry.release(this, closeReason(kind, code, error instanceof Error ? error.message : undefined, error));
  }
}

const encoder = new TextEncoder();

/** Bytes of a message on the wire: UTF-8 length for text, computed without encoding it. */
export function byteLength(data: MessageData): number {
  if (typeof data !== 'string') return data.byteLength;
  let bytes = data.length;
  for (let i = 0; i < data.length; i++) {
    const c = data.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) bytes += 1;
    else if (c >= 0xd800 && c <= 0xdbff) {
      bytes += 2; // a surrogate pair: 4 bytes for 2 units
      i++;
    } else bytes += 2;
  }
  return bytes;
}

/** Whether a message is over `max` bytes; strings are measured in UTF-8 only when it could matter. */
function exceeds(data: MessageData, max: number): boolean {
  if (typeof data !== 'string') return data.byteLength > max;
  if (data.length > max) return true; // every UTF-16 unit is at least one UTF-8 byte
  if (data.length * 3 <= max) return false; // and at most three
  return encoder.encode(data).byteLength > max;
}
