// /metrics in the Prometheus text exposition format (version 0.0.4). Runtime-free on purpose:
// prom-client depends on Node's APIs (perf_hooks, v8, cluster) and the same hub runs on Deno, Bun
// and workerd, so the few families hubbub exposes are rendered here, from the hub's counters.
import { closeKinds, refusalReasons } from './errors.ts';
import type { Hub } from './hub.ts';
import { VERSION } from './version.ts';

type Labels = Record<string, string>;

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function sample(name: string, labels: Labels | undefined, value: number): string {
  const rendered = labels && Object.keys(labels).length > 0 ? `{${Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}` : '';
  return `${name}${rendered} ${Number.isFinite(value) ? value : 0}`;
}

class Exposition {
  readonly lines: string[] = [];
  /** Labels put first on every sample (cluster mode: `worker`). */
  constructor(readonly constant: Labels = {}) {}
  family(name: string, type: 'counter' | 'gauge', help: string, samples: [Labels | undefined, number][]): void {
    this.lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const [labels, value] of samples) this.lines.push(sample(name, { ...this.constant, ...labels }, value));
  }
}

export const METRICS_CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

export function renderMetrics(hub: Hub, runtime: string, processStats: Record<string, number> = {}, constantLabels: Labels = {}): string {
  const r = hub.registry;
  const c = hub.counters;
  const m = new Exposition(constantLabels);
  m.family('hubbub_info', 'gauge', 'hubbub build and runtime.', [[{ version: VERSION, runtime }, 1]]);
  m.family('hubbub_connections', 'gauge', 'WebSocket connections by state: open, admitted but not yet open, closing, reported closed but possibly still held (lingering).', [
    [{ state: 'live' }, r.liveConnections.size],
    [{ state: 'reserved' }, r.reservations.size],
    [{ state: 'closing' }, r.closing.size],
    [{ state: 'lingering' }, r.lingering.size],
  ]);
  m.family('hubbub_connection_limit', 'gauge', 'The connection limit (maxConnections).', [[undefined, r.admission.limit]]);
  m.family('hubbub_draining', 'gauge', '1 while the server is shutting down.', [[undefined, r.state === 'running' ? 0 : 1]]);
  m.family('hubbub_upgrades_accepted_total', 'counter', 'Upgrades admitted.', [[undefined, c.accepted]]);
  m.family('hubbub_upgrades_refused_total', 'counter', 'Upgrades refused before they happened, by reason.', refusalReasons.map((reason) => [{ reason }, c.refused[reason]]));
  m.family('hubbub_connections_released_total', 'counter', 'Connections ended, by reason.', closeKinds.map((reason) => [{ reason }, c.released[reason]]));
  m.family(
    'hubbub_connections_closed_total',
    'counter',
    'Connections ended, by reason and close code.',
    closeKinds.flatMap((reason) => [...c.closedByCode[reason]].map(([code, value]): [Record<string, string>, number] => [{ reason, code: String(code) }, value])),
  );
  m.family('hubbub_closes_forced_total', 'counter', 'Sockets dropped because the peer did not complete a server-initiated close within closeTimeout.', [[undefined, c.closesForced]]);
  m.family('hubbub_heartbeat_terminations_total', 'counter', 'Peers dropped for not answering heartbeats.', [[undefined, c.released.idle]]);
  m.family('hubbub_messages_received_total', 'counter', 'Messages received from clients.', [[undefined, c.messagesIn]]);
  m.family('hubbub_messages_sent_total', 'counter', 'Messages sent to clients (fan-out deliveries included).', [[undefined, c.messagesOut]]);
  m.family('hubbub_bytes_received_total', 'counter', 'Message bytes received (UTF-8 bytes for text).', [[undefined, c.bytesIn]]);
  m.family('hubbub_bytes_sent_total', 'counter', 'Message bytes sent.', [[undefined, c.bytesOut]]);
  m.family('hubbub_messages_dropped_total', 'counter', 'Messages not sent to slow consumers (policy drop).', [[undefined, c.dropped]]);
  m.family('hubbub_topics', 'gauge', 'Topics with at least one local subscriber.', [[undefined, hub.topics.size]]);
  m.family('hubbub_subscriptions', 'gauge', 'Local topic subscriptions.', [[undefined, hub.topics.subscriptions]]);
  m.family('hubbub_connections_dropped_total', 'counter', 'TCP connections dropped as soon as they were accepted: over maxPendingConnections, or near the fd limit (Node).', [
    [{ reason: 'pending-limit' }, c.connectionsDropped['pending-limit']],
    [{ reason: 'fd-limit' }, c.connectionsDropped['fd-limit']],
  ]);
  m.family('hubbub_subscribes_refused_total', 'counter', 'Subscribes refused by a cap (maxSubscriptions, maxTopics).', [
    [{ reason: 'subscription-limit' }, c.subscribesRefused['subscription-limit']],
    [{ reason: 'topic-limit' }, c.subscribesRefused['topic-limit']],
    [{ reason: 'unavailable' }, c.subscribesRefused.unavailable],
  ]);
  m.family('hubbub_recoveries_total', 'counter', 'Subscribes with a position (since), by whether every missed publication was delivered.', [
    [{ outcome: 'recovered' }, c.recovered.recovered],
    [{ outcome: 'not-recovered' }, c.recovered['not-recovered']],
  ]);
  m.family('hubbub_recovery_replayed_total', 'counter', 'Publications delivered by recoveries.', [[undefined, c.replayed]]);
  m.family('hubbub_stream_gaps_total', 'counter', 'Publications numbered by the shared store (Redis) that this node never heard.', [[undefined, c.gaps]]);
  const history = hub.streams.stats();
  m.family('hubbub_history_streams', 'gauge', 'Topics with a position (and history) kept in memory.', [[undefined, history.streams]]);
  m.family('hubbub_history_publications', 'gauge', 'Publications kept in history.', [[undefined, history.publications]]);
  m.family('hubbub_history_bytes', 'gauge', 'Bytes of the publications kept in history.', [[undefined, history.bytes]]);
  m.family('hubbub_history_evicted_total', 'counter', 'Streams whose history was forgotten to stay within historyMaxBytes or the stream cap.', [[undefined, history.evicted]]);
  m.family('hubbub_signals_pending', 'gauge', 'AbortControllers handed out and not yet aborted.', [[undefined, c.signalsPending]]);
  m.family('hubbub_event_loop_lag_seconds', 'gauge', 'How late the last one-second sweeper tick fired.', [[undefined, hub.eventLoopLagMs / 1000]]);
  m.family('hubbub_uptime_seconds', 'gauge', 'Seconds since the hub started.', [[undefined, (Date.now() - hub.startedAt) / 1000]]);
  const backplane = hub.backplaneStats();
  if (backplane) {
    m.family('hubbub_backplane_connected', 'gauge', '1 while the backplane is connected, 0 while degraded.', [[undefined, backplane.state === 'connected' ? 1 : 0]]);
    m.family('hubbub_backplane_messages_total', 'counter', 'Backplane messages by direction and outcome.', [
      [{ outcome: 'published' }, backplane.published],
      [{ outcome: 'received' }, backplane.received],
      [{ outcome: 'dropped-while-degraded' }, backplane.droppedWhileDegraded],
      [{ outcome: 'malformed' }, backplane.malformed],
    ]);
  }
  const limit = hub.clusterLimitStats();
  if (limit) {
    m.family('hubbub_cluster_limit_connected', 'gauge', '1 while the limit is shared through Redis, 0 while this node runs on its fallback share.', [[undefined, limit.state === 'connected' ? 1 : 0]]);
    m.family('hubbub_cluster_limit_slots', 'gauge', 'Slots of the shared limit: held by this node, used by it, its fallback share.', [
      [{ kind: 'held' }, limit.held],
      [{ kind: 'used' }, limit.used],
      [{ kind: 'fallback-share' }, limit.fallbackShare],
    ]);
  }
  if (processStats.rssBytes !== undefined) m.family('process_resident_memory_bytes', 'gauge', 'Resident memory size in bytes.', [[undefined, processStats.rssBytes]]);
  if (processStats.heapUsedBytes !== undefined) m.family('hubbub_heap_used_bytes', 'gauge', 'JavaScript heap in use.', [[undefined, processStats.heapUsedBytes]]);
  return `${m.lines.join('\n')}\n`;
}

/** What a cluster primary knows about the whole server (Node `--workers`). */
export interface ClusterFigures {
  workers: number;
  limit: number;
  slotsUsed: number;
  replaced: number;
  /** The primary's own resident memory. */
  primaryRssBytes: number;
}

/** The families only the primary can give: workers, the one limit, slots used, replacements. */
export function renderClusterMetrics(c: ClusterFigures): string {
  const m = new Exposition();
  m.family('hubbub_cluster_workers', 'gauge', 'Worker processes serving (cluster mode).', [[undefined, c.workers]]);
  m.family('hubbub_cluster_connection_limit', 'gauge', 'The connection limit of the whole server (cluster mode).', [[undefined, c.limit]]);
  m.family('hubbub_cluster_slots_used', 'gauge', 'Slots of that limit held by the workers (cluster mode).', [[undefined, c.slotsUsed]]);
  m.family('hubbub_cluster_workers_replaced_total', 'counter', 'Workers that died and were replaced (cluster mode).', [[undefined, c.replaced]]);
  m.family('hubbub_cluster_primary_resident_memory_bytes', 'gauge', 'Resident memory of the primary process (cluster mode).', [[undefined, c.primaryRssBytes]]);
  return `${m.lines.join('\n')}\n`;
}

/**
 * Several expositions as one: each family's HELP and TYPE once (from the first text that has it),
 * then its samples from every text, in order. Cluster mode: every worker's exposition, each sample
 * labelled `worker="<id>"`, so one scrape of the port sees the whole server whichever worker answers.
 */
export function mergeExpositions(texts: readonly string[]): string {
  const families = new Map<string, { meta: string[]; samples: string[] }>();
  const familyOf = (name: string) => {
    let f = families.get(name);
    if (!f) families.set(name, (f = { meta: [], samples: [] }));
    return f;
  };
  for (const text of texts) {
    for (const line of text.split('\n')) {
      if (line === '') continue;
      const meta = /^# (HELP|TYPE) (\S+)/.exec(line);
      if (meta) {
        const f = familyOf(meta[2]!);
        if (!f.meta.some((l) => l.startsWith(`# ${meta[1]} `))) f.meta.push(line);
        continue;
      }
      if (line.startsWith('#')) continue;
      familyOf(/^[^{\s]+/.exec(line)![0]).samples.push(line);
    }
  }
  const out: string[] = [];
  for (const f of families.values()) out.push(...f.meta, ...f.samples);
  return out.length > 0 ? `${out.join('\n')}\n` : '';
}
