// `hubbub` on Deno: `deno run -A main.ts [flags]`.
import { runCli } from '../../cli.ts';
import { serveDeno } from './serve.ts';

/** `hubbub` on Deno: `deno run -A main.ts [flags]`. */
export function main(): Promise<void> {
  return runCli({
    runtime: 'deno',
    argv: Deno.args,
    env: Deno.env.toObject(),
    cwd: () => Deno.cwd(),
    serve: serveDeno,
    onSignal: (signals, listener) => {
      for (const signal of signals) Deno.addSignalListener(signal, () => listener(signal));
    },
    exit: (code) => Deno.exit(code),
    stdout: (text) => void Deno.stdout.writeSync(new TextEncoder().encode(text)),
    stderr: (text) => void Deno.stderr.writeSync(new TextEncoder().encode(text)),
  });
}
