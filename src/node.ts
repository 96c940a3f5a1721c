#!/usr/bin/env node
// Node entry: `node dist/node.js [flags]` (or the `hubbub` bin).
import { main } from './runtime/node/main.ts';

await main();
