// The process's memory figures, read so that they cannot throw. `process.memoryUsage()` reads
// /proc/self/statm, which needs a file descriptor: with every fd in use (found by bench/storm.mjs:
// 20,000 clients coming back at once into a 2-worker cluster, whose primary holds each accepted
// socket until a worker takes it) it throws EMFILE, and a throw there, in a stats or /admission
// answer, took the whole server down.
import { getHeapStatistics } from 'node:v8';

export function rssBytes(): number {
  try {
    return process.memoryUsage.rss();
  } catch {
    return 0; // unknown for now; the next reading will have it
  }
}

export function memoryFigures(): { rssBytes: number; heapUsedBytes: number; externalBytes: number } {
  try {
    const m = process.memoryUsage();
    return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external };
  } catch {
    // The heap figures need no fd: only the RSS is unknown.
    const heap = getHeapStatistics();
    return { rssBytes: 0, heapUsedBytes: heap.used_heap_size, externalBytes: heap.external_memory };
  }
}
