// Deno entry: `deno run -A main.ts [flags]` (or `deno task start`).
import { main } from './src/runtime/deno/main.ts';

await main();
