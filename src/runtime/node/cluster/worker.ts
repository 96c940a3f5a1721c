// A worker of a Node cluster: its side of the IPC with the primary. It asks the primary for a slot
// of the cluster limit per upgrade, answers the primary's collection of /stats and /metrics, and
// asks it for the whole cluster's figures when its own /stats, /healthz or /metrics is requested.
import cluster from 'node:cluster';
import type { ClusterLimit } from '../../../cluster-limit/contract.ts';
import type { Hub } from '../../../hub.ts';
import { WORKER_ENV, type AdmissionFigures, type ClusterStats, type ToPrimary, type ToWorker } from './messages.ts';
import { rssBytes } from '../memory.ts';

export function isClusterWorker(): boolean {
  return cluster.isWorker && process.env[WORKER_ENV] === '1';
}

/** This worker's id in the cluster (node:cluster's), as connection ids and metrics labels carry it. */
export function workerId(): string {
  return String(cluster.worker?.id ?? process.pid);
}

/** How long a worker waits for the primary; no answer counts as a refusal (slots) or as no figures. */
const ASK_TIMEOUT_MS = 2000;
/** How long one answer of the primary to /admission serves further /admission requests. */
const ADMISSION_FRESH_MS = 100;

export interface WorkerLink {
  /** The primary's limit: one IPC round trip per acquire. Made before the hub, which it is given to (HubInit). */
  readonly clusterLimit: ClusterLimit;
  /** Answers the primary's collections from this hub; `renderMetrics` renders its own exposition, labelled. */
  serve(hub: Hub, renderMetrics: (labels: Record<string, string>) => string, processStats: () => Record<string, number>): void;
  clusterStats(): Promise<ClusterStats | undefined>;
  /** What /admission needs (the primary's slot count and limit), shared by requests within 100 ms. */
  clusterAdmission(): Promise<AdmissionFigures | undefined>;
  clusterMetrics(): Promise<string>;
  /** Tells the primary this worker serves, and where (it announces the server once every worker does). */
  listening(url: string, adminUrl: string | undefined): void;
}

export function createWorkerLink(): WorkerLink {
  let nextId = 0;
  let hub: Hub | undefined;
  let render: ((labels: Record<string, string>) => string) | undefined;
  let processFigures: (() => Record<string, number>) | undefined;
  const acquires = new Map<number, (ok: boolean) => void>();
  const statsWaiters = new Map<number, (stats: ClusterStats | undefined) => void>();
  const metricsWaiters = new Map<number, (text: string | undefined) => void>();
  const admissionWaiters = new Map<number, (figures: AdmissionFigures | undefined) => void>();
  // /admission asked by many clients at once (after a restart, every refused one) shares one question
  // to the primary, and its answer for ADMISSION_FRESH_MS.
  let admission: { at: number; answer: Promise<AdmissionFigures | undefined> } | undefined;
  const worker = workerId();
  const ownMetrics = () => render?.({ worker }) ?? '';
  process.on('message', (msg: ToWorker) => {
    switch (msg?.hubbub) {
      case 'acquired':
        acquires.get(msg.id)?.(msg.ok);
        acquires.delete(msg.id);
        return;
      case 'stats-collect': {
        if (!hub) return;
        process.send?.({ hubbub: 'stats-report', id: msg.id, report: { hub: hub.stats(), process: processFigures?.() ?? { rssBytes: rssBytes() } } } satisfies ToPrimary);
        return;
      }
      case 'stats':
        statsWaiters.get(msg.id)?.(msg.cluster);
        statsWaiters.delete(msg.id);
        return;
      case 'admission':
        admissionWaiters.get(msg.id)?.(msg.figures);
        admissionWaiters.delete(msg.id);
        return;
      case 'metrics-collect':
        process.send?.({ hubbub: 'metrics-report', id: msg.id, text: ownMetrics() } satisfies ToPrimary);
        return;
      case 'metrics':
        metricsWaiters.get(msg.id)?.(msg.text);
        metricsWaiters.delete(msg.id);
        return;
    }
  });
  const ask = <T>(waiters: Map<number, (v: T) => void>, message: (id: number) => ToPrimary, fallback: T): Promise<T> =>
    new Promise((resolve) => {
      const id = nextId++;
      const timer = setTimeout(() => {
        waiters.delete(id);
        resolve(fallback);
      }, ASK_TIMEOUT_MS);
      waiters.set(id, (value) => {
        clearTimeout(timer);
        resolve(value);
      });
      process.send?.(message(id));
    });
  return {
    clusterLimit: {
      // No answer from the primary (it is gone): refuse rather than exceed the limit.
      acquire: () => ask(acquires, (id) => ({ hubbub: 'acquire', id }), false),
      release: () => void process.send?.({ hubbub: 'release' } satisfies ToPrimary),
    },
    serve(served, renderMetrics, processStats) {
      hub = served;
      render = renderMetrics;
      processFigures = processStats;
    },
    listening: (url, adminUrl) => void process.send?.({ hubbub: 'listening', url, adminUrl } satisfies ToPrimary),
    clusterStats: () => ask(statsWaiters, (id) => ({ hubbub: 'stats-request', id }), undefined),
    clusterAdmission: () => {
      const now = Date.now();
      if (!admission || now - admission.at > ADMISSION_FRESH_MS) admission = { at: now, answer: ask(admissionWaiters, (id) => ({ hubbub: 'admission-request', id }), undefined) };
      return admission.answer;
    },
    // No answer from the primary: this worker's own figures, still labelled, rather than nothing.
    clusterMetrics: () => ask<string | undefined>(metricsWaiters, (id) => ({ hubbub: 'metrics-request', id }), undefined).then((text) => text ?? ownMetrics()),
  };
}
