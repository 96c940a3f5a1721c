#!/usr/bin/env node
// A reconnect storm with recovery (issue 12): N pubsub subscribers of one topic drop their
// connections, M publications go by, and all N come back at once. Each round measures it twice on
// the same fresh server, in turn: coming back with `since` (each gets its M missed messages
// replayed, in order) and coming back without (a plain subscribe: the baseline, what a reconnect
// costs without recovery). Run `npm run build` first.
//
//   node bench/recovery.mjs [--subscribers 5000] [--missed 300] [--rounds 2] [--concurrency 200] [--size 100]
//                           [--stores memory,redis] [--redis redis://127.0.0.1:6379/9]
//
// `--stores` runs each round once per store, in turn: `memory` (one node, history in its memory)
// and `redis` (history, positions and recovery reads in Redis, `--backplane`; the database is
// flushed before each run, and Redis's own CPU is read from its /proc too).
// Reported per phase: wall time from the first reconnect to the last subscriber done (for
// `since`: every missed message received, offsets checked consecutive), the server's CPU time
// (utime+stime from /proc/<pid>/stat) over it, and its peak RSS; then ratios since ÷ plain.
// Loopback only; `--recovery-max` and `--history-size` are set to `missed`.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []));
const subscribers = Number(args.subscribers ?? 5000);
const missed = Number(args.missed ?? 300);
const rounds = Number(args.rounds ?? 2);
const concurrency = Number(args.concurrency ?? 200);
const size = Number(args.size ?? 100);
const stores = String(args.stores ?? 'memory').split(',');
const redisUrl = String(args.redis ?? 'redis://127.0.0.1:6379/9');
for (const s of stores) if (s !== 'memory' && s !== 'redis') throw new Error(`--stores: memory or redis (got ${s})`);
if (!/^redis:\/\/127\.0\.0\.1[:/]/.test(redisUrl)) throw new Error('--redis must be on 127.0.0.1');
const CLK_TCK = 100;
const log = (...parts) => process.stderr.write(`[recovery] ${parts.join(' ')}\n`);

function cpuMs(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}
const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);

/** Redis's pid (its CPU counts in the `redis` store) and a way to empty the bench's database. */
async function redisOf(url) {
  const { Redis } = await import('ioredis');
  const client = new Redis(url);
  const info = await client.info('server');
  const pid = Number(/process_id:(\d+)/.exec(info)[1]);
  return { pid, flush: () => client.flushdb(), quit: () => client.quit() };
}

async function startServer(store) {
  const backplane = store === 'redis' ? ['--backplane', redisUrl] : [];
  const child = spawn(process.execPath, [resolve(root, 'dist/node.js'), '--host', '127.0.0.1', '--port', '0', '--handler', 'pubsub', '--max-connections', String(subscribers + 100), '--history-size', String(missed), '--recovery-max', String(missed), '--heartbeat-interval', '0', '--max-connections-per-ip', '0', ...backplane], { stdio: ['ignore', 'pipe', 'inherit'] });
  const url = await new Promise((resolveUrl, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (line) => {
      try {
        const record = JSON.parse(line);
        if (record.event === 'listening') resolveUrl(record.url);
      } catch {}
    });
    child.once('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
  return { child, url, wsUrl: `${url.replace('http', 'ws')}/ws` };
}

function open(wsUrl) {
  return new Promise((resolveOpen, reject) => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    ws.once('open', () => resolveOpen(ws));
    ws.once('error', reject);
  });
}

/** Runs `task` for every index with at most `limit` in flight. */
async function pool(count, limit, task) {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, count) }, async () => {
    while (next < count) await task(next++);
  }));
}

/** Subscribes (with `since` when given) and resolves once the subscriber has `expect` messages after its answer. */
function subscribe(ws, since, expect) {
  return new Promise((resolveDone, reject) => {
    let answer;
    let got = 0;
    let last = since?.offset ?? 0;
    ws.on('message', (data) => {
      const msg = JSON.parse(String(data));
      if (msg.type === 'subscribed') {
        answer = msg;
        if (since && !msg.recovered) return reject(new Error(`not recovered: ${String(data)}`));
      } else if (msg.type === 'message') {
        if (msg.offset !== last + 1) return reject(new Error(`offset ${msg.offset} after ${last}`));
        last = msg.offset;
        got++;
      }
      if (answer && got >= expect) resolveDone(answer);
    });
    ws.send(JSON.stringify(since ? { type: 'subscribe', topic: 'storm', since } : { type: 'subscribe', topic: 'storm' }));
  });
}

async function phase(server, withSince, redis) {
  // Everyone subscribes and learns the position, then drops.
  const first = [];
  let position;
  await pool(subscribers, concurrency, async () => {
    const ws = await open(server.wsUrl);
    position = await subscribe(ws, undefined, 0);
    first.push(ws);
  });
  for (const ws of first) ws.terminate();
  // M publications go by while they are away.
  const publisher = await open(server.wsUrl);
  const body = 'x'.repeat(size);
  await new Promise((done) => {
    let acks = 0;
    publisher.on('message', () => ++acks === missed && done());
    for (let i = 0; i < missed; i++) publisher.send(JSON.stringify({ type: 'publish', topic: 'storm', data: body, id: i }));
  });
  await new Promise((r) => setTimeout(r, 500));
  const since = { offset: position.offset, epoch: position.epoch };
  const pid = server.child.pid;
  let peak = rssKiB(pid);
  const sampler = setInterval(() => (peak = Math.max(peak, rssKiB(pid))), 50);
  const cpu0 = cpuMs(pid);
  const redisCpu0 = redis ? cpuMs(redis.pid) : 0;
  const t0 = performance.now();
  const back = [];
  await pool(subscribers, concurrency, async () => {
    const ws = await open(server.wsUrl);
    back.push(ws);
    await subscribe(ws, withSince ? since : undefined, withSince ? missed : 0);
  });
  const wallMs = performance.now() - t0;
  const serverCpuMs = cpuMs(pid) - cpu0;
  const redisCpuMs = redis ? cpuMs(redis.pid) - redisCpu0 : undefined;
  clearInterval(sampler);
  for (const ws of [...back, publisher]) ws.terminate();
  await new Promise((r) => setTimeout(r, 500));
  return { wallMs: Math.round(wallMs), serverCpuMs: Math.round(serverCpuMs), ...(redis ? { redisCpuMs: Math.round(redisCpuMs) } : {}), peakRssKiB: peak, replayed: withSince ? subscribers * missed : 0 };
}

const redis = stores.includes('redis') ? await redisOf(redisUrl) : undefined;
const results = [];
for (let round = 0; round < rounds; round++) {
  for (const store of stores) {
    if (store === 'redis') await redis.flush();
    const server = await startServer(store);
    try {
      const r = store === 'redis' ? redis : undefined;
      const plain = await phase(server, false, r);
      log(`round ${round + 1} ${store} plain`, JSON.stringify(plain));
      const since = await phase(server, true, r);
      log(`round ${round + 1} ${store} since`, JSON.stringify(since));
      results.push({ round: round + 1, store, plain, since });
    } finally {
      server.child.kill('SIGKILL');
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}
await redis?.quit();
const median = (xs) => (xs.length === 0 ? null : [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]);
const summary = {};
for (const store of stores) {
  const of = results.filter((x) => x.store === store);
  const m = (phaseName, key) => median(of.map((x) => x[phaseName][key]).filter((v) => v !== undefined));
  summary[store] = {
    median: {
      plain: { wallMs: m('plain', 'wallMs'), serverCpuMs: m('plain', 'serverCpuMs'), redisCpuMs: m('plain', 'redisCpuMs') },
      since: { wallMs: m('since', 'wallMs'), serverCpuMs: m('since', 'serverCpuMs'), redisCpuMs: m('since', 'redisCpuMs'), peakRssKiB: m('since', 'peakRssKiB') },
    },
    serverCpuUsPerReplayedMessage: Math.round(((m('since', 'serverCpuMs') - m('plain', 'serverCpuMs')) * 1000) / (subscribers * missed) * 100) / 100,
    ratio: { wall: Math.round((m('since', 'wallMs') / m('plain', 'wallMs')) * 100) / 100, serverCpu: Math.round((m('since', 'serverCpuMs') / m('plain', 'serverCpuMs')) * 100) / 100 },
  };
}
if (summary.memory && summary.redis) {
  summary.redisOverMemory = {
    sinceWall: Math.round((summary.redis.median.since.wallMs / summary.memory.median.since.wallMs) * 100) / 100,
    sinceServerCpu: Math.round((summary.redis.median.since.serverCpuMs / summary.memory.median.since.serverCpuMs) * 100) / 100,
  };
}
console.log(JSON.stringify({ subscribers, missed, size, stores, rounds: results, summary }));
