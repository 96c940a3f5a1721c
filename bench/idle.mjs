#!/usr/bin/env node
// Idle-connection benchmark (issue 2): how much server memory an idle WebSocket costs, how fast
// connections are accepted and how long handshakes take, for hubbub against a naive Hono +
// @hono/node-ws server and a raw `ws` server (the floor).
//
//   node bench/idle.mjs [--connections 10000] [--rounds 1] [--concurrency 200]
//                       [--servers raw-ws,naive-hono-node-ws,hubbub] [--hold 3000]
//                       [--timeout 600] [--out bench/results]
//
// For each round, for each server in turn (one server process at a time):
//   1. spawn the server on 127.0.0.1 port 0, read its JSON "listening" line, wait 1 s, take the
//      median of a few VmRSS samples as the baseline;
//   2. a separate load-client process (bench/client.mjs) opens N idle WebSockets, at most
//      `concurrency` handshakes in flight, timing each from socket creation to 'open';
//   3. each socket sends one message and checks the echo, then all sit idle for `hold` ms and the
//      server's VmRSS is sampled again (median): kB per connection = (loaded − baseline) / opened;
//   4. the client closes everything, the server gets SIGTERM (SIGKILL if it lingers).
// Per-server results are medians over rounds. One JSON object goes to stdout and to
// bench/results/idle-<timestamp>.json; progress goes to stderr. Loopback only.
import { fork, spawn } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { cpus } from 'node:os';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');

const SERVERS = {
  'raw-ws': { command: [join(here, 'servers/raw-ws.mjs')] },
  'naive-hono-node-ws': { command: [join(here, 'servers/naive-hono-node-ws.mjs')] },
  hubbub: {
    command: [join(root, 'dist/node.js'), '--port', '0', '--host', '127.0.0.1', '--max-connections', '100000', '--log-level', 'info'],
    stats: true,
  },
};

// ---------- options ----------
function parseArgs(argv) {
  const opts = {
    connections: 10_000,
    rounds: 1,
    concurrency: 200,
    servers: ['raw-ws', 'naive-hono-node-ws', 'hubbub'],
    hold: 3000,
    timeout: 600,
    out: join(here, 'results'),
  };
  const int = (name, text, min) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min} (got ${text})`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].split('=', 2);
    const take = () => value ?? argv[++i];
    switch (flag) {
      case '--connections': opts.connections = int('connections', take(), 1); break;
      case '--rounds': opts.rounds = int('rounds', take(), 1); break;
      case '--concurrency': opts.concurrency = int('concurrency', take(), 1); break;
      case '--hold': opts.hold = int('hold', take(), 0); break;
      case '--timeout': opts.timeout = int('timeout', take(), 10); break;
      case '--out': opts.out = resolve(take()); break;
      case '--servers': {
        opts.servers = take().split(',').map((s) => s.trim()).filter(Boolean);
        for (const s of opts.servers) if (!SERVERS[s]) throw new Error(`unknown server ${s}; known: ${Object.keys(SERVERS).join(', ')}`);
        break;
      }
      case '--help': case '-h':
        process.stdout.write('usage: node bench/idle.mjs [--connections N] [--rounds R] [--concurrency C] [--servers a,b,c] [--hold MS] [--timeout S] [--out DIR]\n');
        process.exit(0);
      default: throw new Error(`unknown flag ${flag}`);
    }
  }
  if (opts.connections > 18_000) throw new Error('--connections above 18000 would exceed the 20000 fd limit of one client process');
  return opts;
}

const log = (...parts) => process.stderr.write(`[idle] ${parts.join(' ')}\n`);

// ---------- child process bookkeeping (everything we start, we stop) ----------
const children = new Set();
function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}
function killAll() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {}
  }
}

function waitExit(child, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function stop(child, name) {
  if (child.exitCode !== null || child.signalCode !== null) return 'already-exited';
  child.kill('SIGTERM');
  if (await waitExit(child, 5000)) return 'SIGTERM';
  log(`${name} ignored SIGTERM for 5 s, sending SIGKILL`);
  child.kill('SIGKILL');
  await waitExit(child, 5000);
  return 'SIGKILL';
}

// ---------- measurements ----------
async function rssKB(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

async function sampleRss(pid, samples = 5, intervalMs = 200) {
  const values = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(intervalMs);
    values.push(await rssKB(pid));
  }
  return { medianKB: median(values), samplesKB: values };
}

function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

const r = (n, digits = 2) => (n === null || n === undefined || !Number.isFinite(n) ? null : Number(n.toFixed(digits)));

async function getJson(url, timeoutMs = 5000) {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return res.json();
}

// ---------- server ----------
async function startServer(name) {
  const spec = SERVERS[name];
  const child = track(spawn(process.execPath, spec.command, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] }));
  const stderrTail = [];
  let stderrLines = 0;
  createInterface({ input: child.stderr }).on('line', (line) => {
    stderrLines++;
    stderrTail.push(line);
    if (stderrTail.length > 20) stderrTail.shift();
  });
  const stdoutLines = createInterface({ input: child.stdout });
  const extraStdout = [];
  const url = await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: no listening line within 15 s; stderr: ${stderrTail.join(' | ')}`)), 15_000);
    let first = true;
    stdoutLines.on('line', (line) => {
      if (!first) {
        // Keep draining stdout so the pipe never fills; remember the tail for the report.
        extraStdout.push(line);
        if (extraStdout.length > 20) extraStdout.shift();
        return;
      }
      first = false;
      clearTimeout(timer);
      try {
        const event = JSON.parse(line);
        if (event.event !== 'listening' || typeof event.url !== 'string') throw new Error('not a listening event');
        if (new URL(event.url).hostname !== '127.0.0.1') throw new Error(`server listens on ${event.url}, not 127.0.0.1`);
        resolvePromise(event.url);
      } catch (error) {
        reject(new Error(`${name}: first stdout line is not a JSON listening event (${error.message}): ${line}`));
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${name} exited before listening (code ${code}, signal ${signal}); stderr: ${stderrTail.join(' | ')}`));
    });
  });
  return { child, url, stderrTail, extraStdout, stderrCount: () => stderrLines };
}

// ---------- client ----------
function startClient() {
  const child = track(fork(join(here, 'client.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  const queue = [];
  const waiters = [];
  child.on('message', (message) => {
    const waiter = waiters.shift();
    if (waiter) waiter.resolve(message);
    else queue.push(message);
  });
  child.once('exit', (code, signal) => {
    for (const waiter of waiters.splice(0)) waiter.reject(new Error(`load client exited (code ${code}, signal ${signal})`));
  });
  const next = (timeoutMs) =>
    new Promise((resolvePromise, reject) => {
      if (queue.length) return resolvePromise(queue.shift());
      if (child.exitCode !== null) return reject(new Error('load client is gone'));
      const timer = setTimeout(() => reject(new Error(`load client did not answer within ${timeoutMs} ms`)), timeoutMs);
      waiters.push({
        resolve: (m) => (clearTimeout(timer), m.type === 'error' ? reject(new Error(`load client: ${m.error}`)) : resolvePromise(m)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
    });
  return {
    child,
    ready: () => next(10_000),
    request: (message, timeoutMs) => {
      child.send(message);
      return next(timeoutMs);
    },
  };
}

// ---------- one run of one server ----------
async function runOne(name, opts) {
  const N = opts.connections;
  log(`${name}: starting`);
  const server = await startServer(name);
  const pid = server.child.pid;
  let client;
  try {
    await sleep(1000);
    const baseline = await sampleRss(pid);
    log(`${name}: listening at ${server.url}, pid ${pid}, baseline RSS ${(baseline.medianKB / 1024).toFixed(1)} MB`);

    client = startClient();
    await client.ready();
    const connected = await client.request(
      { cmd: 'connect', url: server.url, connections: N, concurrency: opts.concurrency, handshakeTimeoutMs: 15_000 },
      Math.max(60_000, N * 20),
    );
    log(`${name}: opened ${connected.opened}/${N} in ${connected.wallMs} ms (${connected.connectRate}/s), p50 ${connected.handshake.p50} ms, p99 ${connected.handshake.p99} ms, failures ${connected.failures}`);

    const echoed = await client.request({ cmd: 'echo', timeoutMs: 30_000 }, 40_000);
    log(`${name}: echo ok ${echoed.ok}, bad ${echoed.bad}, missing ${echoed.missing} (${echoed.wallMs} ms)`);

    await sleep(opts.hold);
    const loaded = await sampleRss(pid);
    const statsLoaded = SERVERS[name].stats ? await getJson(`${server.url}/stats`).catch((e) => ({ error: e.message })) : undefined;
    log(`${name}: loaded RSS ${(loaded.medianKB / 1024).toFixed(1)} MB` + (statsLoaded ? `, /stats live ${statsLoaded.live} reserved ${statsLoaded.reserved}` : ''));

    const closed = await client.request({ cmd: 'close', timeoutMs: 20_000 }, 30_000);
    log(`${name}: closed cleanly ${closed.closedCleanly}, terminated ${closed.terminated}, dropped while idle ${closed.droppedWhileIdle} (${closed.wallMs} ms)`);
    client.child.send({ cmd: 'exit' });
    await waitExit(client.child, 5000);

    let statsAfterClose;
    if (SERVERS[name].stats) {
      const deadline = Date.now() + 5000;
      do {
        statsAfterClose = await getJson(`${server.url}/stats`).catch((e) => ({ error: e.message }));
        if (statsAfterClose.live === 0 && statsAfterClose.reserved === 0) break;
        await sleep(200);
      } while (Date.now() < deadline);
    }
    const rssAfterCloseKB = await rssKB(pid).catch(() => null);

    const opened = connected.opened;
    const deltaKB = loaded.medianKB - baseline.medianKB;
    return {
      server: name,
      connections: N,
      opened,
      failures: connected.failures + echoed.bad + echoed.missing,
      connectFailures: connected.failures,
      failureReasons: connected.failureReasons,
      echo: { ok: echoed.ok, bad: echoed.bad, missing: echoed.missing, droppedBeforeEcho: echoed.droppedBeforeEcho, firstBad: echoed.firstBad, wallMs: echoed.wallMs },
      kbPerConnection: opened > 0 ? r(deltaKB / opened, 3) : null,
      connectRate: connected.connectRate,
      connectWallMs: connected.wallMs,
      handshakeP50Ms: connected.handshake.p50,
      handshakeP99Ms: connected.handshake.p99,
      handshakeMaxMs: connected.handshake.max,
      handshakeMeanMs: connected.handshake.mean,
      rssBaselineMB: r(baseline.medianKB / 1024),
      rssLoadedMB: r(loaded.medianKB / 1024),
      rssAfterCloseMB: rssAfterCloseKB === null ? null : r(rssAfterCloseKB / 1024),
      rssSamplesKB: { baseline: baseline.samplesKB, loaded: loaded.samplesKB },
      close: { cleanly: closed.closedCleanly, terminated: closed.terminated, droppedWhileIdle: closed.droppedWhileIdle, wallMs: closed.wallMs },
      ...(statsLoaded ? { statsLoaded: { live: statsLoaded.live, reserved: statsLoaded.reserved, closing: statsLoaded.closing, accepted: statsLoaded.accepted, refused: statsLoaded.refused, error: statsLoaded.error } } : {}),
      ...(statsAfterClose ? { statsAfterClose: { live: statsAfterClose.live, reserved: statsAfterClose.reserved, closing: statsAfterClose.closing, released: statsAfterClose.released, error: statsAfterClose.error } } : {}),
      serverStderrLines: server.stderrCount(),
      serverStderrTail: server.stderrTail.slice(-5),
      serverStdoutTail: server.extraStdout.slice(-5),
    };
  } finally {
    if (client && client.child.exitCode === null && client.child.signalCode === null) {
      client.child.kill('SIGKILL');
      await waitExit(client.child, 5000);
    }
    const how = await stop(server.child, name);
    log(`${name}: stopped (${how})`);
  }
}

// ---------- summary ----------
const SUMMARY_FIELDS = ['kbPerConnection', 'connectRate', 'handshakeP50Ms', 'handshakeP99Ms', 'handshakeMaxMs', 'failures', 'rssBaselineMB', 'rssLoadedMB'];

function summarise(runs, servers) {
  const out = {};
  for (const name of servers) {
    const mine = runs.filter((run) => run.server === name && !run.error);
    const entry = { rounds: mine.length };
    for (const field of SUMMARY_FIELDS) entry[field] = r(median(mine.map((run) => run[field])), 3);
    entry.errors = runs.filter((run) => run.server === name && run.error).map((run) => run.error);
    out[name] = entry;
  }
  return out;
}

function ratios(summary, against) {
  const h = summary.hubbub;
  const b = summary[against];
  if (!h || !b) return undefined;
  const div = (x, y) => (typeof x === 'number' && typeof y === 'number' && y !== 0 ? r(x / y, 3) : null);
  return {
    memory: div(h.kbPerConnection, b.kbPerConnection),
    connectRate: div(h.connectRate, b.connectRate),
    handshakeP50: div(h.handshakeP50Ms, b.handshakeP50Ms),
    handshakeP99: div(h.handshakeP99Ms, b.handshakeP99Ms),
  };
}

// ---------- main ----------
async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const startedAt = new Date();
  const overall = setTimeout(() => {
    log(`overall timeout of ${opts.timeout} s reached: killing children and exiting`);
    killAll();
    process.exit(3);
  }, opts.timeout * 1000);
  overall.unref();

  log(`N=${opts.connections}, rounds=${opts.rounds}, concurrency=${opts.concurrency}, servers=${opts.servers.join(',')}, hold=${opts.hold} ms`);
  const runs = [];
  for (let round = 1; round <= opts.rounds; round++) {
    for (const name of opts.servers) {
      log(`--- round ${round}/${opts.rounds}: ${name}`);
      try {
        runs.push({ round, ...(await runOne(name, opts)) });
      } catch (error) {
        log(`${name}: run failed: ${error.stack ?? error}`);
        runs.push({ round, server: name, error: String(error.message ?? error) });
      }
      await sleep(500); // let the kernel tidy up the closed sockets before the next server
    }
  }

  const summary = summarise(runs, opts.servers);
  const result = {
    benchmark: 'idle-connections',
    startedAt: startedAt.toISOString(),
    durationSeconds: r((Date.now() - startedAt.getTime()) / 1000, 1),
    command: `node bench/idle.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, platform: process.platform, loopback: '127.0.0.1', loadClients: 1 },
    options: { connections: opts.connections, rounds: opts.rounds, concurrency: opts.concurrency, holdMs: opts.hold, servers: opts.servers },
    summary,
    ratios: {
      hubbubVsNaiveHonoNodeWs: ratios(summary, 'naive-hono-node-ws'),
      hubbubVsRawWs: ratios(summary, 'raw-ws'),
      note: 'hubbub / baseline: memory < 1 and handshakeP99 < 1 are better; connectRate > 1 is better',
    },
    runs,
  };
  const text = JSON.stringify(result, null, 2);
  await mkdir(opts.out, { recursive: true });
  const file = join(opts.out, `idle-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${text}\n`);
  log(`wrote ${file}`);
  process.stdout.write(`${text}\n`);
  clearTimeout(overall);
  const anyError = runs.some((run) => run.error);
  process.exitCode = anyError ? 1 : 0;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    log(`${signal}: killing children`);
    killAll();
    process.exit(130);
  });
}
process.on('exit', killAll);

main().catch((error) => {
  log(`fatal: ${error.stack ?? error}`);
  killAll();
  process.exit(1);
});
