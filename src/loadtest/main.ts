#!/usr/bin/env node
// `hubbub loadtest` as a command: `node dist/loadtest/main.js --url ws://127.0.0.1:8080/ws [flags]`.
// `node dist/node.js loadtest ...` hands off to `main` here, and the Deno entry (loadtest.ts) calls it
// too: node:process is one of the Node APIs Deno implements, so one host serves both runtimes.
import { realpathSync } from 'node:fs';
import process from 'node:process';
import { fileURLToPath } from 'node:url';
import { runLoadtest } from './index.ts';

/** Runs `hubbub loadtest <argv>` on this process's stdout and stderr, then exits with its code. */
export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<never> {
  const code = await runLoadtest(argv, {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    isTTY: Boolean(process.stderr.isTTY), // progress bars go to stderr
  });
  process.exit(code);
}

/** Whether this module is the script the process was started with (not imported by another entry). */
function isEntry(): boolean {
  const flagged = (import.meta as ImportMeta & { main?: boolean }).main; // Deno, Node 24.2+
  if (typeof flagged === 'boolean') return flagged;
  const script = process.argv[1];
  if (!script) return false;
  const real = (path: string) => {
    try {
      return realpathSync(path);
    } catch {
      return undefined;
    }
  };
  const self = real(fileURLToPath(import.meta.url));
  // `node dist/loadtest/main` finds main.js, but argv[1] stays without the extension.
  return self !== undefined && (real(script) === self || real(`${script}.js`) === self);
}

if (isEntry()) await main();
