// What the cluster's primary and its workers say to each other over IPC (node:cluster).

/** Marks a process forked by the primary as one of its workers. */
export const WORKER_ENV = 'HUBBUB_CLUSTER_WORKER';

export type ToPrimary =
  | { hubbub: 'acquire'; id: number }
  | { hubbub: 'release' }
  | { hubbub: 'stats-request'; id: number }
  | { hubbub: 'stats-report'; id: number; stats: WorkerStats }
  | { hubbub: 'metrics-request'; id: number }
  | { hubbub: 'metrics-report'; id: number; text: string };
export type ToWorker =
  | { hubbub: 'acquired'; id: number; ok: boolean }
  | { hubbub: 'stats-collect'; id: number }
  | { hubbub: 'stats'; id: number; cluster: ClusterStats }
  | { hubbub: 'metrics-collect'; id: number }
  | { hubbub: 'metrics'; id: number; text: string };

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
}
