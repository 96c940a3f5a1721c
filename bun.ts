// Bun entry: `bun run bun.ts [flags]`.
import { main } from './src/runtime/bun.ts';

await main();
