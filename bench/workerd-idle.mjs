#!/usr/bin/env node
// Memory per idle WebSocket under workerd, locally (Miniflare; not Cloudflare's edge):
//
//   npm run build && node bench/workerd-idle.mjs [--connections 2000] [--concurrency 1] [--rounds 1]
//
// Starts hubbub's Worker + Durable Object through test/fixtures/workerd-launcher.mjs, opens N idle
// WebSockets (each sends one message and checks the echo), and samples the RSS of the workerd
// process (the launcher only relays): while the object is awake, after it has been evicted (> 10 s
// without an event: the sockets hibernate, workerd keeps them), and after one message wakes it again
// (the object rebuilt with N connections from the attachments). Prints one JSON object.
// --concurrency 1 (the default) opens the sockets one after another: in workerd 1.20260730, sockets
// whose upgrades reach the object at the same time keep it from ever hibernating (cloudflare/workerd#6862).
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const N = arg('connections', 2000);
const ROUNDS = arg('rounds', 1);
const CONCURRENCY = arg('concurrency', 1);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const log = (...args) => process.stderr.write(`${args.join(' ')}\n`);

async function sampleRss(pid) {
  const samples = [];
  for (let i = 0; i < 5; i++) {
    samples.push(rssKiB(pid));
    await sleep(200);
  }
  return samples.sort((a, b) => a - b)[2];
}

function startLauncher() {
  const child = spawn(process.execPath, ['test/fixtures/workerd-launcher.mjs', '--host', '127.0.0.1', '--port', '0', '--max-connections', String(N + 100)], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return new Promise((resolve, reject) => {
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const record = JSON.parse(line);
        if (record.event === 'listening') resolve({ child, url: record.url, pid: record.pid });
      } catch {
        // not a log line
      }
    });
    child.once('exit', (code) => reject(new Error(`launcher exited (${code})`)));
  });
}

function open(wsUrl) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl);
    ws.once('open', () => {
      ws.once('message', (data) => (String(data) === 'Server received: hi' ? resolve(ws) : reject(new Error(`bad echo ${data}`))));
      ws.send('hi');
    });
    ws.once('error', reject);
  });
}

async function round() {
  const { child, url, pid } = await startLauncher();
  try {
    const wsUrl = `${url.replace(/^http/, 'ws')}/ws`;
    (await open(wsUrl)).close(); // warm the object and the isolate
    await sleep(1000);
    const baseline = await sampleRss(pid);
    const sockets = [];
    const started = Date.now();
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < N) {
          next++;
          sockets.push(await open(wsUrl));
        }
      }),
    );
    const connectMs = Date.now() - started;
    await sleep(2000);
    const awake = await sampleRss(pid);
    const stats = await (await fetch(`${url}/stats`)).json();
    log(`workerd: ${sockets.length} open (live ${stats.live}), awake RSS +${awake - baseline} KiB; waiting 15 s for the object to hibernate`);
    await sleep(15_000);
    const hibernated = await sampleRss(pid);
    await new Promise((resolve) => {
      sockets[0].once('message', resolve);
      sockets[0].send('wake');
    });
    await sleep(1000);
    const rebuilt = await sampleRss(pid);
    const after = await (await fetch(`${url}/stats`)).json();
    for (const ws of sockets) ws.close();
    const perConnection = (kib) => Math.round(((kib - baseline) / sockets.length) * 100) / 100;
    return {
      connections: sockets.length,
      concurrency: CONCURRENCY,
      connectMs,
      baselineKiB: baseline,
      awakeKiB: awake,
      hibernatedKiB: hibernated,
      rebuiltKiB: rebuilt,
      kibPerConnection: { awake: perConnection(awake), hibernated: perConnection(hibernated), rebuilt: perConnection(rebuilt) },
      rebuiltLive: after.live,
      rebuiltWebSockets: after.process?.webSockets,
      rebuiltUptimeSeconds: after.uptimeSeconds,
    };
  } finally {
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  }
}

const results = [];
for (let i = 0; i < ROUNDS; i++) results.push(await round());
process.stdout.write(`${JSON.stringify({ runtime: 'workerd (Miniflare, local)', node: process.version, rounds: results }, null, 2)}\n`);
