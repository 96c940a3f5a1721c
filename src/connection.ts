// One connection: the events object the runtime adapter drives (HubEvents) and the context the
// handler sees (HandlerContext), in one small object with no per-connection closures. It changes its
// own state; everything beyond itself goes through the small host interface below (the registry).
// Runtime-free.
import type { CloseEventLike, ErrorEventLike, FanOut, Handler, HandlerContext, HubEvents, MessageData, MessageEventLike, Principal, SocketLike, SubscribeOptions, SubscribeOutcome, SubscribeResult, TokenInfo } from './contracts.ts';
import type { Counters } from './counters.ts';
import { closeReason, type CloseKind, type ConnectionClosed, CloseCode, HubError, isSendableCloseCode } from './errors.ts';
import type { Logger } from './log.ts';
import type { HubOptions } from './options.ts';

/** The options a connection enforces by itself. */
export type ConnectionLimits = Readonly<Pick<HubOptions, 'messageRate' | 'maxPayload' | 'maxBackpressure' | 'slowConsumer'>>;

/** What a connection calls back into (the registry implements it). */
export interface ConnectionHost {
  readonly limits: ConnectionLimits;
  readonly counters: Counters;
  readonly handler: Handler;
  readonly log: Logger;
  /** Heartbeats so far; a connection remembers the one during which its peer was last heard. */
  readonly heartbeats: number;
  /** The current one-second window of the per-connection message rate. */
  readonly rateWindow: number;
  /** Sweeps so far: each one means the event loop turned (a timer fired) since the one before. */
  readonly sweeps: number;
  /** The reservation's socket opened. False (and the socket is closed) if the reservation already ended. */
  open(conn: Connection, socket: SocketLike): boolean;
  /** The one way a connection ends (exactly once). */
  release(conn: Connection, reason: ConnectionClosed): boolean;
  /** The runtime reports the socket closed; `lingers` ms: it may hold the TCP connection that much longer. */
  socketGone(conn: Connection, lingers?: number): void;
  subscribe(conn: Connection, topic: string): SubscribeOutcome;
  subscribeFrom(conn: Connection, topic: string, options: SubscribeOptions): Promise<SubscribeResult>;
  unsubscribe(conn: Connection, topic: string): boolean;
  /** Verifies a fresh token for the connection (same sub) and puts it in place, with its new expiry. */
  refreshToken(conn: Connection, token: string): Promise<TokenInfo>;
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

/** The bits of Connection's #flags: the state in the low two, then the booleans. */
const STATE = 0b11;
const CLUSTER_SLOT = 1 << 2;
const TOKEN_WARNED = 1 << 3;
const OUT_OF_NATIVE_TOPICS = 1 << 4;
/** Connection times are kept as ms since this (small integers for weeks of uptime). */
const EPOCH = Date.now();

/**
 * A send queue over `maxBackpressure`: when it last made progress (went over, or shrank since the
 * last send; ms), during which sweep, and what it would be after the last send if nothing had been
 * written since.
 */
interface Backlog {
  drainedAt: number;
  drainedAtSweep: number;
  queuedAfterSend: number;
}

/**
 * How long a send queue may stay over `maxBackpressure` without draining, and how far over it may
 * go, before the slow-consumer policy applies. The grace is counted in time and in the hub's
 * sweeps: two sweeps (about a second of event loop apart) mean the runtime had turns to write in.
 */
const SLOW_CONSUMER_GRACE_MS = 1000;
const SLOW_CONSUMER_GRACE_SWEEPS = 2;
const SLOW_CONSUMER_HARD_FACTOR = 4;

interface Rare {
  principal?: Principal | undefined;
  token?: TokenInfo | undefined;
  releaseReason?: ConnectionClosed;
  /** Created on the first read of `signal`. */
  controller?: AbortController;
}

export class Connection implements HandlerContext, HubEvents {
  readonly id: string;
  readonly remoteAddress: string;
  // The handler's slot: an object from the first read, so `ctx.data.n = 0` works without setup.
  #data: unknown = undefined;
  /** Topics this connection is subscribed to: kept by the topic index, created on the first subscribe. */
  topics: Set<string> | undefined = undefined;
  // An idle crowd is mostly these objects: the fields are few and small. The state and four
  // booleans share one small integer; the time is ms since EPOCH (a small integer too, where a
  // Date.now() would be a heap number of its own); the slow-consumer bookkeeping exists only while
  // the send queue is over its limit.
  #flags: number = ConnectionState.Reserved;
  #socket: SocketLike | undefined = undefined;
  /** When the reservation was made, then when the socket opened (ms since EPOCH). */
  #time: number;
  /** The host heartbeat during which the peer was last heard (message or pong). */
  #heardAt = 0;
  /** While the send queue is over `maxBackpressure` (see #hasRoom); undefined under it. */
  #backlog: Backlog | undefined = undefined;
  /** Messages received in the current rate window, and which window that is. */
  #messagesInWindow = 0;
  #rateWindow = 0;
  /** What few connections carry (a principal, a token, a signal) or carry only at the end: apart, so an idle crowd's Connections stay small. */
  #rare: Rare | undefined = undefined;
  readonly #host: ConnectionHost;

  constructor(host: ConnectionHost, id: string, remoteAddress: string, admittedAt: number, principal: Principal | undefined, holdsClusterSlot: boolean, token?: TokenInfo) {
    this.#host = host;
    if (principal !== undefined || token !== undefined) this.#rare = { principal, token };
    this.id = id;
    this.remoteAddress = remoteAddress;
    this.#time = admittedAt - EPOCH;
    if (holdsClusterSlot) this.#flags |= CLUSTER_SLOT;
  }

  /** When the reservation was made (ms); used to expire reservations that never open. */
  get admittedAt(): number {
    return this.#time + EPOCH;
  }
  /** Holds a slot of the cluster limit (given back by the registry's release). */
  get holdsClusterSlot(): boolean {
    return (this.#flags & CLUSTER_SLOT) !== 0;
  }
  /** The handler was told that the current token expires soon (`onTokenExpiring`). */
  get tokenWarned(): boolean {
    return (this.#flags & TOKEN_WARNED) !== 0;
  }
  set tokenWarned(value: boolean) {
    this.#flags = value ? this.#flags | TOKEN_WARNED : this.#flags & ~TOKEN_WARNED;
  }
  /**
   * With the runtime's native topics (FanOut.topics, Bun): its socket is in them for every topic it
   * holds. False while it is a slow consumer whose messages are dropped (the registry's setNative).
   */
  get inNativeTopics(): boolean {
    return (this.#flags & OUT_OF_NATIVE_TOPICS) === 0;
  }
  set inNativeTopics(value: boolean) {
    this.#flags = value ? this.#flags & ~OUT_OF_NATIVE_TOPICS : this.#flags | OUT_OF_NATIVE_TOPICS;
  }

  get data(): any {
    return (this.#data ??= {});
  }
  set data(value: unknown) {
    this.#data = value;
  }

  get state(): ConnectionState {
    return (this.#flags & STATE) as ConnectionState;
  }
  get socket(): SocketLike | undefined {
    return this.#socket;
  }
  get openedAt(): number {
    return this.state === ConnectionState.Reserved ? 0 : this.#time + EPOCH;
  }
  get principal(): Principal | undefined {
    return this.#rare?.principal;
  }
  get token(): TokenInfo | undefined {
    return this.#rare?.token;
  }
  /** A refreshed token (the registry, after verifying it). */
  replaceToken(token: TokenInfo): void {
    (this.#rare ??= {}).token = token;
    this.tokenWarned = false;
  }
  get heardAt(): number {
    return this.#heardAt;
  }
  /** Set once, by the registry's release. */
  get releaseReason(): ConnectionClosed | undefined {
    return this.#rare?.releaseReason;
  }

  // ---- state transitions, made by the registry ----

  /** Reserved → Open. */
  markOpen(socket: SocketLike, openedAt: number, heardAt: number): void {
    this.#flags = (this.#flags & ~STATE) | ConnectionState.Open;
    this.#socket = socket;
    this.#time = openedAt - EPOCH;
    this.#heardAt = heardAt;
  }

  /** → Released, with the reason. Exactly once (the registry checks), first thing in its release. */
  markReleased(reason: ConnectionClosed): void {
    this.#flags = (this.#flags & ~STATE) | ConnectionState.Released;
    (this.#rare ??= {}).releaseReason = reason;
  }

  /** Aborts the signal with the release reason, if a signal was ever handed out (the registry's release, once). */
  abortSignal(): void {
    const controller = this.#rare?.controller;
    if (!controller) return;
    this.#host.counters.signalsPending--;
    controller.abort(this.#rare!.releaseReason);
  }

  // ---- HandlerContext ----

  get signal(): AbortSignal {
    const rare = (this.#rare ??= {});
    if (rare.controller) return rare.controller.signal;
    if (rare.releaseReason) return AbortSignal.abort(rare.releaseReason);
    // Created on first use: most sockets of a large idle crowd never need one.
    rare.controller = new AbortController();
    this.#host.counters.signalsPending++;
    return rare.controller.signal;
  }

  send(data: MessageData): void {
    if (this.state !== ConnectionState.Open) return;
    const bytes = byteLength(data);
    if (!this.#hasRoom(bytes)) return;
    this.#socket!.send(data);
    const counters = this.#host.counters;
    counters.messagesOut++;
    counters.bytesOut += bytes;
  }

  /** Sends a message encoded once for many sockets (`encodeOnce`: publish, presence, replay). False if not sent. */
  deliver(fanOut: FanOut | undefined, { payload, prepared, bytes }: Encoded): boolean {
    if (!this.admitNative(bytes)) return false;
    if (fanOut) fanOut.sendPrepared(this.#socket!, prepared);
    else this.#socket!.send(payload);
    return true;
  }

  /**
   * Whether a message encoded for many sockets goes to this one, counted as sent if so: checked
   * against the slow-consumer limit. `deliver` then sends it; with the runtime's native topics (one
   * native call for all) the hub does. False: not for this socket (not open, or a slow consumer:
   * dropped and counted, or released by the policy).
   */
  admitNative(bytes: number): boolean {
    if (this.state !== ConnectionState.Open || !this.#hasRoom(bytes)) return false;
    const counters = this.#host.counters;
    counters.messagesOut++;
    counters.bytesOut += bytes;
    return true;
  }

  /**
   * The slow-consumer limit. A queue over `maxBackpressure` bytes that makes no progress (nothing
   * of it written) for a second and two of the hub's sweeps, or that grows past four times the
   * limit, makes this a slow consumer: the message is not sent and the policy applies. `drop`
   * counts it (the client sees a gap in sequence numbers), `close` ends the connection with 1013.
   * A queue that is draining keeps its grace however long it stays over the limit: a fast reader
   * riding out a burst larger than the limit is not slow, and the 4× cap bounds memory regardless.
   * The sweeps keep one long turn of the event loop from counting: Deno writes only between turns
   * (Node too, once the kernel's buffer is full), so a burst published in one turn that lasts over
   * a second would otherwise read as a second without progress.
   */
  #hasRoom(bytes: number): boolean {
    const host = this.#host;
    const max = host.limits.maxBackpressure;
    const queued = max === 0 ? 0 : (this.#socket!.bufferedAmount ?? 0);
    if (queued <= max) {
      this.#backlog = undefined;
      return true;
    }
    const now = Date.now();
    let backlog = this.#backlog;
    if (!backlog) backlog = this.#backlog = { drainedAt: now, drainedAtSweep: host.sweeps, queuedAfterSend: 0 };
    else if (queued < backlog.queuedAfterSend) {
      backlog.drainedAt = now;
      backlog.drainedAtSweep = host.sweeps;
    }
    const stalled = now - backlog.drainedAt >= SLOW_CONSUMER_GRACE_MS && host.sweeps - backlog.drainedAtSweep >= SLOW_CONSUMER_GRACE_SWEEPS;
    if (queued <= max * SLOW_CONSUMER_HARD_FACTOR && !stalled) {
      backlog.queuedAfterSend = queued + bytes;
      return true;
    }
    backlog.queuedAfterSend = queued;
    if (host.limits.slowConsumer === 'drop') host.counters.dropped++;
    else host.release(this, closeReason('slow-consumer', undefined, 'send queue over the limit'));
    return false;
  }

  subscribe(topic: string): boolean;
  subscribe(topic: string, options: SubscribeOptions): Promise<SubscribeResult>;
  subscribe(topic: string, options?: SubscribeOptions): boolean | Promise<SubscribeResult> {
    if (options) return this.#host.subscribeFrom(this, topic, options);
    return this.trySubscribe(topic) === 'subscribed';
  }

  trySubscribe(topic: string): SubscribeOutcome {
    if (this.state !== ConnectionState.Open) return 'closed';
    return this.#host.subscribe(this, topic);
  }

  unsubscribe(topic: string): boolean {
    return this.#host.unsubscribe(this, topic);
  }

  refreshToken(token: string): Promise<TokenInfo> {
    return this.#host.refreshToken(this, token);
  }

  close(code: number = CloseCode.NORMAL, reason?: string): void {
    if (!isSendableCloseCode(code)) throw new HubError('ERR_INVALID_OPTION', `close code ${code} cannot be sent (use 1000, 1001-1003, 1007-1014 or 3000-4999)`);
    this.#host.release(this, closeReason('server-close', code, reason));
  }

  /** Ends the connection because the handler failed: 1011 for this socket only, logged with its id. */
  fail(stage: 'onOpen' | 'onMessage', error: unknown): void {
    if (this.state === ConnectionState.Released) return;
    this.#host.log.error('handler.error', { id: this.id, stage, error });
    this.#host.release(this, closeReason('handler-error', undefined, `${stage} failed`, error));
  }

  // ---- HubEvents: called by the runtime adapter ----

  onOpen(_event: unknown, socket: SocketLike): void {
    if (!this.#host.open(this, socket)) return;
    const { handler } = this.#host;
    if (!handler.onOpen) return;
    try {
      const result = handler.onOpen(this);
      if (result) result.then(undefined, (error) => this.fail('onOpen', error));
    } catch (error) {
      this.fail('onOpen', error);
    }
  }

  onMessage(event: MessageEventLike, _socket: SocketLike): void {
    if (this.state !== ConnectionState.Open) return;
    const host = this.#host;
    const { limits, counters, handler } = host;
    this.#heardAt = host.heartbeats;
    counters.messagesIn++;
    if (limits.messageRate > 0) {
      if (this.#rateWindow !== host.rateWindow) {
        this.#rateWindow = host.rateWindow;
        this.#messagesInWindow = 0;
      }
      if (++this.#messagesInWindow > limits.messageRate) {
        host.release(this, closeReason('rate-limited', undefined, 'message rate exceeded'));
        return;
      }
    }
    const raw = event.data;
    const data: MessageData = typeof raw === 'string' || raw instanceof Uint8Array ? raw : new Uint8Array(raw as ArrayBuffer);
    counters.bytesIn += event.bytes ?? byteLength(data);
    // ws enforces maxPayload while reading; runtimes without a limit (Deno) are held to it here.
    if (exceeds(data, limits.maxPayload)) {
      host.release(this, closeReason('message-too-big', undefined, 'message too big'));
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

  onPong(): void {
    this.#heardAt = this.#host.heartbeats;
  }

  onIdleTimeout(): void {
    this.#host.release(this, closeReason('idle', CloseCode.GOING_AWAY, 'no response to ping'));
  }

  onClose(event: CloseEventLike | undefined, _socket: SocketLike | undefined): void {
    const host = this.#host;
    if (this.state === ConnectionState.Released) {
      host.socketGone(this, event?.lingers);
      return;
    }
    // No code, 0 (Deno after a reset) or 1006 all mean: no close frame arrived.
    const code = event?.code || CloseCode.ABNORMAL;
    let kind: CloseKind;
    if (this.state === ConnectionState.Reserved) kind = 'handshake-failed';
    else kind = code === CloseCode.ABNORMAL ? 'connection-lost' : 'client-close';
    host.release(this, closeReason(kind, code, event?.reason || undefined));
    host.socketGone(this, event?.lingers);
  }

  onError(event: ErrorEventLike | undefined, _socket: SocketLike | undefined): void {
    if (this.state === ConnectionState.Released) return;
    // Adapters may say which close code the WebSocket layer answered the error with (ws does).
    const error = event?.error ?? event;
    const code = event?.code;
    this.#host.log.debug('connection.error', { id: this.id, error });
    const kind: CloseKind = code === CloseCode.MESSAGE_TOO_BIG ? 'message-too-big' : 'error';
    this.#host.release(this, closeReason(kind, code, error instanceof Error ? error.message : undefined, error));
  }
}

const encoder = new TextEncoder();

/** Bytes of a message on the wire: UTF-8 length for text, computed without encoding it. */
/** A message encoded once for many sockets: the payload, the runtime's prepared frame (fan-out), its size. */
export interface Encoded {
  readonly payload: MessageData;
  readonly prepared: unknown;
  readonly bytes: number;
}

export function encodeOnce(fanOut: FanOut | undefined, payload: MessageData): Encoded {
  return { payload, prepared: fanOut?.prepare(payload), bytes: byteLength(payload) };
}

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
