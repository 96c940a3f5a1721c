// `hubbub loadtest` on Deno: `deno run -A loadtest.ts --url ws://127.0.0.1:8080/ws [flags]`.
// The same entry as on Node (src/loadtest/main.ts): its host is node:process, which Deno implements.
import { main } from './src/loadtest/main.ts';

await main(Deno.args);
