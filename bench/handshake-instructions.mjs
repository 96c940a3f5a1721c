#!/usr/bin/env node
// Instructions per WebSocket handshake (and per close), counted by valgrind's callgrind: a figure
// that does not move with the machine's load, unlike CPU time on two shared cores (issue 15).
//
//   node bench/handshake-instructions.mjs [--servers raw-ws,hubbub-node,...] [--connections 1000]
//                                         [--warmup 1500] [--rounds 2] [--hubbub-args "--jwt-secret …"] [--base ../before]
//
// Each server runs under `valgrind --tool=callgrind --instr-atstart=no` on `node --single-threaded`
// (no background compiler or GC threads, so the work counted does not depend on thread timing).
// This process opens --warmup WebSockets and closes them (instrumentation off: V8 has compiled the
// hot paths by then), then turns instrumentation on and zeroes the counters, opens --connections
// WebSockets (one handshake at a time, so that how events batch in the event loop does not depend on the machine's load; each socket sends nothing), dumps: instructions per handshake.
// Then zeroes again, terminates them all, waits until the server holds none of them (its fds in
// /proc), dumps: instructions per close. Servers: raw-ws (bench/servers/raw-ws.mjs, the floor), the
// peers in bench/servers/ that exist, hubbub-node (dist/node.js, heartbeat off). Loopback only.
// Prints one JSON object; ratios are against raw-ws.
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import WebSocket from 'ws';
import { createLog, int, median, openWebSocket, pool, ratio, root, runMain, sleep, startServer, wsUrlOf } from './lib.mjs';

const log = createLog('handshake-instructions');
const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []));
const connections = int('--connections', args.connections ?? '1000', 1);
const warmup = int('--warmup', args.warmup ?? '1500', 0);
const rounds = int('--rounds', args.rounds ?? '2', 1);
const hubbubArgs = (args['hubbub-args'] ?? '').split(' ').filter(Boolean);

const hubbubFlags = ['--host', '127.0.0.1', '--port', '0', '--max-connections', '100000', '--heartbeat-interval', '0', ...hubbubArgs];
const SERVERS = {
  'raw-ws': ['bench/servers/raw-ws.mjs'],
  crossws: ['bench/servers/crossws.mjs'],
  'fastify-ws': ['bench/servers/fastify-ws.mjs'],
  'naive-hono-node-ws': ['bench/servers/naive-hono-node-ws.mjs'],
  'hubbub-node': ['dist/node.js', ...hubbubFlags],
  // --base DIR: a second hubbub tree (built), for before/after counts of a change.
  ...(args.base ? { 'hubbub-base': [join(args.base, 'dist/node.js'), ...hubbubFlags] } : {}),
};
const names = (args.servers ?? Object.keys(SERVERS).join(',')).split(',').filter((name) => {
  if (!SERVERS[name]) throw new Error(`--servers: unknown server ${name} (known: ${Object.keys(SERVERS).join(', ')})`);
  return existsSync(resolve(root, SERVERS[name][0]));
});

/** Open fds of the process that are sockets. */
function sockets(pid) {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('socket:')) n++;
    } catch {}
  }
  return n;
}

const control = (pid, ...flags) => execFileSync('callgrind_control', [...flags, String(pid)], { stdio: ['ignore', 'pipe', 'pipe'] }).toString();

/** Total instructions (Ir) of the newest dump of `pid` in `dir`. */
function lastDumpTotal(dir, pid) {
  const files = readdirSync(dir).filter((f) => f.startsWith(`cg.${pid}.`)).sort((a, b) => Number(a.split('.').pop()) - Number(b.split('.').pop()));
  const text = readFileSync(join(dir, files.at(-1)), 'utf8');
  const line = /^(?:summary|totals):\s*(\d+)/m.exec(text);
  if (!line) throw new Error(`no totals in ${files.at(-1)}`);
  return Number(line[1]);
}

/** One handshake at a time (see the header), with a long client timeout: none fails under valgrind. */
const IN_FLIGHT = 1;
/** V8 without background threads (--v8-flags to change). The counts still move between runs by up to ~30% (GC timing): take medians of several rounds. */
const V8_FLAGS = (args['v8-flags'] ?? '--single-threaded').split(' ').filter(Boolean);

async function openMany(url, count) {
  const open = [];
  let failures = 0;
  await pool(count, IN_FLIGHT, async () => {
    const result = await openWebSocket(WebSocket, url, { handshakeTimeoutMs: 300_000 });
    if (result.ws) open.push(result.ws);
    else failures++;
  });
  return { open, failures };
}

async function closeAll(open, pid, baseline) {
  for (const ws of open) ws.terminate();
  const deadline = Date.now() + 120_000;
  while (sockets(pid) > baseline && Date.now() < deadline) await sleep(500);
}

async function measure(name) {
  const dir = join(tmpdir(), `hubbub-callgrind-${process.pid}`);
  rmSync(dir, { recursive: true, force: true });
  execFileSync('mkdir', ['-p', dir]);
  const [script, ...rest] = SERVERS[name];
  const server = await startServer({
    name,
    command: 'valgrind',
    args: ['--tool=callgrind', '--instr-atstart=no', `--callgrind-out-file=${dir}/cg.%p`, process.execPath, ...V8_FLAGS, script, ...rest],
    readyTimeoutMs: 180_000,
    log,
  });
  const pid = server.child.pid;
  try {
    const url = wsUrlOf(server.url);
    await sleep(1000);
    const baseline = sockets(pid);
    const warm = await openMany(url, warmup);
    await closeAll(warm.open, pid, baseline);
    control(pid, '-i', 'on');
    control(pid, '-z');
    const { open, failures } = await openMany(url, connections);
    control(pid, '-d');
    const handshake = lastDumpTotal(dir, pid) / open.length;
    control(pid, '-z');
    await closeAll(open, pid, baseline);
    control(pid, '-d');
    const close = lastDumpTotal(dir, pid) / open.length;
    log(`${name}: ${Math.round(handshake).toLocaleString()} instructions per handshake, ${Math.round(close).toLocaleString()} per close (${open.length} sockets, ${failures} failures)`);
    return { handshake, close, failures };
  } finally {
    server.child.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  }
}

runMain(log, async () => {
  const results = Object.fromEntries(names.map((n) => [n, []]));
  for (let round = 0; round < rounds; round++) for (const name of names) results[name].push(await measure(name));
  const summary = Object.fromEntries(Object.entries(results).map(([name, list]) => [name, {
    handshake: Math.round(median(list.map((x) => x.handshake))),
    close: Math.round(median(list.map((x) => x.close))),
    rounds: list.map((x) => ({ handshake: Math.round(x.handshake), close: Math.round(x.close), failures: x.failures })),
  }]));
  const floor = summary['raw-ws'];
  const ratios = floor ? Object.fromEntries(Object.entries(summary).map(([name, s]) => [name, { handshake: ratio(s.handshake, floor.handshake), close: ratio(s.close, floor.close) }])) : {};
  const out = { bench: 'handshake-instructions', node: process.version, connections, warmup, rounds, servers: summary, ratiosVsRawWs: ratios };
  process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
});
