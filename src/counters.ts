// The hub's counters: one plain object, created by the hub and handed to whoever counts (admission,
// registry, connections). /stats and /metrics read only it.
import { closeKinds, refusalReasons, type CloseKind, type RefusalReason } from './errors.ts';

export interface Counters {
  /** Upgrades admitted since start. */
  accepted: number;
  /** Upgrades refused before they happened, by reason. */
  readonly refused: Record<RefusalReason, number>;
  /** Connections ended since start, by kind. */
  readonly released: Record<CloseKind, number>;
  /** Connections ended since start, by kind and then by close code. */
  readonly closedByCode: Record<CloseKind, Map<number, number>>;
  /** Messages received from and sent to clients (fan-out deliveries included). */
  messagesIn: number;
  messagesOut: number;
  /** Message bytes received and sent (UTF-8 bytes for text). */
  bytesIn: number;
  bytesOut: number;
  /** Messages not sent to slow consumers under the `drop` policy. */
  dropped: number;
  /**
   * TCP connections the runtime dropped as soon as they were accepted (Node): over
   * `maxPendingConnections`, or near the process's file-descriptor limit.
   */
  readonly connectionsDropped: { 'pending-limit': number; 'fd-limit': number };
  /** Subscribes refused by a cap, by cap. */
  readonly subscribesRefused: { 'subscription-limit': number; 'topic-limit': number; unavailable: number };
  /** Sockets whose peer did not complete a server-initiated close in time, dropped by the server. */
  closesForced: number;
  /** AbortControllers handed out (through `ctx.signal`) and not yet aborted. Back to 0 when idle. */
  signalsPending: number;
  /** Subscribes with a position (`since`), by whether every missed publication could be delivered. */
  readonly recovered: { recovered: number; 'not-recovered': number };
  /** Publications delivered by recoveries. */
  replayed: number;
  /** Offsets the shared store gave that this node never heard (its broker subscription was down). */
  gaps: number;
}

function zeroCounts<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

export function createCounters(): Counters {
  return {
    accepted: 0,
    refused: zeroCounts(refusalReasons),
    released: zeroCounts(closeKinds),
    closedByCode: Object.fromEntries(closeKinds.map((k) => [k, new Map()])) as Record<CloseKind, Map<number, number>>,
    messagesIn: 0,
    messagesOut: 0,
    bytesIn: 0,
    bytesOut: 0,
    dropped: 0,
    closesForced: 0,
    connectionsDropped: { 'pending-limit': 0, 'fd-limit': 0 },
    subscribesRefused: { 'subscription-limit': 0, 'topic-limit': 0, unavailable: 0 },
    signalsPending: 0,
    recovered: { recovered: 0, 'not-recovered': 0 },
    replayed: 0,
    gaps: 0,
  };
}

/** Counts one ending. */
export function countRelease(counters: Counters, kind: CloseKind, closeCode: number): void {
  counters.released[kind]++;
  const byCode = counters.closedByCode[kind];
  byCode.set(closeCode, (byCode.get(closeCode) ?? 0) + 1);
}
