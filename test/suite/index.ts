// The black-box suite: every runtime runner spawns its real server and runs exactly this, group by group.
import type { RuntimeTarget } from '../helpers.ts';
import { runProtections } from './protections.ts';
import { runPubSub } from './pubsub.ts';
import { runConformance } from './conformance.ts';
import { runFuzz } from './fuzz.ts';
import { runObservability } from './observability.ts';
import { runEcho } from './echo.ts';
import { runLimit } from './limit.ts';
import { runRelease } from './release.ts';
import { runHandler } from './handler.ts';
import { runShutdown } from './shutdown.ts';
import { runOptions } from './options.ts';
import { runAttacks } from './attacks.ts';
import { runAdmin } from './admin.ts';
import { runProtocols } from './protocols.ts';
import { runClient } from './client.ts';
import { runTokens } from './tokens.ts';
import { runApi } from './api.ts';
import { runTls } from './tls.ts';

export function runSuite(target: RuntimeTarget): void {
  runProtections(target);
  runPubSub(target);
  runConformance(target);
  runFuzz(target);
  runObservability(target);
  runEcho(target);
  runLimit(target);
  runRelease(target);
  runHandler(target);
  runShutdown(target);
  runOptions(target);
  runAttacks(target);
  runAdmin(target);
  runProtocols(target);
  runClient(target);
  runTokens(target);
  runApi(target);
  runTls(target);
}
