// Runs the black-box suite against the real Deno server: `deno run -A main.ts`.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { denoBinary, root, withTimeout } from '../helpers.ts';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { runSuite } from '../suite/index.ts';

const deno = denoBinary();

it('deno: main.ts and the Deno adapter type-check (deno check)', () => {
  const result = spawnSync(deno, ['check', 'main.ts', 'test/fixtures/handler.ts'], { cwd: root, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  assert.equal(result.status, 0, result.stderr);
});

// The README's `deno task start`, as a newcomer runs it after `npm ci`: deno task puts
// node_modules/.bin first on PATH and runs what it finds there as JavaScript, so a task that says
// `deno` would load the npm package's native binary as a script and fail (deno.json calls it by path).
it('deno: `deno task start` serves /healthz, and SIGTERM to the task drains the server and exits 0', async () => {
  // Its own process group, so that whatever happens the task and the server it started are both killed.
  const task = spawn(deno, ['task', 'start', '--host', '127.0.0.1', '--port', '0'], { cwd: root, detached: true, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
  let stderr = '';
  task.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = once(task, 'exit') as Promise<[number | null, NodeJS.Signals | null]>;
  try {
    const url = await withTimeout(
      new Promise<string>((resolve, reject) => {
        createInterface({ input: task.stdout! }).on('line', (line) => {
          if (line.startsWith('{') && (JSON.parse(line) as { event?: string }).event === 'listening') resolve((JSON.parse(line) as { url: string }).url);
        });
        void exited.then(([code]) => reject(new Error(`deno task start exited (${code}) before listening: ${stderr}`)));
      }),
      30_000,
      `deno task start listening: ${stderr}`,
    );
    const res = await fetch(`${url}/healthz`);
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { status: 'ok' });
    task.kill('SIGTERM');
    const [code, signal] = await withTimeout(exited, 10_000, 'deno task start exiting after SIGTERM');
    assert.deepEqual({ code, signal }, { code: 0, signal: null }, stderr);
    assert.match(stderr, /Task start/);
  } finally {
    try {
      process.kill(-task.pid!, 'SIGKILL');
    } catch {
      // the group is gone: the task and its server exited
    }
  }
});

runSuite({
  name: 'deno',
  command: [deno, 'run', '-A', 'main.ts'],
  testHandler: 'test/fixtures/handler.ts',
  differences: new Set(['vanished-handshake-expires', 'idle-close-1001', 'no-permessage-deflate', 'no-headers-timeout', 'no-pending-connection-cap']),
});
