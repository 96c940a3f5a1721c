// Runs the black-box suite against the real Bun server: `bun run bun.ts`.
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { root, type RuntimeDifference } from '../helpers.ts';
import { runSuite } from '../suite/index.ts';

/** The bun binary installed from npm (node_modules/.bin/bun links to it). */
const bun = realpathSync(path.join(root, 'node_modules', '.bin', 'bun'));

/**
 * Bun's documented differences (README, "Runtime differences"):
 *  - fixed-headers-timeout: uWebSockets drops a slow request head after its own ~10 s (checked every
 *    4 s), whatever --headers-timeout says;
 *  - shutdown-waits-out-linger: Bun reports a closed socket gone at once, while uWebSockets keeps its
 *    TCP connection up to 4 s more for the peer's FIN; the core counts such a socket against the
 *    limit for 5 s ('lingering' in /stats), and a shutdown waits that out before it exits.
 */
const differences: RuntimeDifference[] = ['fixed-headers-timeout', 'shutdown-waits-out-linger', 'no-pending-connection-cap'];

runSuite({
  name: 'bun',
  // --no-env-file: Bun would otherwise load a .env in the project root into the environment (Node does not).
  command: [bun, 'run', '--no-env-file', 'bun.ts'],
  testHandler: 'test/fixtures/handler.ts',
  differences: new Set(differences),
});
