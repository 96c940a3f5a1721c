// Runs the black-box suite against the real Bun server: `bun run bun.ts`.
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { root, type RuntimeDifference } from './helpers.ts';
import { runSuite } from './suite.ts';

/** The bun binary installed from npm (node_modules/.bin/bun is a link to it). */
const bun = realpathSync(path.join(root, 'node_modules', '.bin', 'bun'));

runSuite({
  name: 'bun',
  command: [bun, 'run', 'bun.ts'],
  testHandler: 'test/fixtures/handler.ts',
  differences: new Set<RuntimeDifference>([]),
});
