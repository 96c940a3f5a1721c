// Server memory for the hold phase: VmRSS from /proc/<pid>/status when --server-pid is given
// (any server, Linux), else `process.rssBytes` from GET /stats on the URL's origin (hubbub).
import { readFile } from 'node:fs/promises';

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
  return source.pid !== undefined ? `/proc/${source.pid}/status VmRSS` : `${source.statsUrl} process.rssBytes`;
}

export async function readServerMemory(source: MemorySource): Promise<MemoryReading> {
  if (source.pid !== undefined) {
    const status = await readFile(`/proc/${source.pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    if (!m) throw new Error(`no VmRSS in /proc/${source.pid}/status`);
    return { bytes: Number(m[1]) * 1024, live: undefined };
  }
  const res = await fetch(source.statsUrl, { signal: AbortSignal.timeout(3000) });
  if (!res.ok) throw new Error(`GET ${source.statsUrl}: HTTP ${res.status}`);
  const stats = (await res.json()) as { live?: unknown; process?: { rssBytes?: unknown } };
  const bytes = stats.process?.rssBytes;
  if (typeof bytes !== 'number') throw new Error(`GET ${source.statsUrl}: no process.rssBytes in the answer`);
  return { bytes, live: typeof stats.live === 'number' ? stats.live : undefined };
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
