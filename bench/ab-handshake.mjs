#!/usr/bin/env node
// Server CPU per handshake of two hubbub trees, interleaved round by round (A, B, A, B, …), so that
// what else the two cores do weighs on both alike. For a before/after comparison of a change:
//
//   node bench/ab-handshake.mjs --a ../before --b . [--runtime node|deno|bun] [--rounds 4] [--connections 5000]
//
// Each round starts the tree's server on 127.0.0.1 port 0 (heartbeat off), opens N WebSockets with
// 100 handshakes in flight from this process, and reads the server's utime+stime (/proc/<pid>/stat)
// around them. Prints {runtime, connections, a: [µs…], b: [µs…], medians, ratio b ÷ a} as JSON.
// Each tree must be built (`npm run build`) and have node_modules. Loopback only.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []));
const runtime = args.runtime ?? 'node';
const rounds = Number(args.rounds ?? 4);
const connections = Number(args.connections ?? 5000);
const trees = { a: resolve(args.a ?? root), b: resolve(args.b ?? root) };
const CLK_TCK = 100;

function command(tree) {
  if (runtime === 'deno') return [resolve(root, 'node_modules/.bin/deno'), ['run', '-A', 'main.ts']];
  if (runtime === 'bun') return [resolve(root, 'node_modules/.bin/bun'), ['run', '--no-env-file', 'bun.ts']];
  return [process.execPath, [resolve(tree, 'dist/node.js')]];
}

function cpuTicks(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

async function round(tree) {
  const [cmd, lead] = command(tree);
  const child = spawn(cmd, [...lead, '--host', '127.0.0.1', '--port', '0', '--max-connections', String(connections * 2), '--heartbeat-interval', '0'], { cwd: tree, stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const url = await new Promise((ok, fail) => {
      child.once('exit', (code) => fail(new Error(`${tree}: server exited (${code})`)));
      createInterface({ input: child.stdout }).on('line', (line) => {
        try {
          const record = JSON.parse(line);
          if (record.url) ok(record.url);
        } catch {}
      });
    });
    await new Promise((r) => setTimeout(r, 1500)); // let startup work finish
    const wsUrl = `${url.replace('http', 'ws')}/ws`;
    const before = cpuTicks(child.pid);
    const sockets = [];
    let started = 0;
    await Promise.all(
      Array.from({ length: 100 }, async () => {
        while (started < connections) {
          started++;
          sockets.push(await new Promise((ok, fail) => {
            const ws = new WebSocket(wsUrl);
            ws.once('open', () => ok(ws));
            ws.once('error', fail);
          }));
        }
      }),
    );
    const after = cpuTicks(child.pid);
    for (const ws of sockets) ws.terminate();
    return Math.round(((after - before) / CLK_TCK) * 1e6 / connections);
  } finally {
    child.kill('SIGKILL');
  }
}

const median = (xs) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
const out = { a: [], b: [] };
for (let i = 0; i < rounds; i++) {
  for (const side of ['a', 'b']) {
    out[side].push(await round(trees[side]));
    process.stderr.write(`[ab-handshake] round ${i + 1} ${side}: ${out[side].at(-1)} µs/handshake\n`);
  }
}
console.log(JSON.stringify({ runtime, connections, trees, a: out.a, b: out.b, medianA: median(out.a), medianB: median(out.b), ratio: Math.round((median(out.b) / median(out.a)) * 1000) / 1000 }));
