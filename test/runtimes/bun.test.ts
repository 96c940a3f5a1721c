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
 *  - close-handshake-not-awaited: a server-initiated close sends the close frame and FIN and is
 *    reported closed at once, so no peer can hold a graceful shutdown open;
 *  - closed-socket-lingers: …while uWebSockets keeps that TCP connection until the peer answers or
 *    about 20 s pass, out of the core's count (an attacker holds an fd that long);
 *  - close-frame-lost-at-shutdown-under-load: at SIGTERM some busy peers get a FIN without the 1001
 *    close frame (1006); cause not found yet (not server.stop(true)).
 */
const differences: RuntimeDifference[] = ['fixed-headers-timeout', 'close-handshake-not-awaited', 'closed-socket-lingers', 'no-pending-connection-cap', 'close-frame-lost-at-shutdown-under-load'];

runSuite({
  name: 'bun',
  // --no-env-file: Bun would otherwise load a .env in the project root into the environment (Node does not).
  command: [bun, 'run', '--no-env-file', 'bun.ts'],
  testHandler: 'test/fixtures/handler.ts',
  differences: new Set(differences),
});
