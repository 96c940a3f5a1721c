// `hubbub` on Node: `node dist/node.js [flags]`. With `--workers N` the process becomes the primary
// of a cluster; in a worker it serves with the primary's cluster limit. `node dist/node.js loadtest`
// runs the load-test command instead.
import { runCli } from '../../cli.ts';
import { createLogger } from '../../log.ts';
import { runPrimary } from './cluster/primary.ts';
import { createWorkerLink, isClusterWorker, workerId } from './cluster/worker.ts';
import { readTls } from '../tls.ts';
import { serveNode } from './serve.ts';

export async function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  if (argv[0] === 'loadtest') return (await import('../../loadtest/main.ts')).main(argv.slice(1));
  const link = isClusterWorker() ? createWorkerLink() : undefined;
  return runCli({
    runtime: 'node',
    ...(link
      ? {
          role: `worker ${workerId()}`,
          // Connection ids unique across the cluster: `<worker id>-<n>`.
          hubInit: { idPrefix: `${workerId()}-`, clusterLimit: link.clusterLimit },
        }
      : {
          runCluster: (options) => {
            // The workers read the certificate files too; the primary checks them first, so that a bad
            // one is one startup error (exit 2), not every worker failing in turn.
            readTls(options);
            runPrimary(options, createLogger(options.logLevel));
          },
        }),
    argv,
    env: process.env,
    cwd: () => process.cwd(),
    serve: async (hub) => {
      const served = await serveNode(hub, { cluster: link });
      link?.listening(served.url, served.adminUrl);
      return served;
    },
    onSignal: (signals, listener) => {
      // A cluster worker is stopped by its primary (SIGTERM); a terminal's SIGINT to the whole
      // process group must not count as a first signal in every worker.
      for (const signal of signals) if (!link || signal === 'SIGTERM') process.on(signal, () => listener(signal));
    },
    exit: (code) => process.exit(code),
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  });
}
