// The result of a run: one JSON object (--json), or the same numbers as a plain aligned table.
import type { Percentiles } from './histogram.ts';
import type { Phase, Protocol } from './options.ts';

export interface Summary {
  tool: 'hubbub loadtest';
  url: string;
  startedAt: string;
  durationMs: number;
  options: {
    connections: number;
    rate: number;
    concurrency: number;
    procs: number;
    sources: string[];
    protocol: Protocol;
    phases: Phase[];
    holdMs: number;
    echoMessages: number;
    echoDurationMs: number;
    fanout: number;
    topic: string;
    replyTimeoutMs: number;
    handshakeTimeoutMs: number;
    timeoutMs: number;
    maxFailures: number;
  };
  /** Connections each client process was given. */
  perProcess: number[];
  /**
   * What the machine allowed (Linux; absent where unknown). Many sockets in TIME_WAIT crowd the
   * ephemeral port range, and the kernel's search for a free port then costs the client CPU and
   * slows connects, whatever the server does.
   */
  environment: {
    openFileLimit?: number;
    socketsPerProcessLimit: number;
    ephemeralPorts?: number;
    /** The range source ports are picked from with --source (the kernel's ephemeral range). */
    portRange?: { low: number; high: number };
    timeWaitAtStart?: number;
  };
  connect?: {
    requested: number;
    opened: number;
    failed: number;
    /** Failures by cause: `HTTP 503`, `ECONNREFUSED`, `EADDRNOTAVAIL`, `timeout`, … */
    failures: Record<string, number>;
    wallMs: number;
    connectsPerSecond: number;
    handshakeMs: Percentiles;
  };
  hold?: {
    durationMs: number;
    open: number;
    /** Server memory before the connect phase and after the hold. */
    memory:
      | { source: string; baselineBytes: number; loadedBytes: number; deltaBytes: number; bytesPerConnection: number | null; serverLive?: number }
      | { source: string; error: string };
  };
  echo?: {
    protocol: Protocol;
    connections: number;
    sent: number;
    received: number;
    missing: number;
    wallMs: number;
    messagesPerSecond: number;
    latencyMs: Percentiles;
  };
  fanout?: {
    topic: string;
    subscribers: number;
    subscribeFailed: number;
    subscribeFailures: Record<string, number>;
    /** Subscribes sent again after `unavailable`, and the sockets that needed it. */
    subscribeRetries: number;
    subscribeRetried: number;
    messages: number;
    /** Deliveries expected (subscribers open at each message, summed) and made. */
    expected: number;
    delivered: number;
    missing: number;
    /** Messages that did not reach every subscriber within --reply-timeout. */
    incomplete: number;
    wallMs: number;
    deliveriesPerSecond: number;
    /** From the publish to the last subscriber's receipt, over the messages everyone got. */
    timeToAllMs: Percentiles;
    timeToFirstMs: Percentiles;
    duplicates: number;
  };
  close?: { closedCleanly: number; terminated: number };
  /** Open connections the server (or the network) closed before the end. */
  dropped: { total: number; byCode: Record<string, number>; byPhase: Record<string, number> };
  unexpectedMessages: number;
  failures: { total: number; connect: number; dropped: number; echoMissing: number; subscribe: number; fanoutMissing: number };
  /** --timeout was reached in `phase`; `done` operations of it had finished (`ok` of them successfully). */
  timedOut?: { phase: string; afterMs: number; done: number; ok: number };
  error?: string;
  ok: boolean;
  exitCode: 0 | 1;
}

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const ms = (n: number | null) => (n === null ? '-' : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : n.toFixed(0));
const trio = (p: Percentiles) => (p.count === 0 ? '-' : `${ms(p.p50)} / ${ms(p.p99)} / ${ms(p.max)} ms`);
const bytes = (n: number) => {
  const a = Math.abs(n);
  if (a >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GiB`;
  if (a >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  if (a >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} B`;
};
const causes = (record: Record<string, number>) =>
  Object.entries(record)
    .sort((a, b) => b[1] - a[1])
    .map(([k, v]) => `${k} ×${int(v)}`)
    .join(', ');

export function renderTable(s: Summary): string {
  const rows: [string, string, string][] = [];
  const row = (phase: string, metric: string, value: string) => rows.push([phase, metric, value]);
  const c = s.connect;
  if (c) {
    row('connect', 'opened', `${int(c.opened)} of ${int(c.requested)} in ${(c.wallMs / 1000).toFixed(2)} s`);
    row('connect', 'rate', `${int(c.connectsPerSecond)} connects/s`);
    row('connect', 'handshake p50 / p99 / max', trio(c.handshakeMs));
    row('connect', 'failed', c.failed === 0 ? '0' : `${int(c.failed)}: ${causes(c.failures)}`);
  }
  const h = s.hold;
  if (h) {
    row('hold', 'idle', `${int(h.open)} open for ${(h.durationMs / 1000).toFixed(1)} s`);
    const m = h.memory;
    if ('error' in m) row('hold', 'server memory', `not measured: ${m.error}`);
    else {
      row('hold', 'server memory', `${bytes(m.baselineBytes)} -> ${bytes(m.loadedBytes)} (${m.source})`);
      row('hold', 'per connection', m.bytesPerConnection === null ? '-' : `${bytes(m.bytesPerConnection)}`);
      if (m.serverLive !== undefined) row('hold', 'server live sockets', int(m.serverLive));
    }
  }
  const e = s.echo;
  if (e) {
    row('echo', 'round trips', `${int(e.received)} of ${int(e.sent)} sent on ${int(e.connections)} connections${e.protocol === 'pubsub' ? ' (ping/pong)' : ''}`);
    row('echo', 'throughput', `${int(e.messagesPerSecond)} messages/s over ${(e.wallMs / 1000).toFixed(2)} s`);
    row('echo', 'latency p50 / p99 / max', trio(e.latencyMs));
    row('echo', 'missing replies', int(e.missing));
  }
  const f = s.fanout;
  if (f) {
    row('fanout', 'subscribers', `${int(f.subscribers)}${f.subscribeRetried ? `; ${int(f.subscribeRetried)} after a retry (${int(f.subscribeRetries)} retries)` : ''}${f.subscribeFailed ? `; ${int(f.subscribeFailed)} failed: ${causes(f.subscribeFailures)}` : ''}`);
    row('fanout', 'messages', `${int(f.messages)}, ${int(f.delivered)} of ${int(f.expected)} deliveries (${int(f.deliveriesPerSecond)}/s)`);
    row('fanout', 'time to all p50 / p99 / max', trio(f.timeToAllMs));
    row('fanout', 'time to first p50', f.timeToFirstMs.count ? `${ms(f.timeToFirstMs.p50)} ms` : '-');
    row('fanout', 'missing', `${int(f.missing)}${f.incomplete ? ` (${int(f.incomplete)} messages not delivered to all)` : ''}`);
  }
  if (s.close) row('close', 'closed', `${int(s.close.closedCleanly)} cleanly, ${int(s.close.terminated)} terminated`);
  row('all', 'dropped by the server', s.dropped.total === 0 ? '0' : `${int(s.dropped.total)}: codes ${causes(s.dropped.byCode)}; in ${causes(s.dropped.byPhase)}`);
  if (s.unexpectedMessages) row('all', 'unexpected messages', int(s.unexpectedMessages));
  const env = s.environment;
  // With --source the client picks its ports; without it the kernel searches the crowded range.
  if (s.options.sources.length === 0 && env.timeWaitAtStart !== undefined && env.ephemeralPorts !== undefined && env.timeWaitAtStart > env.ephemeralPorts / 4) {
    row('all', 'note', `${int(env.timeWaitAtStart)} TCP sockets were in TIME_WAIT at the start (ephemeral range ${int(env.ephemeralPorts)} ports): the kernel's port search slows connects`);
  }
  if (s.timedOut) {
    const t = s.timedOut;
    row('all', 'TIMED OUT', `in the ${t.phase} phase after ${(t.afterMs / 1000).toFixed(1)} s (--timeout); ${int(t.done)} of its operations had finished, ${int(t.ok)} ok`);
  }
  if (s.error) row('all', 'ERROR', s.error);
  row('all', 'failures', `${int(s.failures.total)} (--max-failures ${int(s.options.maxFailures)}): ${s.ok ? 'ok' : 'FAILED'}`);

  const header: [string, string, string] = ['phase', 'metric', 'value'];
  const widths = [0, 1].map((i) => Math.max(header[i]!.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: [string, string, string]) => `${r[0].padEnd(widths[0]!)}  ${r[1].padEnd(widths[1]!)}  ${r[2]}`.trimEnd();
  const o = s.options;
  const title =
    `hubbub loadtest ${s.url}: ${int(o.connections)} connections, ${o.procs} process${o.procs > 1 ? 'es' : ''} (${s.perProcess.map(int).join(' + ')})` +
    `${o.sources.length ? `, from ${o.sources.join(',')}` : ''}, protocol ${o.protocol}, ${(s.durationMs / 1000).toFixed(1)} s`;
  return [title, '', line(header), line(['-----', '------', '-----']), ...rows.map(line), ''].join('\n');
}
