// The hub wires the parts together (counters, registry and its admission, topics, handler, logger,
// backplane, cluster limit) and runs what spans them: the sweeper, publish, start and shutdown.
// Its public API is what handlers and applications use. Runtime-free: runtimes serve it through
// createApp and an adapter.
import { TokenVerifier } from './admission/token.ts';
import type { Backplane, BackplaneStats } from './backplane/contract.ts';
import type { ClusterLimit, ClusterLimitStats } from './cluster-limit/contract.ts';
import { byteLength, encodeOnce, type Connection } from './connection.ts';
import type { FanOut, Handler, HandlerContext, HandlerFactory, HubApi, MessageData, Presence, PresenceMember, PublishOptions, PublishResult, NativeTopics, StreamPosition } from './contracts.ts';
import { createCounters, type Counters } from './counters.ts';
import { localPresence } from './delivery/presence.ts';
import { MemoryIdempotency, type IdempotencyStore } from './delivery/idempotency.ts';
import { SharedReads } from './delivery/shared-reads.ts';
import { MemoryStreams, type Publication } from './delivery/streams.ts';
import { TopicIndex, type Topic } from './delivery/topics.ts';
import { HubError } from './errors.ts';
import { builtinHandlers } from './handlers/index.ts';
import { createLogger, rateLimitedFailures, type Logger } from './log.ts';
import { resolveOptions, type HubOptions } from './options.ts';
import type { HubStats } from './stats.ts';
import { didYouMean } from './validators.ts';
import { Registry } from './registry.ts';
import { unrefInterval, unrefTimeout, withDeadline } from './timers.ts';

export type { HubStats } from './stats.ts';

export interface ShutdownResult {
  /** Sockets that had not finished closing in time (the deadline, or closeTimeout before it) and were dropped. */
  forced: number;
  durationMs: number;
}

const SWEEP_INTERVAL_MS = 1000;
/** Publications a node keeps from its recent recovery reads of the shared store (SharedReads), across topics. */
const SHARED_READS_KEPT = 20_000;
/** Reads of what a node missed, tried this often (250 ms apart, doubling to 2 s: ~10 s in all) before its subscribers are reset. */
const CATCH_UP_ATTEMPTS = 8;

/** How a runtime builds its hub (not user options: these follow from where the hub runs). */
export interface HubInit {
  /** 'timer' (default): the hub sweeps every second by itself. 'manual': the runtime calls `hub.sweep()`. */
  sweeper?: 'timer' | 'manual';
  /**
   * Put before every connection id, to keep ids unique across processes or instances (cluster
   * worker, Durable Object). With a backplane, a random part per process comes first.
   */
  idPrefix?: string;
  /** A cluster limit the runtime provides (a Node cluster worker: the primary's). `--cluster-limit` (Redis) takes precedence. */
  clusterLimit?: ClusterLimit;
}

/**
 * The backplane channel the nodes tell each other server-side actions on (a disconnect by id or
 * principal). Its name holds a control character, which no topic may (isValidTopic): no client and
 * no handler can subscribe to it or publish on it.
 */
const CONTROL_TOPIC = '\u0000hubbub.control';

/** Who `hub.disconnect` closes: one connection, or every connection of a principal. */
export interface DisconnectTarget {
  readonly id?: string;
  readonly principal?: string;
}

export class Hub implements HubApi {
  readonly options: HubOptions;
  readonly counters: Counters = createCounters();
  readonly topics: TopicIndex<Connection>;
  /** Positions and history of every topic (in memory). */
  readonly streams: MemoryStreams;
  readonly registry: Registry;
  readonly handler: Handler;
  readonly log: Logger;
  /** JWT connection auth (`--jwt-secret` or `--jwks-url`); undefined without it. */
  readonly tokens: TokenVerifier | undefined;
  readonly startedAt = Date.now();
  /** How late the last sweeper tick fired (ms): the event loop's lag. */
  eventLoopLagMs = 0;
  #backplane: Backplane | undefined;
  #sharedReads: SharedReads | undefined;
  #redisClusterLimit: { stats(): ClusterLimitStats; close(): Promise<void> } | undefined;
  #started: Promise<void> | undefined;
  #sweeper: ReturnType<typeof setInterval> | undefined;
  readonly #sweepTick: number;
  #nextHeartbeat: number;
  #shutdown: Promise<ShutdownResult> | undefined;
  readonly #reportFailure: (stage: string, error: unknown) => void;

  constructor(options: HubOptions, log?: Logger, init: HubInit = {}) {
    this.options = options;
    this.log = log ?? createLogger(options.logLevel);
    // A broker that is down fails the same way many times a second: rate-limited in the log.
    this.#reportFailure = rateLimitedFailures(this.log, 'backplane.error');
    this.topics = new TopicIndex<Connection>(options);
    this.streams = new MemoryStreams({ ...options, maxStreams: options.maxTopics > 0 ? options.maxTopics : 1_000_000 });
    this.#setTopicInterest();
    this.topics.membership = { joined: (conn, t) => this.#membershipChanged('join', conn, t), left: (conn, t) => this.#membershipChanged('leave', conn, t) };
    this.handler = this.#resolveHandler(options.handler);
    // With a backplane, ids travel to other nodes (the pubsub `from`): a random part per process keeps
    // them unique across the nodes, which each count from 0.
    const idPrefix = options.backplane === '' ? init.idPrefix : `${randomIdPart()}-${init.idPrefix ?? ''}`;
    this.registry = new Registry({ limits: options, counters: this.counters, handler: this.handler, log: this.log, topics: this.topics, streams: this.streams, idPrefix });
    if (init.clusterLimit) this.registry.admission.useClusterLimit(init.clusterLimit);
    if (options.jwtSecret !== '' || options.jwksUrl !== '') this.registry.tokens = this.tokens = new TokenVerifier(options, this.log);
    // One sweeper for the whole hub, never a timer per socket: reservation expiry, the message-rate
    // window, pruning of rate buckets, and heartbeats.
    const tick = Math.min(SWEEP_INTERVAL_MS, options.handshakeTimeout, options.heartbeatInterval || SWEEP_INTERVAL_MS);
    this.#sweepTick = tick;
    this.#nextHeartbeat = Date.now() + options.heartbeatInterval;
    if (init.sweeper === 'manual') return;
    let expected = Date.now() + tick;
    this.#sweeper = unrefInterval(() => {
      const now = Date.now();
      // How late this tick fired: the event loop's lag, as seen by a timer.
      this.eventLoopLagMs = Math.max(0, now - expected);
      expected = now + tick;
      this.sweep(now);
    }, tick);
  }

  /**
   * The sweeper's work: count the sweep (the slow-consumer grace is counted in sweeps too), expire reservations, drop sockets whose
   * close timed out, forget lingering sockets whose time is over, start a new message-rate window, prune rate buckets, and send the heartbeat when it is due. A timer runs it every second (or sooner, with short
   * timeouts); with `sweeper: 'manual'` the runtime calls it itself (workerd, where a pending timer
   * would keep a Durable Object from hibernating).
   */
  sweep(now: number = Date.now()): void {
    const r = this.registry;
    r.sweeps++;
    r.expireReservations(now);
    r.expireClosing(now);
    r.expireLingering(now);
    r.nextRateWindow(now);
    r.expireTokens(now);
    this.streams.sweep(now);
    this.#sharedReads?.sweep(now);
    const interval = this.options.heartbeatInterval;
    if (interval > 0 && now + this.#sweepTick / 2 >= this.#nextHeartbeat) {
      this.#nextHeartbeat = now + interval;
      const dropped = r.heartbeat();
      if (dropped > 0) this.log.info('heartbeat.dropped', { dropped, live: r.liveConnections.size });
    }
  }

  #resolveHandler(spec: HubOptions['handler']): Handler {
    if (typeof spec === 'function') {
      const handler = (spec as HandlerFactory)(this);
      if (!handler || typeof handler !== 'object') throw new HubError('ERR_INVALID_OPTION', 'option handler: the factory must return a handler object');
      return checkHandler(handler);
    }
    if (typeof spec === 'string') {
      const builtin = builtinHandlers[spec];
      if (!builtin) throw new HubError('ERR_INVALID_OPTION', `option handler must be one of ${Object.keys(builtinHandlers).join(', ')} or a handler object (got ${JSON.stringify(spec)})`);
      return builtin(this);
    }
    return checkHandler(spec);
  }

  /** The serving runtime's fan-out fast path (set by createApp); the registry keeps it (recovery replays use it too). */
  useFanOut(fanOut: FanOut | undefined): void {
    this.registry.fanOut = fanOut;
  }

  /**
   * Sends a message to every subscriber of `topic`: local ones directly, encoding it once (on Node,
   * one WebSocket frame written to every socket), and other nodes through the backplane, which
   * deliver it to theirs. With a shared store (Redis, NATS JetStream), the store numbers it and
   * every node (this one too) gets it from there, in offset order. Every subscriber gets it exactly once.
   */
  async publish(topic: string, data: MessageData, options: PublishOptions = {}): Promise<PublishResult> {
    if (topic === CONTROL_TOPIC) throw new HubError('ERR_INVALID_TOPIC', 'that topic is reserved for the nodes\' own messages');
    const shared = this.registry.shared;
    if (shared) {
      const except = typeof options.except === 'string' ? options.except : options.except?.id;
      return shared.append(topic, data, except);
    }
    this.#backplane?.publish(topic, data);
    const except = typeof options.except === 'string' ? this.registry.liveConnections.get(options.except) : options.except;
    return this.#deliverLocal(topic, data, except);
  }

  async position(topic: string): Promise<StreamPosition> {
    const shared = this.registry.shared;
    return shared ? (await shared.read(topic, { limit: 0 })).position : this.streams.position(topic);
  }

  async history(topic: string, options: { since?: number; limit?: number } = {}): Promise<{ position: StreamPosition; publications: readonly Publication[] }> {
    const limit = options.limit ?? this.options.historySize;
    const shared = this.registry.shared;
    if (shared) return shared.read(topic, { limit, ...(options.since !== undefined ? { after: options.since } : {}) });
    return this.streams.history(topic, { limit, ...(options.since !== undefined ? { since: options.since } : {}) });
  }

  /**
   * Gives the publication its offset and keeps it in history, then delivers it to this node's
   * subscribers, all in one synchronous step: a recovering subscribe (registry.subscribeFrom) sees
   * it either in history or live, never both. (With a backplane that keeps no positions, a custom one, each node numbers what it delivers.)
   */
  #deliverLocal(topic: string, data: MessageData, except?: HandlerContext): PublishResult {
    const { offset, epoch } = this.streams.append(topic, data);
    const t = this.topics.get(topic);
    if (!t) return { offset, epoch, delivered: 0 };
    const payload = this.handler.formatPublish ? this.handler.formatPublish(topic, offset, data) : data;
    return { offset, epoch, delivered: this.#deliverTo(t, payload, except) };
  }

  /**
   * A publication numbered by the shared store, as the broker hands it to this node (in offset
   * order). Connections whose subscribe is still reading the store get it held, for after their replay.
   */
  #deliverShared(topic: string, body: MessageData, position: StreamPosition, exceptId?: string): void {
    const queue = this.#catchingUp.get(topic);
    if (queue) {
      queue.push({ body, position, exceptId });
      return;
    }
    const seen = this.registry.heard.get(topic);
    if (seen && seen.epoch === position.epoch && position.offset <= seen.offset) return; // heard already (a catch-up had it)
    if (seen && (seen.epoch !== position.epoch || position.offset > seen.offset + 1)) {
      // Offsets this node never heard (its broker subscription was down), or a new stream: catch
      // up from the store first; what arrives meanwhile waits behind it, in order.
      this.#catchUp(topic, seen, [{ body, position, exceptId }]);
      return;
    }
    this.#deliverHeard(topic, body, position, exceptId);
  }

  /** Pending publications per topic while this node reads what it missed from the store. */
  readonly #catchingUp = new Map<string, Heard[]>();

  /**
   * Reads from the store what this node missed of `topic` after `seen`, delivers it, then what
   * waited. If the store no longer has it all (a new epoch: the store lost its data; or history too
   * short), the topic's local subscribers are told their position is gone (handler.formatReset).
   */
  #catchUp(topic: string, seen: StreamPosition, queue: Heard[]): void {
    this.#catchingUp.set(topic, queue);
    this.#readMissed(topic, seen, queue, 0);
  }

  #readMissed(topic: string, seen: StreamPosition, queue: Heard[], attempt: number): void {
    void this.registry.shared!.read(topic, { after: seen.offset, epoch: seen.epoch, limit: this.options.recoveryMax, recover: true }).then(
      (read) => {
        if (read.complete) {
          for (const p of read.publications) this.#deliverHeard(topic, p.data, { offset: p.offset, epoch: read.position.epoch });
        } else {
          // Told to start again just before the first publication that waited (if it is of the stream read).
          const first = queue[0];
          this.#resetSubscribers(topic, seen, first && first.position.epoch === read.position.epoch ? { offset: Math.min(read.position.offset, first.position.offset - 1), epoch: read.position.epoch } : read.position);
        }
        this.#caughtUp(topic, queue);
      },
      (error: unknown) => {
        this.#reportFailure('backplane.catch-up', error);
        // The store cannot say now what was missed: after a partition the subscriber connection
        // may be back before the one that reads. Ask again while what arrives waits, in order.
        if (this.registry.state !== 'closed' && attempt + 1 < CATCH_UP_ATTEMPTS) {
          unrefTimeout(() => this.#readMissed(topic, seen, queue, attempt + 1), Math.min(2000, 250 * 2 ** attempt));
          return;
        }
        // Still not: the subscribers are told their position is gone (they reload), never left
        // with a gap they cannot see. With nothing waiting, the next publication heard tries again.
        const first = queue[0];
        if (first) this.#resetSubscribers(topic, seen, { offset: first.position.offset - 1, epoch: first.position.epoch }, 'the store could not be read');
        this.#caughtUp(topic, queue);
      },
    );
  }

  /** The catch-up of `topic` is over: what arrived meanwhile, in order; anything already heard is skipped, a new gap is caught up again. */
  #caughtUp(topic: string, queue: Heard[]): void {
    this.#catchingUp.delete(topic);
    for (let i = 0; i < queue.length; i++) {
      const m = queue[i]!;
      this.#deliverShared(topic, m.body, m.position, m.exceptId);
      const next = this.#catchingUp.get(topic);
      if (next) {
        next.push(...queue.slice(i + 1));
        return;
      }
    }
  }

  /**
   * Tells a topic's local subscribers that the stream they followed is gone after `seen`: they
   * should reload, and go on from `position` (pubsub: `subscribed` with `recovered: false`). A gap, counted and logged.
   */
  #resetSubscribers(topic: string, seen: StreamPosition, position: StreamPosition, why?: string): void {
    this.counters.gaps++;
    this.log.warn('stream.reset', { topic, from: seen, to: position, ...(why ? { why } : {}) });
    this.registry.heard.set(topic, position);
    const t = this.topics.get(topic);
    const format = this.handler.formatReset;
    if (t && format) this.#deliverTo(t, format(topic, position));
  }

  /** After an outage of the broker: every topic this node listens to is checked against the store, and caught up. */
  #catchUpAll(): void {
    const shared = this.registry.shared;
    if (!shared) return;
    for (const [topic, seen] of this.registry.heard) {
      if (this.#catchingUp.has(topic)) continue;
      void shared.read(topic, { limit: 0 }).then(
        (read) => {
          if (this.#catchingUp.has(topic) || this.registry.heard.get(topic) !== seen) return;
          if (read.position.epoch !== seen.epoch || read.position.offset > seen.offset) this.#catchUp(topic, seen, []);
        },
        (error: unknown) => this.#reportFailure('backplane.catch-up', error),
      );
    }
  }

  /** Delivers a publication of the shared store in order after the last one heard. */
  #deliverHeard(topic: string, body: MessageData, position: StreamPosition, exceptId?: string): void {
    this.registry.heard.set(topic, position);
    const t = this.topics.get(topic);
    if (!t) return;
    const except = exceptId === undefined ? undefined : this.registry.liveConnections.get(exceptId);
    const payload = this.handler.formatPublish ? this.handler.formatPublish(topic, position.offset, body) : body;
    const waiting = this.registry.recovering.get(topic);
    if (!waiting) {
      this.#deliverTo(t, payload, except);
      return;
    }
    // A subscriber still reading the shared store gets live publications held, or skipped up to
    // its read's position: per socket, so this one goes out socket by socket, native topics or not
    // (ws.send after native publishes keeps their order: Bun sends what its topics queued first).
    const fanOut = this.registry.fanOut;
    const encoded = encodeOnce(fanOut, payload);
    const publication = { offset: position.offset, data: body };
    for (const conn of t.subscribers) {
      if (conn === except) continue;
      const hold = waiting.get(conn);
      if (!hold) conn.deliver(fanOut, encoded);
      else if (hold.buffer) hold.buffer.push(publication);
      else {
        if (position.offset > hold.floor) conn.deliver(fanOut, encoded);
        if (position.offset >= hold.floor) this.registry.unhold(topic, conn);
      }
    }
  }

  /** Sends one message to every subscriber of a topic but `except`, encoded once (on Node, one frame; on Bun, one native publish). */
  #deliverTo(t: Topic<Connection>, payload: MessageData, except?: HandlerContext): number {
    const fanOut = this.registry.fanOut;
    if (fanOut?.topics) return this.#publishNative(fanOut.topics, t, payload, except);
    const encoded = encodeOnce(fanOut, payload);
    let delivered = 0;
    for (const conn of t.subscribers) {
      if (conn !== except && conn.deliver(fanOut, encoded)) delivered++;
    }
    return delivered;
  }

  /**
   * One native publication (Bun's `server.publish`) instead of a send per socket. Every subscriber
   * is still checked against the slow-consumer limit and counted here, as `deliver` would: one whose
   * message is dropped leaves the native topics before the publish (and comes back at the first
   * publication it has room for), one the policy closes left them in its release. `except` is
   * excluded natively (Bun's `ws.publish` skips the socket publishing) when it is in them.
   */
  #publishNative(native: NativeTopics, t: Topic<Connection>, payload: MessageData, except?: HandlerContext): number {
    const registry = this.registry;
    const bytes = byteLength(payload);
    let delivered = 0;
    for (const conn of t.subscribers) {
      if (conn === except) continue;
      if (conn.admitNative(bytes)) {
        if (!conn.inNativeTopics) registry.setNative(conn, true);
        delivered++;
      } else registry.setNative(conn, false);
    }
    if (delivered === 0) return 0;
    const publisher = except as Connection | undefined;
    const excluded = publisher && t.subscribers.has(publisher) && publisher.inNativeTopics ? publisher.socket : undefined;
    native.publish(t.name, payload, excluded);
    return delivered;
  }

  /** Who is subscribed to `topic`: on every node with the Redis store (it rejects while Redis is away), else on this one. */
  async presence(topic: string, options: { limit?: number } = {}): Promise<Presence> {
    const limit = options.limit ?? PRESENCE_LIMIT;
    const shared = this.#backplane?.presence;
    if (shared) return shared.read(topic, limit);
    return localPresence(topic, this.topics.get(topic)?.subscribers, limit, memberOf);
  }

  /** A subscriber joined or left a topic: the shared presence is told, and with presenceEvents the topic's other subscribers, here and on the other nodes. */
  #membershipChanged(event: 'join' | 'leave', conn: Connection, topic: string): void {
    const backplane = this.#backplane;
    const shared = backplane?.presence;
    if (!shared && !this.options.presenceEvents) return;
    const member = memberOf(conn);
    if (shared) {
      if (event === 'join') shared.join(topic, member);
      else shared.leave(topic, member);
    }
    if (!this.options.presenceEvents) return;
    backplane?.announce(topic, event, member);
    this.#announce(event, topic, member, conn);
  }

  /** A join or leave, told to the topic's subscribers on this node (but `except`, the one it is about). */
  #announce(event: 'join' | 'leave', topic: string, member: PresenceMember, except?: Connection): void {
    const t = this.topics.get(topic);
    const format = this.handler.formatPresence;
    if (t && format) this.#deliverTo(t, format(event, topic, member), except);
  }

  /** This node's subscribers, topic by topic (what the shared presence writes again after losing them). */
  *#members(): Generator<[string, Iterable<PresenceMember>]> {
    for (const name of this.topics.names()) {
      const t = this.topics.get(name);
      if (t) yield [name, [...t.subscribers].map(memberOf)];
    }
  }

  /** The topic index tells the streams (and the backplane, once started) when a topic gains its first local subscriber and loses its last. */
  #setTopicInterest(): void {
    this.topics.interest = {
      topicAdded: (t) => {
        this.streams.hold(t);
        this.#backplane?.subscribe(t);
      },
      topicRemoved: (t) => {
        this.streams.release(t);
        this.registry.heard.delete(t);
        this.registry.recovering.delete(t);
        this.#backplane?.unsubscribe(t);
      },
    };
  }

  /**
   * Connects what the options name: the cluster limit in Redis first (so that no upgrade is admitted
   * past it), then the backplane. Serving entries call it before they listen; calling it again
   * returns the same promise.
   */
  start(): Promise<void> {
    this.#started ??= this.#startClusterLimit()
      .then(() => this.#startBackplane())
      .then(() => this.tokens?.start());
    return this.#started;
  }

  async #startBackplane(): Promise<void> {
    const spec = this.options.backplane;
    if (spec === '') return;
    const backplane = typeof spec === 'string' ? (await import('./backplane/index.ts')).backplaneFromUrl(spec, { historySize: this.options.historySize, historyTtl: this.options.historyTtl }) : spec;
    this.#backplane = backplane;
    // Topics that already have subscribers (a handler that subscribed before start) are listened for too.
    for (const t of this.topics.names()) backplane.subscribe(t);
    backplane.subscribe(CONTROL_TOPIC);
    // Recovery reads go through SharedReads: a storm of subscribers coming back reads and frames each publication once.
    this.#sharedReads = backplane.streams ? new SharedReads(backplane.streams, SHARED_READS_KEPT) : undefined;
    this.registry.shared = this.#sharedReads;
    await backplane.start({
      deliver: (topic, data, position, except) =>
        topic === CONTROL_TOPIC ? this.#controlled(data, position) : position ? this.#deliverShared(topic, data, position, except) : void this.#deliverLocal(topic, data),
      announced: (topic, event, member) => this.#announce(event, topic, member),
      members: () => this.#members(),
      stateChanged: (state, detail) => {
        (state === 'connected' ? this.log.info : this.log.warn)('backplane.state', { kind: backplane.kind, state, detail });
        if (state === 'connected') this.#catchUpAll();
      },
      failed: this.#reportFailure,
    });
    this.log.info('backplane.start', { kind: backplane.kind, node: backplane.nodeId, state: backplane.stats().state });
  }

  async #startClusterLimit(): Promise<void> {
    const { clusterLimit, maxConnections, clusterName, slotBlock, leaseTime } = this.options;
    if (clusterLimit === '') return;
    const { RedisClusterLimit } = await import('./cluster-limit/redis.ts');
    const limit = new RedisClusterLimit({
      url: clusterLimit,
      limit: maxConnections,
      name: clusterName,
      block: slotBlock,
      leaseTime,
      onStateChange: (state, detail) =>
        (state === 'connected' ? this.log.info : this.log.warn)('cluster-limit.state', { state, detail, fallbackShare: limit.fallbackShare }),
      onError: this.#reportFailure,
    });
    await limit.start();
    this.#redisClusterLimit = limit;
    this.registry.admission.useClusterLimit(limit);
    this.log.info('cluster-limit.start', { node: limit.node, ...limit.stats() });
  }

  /** The cluster limit kept in Redis, or undefined without one. */
  clusterLimitStats(): ClusterLimitStats | undefined {
    return this.#redisClusterLimit?.stats();
  }

  /** A topic's offset as this node last saw it (the shared store's, or its own streams'). */
  #offsetOf(topic: string): number {
    return this.registry.shared ? (this.registry.heard.get(topic)?.offset ?? 0) : this.streams.position(topic).offset;
  }

  /** The backplane's state and counters, or undefined without one. */
  backplaneStats(): BackplaneStats | undefined {
    return this.#backplane?.stats();
  }

  connection(id: string): HandlerContext | undefined {
    return this.registry.liveConnections.get(id);
  }

  /** This node's id on the backplane (undefined without one). */
  get nodeId(): string | undefined {
    return this.#backplane?.nodeId;
  }

  /** Where the server API keeps its idempotency keys: the backplane's (Redis: every node's), else this process's memory. */
  get idempotency(): IdempotencyStore {
    return this.#backplane?.idempotency ?? (this.#memoryIdempotency ??= new MemoryIdempotency());
  }
  #memoryIdempotency: MemoryIdempotency | undefined;

  close(id: string, options: { code?: number; reason?: string } = {}): boolean {
    return this.registry.kick(id, options.code, options.reason);
  }

  /**
   * Closes the connection with that id, or every connection of that principal, on this node and,
   * through the backplane, on every other (default code 4000, kicked). Returns how many closed here;
   * the other nodes close theirs when the message reaches them (not while the backplane is degraded).
   */
  disconnect(target: DisconnectTarget, options: { code?: number; reason?: string } = {}): number {
    const closed = this.#disconnectHere(target, options);
    this.#backplane?.publish(CONTROL_TOPIC, JSON.stringify({ op: 'disconnect', target, options }));
    return closed;
  }

  #disconnectHere(target: DisconnectTarget, options: { code?: number; reason?: string }): number {
    let closed = 0;
    if (target.id !== undefined && this.registry.kick(target.id, options.code, options.reason)) closed++;
    if (target.principal !== undefined) {
      for (const conn of [...this.registry.liveConnections.values()]) {
        if (conn.principal?.id === target.principal && this.registry.kick(conn.id, options.code, options.reason)) closed++;
      }
    }
    return closed;
  }

  /** A message on the control channel from another node. Anything unexpected is counted as a failure and ignored. */
  #controlled(data: MessageData, position: StreamPosition | undefined): void {
    try {
      if (position !== undefined || typeof data !== 'string') throw new Error('not a control message');
      const message = JSON.parse(data) as { op?: unknown; target?: DisconnectTarget; options?: { code?: number; reason?: string } };
      if (message.op !== 'disconnect' || typeof message.target !== 'object' || message.target === null) throw new Error(`unknown control message ${data.slice(0, 80)}`);
      const { id, principal } = message.target;
      const { code, reason } = message.options ?? {};
      this.#disconnectHere(
        { ...(typeof id === 'string' ? { id } : {}), ...(typeof principal === 'string' ? { principal } : {}) },
        { ...(typeof code === 'number' ? { code } : {}), ...(typeof reason === 'string' ? { reason: reason.slice(0, 120) } : {}) },
      );
    } catch (error) {
      this.#reportFailure('backplane.control', error);
    }
  }

  stats(): HubStats {
    const r = this.registry;
    const c = this.counters;
    return {
      state: r.state,
      uptimeSeconds: Math.round((Date.now() - this.startedAt) / 100) / 10,
      live: r.liveConnections.size,
      reserved: r.reservations.size,
      closing: r.closing.size,
      lingering: r.lingering.size,
      closesForced: c.closesForced,
      limit: r.admission.limit,
      accepted: c.accepted,
      refused: { ...c.refused },
      released: { ...c.released },
      signalsPending: c.signalsPending,
      messagesIn: c.messagesIn,
      messagesOut: c.messagesOut,
      dropped: c.dropped,
      connectionsDropped: { ...c.connectionsDropped },
      subscribesRefused: { ...c.subscribesRefused },
      topics: { count: this.topics.size, subscriptions: this.topics.subscriptions, largest: this.topics.largest(20).map((t) => ({ ...t, offset: this.#offsetOf(t.topic) })) },
      history: this.streams.stats(),
      recovered: { ...c.recovered },
      replayed: c.replayed,
      gaps: c.gaps,
      backplane: this.backplaneStats() ?? null,
      clusterLimit: this.clusterLimitStats() ?? null,
    };
  }

  /**
   * Graceful shutdown: stop admitting (503), close every socket with 1001, wait until they are
   * closed or `timeout` ms pass, then drop the rest. Calling it again returns the same promise.
   */
  shutdown(timeout: number = this.options.shutdownTimeout): Promise<ShutdownResult> {
    this.#shutdown ??= this.#runShutdown(timeout);
    return this.#shutdown;
  }

  async #runShutdown(timeout: number): Promise<ShutdownResult> {
    const started = Date.now();
    const r = this.registry;
    this.log.info('shutdown.start', { live: r.liveConnections.size, reserved: r.reservations.size, timeoutMs: timeout });
    const forcedBefore = this.counters.closesForced;
    r.drain();
    const idle = await withDeadline(
      r.whenIdle().then(() => true),
      timeout,
      false,
    );
    if (!idle) r.terminateClosing();
    // Dropped at the deadline, or earlier by the sweeper (closeTimeout).
    const forced = this.counters.closesForced - forcedBefore;
    r.state = 'closed';
    clearInterval(this.#sweeper);
    await this.#backplane?.close();
    await this.#redisClusterLimit?.close();
    const result = { forced, durationMs: Date.now() - started };
    this.log.info('shutdown.done', result);
    return result;
  }
}

/** A publication of the shared store as the broker brought it: its body, position and `except` id. */
interface Heard {
  readonly body: MessageData;
  readonly position: StreamPosition;
  readonly exceptId?: string | undefined;
}

/** `length` random base-36 characters: a prefix that tells processes' (or instances') ids apart. */
export function randomIdPart(length = 8): string {
  let out = '';
  for (const n of crypto.getRandomValues(new Uint8Array(length))) out += (n % 36).toString(36);
  return out;
}

// A Record over every key of Handler: adding a hook to the interface without listing it here is a type error.
const handlerKeySet: Record<keyof Handler, true> = { authenticate: true, selectProtocol: true, onOpen: true, onMessage: true, formatPublish: true, formatPresence: true, formatReset: true, onTokenExpiring: true, onClose: true };
const handlerKeys = Object.keys(handlerKeySet) as readonly (keyof Handler)[];

/** A handler's keys are the Handler's own, and functions: `onMesage` must not be a silent no-op. */
function checkHandler(handler: Handler): Handler {
  for (const key of Object.keys(handler)) {
    if (!(handlerKeys as readonly string[]).includes(key)) {
      throw new HubError('ERR_INVALID_OPTION', `option handler: unknown key ${JSON.stringify(key)}${didYouMean(key, handlerKeys)}; a handler has ${handlerKeys.join(', ')}`);
    }
    const value = (handler as Record<string, unknown>)[key];
    if (value !== undefined && typeof value !== 'function') throw new HubError('ERR_INVALID_OPTION', `option handler: ${key} must be a function (got ${typeof value})`);
  }
  return handler;
}

/** Creates a hub from validated options. Throws a HubError (code ERR_INVALID_OPTION) naming a bad option. */
export function createHub(options: Partial<HubOptions> = {}, log?: Logger, init?: HubInit): Hub {
  return new Hub(resolveOptions(options), log, init);
}

/** Members a presence answer lists at most (the count is always whole). */
const PRESENCE_LIMIT = 1000;

function memberOf(conn: Connection): PresenceMember {
  return conn.principal ? { id: conn.id, principal: conn.principal.id } : { id: conn.id };
}
