// TEMPORARY runner for the conformance harness and the fuzz test on Node and Deno. The lead moves
// these calls into test/node.test.ts and test/deno.test.ts and deletes this file.
import { runConformance } from './conformance.ts';
import { runFuzz } from './fuzz.ts';
import { denoBinary, type RuntimeTarget } from './helpers.ts';

const targets: RuntimeTarget[] = [
  { name: 'node', command: [process.execPath, 'dist/node.js'], testHandler: '.test-build/test/fixtures/handler.js' },
  { name: 'deno', command: [denoBinary(), 'run', '-A', 'main.ts'], testHandler: 'test/fixtures/handler.ts' },
];

for (const target of targets) {
  runConformance(target);
  runFuzz(target);
}
