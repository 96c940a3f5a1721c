// Node cluster mode (`--workers N|auto`): N worker processes share one port (node:cluster) and ONE
// connection limit. The primary serves nothing itself; it owns the limit. A worker asks it for a
// slot for each upgrade (one IPC round trip) and gives the slot back when the connection ends, so
// the limit is exact across workers. A worker that dies is replaced and its slots return at once.
// SIGTERM/SIGINT to the primary drains every worker; a second signal kills them.
import cluster, { type Worker } from 'node:cluster';
import { availableParallelism } from 'node:os';
import type { Hub } from '../hub.ts';
import type { Logger } from '../log.ts';
import type { SlotPool } from '../slots.ts';

type ToPrimary =
  | { hubbub: 'acquire'; id: number }
  | { hubbub: 'release' }
  | { hubbub: 'stats-request'; id: number }
  | { hubbub: 'stats-report'; id: number; stats: WorkerStats };
type ToWorker =
  | { hubbub: 'acquired'; id: number; ok: boolean }
  | { hubbub: 'stats-collect'; id: number }
  | { hubbub: 'stats'; id: number; cluster: ClusterStats };

interface WorkerStats {
  live: number;
  reserved: number;
  accepted: number;
  messagesIn: number;
  messagesOut: number;
  rssBytes: number;
}

export interface ClusterStats {
  workers: number;
  limit: number;
  /** Slots held across all workers (must equal the sum of live + reserved). */
  slotsUsed: number;
  live: number;
  reserved: number;
  accepted: number;
  replaced: number;
  /** Resident memory of the whole server: every worker that answered, plus the primary. */
  rssBytes: number;
  perWorker: ({ id: number; pid: number; slots: number } & Partial<WorkerStats>)[];
}

export function isClusterWorker(): boolean {
  return cluster.isWorker && process.env.HUBBUB_CLUSTER_WORKER === '1';
}

export function resolveWorkers(workers: number): number {
  return workers === 0 ? availableParallelism() : workers;
}

// ---------------------------------------------------------------- primary

export function runPrimary(options: { workers: number; maxConnections: number; shutdownTimeout: number }, log: Logger): void {
  const count = resolveWorkers(options.workers);
  const limit = options.maxConnections;
  const slots = new Map<number, number>(); // worker id → slots held
  let used = 0;
  let replaced = 0;
  let stopping = false;
  let announced = false;
  const listening = new Set<number>();
  const statsRequests = new Map<number, { from: Worker; id: number; reports: Map<number, WorkerStats>; timer: ReturnType<typeof setTimeout> }>();
  let nextStats = 0;

  const fork = () => {
    const worker = cluster.fork({ HUBBUB_CLUSTER_WORKER: '1' });
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
      case 'stats-request': {
        const request = { from: worker, id: msg.id, reports: new Map<number, WorkerStats>(), timer: setTimeout(() => answer(key), 500) };
        const key = nextStats++;
        statsRequests.set(key, request);
        for (const w of Object.values(cluster.workers ?? {})) if (w) send(w, { hubbub: 'stats-collect', id: key });
        return;
      }
      case 'stats-report': {
        const request = statsRequests.get(msg.id);
        if (!request) return;
        request.reports.set(worker.id, msg.stats);
        if (request.reports.size >= Object.keys(cluster.workers ?? {}).length) answer(msg.id);
        return;
      }
    }
  }

  function answer(key: number): void {
    const request = statsRequests.get(key);
    if (!request) return;
    statsRequests.delete(key);
    clearTimeout(request.timer);
    const perWorker = Object.values(cluster.workers ?? {})
      .filter((w): w is Worker => w !== undefined)
      .map((w) => ({ id: w.id, pid: w.process.pid ?? 0, slots: slots.get(w.id) ?? 0, ...request.reports.get(w.id) }));
    const sum = (k: keyof WorkerStats) => perWorker.reduce((a, w) => a + (w[k] ?? 0), 0);
    send(request.from, {
      hubbub: 'stats',
      id: request.id,
      cluster: {
        workers: perWorker.length,
        limit,
        slotsUsed: used,
        live: sum('live'),
        reserved: sum('reserved'),
        accepted: sum('accepted'),
        replaced,
        rssBytes: sum('rssBytes') + process.memoryUsage.rss(),
        perWorker,
      },
    });
  }

  cluster.on('listening', (worker, address) => {
    listening.add(worker.id);
    if (!announced && listening.size >= count) {
      announced = true;
      const host = address.address?.includes(':') ? `[${address.address}]` : address.address;
      log.info('listening', { url: `http://${host}:${address.port}`, runtime: 'node', workers: count, maxConnections: limit, pid: process.pid });
    }
  });

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

  for (let i = 0; i < count; i++) fork();
}

// ---------------------------------------------------------------- worker

/** The worker's view of the shared limit, and of the whole cluster for /stats. */
export function workerSide(hub: Hub): { slots: SlotPool; clusterStats(): Promise<ClusterStats | undefined> } {
  let nextId = 0;
  const acquires = new Map<number, (ok: boolean) => void>();
  const statsWaiters = new Map<number, (stats: ClusterStats | undefined) => void>();
  process.on('message', (msg: ToWorker) => {
    switch (msg?.hubbub) {
      case 'acquired':
        acquires.get(msg.id)?.(msg.ok);
        acquires.delete(msg.id);
        return;
      case 'stats-collect': {
        const s = hub.stats();
        process.send?.({ hubbub: 'stats-report', id: msg.id, stats: { live: s.live, reserved: s.reserved, accepted: s.accepted, messagesIn: s.messagesIn, messagesOut: s.messagesOut, rssBytes: process.memoryUsage.rss() } } satisfies ToPrimary);
        return;
      }
      case 'stats':
        statsWaiters.get(msg.id)?.(msg.cluster);
        statsWaiters.delete(msg.id);
        return;
    }
  });
  const ask = <T>(waiters: Map<number, (v: T) => void>, message: (id: number) => ToPrimary, fallback: T): Promise<T> =>
    new Promise((resolve) => {
      const id = nextId++;
      const timer = setTimeout(() => {
        waiters.delete(id);
        resolve(fallback);
      }, 2000);
      waiters.set(id, (value) => {
        clearTimeout(timer);
        resolve(value);
      });
      process.send?.(message(id));
    });
  return {
    slots: {
      // No answer from the primary (it is gone): refuse rather than exceed the limit.
      acquire: () => ask(acquires, (id) => ({ hubbub: 'acquire', id }), false),
      release: () => void process.send?.({ hubbub: 'release' } satisfies ToPrimary),
    },
    clusterStats: () => ask(statsWaiters, (id) => ({ hubbub: 'stats-request', id }), undefined),
  };
}
