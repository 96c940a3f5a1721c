// The process's file-descriptor limit, for runtimes that bound their sockets by it (Node, Bun).
import { readFileSync } from 'node:fs';

/** File descriptors kept free for everything else: the admin listener, broker clients, files, the event loop. */
export const FD_RESERVE = 64;

/** The soft limit on open files of this process (Linux), or undefined where it cannot be read. */
export function openFileLimit(): number | undefined {
  try {
    const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    return line && line[1] !== 'unlimited' ? Number(line[1]) : undefined;
  } catch {
    return undefined;
  }
}
