#!/usr/bin/env node
// What the store of positions and history costs a publish over the network (issue 12): one hubbub
// Node server (`--handler pubsub`), S subscribers of one topic, P publisher connections that each
// keep W publishes in flight until M publications are acknowledged. Four stores, rounds
// interleaved (each a fresh server): memory with history off (`--history-size 0`: offsets only)
// and on, Redis (`--backplane`: offset, history append and PUBLISH in one Lua script, every
// delivery from Redis) with history off and on, and NATS JetStream (`nats-<history>`: a publish
// with an expected last subject sequence, every delivery from the stream's republish). Run
// `npm run build` first.
//
//   node bench/store.mjs [--subscribers 500] [--publishers 4] [--window 16] [--publications 20000]
//                        [--size 100] [--history 100] [--rounds 3] [--stores memory-0,memory-100,redis-0,redis-100]
//                        [--redis redis://127.0.0.1:6379/9] [--nats nats://127.0.0.1:4222]
//
// Per run: publish throughput (publications acknowledged per second, from the first send to the
// last `published`), the time until every subscriber has every publication, the publish-to-receive
// latency seen by 5 probe subscribers (p50, p99; they also check offsets are 1…M in order; the
// others only count), the server's CPU per publication (utime+stime from /proc) and Redis's own.
// Prints JSON: every run, then medians per store and ratios against memory with history off.
// Loopback only; the Redis database is flushed before each Redis run, the bench topic's subject
// of the JetStream stream purged before each NATS run (no broker CPU is measured for NATS).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { median, percentile, r, ratio } from './lib.mjs';

const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []));
const known = new Set(['subscribers', 'publishers', 'window', 'publications', 'size', 'history', 'rounds', 'stores', 'redis', 'nats']);
for (const key of Object.keys(args)) if (!known.has(key)) throw new Error(`unknown option --${key}`);
const subscribers = Number(args.subscribers ?? 500);
const publishers = Number(args.publishers ?? 4);
const windowSize = Number(args.window ?? 16);
const publications = Number(args.publications ?? 20_000);
const size = Number(args.size ?? 100);
const rounds = Number(args.rounds ?? 3);
const stores = String(args.stores ?? 'memory-0,memory-100,redis-0,redis-100').split(',');
const redisUrl = String(args.redis ?? 'redis://127.0.0.1:6379/9');
const natsUrl = String(args.nats ?? 'nats://127.0.0.1:4222');
for (const s of stores) if (!/^(memory|redis|nats)-\d+$/.test(s)) throw new Error(`--stores: memory-<history>, redis-<history> or nats-<history> (got ${s})`);
if (!/^redis:\/\/127\.0\.0\.1[:/]/.test(redisUrl)) throw new Error('--redis must be on 127.0.0.1');
if (!/^nats:\/\/127\.0\.0\.1[:/]?/.test(natsUrl)) throw new Error('--nats must be on 127.0.0.1');
const PROBES = 5;
const CLK_TCK = 100;
const log = (...parts) => process.stderr.write(`[store] ${parts.join(' ')}\n`);

function cpuMs(pid) {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

async function redisOf(url) {
  const { Redis } = await import('ioredis');
  const client = new Redis(url);
  const pid = Number(/process_id:(\d+)/.exec(await client.info('server'))[1]);
  return { pid, flush: () => client.flushdb(), quit: () => client.quit() };
}

/** Empties the bench topic in the nodes' JetStream stream (the default prefix's), if there is one yet. */
async function purgeNats(url) {
  const { connect } = await import('@nats-io/transport-node');
  const { jetstreamManager } = await import('@nats-io/jetstream');
  const nc = await connect({ servers: url });
  const jsm = await jetstreamManager(nc);
  const token = (text) => Buffer.from(text).toString('base64url');
  await jsm.streams.purge(`HUBBUB_${token('hubbub.')}`, { filter: `hubbub.s.${token('bench')}` }).catch((error) => {
    if (error.code !== 10059) throw error;
  });
  await nc.close();
}

async function startServer(store) {
  const [kind, history] = store.split('-');
  const backplane = kind === 'redis' ? ['--backplane', redisUrl] : kind === 'nats' ? ['--backplane', natsUrl] : [];
  const child = spawn(process.execPath, [resolve(root, 'dist/node.js'), '--host', '127.0.0.1', '--port', '0', '--handler', 'pubsub', '--max-connections', String(subscribers + publishers + 100), '--history-size', history, '--heartbeat-interval', '0', '--max-connections-per-ip', '0', ...backplane], { stdio: ['ignore', 'pipe', 'inherit'] });
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
  if (kind !== 'memory') {
    for (let i = 0; i < 100; i++) {
      const health = await (await fetch(`${url}/healthz`)).json();
      if (health.backplane === 'connected') break;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return { child, wsUrl: `${url.replace('http', 'ws')}/ws` };
}

function open(wsUrl) {
  return new Promise((resolveOpen, reject) => {
    const ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    ws.once('open', () => resolveOpen(ws));
    ws.once('error', reject);
  });
}

function answer(ws, type) {
  return new Promise((resolveAnswer) => {
    const onMessage = (data) => {
      const msg = JSON.parse(String(data));
      if (msg.type === type) {
        ws.off('message', onMessage);
        resolveAnswer(msg);
      }
    };
    ws.on('message', onMessage);
  });
}

async function run(store, redis) {
  const server = await startServer(store);
  const sockets = [];
  try {
    let done = 0;
    let allDone;
    const everyone = new Promise((r) => (allDone = r));
    const latencies = [];
    const errors = [];
    for (let i = 0; i < subscribers; i++) {
      const ws = await open(server.wsUrl);
      sockets.push(ws);
      const subscribed = answer(ws, 'subscribed');
      ws.send(JSON.stringify({ type: 'subscribe', topic: 'bench' }));
      await subscribed;
      let got = 0;
      if (i < PROBES) {
        ws.on('message', (data) => {
          const msg = JSON.parse(String(data));
          if (msg.type !== 'message') return;
          latencies.push(performance.now() - msg.data.t);
          if (msg.offset !== got + 1) errors.push(`probe ${i}: offset ${msg.offset} after ${got}`);
          if (++got === publications) ++done === subscribers && allDone();
        });
      } else {
        ws.on('message', () => ++got === publications && ++done === subscribers && allDone());
      }
    }
    const pubs = [];
    for (let p = 0; p < publishers; p++) pubs.push(await open(server.wsUrl));
    sockets.push(...pubs);
    const pad = 'x'.repeat(size);
    const pid = server.child.pid;
    const cpu0 = cpuMs(pid);
    const redisCpu0 = redis ? cpuMs(redis.pid) : 0;
    const t0 = performance.now();
    let sent = 0;
    let acked = 0;
    let refused = 0;
    let ackedAt = 0;
    await new Promise((resolveAcked) => {
      const send = (ws) => {
        if (sent >= publications) return;
        const i = sent++;
        ws.send(JSON.stringify({ type: 'publish', topic: 'bench', id: i, data: { t: performance.now(), i, pad } }));
      };
      for (const ws of pubs) {
        ws.on('message', (data) => {
          const msg = JSON.parse(String(data));
          if (msg.type === 'published') acked++;
          else if (msg.type === 'error' || msg.type === 'refused') refused++;
          else return;
          if (acked + refused === publications) {
            ackedAt = performance.now();
            resolveAcked();
          } else send(ws);
        });
        for (let w = 0; w < windowSize; w++) send(ws);
      }
    });
    await Promise.race([everyone, new Promise((_, reject) => setTimeout(() => reject(new Error(`${store}: only ${done} of ${subscribers} subscribers got every publication`)), 120_000))]);
    const allAt = performance.now();
    const serverCpuMs = cpuMs(pid) - cpu0;
    const redisCpuMs = redis ? cpuMs(redis.pid) - redisCpu0 : undefined;
    if (refused > 0) errors.push(`${refused} publishes refused`);
    if (errors.length > 0) throw new Error(`${store}: ${errors.slice(0, 5).join('; ')}`);
    latencies.sort((a, b) => a - b);
    return {
      store,
      publishesPerSecond: Math.round(publications / ((ackedAt - t0) / 1000)),
      allDeliveredMs: Math.round(allAt - t0),
      latencyMs: { p50: r(percentile(latencies, 50)), p99: r(percentile(latencies, 99)) },
      serverCpuUsPerPublication: r((serverCpuMs * 1000) / publications),
      ...(redis ? { redisCpuUsPerPublication: r((redisCpuMs * 1000) / publications) } : {}),
    };
  } finally {
    for (const ws of sockets) ws.terminate();
    server.child.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 300));
  }
}

const redis = stores.some((s) => s.startsWith('redis')) ? await redisOf(redisUrl) : undefined;
const runs = [];
for (let round = 0; round < rounds; round++) {
  for (const store of stores) {
    if (store.startsWith('redis')) await redis.flush();
    if (store.startsWith('nats')) await purgeNats(natsUrl);
    const result = await run(store, store.startsWith('redis') ? redis : undefined);
    log(`round ${round + 1}`, JSON.stringify(result));
    runs.push({ round: round + 1, ...result });
  }
}
await redis?.quit();
const summary = {};
for (const store of stores) {
  const of = runs.filter((x) => x.store === store);
  const m = (pick) => median(of.map(pick).filter((v) => v !== undefined));
  summary[store] = {
    publishesPerSecond: m((x) => x.publishesPerSecond),
    allDeliveredMs: m((x) => x.allDeliveredMs),
    latencyP50Ms: m((x) => x.latencyMs.p50),
    latencyP99Ms: m((x) => x.latencyMs.p99),
    serverCpuUsPerPublication: m((x) => x.serverCpuUsPerPublication),
    redisCpuUsPerPublication: m((x) => x.redisCpuUsPerPublication),
  };
}
const base = summary[stores[0]];
const ratios = Object.fromEntries(
  stores.slice(1).map((s) => [
    `${s} ÷ ${stores[0]}`,
    {
      publishesPerSecond: ratio(summary[s].publishesPerSecond, base.publishesPerSecond),
      allDeliveredMs: ratio(summary[s].allDeliveredMs, base.allDeliveredMs),
      latencyP50Ms: ratio(summary[s].latencyP50Ms, base.latencyP50Ms),
      latencyP99Ms: ratio(summary[s].latencyP99Ms, base.latencyP99Ms),
      serverCpuUsPerPublication: ratio(summary[s].serverCpuUsPerPublication, base.serverCpuUsPerPublication),
    },
  ]),
);
console.log(JSON.stringify({ subscribers, publishers, window: windowSize, publications, size, rounds, runs, summary, ratios }));
