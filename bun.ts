// Bun entry: `bun run bun.ts [flags]`.
import { main } from './src/runtime/bun/main.ts';

await main();
