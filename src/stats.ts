// What /stats shows of a hub (`hub.stats()`), and how a cluster adds its workers' figures into the
// whole server's. Runtime-free; types only from the leaves.
import type { HubState } from './admission/admission.ts';
import type { BackplaneStats } from './backplane/contract.ts';
import type { ClusterLimitStats } from './cluster-limit/contract.ts';
import type { StreamsStats } from './delivery/streams.ts';
import type { CloseKind, RefusalReason } from './errors.ts';

export interface HubStats {
  state: HubState;
  uptimeSeconds: number;
  /** Open sockets. */
  live: number;
  /** Admitted upgrades not yet open. */
  reserved: number;
  /** Sockets the server is closing; they count against the limit until gone (or dropped after closeTimeout). */
  closing: number;
  /** Sockets reported closed that the runtime may still hold (Bun, a few seconds); they count against the limit until then. */
  lingering: number;
  /** Sockets dropped because the peer did not complete a server-initiated close in time. */
  closesForced: number;
  limit: number;
  /** Upgrades admitted since start. */
  accepted: number;
  /** Upgrades refused before they happened, by reason. */
  refused: Record<RefusalReason, number>;
  /** Connections ended since start, by reason. */
  released: Record<CloseKind, number>;
  /** AbortControllers handed out through `ctx.signal` and not yet aborted. */
  signalsPending: number;
  messagesIn: number;
  messagesOut: number;
  /** Messages not sent to slow consumers (policy `drop`). */
  dropped: number;
  /** TCP connections dropped as soon as they were accepted (Node): over maxPendingConnections, or near the fd limit. */
  connectionsDropped: { 'pending-limit': number; 'fd-limit': number };
  /** Subscribes refused by `maxSubscriptions` and `maxTopics`. */
  subscribesRefused: { 'subscription-limit': number; 'topic-limit': number; unavailable: number };
  topics: { count: number; subscriptions: number; largest: { topic: string; subscribers: number; offset: number }[] };
  /** Positions and history kept (this process's memory). */
  history: StreamsStats;
  /** Subscribes with a position (`since`), by outcome, and the publications they replayed. */
  recovered: { recovered: number; 'not-recovered': number };
  replayed: number;
  /** Offsets the shared store (Redis) gave that this node never heard, e.g. while its subscription was down. */
  gaps: number;
  /** The backplane's state and counters; null without one. */
  backplane: BackplaneStats | null;
  /** The cluster limit kept in Redis; null without one. */
  clusterLimit: ClusterLimitStats | null;
}

const STATE_ORDER: readonly HubState[] = ['running', 'draining', 'closed'];

/**
 * The whole server's figures from its workers' (Node cluster mode): counts and counters summed,
 * the state the furthest along (one draining worker makes the server draining), the longest uptime,
 * the largest topics over all workers. `limit` is the cluster's, which only the caller knows.
 * Topic counts are summed per worker: a topic with subscribers on two workers counts twice.
 */
export function mergeHubStats(parts: readonly HubStats[], limit: number): HubStats {
  const first = parts[0];
  if (!first) throw new Error('mergeHubStats: no figures to merge');
  const largest = new Map<string, { topic: string; subscribers: number; offset: number }>();
  for (const part of parts) {
    for (const t of part.topics.largest) {
      const seen = largest.get(t.topic);
      if (seen) {
        seen.subscribers += t.subscribers;
        seen.offset = Math.max(seen.offset, t.offset);
      } else largest.set(t.topic, { ...t });
    }
  }
  const backplanes = parts.map((p) => p.backplane).filter((b): b is BackplaneStats => b !== null);
  const clusterLimits = parts.map((p) => p.clusterLimit).filter((c): c is ClusterLimitStats => c !== null);
  return {
    ...(sumFigures(parts.map(({ state, uptimeSeconds, limit, topics, backplane, clusterLimit, ...counts }) => counts)) as Omit<HubStats, 'state' | 'uptimeSeconds' | 'limit' | 'topics' | 'backplane' | 'clusterLimit'>),
    state: parts.map((p) => p.state).reduce((a, b) => (STATE_ORDER.indexOf(b) > STATE_ORDER.indexOf(a) ? b : a)),
    uptimeSeconds: Math.max(...parts.map((p) => p.uptimeSeconds)),
    limit,
    topics: {
      count: parts.reduce((a, p) => a + p.topics.count, 0),
      subscriptions: parts.reduce((a, p) => a + p.topics.subscriptions, 0),
      largest: [...largest.values()].sort((a, b) => b.subscribers - a.subscribers).slice(0, 20),
    },
    backplane: backplanes.length
      ? { ...(sumFigures(backplanes.map(({ state, ...counts }) => counts)) as Omit<BackplaneStats, 'state'>), state: backplanes.every((b) => b.state === 'connected') ? 'connected' : (backplanes.find((b) => b.state !== 'connected')!.state) }
      : null,
    clusterLimit: clusterLimits[0] ?? null,
  };
}

type Figures = { [key: string]: number | Figures };

/** Sums objects of numbers, key by key and level by level (keys missing in some count as 0). */
export function sumFigures<T extends object>(parts: readonly T[]): T {
  const total: Figures = {};
  for (const part of parts as readonly Figures[]) {
    for (const [key, value] of Object.entries(part)) {
      if (typeof value === 'number') total[key] = ((total[key] as number | undefined) ?? 0) + value;
      else if (value && typeof value === 'object') total[key] = sumFigures([(total[key] as Figures | undefined) ?? {}, value]);
    }
  }
  return total as T;
}
