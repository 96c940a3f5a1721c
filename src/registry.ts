// The connection registry: admission, reservations, live connections and the one release
// function every ending goes through. It is the single source of truth for counts.
import { Connection, ConnectionState, type HubCore, type SocketLike } from './connection.ts';
import {
  closeKinds,
  closeReason,
  type CloseKind,
  type ConnectionClosed,
  isSendableCloseCode,
  isServerInitiated,
  isTerminated,
  CloseCode,
  refusalReasons,
  type RefusalReason,
} from './errors.ts';
import type { Principal } from './handler.ts';
import { KeyedBuckets, Tally, TokenBucket } from './limits.ts';
import type { HubOptions } from './options.ts';
import type { SlotPool } from './slots.ts';

export type RegistryState = 'running' | 'draining' | 'closed';

/** The options the registry enforces (see HubOptions for each one's meaning and default). */
export type RegistryLimits = Readonly<
  Pick<
    HubOptions,
    | 'maxConnections'
    | 'handshakeTimeout'
    | 'maxConnectionsPerIp'
    | 'maxConnectionsPerPrincipal'
    | 'upgradeRate'
    | 'upgradeRatePerIp'
    | 'messageRate'
    | 'maxPayload'
    | 'retryAfter'
    | 'maxBackpressure'
    | 'slowConsumer'
  >
>;

/** An upgrade refused before it happened: why, and the seconds for Retry-After. */
export interface Refusal {
  readonly reason: RefusalReason;
  readonly retryAfter: number;
}

function zeroCounts<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

// Close reasons are at most 123 bytes in a close frame.
function closeText(text: string): string {
  return text.length <= 40 ? text : new TextDecoder().decode(new TextEncoder().encode(text).slice(0, 120)).replace(/\uFFFD+$/, '');
}

export class Registry {
  state: RegistryState = 'running';
  /** Admitted upgrades whose socket has not opened yet, oldest first (Map keeps insertion order). */
  readonly reservations = new Map<string, Connection>();
  /** Open sockets. */
  readonly liveConnections = new Map<string, Connection>();
  /** Released by the server, socket still finishing its closing handshake. Holds no slot. */
  readonly closing = new Set<Connection>();
  /** Upgrades admitted since start. */
  accepted = 0;
  readonly refused: Record<RefusalReason, number> = zeroCounts(refusalReasons);
  readonly released: Record<CloseKind, number> = zeroCounts(closeKinds);
  /** Heartbeats so far; a connection remembers the one during which it was last heard. */
  heartbeats = 0;
  /** Messages received from and sent to clients (fan-out deliveries included). */
  messagesIn = 0;
  messagesOut = 0;
  /** Message bytes received and sent (UTF-8 bytes for text). */
  bytesIn = 0;
  bytesOut = 0;
  /** Messages not sent to slow consumers under the `drop` policy. */
  dropped = 0;
  /** Endings by "kind closeCode", for metrics. */
  readonly closedByCode = new Map<string, number>();
  /** A limit shared with other processes (cluster mode); each pooled connection holds one of its slots. */
  slots: SlotPool | undefined = undefined;
  /** AbortControllers handed out (through `ctx.signal`) and not yet aborted. Back to 0 when idle. */
  signalsPending = 0;
  /** The current one-second window of the per-connection message rate. */
  rateWindow = 0;
  readonly limits: RegistryLimits;
  #core: HubCore | undefined;
  #nextId = 0;
  readonly #idPrefix: string;
  readonly #now: () => number;
  #idleWaiters: (() => void)[] = [];
  // Only what is configured is allocated.
  readonly #upgradeBucket: TokenBucket | undefined;
  readonly #upgradeBucketsPerIp: KeyedBuckets | undefined;
  readonly #perIp: Tally | undefined;
  readonly #perPrincipal: Tally | undefined;

  constructor(limits: RegistryLimits, options: { idPrefix?: string; now?: () => number } = {}) {
    this.limits = limits;
    this.#idPrefix = options.idPrefix ?? '';
    this.#now = options.now ?? Date.now;
    const now = this.#now();
    if (limits.upgradeRate > 0) this.#upgradeBucket = new TokenBucket(limits.upgradeRate, limits.upgradeRate, now);
    if (limits.upgradeRatePerIp > 0) this.#upgradeBucketsPerIp = new KeyedBuckets(limits.upgradeRatePerIp, limits.upgradeRatePerIp);
    if (limits.maxConnectionsPerIp > 0) this.#perIp = new Tally();
    if (limits.maxConnectionsPerPrincipal > 0) this.#perPrincipal = new Tally();
    this.rateWindow = Math.floor(now / 1000);
  }

  /** Connects the registry to the hub whose handler and logger its connections use. */
  attach(core: HubCore): void {
    this.#core = core;
  }

  get size(): number {
    return this.reservations.size + this.liveConnections.size;
  }

  #refuse(reason: RefusalReason, retryAfter: number = this.limits.retryAfter): Refusal {
    this.refused[reason]++;
    return { reason, retryAfter };
  }

  /** Counts a refusal decided outside the registry (origin, authentication). */
  refuse(reason: RefusalReason, retryAfter?: number): Refusal {
    return this.#refuse(reason, retryAfter);
  }

  /**
   * The cheap checks, before anything is awaited (e.g. authentication): state, capacity, the
   * per-address cap, then the upgrade rates (which take a token). Undefined = go on.
   */
  screen(remoteAddress: string): Refusal | undefined {
    if (this.state !== 'running') return this.#refuse('draining');
    if (this.size >= this.limits.maxConnections) return this.#refuse('capacity');
    if (this.#perIp && this.#perIp.get(remoteAddress) >= this.limits.maxConnectionsPerIp) return this.#refuse('ip-limit');
    const now = this.#now();
    if (this.#upgradeBucket && !this.#upgradeBucket.take(now)) return this.#refuse('rate-limited', this.#upgradeBucket.retryAfterSeconds(now));
    const perIp = this.#upgradeBucketsPerIp;
    if (perIp && !perIp.take(remoteAddress, now)) return this.#refuse('rate-limited', perIp.retryAfterSeconds(remoteAddress, now));
    return undefined;
  }

  /**
   * Reserves a slot for an upgrade that passed `screen` (re-checking what an await may have
   * changed). The Connection holds the slot until it opens, fails or expires.
   */
  admit(remoteAddress: string, principal?: Principal): Connection | Refusal {
    if (this.state !== 'running') return this.#refuse('draining');
    if (this.size >= this.limits.maxConnections) return this.#refuse('capacity');
    if (this.#perIp && this.#perIp.get(remoteAddress) >= this.limits.maxConnectionsPerIp) return this.#refuse('ip-limit');
    if (principal && this.#perPrincipal && this.#perPrincipal.get(principal.id) >= this.limits.maxConnectionsPerPrincipal) {
      return this.#refuse('principal-limit');
    }
    const id = this.#idPrefix + (this.#nextId++).toString(36);
    const conn = new Connection(this.#core!, id, remoteAddress, this.#now());
    if (principal) {
      conn.principal = principal;
      this.#perPrincipal?.add(principal.id);
    }
    this.#perIp?.add(remoteAddress);
    this.reservations.set(id, conn);
    this.accepted++;
    return conn;
  }

  /** The reservation's socket opened. False (and the socket is closed) if the reservation already ended. */
  open(conn: Connection, socket: SocketLike): boolean {
    if (conn.state !== ConnectionState.Reserved) {
      // Expired or shut down while the handshake was under way: the slot is gone, so is the socket.
      const code = conn.releaseReason?.kind === 'shutdown' ? CloseCode.GOING_AWAY : CloseCode.TRY_AGAIN_LATER;
      safeClose(socket, code, conn.releaseReason?.kind ?? 'released');
      return false;
    }
    this.reservations.delete(conn.id);
    this.liveConnections.set(conn.id, conn);
    conn.state = ConnectionState.Open;
    conn.socket = socket;
    conn.openedAt = this.#now();
    conn.heardAt = this.heartbeats;
    this.#core!.log.debug('connection.open', { id: conn.id, remoteAddress: conn.remoteAddress });
    return true;
  }

  /**
   * The one way a connection ends. Frees the slot, aborts the signal with `reason`, counts it,
   * closes the socket if the server initiated the ending, tells the handler. Exactly once:
   * later calls for the same connection return false and do nothing.
   */
  release(conn: Connection, reason: ConnectionClosed): boolean {
    const was = conn.state;
    if (was === ConnectionState.Released) return false;
    conn.state = ConnectionState.Released;
    conn.releaseReason = reason;
    if (was === ConnectionState.Open) this.liveConnections.delete(conn.id);
    else this.reservations.delete(conn.id);
    this.#perIp?.remove(conn.remoteAddress);
    if (conn.principal) this.#perPrincipal?.remove(conn.principal.id);
    if (conn.pooled) this.slots?.release();
    this.released[reason.kind]++;
    const byCode = `${reason.kind} ${reason.closeCode}`;
    this.closedByCode.set(byCode, (this.closedByCode.get(byCode) ?? 0) + 1);
    const core = this.#core!;
    core.topics.unsubscribeAll(conn);
    conn.abortSignal(reason);
    const socket = conn.socket;
    if (socket && isServerInitiated(reason.kind) && socket.readyState < 2) {
      if (isTerminated(reason.kind) && socket.terminate) safeTerminate(socket);
      else {
        this.closing.add(conn);
        safeClose(socket, reason.closeCode, reason.detail ?? reason.kind);
      }
    }
    core.log.debug('connection.close', { id: conn.id, kind: reason.kind, closeCode: reason.closeCode });
    if (was === ConnectionState.Open && core.handler.onClose) {
      try {
        const result = core.handler.onClose(conn, reason);
        if (result) result.then(undefined, (error) => core.log.error('handler.error', { id: conn.id, stage: 'onClose', error }));
      } catch (error) {
        core.log.error('handler.error', { id: conn.id, stage: 'onClose', error });
      }
    }
    this.#notifyIfIdle();
    return true;
  }

  /** The runtime reports the socket fully closed; a server-initiated close is then complete. */
  socketGone(conn: Connection): void {
    if (this.closing.delete(conn)) this.#notifyIfIdle();
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

  /** Starts a new one-second window for the per-connection message rate. */
  nextRateWindow(now: number = this.#now()): void {
    this.rateWindow = Math.floor(now / 1000);
    this.#upgradeBucketsPerIp?.prune(now);
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
    for (const conn of this.closing) {
      try {
        if (conn.socket?.terminate) conn.socket.terminate();
      } catch {
        // the socket is being torn down anyway
      }
    }
    this.closing.clear();
    this.#notifyIfIdle();
  }

  /** Resolves once nothing holds a slot and no server-initiated close is still in flight. */
  whenIdle(): Promise<void> {
    if (this.size === 0 && this.closing.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  #notifyIfIdle(): void {
    if (this.#idleWaiters.length === 0 || this.size !== 0 || this.closing.size !== 0) return;
    const waiters = this.#idleWaiters;
    this.#idleWaiters = [];
    for (const resolve of waiters) resolve();
  }
}

function safeTerminate(socket: SocketLike): void {
  try {
    socket.terminate!();
  } catch {
    // already gone
  }
}

function safeClose(socket: SocketLike, code: number, reason: string): void {
  try {
    socket.close(isSendableCloseCode(code) ? code : CloseCode.NORMAL, closeText(reason));
  } catch {
    // A socket that is already closing may refuse a second close; the ending stands either way.
  }
}
