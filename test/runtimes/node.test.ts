// Runs the black-box suite against the real Node server: `node dist/node.js`.
import assert from 'node:assert/strict';
import { it } from 'node:test';
import { runToExit, type RuntimeTarget } from '../helpers.ts';
import { runSuite } from '../suite/index.ts';

const target: RuntimeTarget = { name: 'node', command: [process.execPath, 'dist/node.js'], testHandler: '.test-build/test/fixtures/handler.js' };

it('node: a .ts --handler is a startup error that names the option and says what to do (Node 20 cannot load TypeScript)', async () => {
  const { code, stderr, timedOut, listened } = await runToExit(target, ['--port', '0', '--handler', 'test/fixtures/handler.ts'], {}, 10_000);
  assert.equal(listened, false);
  assert.equal(timedOut, false, stderr);
  assert.equal(code, 2, stderr);
  assert.match(stderr, /^hubbub: --handler "test\/fixtures\/handler\.ts": cannot load the module \(.*\); Node cannot load TypeScript: compile the handler to \.js, or run it on Deno or Bun\n$/);
});

runSuite(target);
