// Runs the black-box suite against the real Node server: `node dist/node.js`.
import { runSuite } from '../suite/index.ts';

runSuite({ name: 'node', command: [process.execPath, 'dist/node.js'], testHandler: '.test-build/test/fixtures/handler.js' });
