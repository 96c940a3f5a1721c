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
import { join, resolve } from 'node:path';
import {
  createLog, knownList, interleavedRounds, forkClient, getJson, here, int, machineInfo, median, r, ratio, root, rssKB, runMain, sampleRss, sleep, startServer, writeResult,
} from './lib.mjs';

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
      case '--servers': opts.servers = knownList(take(), SERVERS, 'server'); break;
      case '--help': case '-h':
        process.stdout.write('usage: node bench/idle.mjs [--connections N] [--rounds R] [--concurrency C] [--servers a,b,c] [--hold MS] [--timeout S] [--out DIR]\n');
        process.exit(0);
      default: throw new Error(`unknown flag ${flag}`);
    }
  }
  if (opts.connections > 18_000) throw new Error('--connections above 18000 would exceed the 20000 fd limit of one client process');
  return opts;
}

const log = createLog('idle');

// ---------- one run of one server ----------
async function runOne(name, opts) {
  const N = opts.connections;
  log(`${name}: starting`);
  const server = await startServer({ name, command: process.execPath, args: SERVERS[name].command, log });
  const pid = server.pid;
  let client;
  try {
    await sleep(1000);
    const baseline = await sampleRss(pid);
    log(`${name}: listening at ${server.url}, pid ${pid}, baseline RSS ${(baseline.medianKB / 1024).toFixed(1)} MB`);

    client = forkClient(join(here, 'client.mjs'));
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
    await client.exit();

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
      serverStdoutTail: server.stdoutTail.slice(-5),
    };
  } finally {
    await client?.kill();
    const { how } = await server.stop();
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
  return {
    memory: ratio(h.kbPerConnection, b.kbPerConnection),
    connectRate: ratio(h.connectRate, b.connectRate),
    handshakeP50: ratio(h.handshakeP50Ms, b.handshakeP50Ms),
    handshakeP99: ratio(h.handshakeP99Ms, b.handshakeP99Ms),
  };
}

// ---------- main ----------
runMain(log, async ({ setLimit, clearLimit }) => {
  const opts = parseArgs(process.argv.slice(2));
  const startedAt = new Date();
  setLimit(opts.timeout);

  log(`N=${opts.connections}, rounds=${opts.rounds}, concurrency=${opts.concurrency}, servers=${opts.servers.join(',')}, hold=${opts.hold} ms`);
  const runs = await interleavedRounds(opts.rounds, opts.servers, (name) => runOne(name, opts), { log, pauseMs: 500 });


  const summary = summarise(runs, opts.servers);
  const result = {
    benchmark: 'idle-connections',
    startedAt: startedAt.toISOString(),
    durationSeconds: r((Date.now() - startedAt.getTime()) / 1000, 1),
    command: `node bench/idle.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    machine: machineInfo({ loopback: '127.0.0.1', loadClients: 1 }),
    options: { connections: opts.connections, rounds: opts.rounds, concurrency: opts.concurrency, holdMs: opts.hold, servers: opts.servers },
    summary,
    ratios: {
      hubbubVsNaiveHonoNodeWs: ratios(summary, 'naive-hono-node-ws'),
      hubbubVsRawWs: ratios(summary, 'raw-ws'),
      note: 'hubbub / baseline: memory < 1 and handshakeP99 < 1 are better; connectRate > 1 is better',
    },
    runs,
  };
  const file = await writeResult(opts.out, 'idle', startedAt, result);
  log(`wrote ${file}`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  clearLimit();
  process.exitCode = runs.some((run) => run.error) ? 1 : 0;
});
