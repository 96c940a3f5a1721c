// `hubbub loadtest` on Deno: `deno run -A loadtest.ts --url ws://127.0.0.1:8080/ws [flags]`.
import { runLoadtest } from './src/loadtest/index.ts';

const code = await runLoadtest(Deno.args, {
  stdout: (text) => void Deno.stdout.writeSync(new TextEncoder().encode(text)),
  stderr: (text) => void Deno.stderr.writeSync(new TextEncoder().encode(text)),
  isTTY: Deno.stderr.isTerminal(),
});
Deno.exit(code);
