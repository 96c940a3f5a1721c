// `hubbub` on Bun: `bun run bun.ts [flags]`.
import { runCli } from '../../cli.ts';
import { serveBun } from './serve.ts';

/** `hubbub` on Bun: `bun run bun.ts [flags]`. */
export function main(argv: readonly string[] = process.argv.slice(2)): Promise<void> {
  return runCli({
    runtime: 'bun',
    argv,
    env: process.env,
    cwd: () => process.cwd(),
    serve: serveBun,
    onSignal: (signals, listener) => {
      for (const signal of signals) process.on(signal, () => listener(signal));
    },
    exit: (code) => process.exit(code),
    stdout: (text) => process.stdout.write(text),
    stderr: (text) => process.stderr.write(text),
  });
}
