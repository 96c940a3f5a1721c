// What the cluster's primary and its workers say to each other over IPC (node:cluster).
import type { HubStats } from '../../../stats.ts';

/** Marks a process forked by the primary as one of its workers. */
export const WORKER_ENV = 'HUBBUB_CLUSTER_WORKER';

export type ToPrimary =
  | { hubbub: 'acquire'; id: number }
  | { hubbub: 'release' }
  | { hubbub: 'listening'; url: string; adminUrl: string | undefined }
  | { hubbub: 'stats-request'; id: number }
  | { hubbub: 'admission-request'; id: number }
  | { hubbub: 'stats-report'; id: number; report: WorkerReport }
  | { hubbub: 'metrics-request'; id: number }
  | { hubbub: 'metrics-report'; id: number; text: string };
export type ToWorker =
  | { hubbub: 'acquired'; id: number; ok: boolean }
  | { hubbub: 'stats-collect'; id: number }
  | { hubbub: 'stats'; id: number; cluster: ClusterStats }
  | { hubbub: 'admission'; id: number; figures: AdmissionFigures }
  | { hubbub: 'metrics-collect'; id: number }
  | { hubbub: 'metrics'; id: number; text: string };

/** A worker's answer to a collection: its hub's figures and its process's. */
export interface WorkerReport {
  hub: HubStats;
  process: Record<string, number>;
}

/** What /stats lists for each worker. */
export interface WorkerStats {
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
  /** Workers whose figures are in (one that does not answer within 500 ms is left out). */
  answered: number;
  /** The whole server's /stats figures: every answering worker's summed (the process figures with the primary's memory). */
  totals?: WorkerReport;
}

/** What /admission needs of the whole server: the primary holds it, no worker is asked. */
export interface AdmissionFigures {
  slotsUsed: number;
  limit: number;
  /** The server is shutting down. */
  stopping: boolean;
}
