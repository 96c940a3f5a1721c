// Server memory for the hold phase: VmRSS from /proc/<pid>/status when --server-pid is given
// (any server, Linux; summed over the process and its descendants, so a cluster primary's pid
// counts its workers), else from GET /stats on the URL's origin (hubbub): `cluster.rssBytes` (the
// whole cluster) when the server runs workers, `process.rssBytes` otherwise.
import { readdir, readFile } from 'node:fs/promises';

export interface MemorySource {
  pid: number | undefined;
  statsUrl: string;
}

export interface MemoryReading {
  bytes: number;
  /** The server's own count of open sockets, when /stats says it. */
  live: number | undefined;
}

/** `ws://h:p/x` → `http://h:p/stats` (wss → https). */
export function statsUrlFor(url: URL): string {
  return `${url.protocol === 'wss:' ? 'https:' : 'http:'}//${url.host}/stats`;
}

export function describeSource(source: MemorySource): string {
  return source.pid !== undefined ? `/proc/${source.pid}/status VmRSS (with its child processes)` : `${source.statsUrl} cluster.rssBytes or process.rssBytes`;
}

export async function readServerMemory(source: MemorySource): Promise<MemoryReading> {
  if (source.pid !== undefined) return { bytes: await treeRss(source.pid), live: undefined };
  const res = await fetch(source.statsUrl, { signal: AbortSignal.timeout(3000) });
  if (!res.ok) throw new Error(`GET ${source.statsUrl}: HTTP ${res.status}`);
  const stats = (await res.json()) as { live?: unknown; process?: { rssBytes?: unknown }; cluster?: { rssBytes?: unknown; live?: unknown } };
  const bytes = stats.cluster?.rssBytes ?? stats.process?.rssBytes;
  if (typeof bytes !== 'number') throw new Error(`GET ${source.statsUrl}: no process.rssBytes in the answer`);
  const live = stats.cluster?.live ?? stats.live;
  return { bytes, live: typeof live === 'number' ? live : undefined };
}

/** VmRSS of `pid` plus that of every descendant (/proc/<pid>/task/<tid>/children). */
async function treeRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`);
  let bytes = Number(m[1]) * 1024;
  for (const child of await childPids(pid)) bytes += await treeRss(child).catch(() => 0); // a child may exit meanwhile
  return bytes;
}

async function childPids(pid: number): Promise<number[]> {
  const tids = await readdir(`/proc/${pid}/task`).catch(() => [] as string[]);
  const out: number[] = [];
  for (const tid of tids) {
    const text = await readFile(`/proc/${pid}/task/${tid}/children`, 'utf8').catch(() => '');
    for (const c of text.split(/\s+/)) if (c) out.push(Number(c));
  }
  return out;
}

/** The median of a few readings, `intervalMs` apart (RSS moves while the allocator settles). */
export async function sampleServerMemory(source: MemorySource, samples = 3, intervalMs = 250, signal?: AbortSignal): Promise<MemoryReading> {
  const readings: MemoryReading[] = [];
  for (let i = 0; i < samples && !signal?.aborted; i++) {
    if (i > 0) await new Promise((resolve) => setTimeout(resolve, intervalMs));
    readings.push(await readServerMemory(source));
  }
  if (readings.length === 0) throw new Error('stopped');
  const sorted = readings.map((r) => r.bytes).sort((a, b) => a - b);
  return { bytes: sorted[Math.floor(sorted.length / 2)]!, live: readings.at(-1)!.live };
}
