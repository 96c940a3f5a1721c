// Runs the black-box suite against the real Deno server: `deno run -A main.ts`.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { denoBinary, root } from '../helpers.ts';
import { spawnSync } from 'node:child_process';
import { runSuite } from '../suite/index.ts';

const deno = denoBinary();

it('deno: main.ts and the Deno adapter type-check (deno check)', () => {
  const result = spawnSync(deno, ['check', 'main.ts', 'test/fixtures/handler.ts'], { cwd: root, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
  assert.equal(result.status, 0, result.stderr);
});

runSuite({
  name: 'deno',
  command: [deno, 'run', '-A', 'main.ts'],
  testHandler: 'test/fixtures/handler.ts',
  differences: new Set(['vanished-handshake-expires', 'refused-connection-kept-open', 'idle-close-1001', 'no-permessage-deflate', 'no-headers-timeout', 'no-pending-connection-cap']),
});
