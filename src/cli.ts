// The `hubbub` command, shared by every runtime entry: read flags and environment, load the
// handler, serve, and shut down on SIGINT/SIGTERM. Exit codes: 0 after a graceful shutdown,
// 1 when the server cannot start (e.g. port taken), 2 for a bad option, 128+n on a second signal.
import { HubError } from './errors.ts';
import { builtinHandlers } from './handlers/index.ts';
import { createHub, type Hub, type HubInit } from './hub.ts';
import { parseCommandLine, resolveOptions, type HubOptions } from './options.ts';
import { withDeadline } from './timers.ts';
import { VERSION } from './version.ts';

export interface ServedHub {
  /** Where the server listens, e.g. http://127.0.0.1:8080 */
  readonly url: string;
  /** Where the admin listener listens (`--admin-port`), if there is one. */
  readonly adminUrl?: string | undefined;
  /** Stops listening and drops whatever is left. */
  close(): Promise<void>;
}

/** What a runtime entry lends the command. */
export interface CliHost {
  readonly runtime: string;
  /** Set in a cluster worker: its listening line is then `worker.listening` (the primary announces `listening`). */
  readonly role?: string | undefined;
  /** Node: runs the primary of a cluster (`--workers` other than 1) instead of serving. Absent where there is no cluster mode. */
  runCluster?(options: HubOptions): void;
  /** How the runtime builds its hub (cluster worker: an id prefix). */
  readonly hubInit?: HubInit | undefined;
  readonly argv: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  cwd(): string;
  /** Starts the hub (`hub.start()`) and serves it; resolves once listening. */
  serve(hub: Hub): Promise<ServedHub>;
  onSignal(signals: readonly ('SIGINT' | 'SIGTERM')[], listener: (signal: 'SIGINT' | 'SIGTERM') => void): void;
  exit(code: number): never;
  stdout(text: string): void;
  stderr(text: string): void;
}

const signalNumber = { SIGINT: 2, SIGTERM: 15 } as const;
const LISTENER_CLOSE_GRACE_MS = 1000;

/** A handler given on the command line: a built-in name or a module path (default export). */
async function loadHandler(spec: string, cwd: string): Promise<HubOptions['handler']> {
  if (spec in builtinHandlers) return spec;
  const url = new URL(spec, `file://${cwd.endsWith('/') ? cwd : `${cwd}/`}`);
  let mod: { default?: unknown };
  try {
    mod = await import(url.href);
  } catch (error) {
    // Node (without type stripping) refuses a .ts module with a bare "Unknown file extension".
    const typescript = (error as { code?: unknown }).code === 'ERR_UNKNOWN_FILE_EXTENSION' && /\.[mc]?ts$/.test(url.pathname);
    const hint = typescript ? '; Node cannot load TypeScript: compile the handler to .js, or run it on Deno or Bun' : '';
    throw new HubError('ERR_INVALID_OPTION', `--handler ${JSON.stringify(spec)}: cannot load the module (${(error as Error).message})${hint}`);
  }
  const handler = mod.default;
  if (handler === null || (typeof handler !== 'object' && typeof handler !== 'function')) {
    throw new HubError('ERR_INVALID_OPTION', `--handler ${JSON.stringify(spec)}: the module must export default a handler object or a function (hub) => handler`);
  }
  return handler as HubOptions['handler'];
}

const isOptionError = (error: unknown): error is HubError => error instanceof HubError && error.code === 'ERR_INVALID_OPTION';

/** A bad option: one line naming it, exit 2. */
function optionError(host: CliHost, error: HubError): never {
  host.stderr(`hubbub: ${error.message}\n`);
  return host.exit(2);
}

export async function runCli(host: CliHost): Promise<void> {
  let hub: Hub;
  try {
    const command = parseCommandLine(host.argv, host.env);
    if (command.kind === 'help') {
      host.stdout(command.text);
      return host.exit(0);
    }
    if (command.kind === 'version') {
      host.stdout(`hubbub ${VERSION}\n`);
      return host.exit(0);
    }
    const options = command.options;
    if (options.workers !== undefined && options.workers !== 1 && host.role === undefined) {
      if (!host.runCluster) {
        throw new HubError('ERR_INVALID_OPTION', `--workers is only supported on Node (node:cluster); on ${host.runtime}, run one process per core behind a load balancer with a --backplane`);
      }
      const resolved = resolveOptions(options);
      // Without a backplane each worker is a topic space of its own: a publish would reach only the
      // subscribers of the worker it came in on. Not silently.
      if (resolved.handler === 'pubsub' && resolved.backplane === '') {
        throw new HubError('ERR_INVALID_OPTION', '--handler pubsub with --workers needs a --backplane (redis://… or nats://…): without one each worker would be a topic space of its own, and a publish would reach only the subscribers of one worker');
      }
      return host.runCluster(resolved);
    }
    if (typeof options.handler === 'string') options.handler = await loadHandler(options.handler, host.cwd());
    hub = createHub(options, undefined, host.hubInit);
  } catch (error) {
    if (isOptionError(error)) return optionError(host, error);
    throw error;
  }

  let served: ServedHub;
  try {
    served = await host.serve(hub);
  } catch (error) {
    // What a runtime checks as it starts serving (the --tls-cert and --tls-key files) is an option
    // error like any other.
    if (isOptionError(error)) return optionError(host, error);
    hub.log.error('listen.error', { error, host: hub.options.host, port: hub.options.port });
    return host.exit(1);
  }
  hub.log.info(host.role ? 'worker.listening' : 'listening', {
    ...(host.role ? { role: host.role } : {}),
    url: served.url,
    ...(served.adminUrl ? { adminUrl: served.adminUrl } : {}),
    path: hub.options.path,
    runtime: host.runtime,
    version: VERSION,
    maxConnections: hub.options.maxConnections,
  });

  let stopping = false;
  host.onSignal(['SIGINT', 'SIGTERM'], (signal) => {
    if (stopping) {
      hub.log.warn('shutdown.abort', { signal, note: 'second signal: exiting at once' });
      host.exit(128 + signalNumber[signal]);
    }
    stopping = true;
    hub.log.info('signal', { signal });
    hub
      .shutdown()
      // Stopping the listener can hang on connections the runtime never hands over (Deno keeps a
      // socket whose client vanished mid-handshake): give it a moment, then exit regardless.
      .then(() => withDeadline(served.close(), LISTENER_CLOSE_GRACE_MS, undefined))
      .then(
        () => host.exit(0),
        (error) => {
          hub.log.error('shutdown.error', { error });
          host.exit(1);
        },
      );
  });
}

