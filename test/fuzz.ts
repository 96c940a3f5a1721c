import type { RuntimeTarget } from './helpers.ts';
export function runFuzz(_target: RuntimeTarget): void {}
