// The connection registry: reservations, live connections and sockets still closing; opening,
// the ONE release function every ending goes through, reservation expiry, heartbeats, drain.
// Its dependencies come in through the constructor; it owns the admission that guards it.
// Runtime-free.
import { Admission, type AdmissionLimits, type HubState, type Refusal } from './admission/admission.ts';
import { Connection, ConnectionState, encodeOnce, type ConnectionHost, type ConnectionLimits, type Encoded } from './connection.ts';
import type { TokenVerifier } from './admission/token.ts';
import type { FanOut, Handler, Principal, SocketLike, StreamPosition, SubscribeOptions, SubscribeOutcome, SubscribeResult, TokenInfo } from './contracts.ts';
import { Deadlines } from './deadlines.ts';
import { countRelease, type Counters } from './counters.ts';
import type { Publication, SharedStreams, StreamRead, Streams } from './delivery/streams.ts';
import type { TopicIndex } from './delivery/topics.ts';
import { closeReason, type ConnectionClosed, hasCourtesy, HubError, isSendableCloseCode, isServerInitiated, isTerminated, CloseCode } from './errors.ts';
import type { Logger } from './log.ts';
import { withDeadline } from './timers.ts';
import type { HubOptions } from './options.ts';

/** The options the registry and its admission enforce. */
export type RegistryLimits = AdmissionLimits & ConnectionLimits & Readonly<Pick<HubOptions, 'handshakeTimeout' | 'closeTimeout' | 'recoveryMax'>>;

/** A connection's hold on a topic while (and just after) its subscribe reads the shared store. */
export interface Hold {
  /** Publications that came live during the read; undefined once it is over. */
  buffer: Publication[] | undefined;
  /** After the read: live publications up to this offset were in it, and are skipped. */
  floor: number;
}

/** How long before its token's expiry a connection is told (`onTokenExpiring`), so that it can send a fresh one. */
export const TOKEN_WARNING_MS = 30_000;

/** How long a subscribe waits for the shared store (its broker subscription and its read). */
const STORE_DEADLINE_MS = 2000;

/** The position answered when the store could not be read. */
const NO_POSITION: StreamPosition = { offset: 0, epoch: '' };

export interface RegistryInit {
  readonly limits: RegistryLimits;
  readonly counters: Counters;
  readonly handler: Handler;
  readonly log: Logger;
  readonly topics: TopicIndex<Connection>;
  /** Positions and history of topics (recovery on subscribe). */
  readonly streams: Streams;
  /** Put before every connection id (cluster worker, Durable Object instance). @default '' */
  readonly idPrefix?: string | undefined;
  readonly now?: (() => number) | undefined;
}

/** A socket accepted by an earlier instance (workerd hibernation) and what it carried. */
export interface RestoredSocket {
  readonly socket: SocketLike;
  readonly remoteAddress: string;
  readonly principal?: Principal | undefined;
  /** When it first opened (ms). */
  readonly openedAt: number;
}

export class Registry implements ConnectionHost {
  state: HubState = 'running';
  /** Admitted upgrades whose socket has not opened yet, oldest first (Map keeps insertion order). */
  readonly reservations = new Map<string, Connection>();
  /** Open sockets. */
  readonly liveConnections = new Map<string, Connection>();
  /**
   * Released by the server, socket still finishing its closing handshake, with the time (ms) by
   * which it is dropped. Holds no slot of its own, but counts against the limit until it is gone.
   */
  readonly closing = new Map<Connection, number>();
  /**
   * Reported closed, but the runtime may still hold the TCP connection (Bun, `CloseEventLike.lingers`),
   * with the time (ms) by which it is surely gone; oldest first (a runtime lingers for a fixed time).
   * One the server closed counts against the limit until then (`holds`, and its cluster slot), as a
   * closing socket does. One its client closed holds no slot, so a freed slot lets a new client in at
   * once; such sockets have a bound of their own, which the runtime sets (`admission.boundLingering`).
   */
  readonly lingering = new Map<Connection, { readonly until: number; readonly holds: boolean; readonly clusterSlot: boolean }>();
  #lingeringHeld = 0;
  /** May this upgrade happen: reads this registry's counts, and is told of every release. */
  readonly admission: Admission;
  readonly limits: RegistryLimits;
  readonly counters: Counters;
  readonly handler: Handler;
  readonly log: Logger;
  heartbeats = 0;
  rateWindow = 0;
  /** Positions and history shared by every node (Redis, NATS JetStream), once the hub has started its backplane. */
  shared: SharedStreams | undefined = undefined;
  /**
   * Connections whose subscribe used the shared store, by topic. While the read is under way, what
   * arrives live for them is held (`buffer`; the hub's delivery puts it in) and sent after their
   * answer and replay. After it, publications the read already had may still be on their way from
   * the broker (its reply can overtake them): those up to `floor` are skipped, once each.
   */
  readonly recovering = new Map<string, Map<Connection, Hold>>();
  /**
   * The last position this node heard from the shared store, per topic it listens to (the hub keeps
   * it; a subscribe's read starts it for a topic that has had no publication here yet).
   */
  readonly heard = new Map<string, StreamPosition>();
  /** The runtime's fan-out fast path (the hub sets it): a replay is written corked where it can be. */
  fanOut: FanOut | undefined = undefined;
  /**
   * Each replayed publication as sent, formatted and framed once for every subscriber that
   * recovers it (a reconnect storm replays the same publications to thousands). Weak: an entry goes
   * with its publication, when the history ring overwrites or forgets it.
   */
  readonly #replayFrames = new WeakMap<Publication, Encoded>();
  /** Sweeps so far (the hub counts them); the slow-consumer grace reads it. */
  sweeps = 0;
  /** JWT auth (`--jwt-secret`, `--jwks-url`): verifies a connection's fresh tokens (the hub sets it). */
  tokens: TokenVerifier | undefined = undefined;
  /**
   * Open connections whose token expires, by when the sweep must look at them next: the warning
   * (TOKEN_WARNING_MS before `exp`), then `exp` itself. No timer per socket.
   */
  readonly tokenDeadlines: Deadlines<Connection>;
  readonly #topics: TopicIndex<Connection>;
  readonly #streams: Streams;
  readonly #idPrefix: string;
  readonly #now: () => number;
  #nextId = 0;
  #idleWaiters: (() => void)[] = [];

  constructor(init: RegistryInit) {
    this.limits = init.limits;
    this.counters = init.counters;
    this.handler = init.handler;
    this.log = init.log;
    this.#topics = init.topics;
    this.#streams = init.streams;
    this.#idPrefix = init.idPrefix ?? '';
    this.#now = init.now ?? Date.now;
    this.admission = new Admission(init.limits, init.counters, this, this.#now);
    this.tokenDeadlines = new Deadlines(this.#now());
    this.rateWindow = Math.floor(this.#now() / 1000);
  }

  /** Slots held: reservations and open sockets. */
  get size(): number {
    return this.reservations.size + this.liveConnections.size;
  }

  /** Sockets held against the limit: the slots, the sockets still closing, and those that may linger. */
  get held(): number {
    return this.reservations.size + this.liveConnections.size + this.closing.size + this.#lingeringHeld;
  }

  /** Lingering sockets that hold no slot (their client closed them); admission bounds them too. */
  get lingeringFree(): number {
    return this.lingering.size - this.#lingeringHeld;
  }

  /**
   * Reserves a slot for an upgrade that passed `admission.screen` (and authentication), after the
   * cluster slot where there is a cluster limit. The Connection holds the slot until it opens, fails or expires.
   * Synchronous unless a cluster slot has to be asked for (no promise per upgrade otherwise).
   */
  admit(remoteAddress: string, principal?: Principal, token?: TokenInfo): Connection | Refusal | Promise<Connection | Refusal> {
    if (!this.admission.hasClusterLimit) return this.reserve(remoteAddress, principal, false, token);
    const slot = this.admission.acquireClusterSlot();
    const reserve = (ok: boolean) => (ok ? this.reserve(remoteAddress, principal, true, token) : this.admission.refuse('capacity'));
    return typeof slot === 'boolean' ? reserve(slot) : slot.then(reserve);
  }

  /** The synchronous part of `admit`: the final checks and the reservation. */
  reserve(remoteAddress: string, principal?: Principal, clusterSlot = false, token?: TokenInfo): Connection | Refusal {
    const refusal = this.admission.take(remoteAddress, principal, clusterSlot);
    if (refusal) return refusal;
    const id = this.#idPrefix + (this.#nextId++).toString(36);
    const conn = new Connection(this, id, remoteAddress, this.#now(), principal, clusterSlot, token);
    this.reservations.set(id, conn);
    return conn;
  }

  open(conn: Connection, socket: SocketLike, openedAt: number = this.#now()): boolean {
    if (conn.state !== ConnectionState.Reserved) {
      // Expired or shut down while the handshake was under way: the slot is gone, so is the socket.
      const code = conn.releaseReason?.kind === 'shutdown' ? CloseCode.GOING_AWAY : CloseCode.TRY_AGAIN_LATER;
      safeClose(socket, code, conn.releaseReason?.kind ?? 'released');
      return false;
    }
    this.reservations.delete(conn.id);
    this.liveConnections.set(conn.id, conn);
    conn.markOpen(socket, openedAt, this.heartbeats);
    this.#scheduleToken(conn);
    this.log.debug('connection.open', { id: conn.id, remoteAddress: conn.remoteAddress });
    return true;
  }

  /** The next time the sweep looks at this connection's token: its warning, then its expiry. */
  #scheduleToken(conn: Connection): void {
    const expiresAt = conn.token?.expiresAt;
    if (expiresAt === undefined) return this.tokenDeadlines.delete(conn);
    this.tokenDeadlines.set(conn, conn.tokenWarned ? expiresAt : expiresAt - TOKEN_WARNING_MS);
  }

  /**
   * Tokens whose time has come (the hub's sweep): a connection past its token's `exp` is closed
   * with 4001 (kind `token-expired`); one within TOKEN_WARNING_MS of it is told once
   * (`handler.onTokenExpiring`), and looked at again at `exp`.
   */
  expireTokens(now: number = this.#now()): number {
    let expired = 0;
    for (const conn of this.tokenDeadlines.due(now)) {
      const expiresAt = conn.token?.expiresAt;
      if (conn.state !== ConnectionState.Open || expiresAt === undefined) continue;
      if (expiresAt <= now) {
        this.release(conn, closeReason('token-expired', undefined, 'token expired'));
        expired++;
        continue;
      }
      if (!conn.tokenWarned) {
        conn.tokenWarned = true;
        const hook = this.handler.onTokenExpiring;
        if (hook) {
          try {
            hook(conn, expiresAt - now);
          } catch (error) {
            this.log.error('handler.error', { id: conn.id, stage: 'onTokenExpiring', error });
          }
        }
      }
      this.tokenDeadlines.set(conn, expiresAt);
    }
    return expired;
  }

  /** A fresh token for an open connection: verified, for the same sub, then in place with its new expiry. */
  async refreshToken(conn: Connection, text: string): Promise<TokenInfo> {
    const tokens = this.tokens;
    if (!tokens) throw new HubError('ERR_BAD_TOKEN', 'this server verifies no tokens (no --jwt-secret or --jwks-url)');
    if (typeof text !== 'string' || text.length === 0) throw new HubError('ERR_BAD_TOKEN', 'token must be a non-empty string');
    const verdict = await tokens.verify(text);
    if (!('subject' in verdict)) throw new HubError('ERR_BAD_TOKEN', verdict.reason);
    const current = conn.token;
    if (current && verdict.subject !== current.subject) throw new HubError('ERR_BAD_TOKEN', 'the token is for another sub than the connection');
    if (conn.state !== ConnectionState.Open) throw new HubError('ERR_BAD_TOKEN', 'the connection has ended');
    conn.replaceToken(verdict);
    this.#scheduleToken(conn);
    return verdict;
  }

  /**
   * A socket that an earlier instance accepted (workerd): admitted and opened again, without the
   * handler's onOpen. A refusal (a limit lowered across a deploy) leaves the socket to the caller.
   */
  restore(restored: RestoredSocket): Connection | Refusal {
    const conn = this.reserve(restored.remoteAddress, restored.principal);
    if (!(conn instanceof Connection)) return conn;
    this.open(conn, restored.socket, restored.openedAt);
    return conn;
  }

  /**
   * The one way a connection ends. Frees the slot, aborts the signal with `reason`, counts it,
   * closes the socket if the server initiated the ending, tells the handler. Exactly once:
   * later calls for the same connection return false and do nothing.
   */
  release(conn: Connection, reason: ConnectionClosed): boolean {
    const was = conn.state;
    if (was === ConnectionState.Released) return false;
    conn.markReleased(reason);
    if (conn.token?.expiresAt !== undefined) this.tokenDeadlines.delete(conn);
    if (was === ConnectionState.Open) this.liveConnections.delete(conn.id);
    else this.reservations.delete(conn.id);
    const socket = conn.socket;
    // A socket the server closes (the WebSocket layer may be closing it already: ws answering a bad
    // frame with 1009) stays in `closing` until it is gone, and keeps counting against the limit:
    // here through `held`, and in a cluster by keeping its slot of the cluster limit until then.
    const closes = socket !== undefined && isServerInitiated(reason.kind) && socket.readyState < 3;
    // Dropped at once where the kind says so and the runtime can; false: it could not (Deno), the
    // socket lingers until its close event.
    const dropped = closes && isTerminated(reason.kind) && socket.terminate ? safeTerminate(socket) : undefined;
    const lingers = closes && dropped !== true;
    this.admission.free(conn.remoteAddress, conn.principal, conn.holdsClusterSlot && !lingers);
    countRelease(this.counters, reason.kind, reason.closeCode);
    if (this.recovering.size > 0 && conn.topics) for (const topic of conn.topics) this.unhold(topic, conn);
    // Out of the native topics now: a socket still closing must not get what they carry.
    if (socket) this.setNative(conn, false);
    this.#topics.unsubscribeAll(conn);
    conn.abortSignal();
    if (lingers) {
      if (dropped === false) this.closing.set(conn, Infinity);
      else {
        this.closing.set(conn, this.#now() + (hasCourtesy(reason.kind) ? this.limits.closeTimeout : 0));
        if (socket.readyState < 2) safeClose(socket, reason.closeCode, reason.detail ?? reason.kind);
      }
    }
    this.log.debug('connection.close', { id: conn.id, kind: reason.kind, closeCode: reason.closeCode });
    const { handler, log } = this;
    if (was === ConnectionState.Open && handler.onClose) {
      try {
        const result = handler.onClose(conn, reason);
        if (result) result.then(undefined, (error) => log.error('handler.error', { id: conn.id, stage: 'onClose', error }));
      } catch (error) {
        log.error('handler.error', { id: conn.id, stage: 'onClose', error });
      }
    }
    this.#notifyIfIdle();
    return true;
  }

  socketGone(conn: Connection, lingers = 0): void {
    if (lingers > 0 && !this.lingering.has(conn)) {
      // Counted until the runtime has surely let go. One the server was closing keeps its cluster
      // slot; one the WebSocket layer closed itself (Bun's 1009) holds a slot of the limit too.
      const clusterSlot = this.closing.delete(conn) && conn.holdsClusterSlot;
      const reason = conn.releaseReason;
      const holds = clusterSlot || (reason !== undefined && isServerInitiated(reason.kind));
      if (holds) this.#lingeringHeld++;
      this.lingering.set(conn, { until: this.#now() + lingers, holds, clusterSlot });
      return;
    }
    if (this.#closed(conn)) this.#notifyIfIdle();
  }

  /** Forgets sockets whose linger time is over (the runtime has dropped them by now). Called by the sweeper. */
  expireLingering(now: number = this.#now()): void {
    if (this.lingering.size === 0) return;
    for (const [conn, { until, holds, clusterSlot }] of this.lingering) {
      if (until > now) break; // insertion order = deadline order
      this.lingering.delete(conn);
      if (holds) this.#lingeringHeld--;
      if (clusterSlot) this.admission.freeClusterSlot();
    }
    this.#notifyIfIdle();
  }

  /** A socket leaves `closing` (gone, or dropped): its cluster slot, kept until now, goes back. */
  #closed(conn: Connection): boolean {
    if (!this.closing.delete(conn)) return false;
    if (conn.holdsClusterSlot) this.admission.freeClusterSlot();
    return true;
  }

  subscribe(conn: Connection, topic: string): SubscribeOutcome {
    const outcome = this.#topics.subscribe(conn, topic);
    if (outcome === 'subscribed') {
      const native = this.fanOut?.topics;
      if (native && conn.inNativeTopics) native.subscribe(conn.socket!, topic);
    } else if (outcome === 'subscription-limit' || outcome === 'topic-limit') this.counters.subscribesRefused[outcome]++;
    return outcome;
  }

  /** Leaves a topic (and its native twin). */
  #leave(conn: Connection, topic: string): boolean {
    if (!this.#topics.unsubscribe(conn, topic)) return false;
    const native = this.fanOut?.topics;
    if (native && conn.inNativeTopics && conn.socket) native.unsubscribe(conn.socket, topic);
    return true;
  }

  /**
   * Puts a connection's socket in or out of the runtime's native topics (FanOut.topics), for every
   * topic it holds: out while it is a slow consumer whose messages are dropped, or once released;
   * back in once it has room again (the hub's native publish decides, per publication).
   */
  setNative(conn: Connection, on: boolean): void {
    const native = this.fanOut?.topics;
    if (!native || conn.inNativeTopics === on || (on && conn.state !== ConnectionState.Open)) return;
    conn.inNativeTopics = on;
    const socket = conn.socket;
    if (!socket || !conn.topics) return;
    for (const topic of conn.topics) {
      if (on) native.subscribe(socket, topic);
      else native.unsubscribe(socket, topic);
    }
  }

  /**
   * Subscribes, says where the topic stands, and with `since` delivers what the client missed
   * first. With the in-memory streams all of it happens in one synchronous step that nothing
   * interleaves with: the subscription is in place before the history is read, and the replay is
   * sent before it returns. With a shared store (Redis, NATS) the read is a round trip: the subscription
   * and the broker's are in place first, and what arrives live meanwhile is held for this
   * connection and sent after the replay, each offset once. Either way a publication is in the
   * replay or comes live after it, never both and never neither (the seam).
   */
  subscribeFrom(conn: Connection, topic: string, options: SubscribeOptions): Promise<SubscribeResult> {
    const outcome = conn.state === ConnectionState.Open ? this.subscribe(conn, topic) : 'closed';
    const joined = outcome === 'subscribed' || outcome === 'already-subscribed';
    const shared = this.shared;
    if (shared && joined) return this.#subscribeShared(shared, conn, topic, outcome, options);
    const streams = this.#streams;
    const recovery = joined && options.since ? streams.recover(topic, options.since, this.limits.recoveryMax) : undefined;
    const position = recovery?.position ?? (shared ? NO_POSITION : streams.position(topic));
    const result: SubscribeResult = { outcome, position, recovered: recovery?.recovered ?? false, replayed: recovery?.publications.length ?? 0 };
    options.beforeReplay?.(result);
    if (recovery) this.#replay(conn, topic, recovery.publications, recovery.recovered);
    return Promise.resolve(result);
  }

  async #subscribeShared(shared: SharedStreams, conn: Connection, topic: string, outcome: SubscribeOutcome, options: SubscribeOptions): Promise<SubscribeResult> {
    const { since } = options;
    let waiting = this.recovering.get(topic);
    if (!waiting) this.recovering.set(topic, (waiting = new Map()));
    const buffer: Publication[] = waiting.get(conn)?.buffer ?? [];
    const hold: Hold = { buffer, floor: 0 };
    waiting.set(conn, hold);
    let read: StreamRead | undefined;
    try {
      // Bounded: while Redis is away the broker subscription waits for it, and so would the client.
      read = await withDeadline(
        shared.listening(topic).then(() => shared.read(topic, since ? { after: since.offset, epoch: since.epoch, limit: this.limits.recoveryMax, recover: true } : { limit: 0 })),
        STORE_DEADLINE_MS,
        undefined,
      );
    } catch (error) {
      this.log.debug('subscribe.store-error', { id: conn.id, topic, error });
    }
    // Closed or unsubscribed meanwhile (the hold went with it): nothing to send.
    if (conn.state !== ConnectionState.Open || !conn.topics?.has(topic) || waiting.get(conn) !== hold) return { outcome: 'closed', position: read?.position ?? NO_POSITION, recovered: false, replayed: 0 };
    if (read === undefined) {
      // No position to answer with: the subscribe is undone (the client may try again), not half made.
      this.unhold(topic, conn);
      if (outcome === 'subscribed') this.#leave(conn, topic);
      this.counters.subscribesRefused.unavailable++;
      const result: SubscribeResult = { outcome: 'unavailable', position: NO_POSITION, recovered: false, replayed: 0 };
      options.beforeReplay?.(result);
      return result;
    }
    const position = read.position;
    // From now on live; what the broker has not yet brought of what the read had is skipped.
    const heard = this.heard.get(topic);
    hold.buffer = undefined;
    hold.floor = position.offset;
    if (heard && heard.epoch === position.epoch && heard.offset >= position.offset) this.unhold(topic, conn);
    // The first position this node knows of the topic: without it, offsets it misses before its
    // first publication (its broker subscription down) would go unnoticed, no catch-up, no reset.
    if (!heard) this.heard.set(topic, position);
    const recovered = since !== undefined && read.complete;
    const replay = recovered ? read.publications : [];
    const result: SubscribeResult = { outcome, position, recovered, replayed: replay.length };
    options.beforeReplay?.(result);
    // Then the replay, then what came live meanwhile and is newer than the position answered.
    const live = buffer.filter((p) => p.offset > position.offset);
    if (since || live.length > 0) this.#replay(conn, topic, replay.length ? [...replay, ...live] : live, since ? recovered : undefined, replay.length);
    return result;
  }

  /** Sends publications to one connection, each formatted and framed once for all who get it (corked where the runtime can). */
  #replay(conn: Connection, topic: string, publications: readonly Publication[], recovered: boolean | undefined, replayed = publications.length): void {
    const format = this.handler.formatPublish;
    const fanOut = this.fanOut;
    const frames = this.#replayFrames;
    const send = () => {
      for (const publication of publications) {
        let encoded = frames.get(publication);
        if (!encoded) {
          encoded = encodeOnce(fanOut, format ? format(topic, publication.offset, publication.data) : publication.data);
          frames.set(publication, encoded);
        }
        conn.deliver(fanOut, encoded);
      }
    };
    const socket = conn.socket;
    if (fanOut?.corked && socket && publications.length > 1) fanOut.corked(socket, send);
    else send();
    if (recovered !== undefined) {
      this.counters.recovered[recovered ? 'recovered' : 'not-recovered']++;
      this.counters.replayed += replayed;
    }
  }

  unsubscribe(conn: Connection, topic: string): boolean {
    this.unhold(topic, conn);
    return this.#leave(conn, topic);
  }

  /** Ends a connection's hold on a topic (its recovery is over, or it left). */
  unhold(topic: string, conn: Connection): void {
    const waiting = this.recovering.get(topic);
    if (!waiting?.delete(conn)) return;
    if (waiting.size === 0) this.recovering.delete(topic);
  }

  /** Releases reservations older than the handshake timeout. Called by the hub's sweeper. */
  expireReservations(now: number = this.#now()): number {
    let expired = 0;
    const deadline = now - this.limits.handshakeTimeout;
    for (const conn of this.reservations.values()) {
      if (conn.admittedAt > deadline) break; // insertion order = age order
      this.release(conn, closeReason('handshake-timeout'));
      expired++;
    }
    return expired;
  }

  /**
   * Drops sockets whose peer has not completed the server's close by their deadline (`closeTimeout`,
   * or at once for endings without courtesy). Called by the hub's sweeper.
   */
  expireClosing(now: number = this.#now()): number {
    let dropped = 0;
    for (const [conn, deadline] of this.closing) {
      if (deadline > now) continue;
      this.counters.closesForced++;
      dropped++;
      // A runtime that cannot drop a socket now (Deno) drops it later: it keeps counting until its
      // close event, so a crowd of such sockets is bounded by the limit, not by the fds.
      if (terminateQuietly(conn.socket) === false) this.closing.set(conn, Infinity);
      else this.#closed(conn);
    }
    if (dropped > 0) this.#notifyIfIdle();
    return dropped;
  }

  /** Starts a new one-second window for the per-connection message rate, and prunes rate buckets. */
  nextRateWindow(now: number = this.#now()): void {
    this.rateWindow = Math.floor(now / 1000);
    this.admission.prune(now);
  }

  /**
   * One heartbeat: drops connections not heard during the last two intervals (reason `idle`) and
   * pings the rest. Sockets without `ping` (Deno) are kept alive by their runtime's own idle
   * timeout instead, which reports back as `idle` too.
   */
  heartbeat(): number {
    const beat = ++this.heartbeats;
    let dropped = 0;
    for (const conn of this.liveConnections.values()) {
      const socket = conn.socket!;
      if (!socket.ping) continue;
      if (conn.heardAt < beat - 2) {
        this.release(conn, closeReason('idle'));
        dropped++;
      } else {
        try {
          socket.ping();
        } catch {
          // a socket that cannot be pinged is closing; its close event ends it
        }
      }
    }
    return dropped;
  }

  /** Kicks one connection. False if there is no such live or reserved connection. */
  kick(id: string, code: number = CloseCode.KICKED, detail?: string): boolean {
    const conn = this.liveConnections.get(id) ?? this.reservations.get(id);
    if (!conn) return false;
    return this.release(conn, closeReason('kicked', isSendableCloseCode(code) ? code : CloseCode.KICKED, detail));
  }

  /** Stops admitting and ends every connection with kind `shutdown` (1001). */
  drain(): void {
    if (this.state === 'running') this.state = 'draining';
    for (const conn of [...this.reservations.values(), ...this.liveConnections.values()]) {
      this.release(conn, closeReason('shutdown'));
    }
  }

  /** Drops sockets still in their closing handshake (after the shutdown deadline). */
  terminateClosing(): void {
    this.counters.closesForced += this.closing.size;
    for (const conn of [...this.closing.keys()]) {
      terminateQuietly(conn.socket);
      this.#closed(conn);
    }
    this.#notifyIfIdle();
  }

  /**
   * Resolves once nothing holds a slot, no server-initiated close is still in flight, and no socket
   * the server closed may still linger (Bun: uWebSockets still reads and discards such a peer's data
   * until then; a process that exited earlier would reset those connections, and the close frames
   * still unread on the peer's side with them).
   */
  whenIdle(): Promise<void> {
    if (this.#idle()) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #idle(): boolean {
    return this.size === 0 && this.closing.size === 0 && this.#lingeringHeld === 0;
  }

  #notifyIfIdle(): void {
    if (this.#idleWaiters.length === 0 || !this.#idle()) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

/** True once the runtime dropped the socket (or it was already gone); false if it could not yet. */
function safeTerminate(socket: SocketLike): boolean {
  try {
    return socket.terminate!() !== false;
  } catch {
    return true; // already gone
  }
}

/** Drops the socket where the runtime can; false if it could not yet (undefined: no terminate, nothing done). */
function terminateQuietly(socket: SocketLike | undefined): boolean | undefined {
  return socket?.terminate ? safeTerminate(socket) : undefined;
}

// Close reasons are at most 123 bytes in a close frame.
function closeText(text: string): string {
  return text.length <= 40 ? text : new TextDecoder().decode(new TextEncoder().encode(text).slice(0, 120)).replace(/\uFFFD+$/, '');
}

function safeClose(socket: SocketLike, code: number, reason: string): void {
  try {
    socket.close(isSendableCloseCode(code) ? code : CloseCode.NORMAL, closeText(reason));
  } catch {
    // A socket that is already closing may refuse a second close; the ending stands either way.
  }
}
