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
  CloseCode,
  refusalReasons,
  type RefusalReason,
} from './errors.ts';

export type RegistryState = 'running' | 'draining' | 'closed';

export interface RegistryLimits {
  /** Most slots (reserved + open) at once. */
  readonly maxConnections: number;
  /** Milliseconds a reservation may wait for its socket to open. */
  readonly handshakeTimeout: number;
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
  readonly limits: RegistryLimits;
  #core: HubCore | undefined;
  #nextId = 0;
  readonly #idPrefix: string;
  readonly #now: () => number;
  #idleWaiters: (() => void)[] = [];

  constructor(limits: RegistryLimits, options: { idPrefix?: string; now?: () => number } = {}) {
    this.limits = limits;
    this.#idPrefix = options.idPrefix ?? '';
    this.#now = options.now ?? Date.now;
  }

  /** Connects the registry to the hub whose handler and logger its connections use. */
  attach(core: HubCore): void {
    this.#core = core;
  }

  get size(): number {
    return this.reservations.size + this.liveConnections.size;
  }

  /**
   * Decides an upgrade before it happens. Returns a reserved Connection (holding a slot until it
   * opens, fails or expires) or the reason it was refused.
   */
  admit(remoteAddress: string): Connection | RefusalReason {
    let refusal: RefusalReason | undefined;
    if (this.state !== 'running') refusal = 'draining';
    else if (this.size >= this.limits.maxConnections) refusal = 'capacity';
    if (refusal) {
      this.refused[refusal]++;
      return refusal;
    }
    const id = this.#idPrefix + (this.#nextId++).toString(36);
    const conn = new Connection(this.#core!, id, remoteAddress, this.#now());
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
    this.released[reason.kind]++;
    conn.abortSignal(reason);
    const core = this.#core!;
    const socket = conn.socket;
    if (socket && isServerInitiated(reason.kind) && socket.readyState < 2) {
      this.closing.add(conn);
      safeClose(socket, reason.closeCode, reason.detail ?? reason.kind);
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

function safeClose(socket: SocketLike, code: number, reason: string): void {
  try {
    socket.close(isSendableCloseCode(code) ? code : CloseCode.NORMAL, closeText(reason));
  } catch {
    // A socket that is already closing may refuse a second close; the ending stands either way.
  }
}
