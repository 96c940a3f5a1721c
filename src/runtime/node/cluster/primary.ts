// The primary of a Node cluster (`--workers N|auto`): N worker processes share one port
// (node:cluster) and ONE connection limit. The primary serves nothing itself; it owns the limit. A
// worker asks it for a slot for each upgrade (one IPC round trip) and gives the slot back when the
// connection ends, so the limit is exact across workers. A worker that dies is replaced and its
// slots return at once. SIGTERM/SIGINT to the primary drains every worker; a second signal kills them.
import cluster, { type Worker } from 'node:cluster';
import { createServer, type AddressInfo } from 'node:net';
import { availableParallelism } from 'node:os';
import type { Logger } from '../../../log.ts';
import { mergeExpositions, renderClusterMetrics } from '../../../metrics.ts';
import { mergeHubStats, sumFigures } from '../../../stats.ts';
import { WORKER_ENV, type ClusterStats, type ToPrimary, type ToWorker, type WorkerReport, type WorkerStats } from './messages.ts';
import { rssBytes } from '../memory.ts';

export function resolveWorkers(workers: number): number {
  return workers === 0 ? availableParallelism() : workers;
}

export interface PrimaryOptions {
  workers: number;
  maxConnections: number;
  shutdownTimeout: number;
  adminPort: number;
  adminHost: string;
}

export function runPrimary(options: PrimaryOptions, log: Logger): void {
  const count = resolveWorkers(options.workers);
  const limit = options.maxConnections;
  const slots = new Map<number, number>(); // worker id → slots held
  let used = 0;
  let replaced = 0;
  let stopping = false;
  let announced = false;
  const listening = new Set<number>();
  // A /stats or /metrics request: the worker that got it asks, every worker reports, the primary
  // answers once all have (or after 500 ms, with those that did).
  interface Collect {
    what: 'stats' | 'metrics';
    from: Worker;
    id: number;
    reports: Map<number, unknown>;
    timer: ReturnType<typeof setTimeout>;
  }
  const collects = new Map<number, Collect>();
  let nextCollect = 0;
  const collect = (what: Collect['what'], from: Worker, id: number) => {
    const key = nextCollect++;
    collects.set(key, { what, from, id, reports: new Map(), timer: setTimeout(() => answer(key), 500) });
    for (const w of Object.values(cluster.workers ?? {})) if (w) send(w, { hubbub: `${what}-collect`, id: key });
  };
  const report = (worker: Worker, key: number, value: unknown) => {
    const request = collects.get(key);
    if (!request) return;
    request.reports.set(worker.id, value);
    if (request.reports.size >= Object.keys(cluster.workers ?? {}).length) answer(key);
  };

  const fork = () => {
    const worker = cluster.fork({ [WORKER_ENV]: '1' });
    slots.set(worker.id, 0);
    worker.on('message', (msg: ToPrimary) => onMessage(worker, msg));
    return worker;
  };

  const send = (worker: Worker, msg: ToWorker) => {
    if (worker.isConnected()) worker.send(msg);
  };

  function onMessage(worker: Worker, msg: ToPrimary): void {
    switch (msg?.hubbub) {
      case 'acquire': {
        const ok = !stopping && used < limit;
        if (ok) {
          used++;
          slots.set(worker.id, (slots.get(worker.id) ?? 0) + 1);
        }
        send(worker, { hubbub: 'acquired', id: msg.id, ok });
        return;
      }
      case 'release': {
        const held = slots.get(worker.id) ?? 0;
        if (held > 0) {
          slots.set(worker.id, held - 1);
          used--;
        }
        return;
      }
      case 'listening': {
        // Announced once every worker serves, with the worker's own URLs (node:cluster's
        // 'listening' event fires for each listener, the admin one too, and cannot tell them apart).
        listening.add(worker.id);
        if (!announced && listening.size >= count) {
          announced = true;
          log.info('listening', { url: msg.url, ...(msg.adminUrl ? { adminUrl: msg.adminUrl } : {}), runtime: 'node', workers: count, maxConnections: limit, pid: process.pid });
        }
        return;
      }
      case 'admission-request':
        // Answered from the primary's own counts: a storm of refused clients asking /admission costs one small message each, not a collection from every worker.
        return send(worker, { hubbub: 'admission', id: msg.id, figures: { slotsUsed: used, limit, stopping } });
      case 'stats-request':
      case 'metrics-request':
        return collect(msg.hubbub === 'stats-request' ? 'stats' : 'metrics', worker, msg.id);
      case 'stats-report':
        return report(worker, msg.id, msg.report);
      case 'metrics-report':
        return report(worker, msg.id, msg.text);
    }
  }

  function answer(key: number): void {
    const request = collects.get(key);
    if (!request) return;
    collects.delete(key);
    clearTimeout(request.timer);
    const workers = Object.values(cluster.workers ?? {}).filter((w): w is Worker => w !== undefined);
    if (request.what === 'metrics') {
      const own = renderClusterMetrics({ workers: workers.length, limit, slotsUsed: used, replaced, primaryRssBytes: rssBytes() });
      const texts = workers.map((w) => request.reports.get(w.id)).filter((t): t is string => typeof t === 'string');
      send(request.from, { hubbub: 'metrics', id: request.id, text: mergeExpositions([own, ...texts]) });
      return;
    }
    const reports = workers.map((w) => request.reports.get(w.id) as WorkerReport | undefined);
    const perWorker = workers.map((w, i) => ({ id: w.id, pid: w.process.pid ?? 0, slots: slots.get(w.id) ?? 0, ...workerFigures(reports[i]) }));
    const answered = reports.filter((r): r is WorkerReport => r !== undefined);
    const sum = (k: keyof WorkerStats) => perWorker.reduce((a, w) => a + (w[k] ?? 0), 0);
    const primaryRss = rssBytes();
    const figures: ClusterStats = {
      workers: perWorker.length,
      limit,
      slotsUsed: used,
      live: sum('live'),
      reserved: sum('reserved'),
      accepted: sum('accepted'),
      replaced,
      rssBytes: sum('rssBytes') + primaryRss,
      perWorker,
      answered: answered.length,
    };
    if (answered.length > 0) {
      const processTotals = sumFigures(answered.map((r) => r.process));
      figures.totals = { hub: mergeHubStats(answered.map((r) => r.hub), limit), process: { ...processTotals, rssBytes: (processTotals.rssBytes ?? 0) + primaryRss } };
    }
    send(request.from, { hubbub: 'stats', id: request.id, cluster: figures });
  }


  cluster.on('exit', (worker, code, signal) => {
    const held = slots.get(worker.id) ?? 0;
    used -= held; // the dead worker's slots come back at once
    slots.delete(worker.id);
    listening.delete(worker.id);
    if (stopping) {
      if (Object.keys(cluster.workers ?? {}).length === 0) {
        log.info('shutdown.done', { workers: count });
        process.exit(0);
      }
      return;
    }
    replaced++;
    log.warn('worker.exit', { worker: worker.id, pid: worker.process.pid, code, signal, slotsReturned: held });
    fork();
  });

  let signals = 0;
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      signals++;
      if (signals > 1) {
        log.warn('shutdown.abort', { signal, note: 'second signal: killing workers' });
        for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
        process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
      }
      stopping = true;
      log.info('signal', { signal, workers: Object.keys(cluster.workers ?? {}).length });
      for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGTERM');
      // Workers exit by their own deadline; this is the backstop.
      setTimeout(() => {
        for (const w of Object.values(cluster.workers ?? {})) w?.process.kill('SIGKILL');
        process.exit(0);
      }, options.shutdownTimeout + 5000).unref();
    });
  }

  // node:cluster shares one handle per address and port among the workers, and every `listen(0)` on
  // the same address gets the same handle: with `--admin-port 0` the admin listener would share the
  // public one's port (with `--port 0` too), and requests would land on either app. So the primary
  // picks the admin port itself and gives it to the workers (the last --admin-port flag wins).
  void adminPortFor(options).then(
    (adminPort) => {
      if (adminPort !== undefined) cluster.setupPrimary({ args: [...process.argv.slice(2), '--admin-port', String(adminPort)] });
      for (let i = 0; i < count; i++) fork();
    },
    (error: unknown) => {
      log.error('listen.error', { what: 'admin listener', error });
      process.exit(1);
    },
  );
}

/** A free port for the admin listener when `--admin-port 0` asks for any; undefined otherwise. */
function adminPortFor({ adminPort, adminHost }: PrimaryOptions): Promise<number | undefined> {
  if (adminPort !== 0) return Promise.resolve(undefined);
  return new Promise((resolve, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, adminHost, () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

function workerFigures(report: WorkerReport | undefined): Partial<WorkerStats> {
  if (!report) return {};
  const { live, reserved, accepted, messagesIn, messagesOut } = report.hub;
  return { live, reserved, accepted, messagesIn, messagesOut, rssBytes: report.process.rssBytes ?? 0 };
}
