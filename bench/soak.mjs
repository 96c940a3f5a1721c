#!/usr/bin/env node
// Soak test (issue 3): hundreds of thousands of connect / echo / disconnect cycles against one
// hubbub server, then a check that the server is back where it started: no live, reserved or
// closing connections, no AbortControllers left un-aborted, the same handles, listeners and open
// fds, a heap (after a forced GC) within a tolerance of the baseline, and an exit on SIGTERM.
//
//   node bench/soak.mjs [--runtimes node,deno] [--cycles 200000] [--max-seconds 240]
//                       [--clients 2] [--workers 100] [--idle 500] [--warmup 5000]
//                       [--addresses 127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4]
//                       [--oversized-every 100] [--vanish-every 100] [--heap-tolerance-mb 2]
//                       [--quiesce-seconds 30] [--term-grace-seconds 12] [--deno PATH]
//                       [--timeout S] [--out bench/results]
//
// For each runtime in turn (one server process at a time):
//   1. start the server on 127.0.0.1 port 0 with --max-connections 20000 --max-payload 16KiB
//      --heartbeat-interval 2s --handshake-timeout 5s --log-level info and --expose-gc
//      (node --expose-gc / deno run --v8-flags=--expose-gc);
//   2. baseline: wait 2 s, GET /stats?gc=1 twice and keep the second, plus the kernel's view of
//      the server process (open fds, socket fds, TCP states on its port; /proc, Linux only);
//      then --warmup N cycles (0 = none) and a second, "warm" baseline taken the same way: it is
//      reported beside the cold one so that one-off warm-up growth (JIT code, lazily built
//      module state) can be told apart from per-cycle growth; verdicts use the cold baseline;
//   3. soak: `clients` forked load clients (bench/soak-client.mjs), each `workers` concurrent
//      workers, share `cycles` cycles (stopping early at --max-seconds). Each cycle connects, sends
//      one message, checks the echo and ends the socket with the next of: TCP reset, FIN without a
//      close frame (terminate), clean close (1000 expected). ~1% of cycles send 20 KiB (> 16 KiB
//      max payload; close 1009 expected), ~1% are raw TCP clients that vanish mid-handshake. A pool
//      of `idle` WebSockets is opened first, held through the soak (heartbeats every 2 s), then
//      echo-checked and closed. /stats (no GC) is polled every 5 s for peaks;
//   4. wait (≤ 30 s) until /stats shows live, reserved and closing all 0, wait 3 s, GET
//      /stats?gc=1 twice, keep the second (and the kernel's view); compute deltas and verdicts;
//   5. stop the server (SIGTERM; SIGKILL if it has not exited 12 s later), and record how it ended.
// Per-runtime JSON goes to stdout as each runtime finishes, then an overall JSON (also written to
// bench/results/soak-<timestamp>.json, gitignored). Progress goes to stderr. Loopback only.
import { readdir, readFile, readlink } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import {
  createLog, knownList, denoBinary, forkClient, getJson, here, int, loopbackList, machineInfo, mergeCounts, num, r, root, runMain, sleep, sourceState, split,
  startServer as spawnServer, writeResult,
} from './lib.mjs';

const SERVER_FLAGS = [
  '--host', '127.0.0.1',
  '--port', '0',
  '--max-connections', '20000',
  '--max-payload', '16KiB',
  '--heartbeat-interval', '2s',
  '--handshake-timeout', '5s',
  // info, not warn: the listening line is logged at info; nothing is logged per connection at info.
  '--log-level', 'info',
];

// ---------- options ----------
function parseArgs(argv) {
  const opts = {
    runtimes: ['node', 'deno'],
    cycles: 200_000,
    maxSeconds: 240,
    clients: 2,
    workers: 100,
    idle: 500,
    warmup: 5000,
    addresses: ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'],
    oversizedEvery: 100,
    vanishEvery: 100,
    heapToleranceMB: 2,
    termGraceSeconds: 12,
    quiesceSeconds: 30,
    deno: undefined,
    timeout: undefined,
    out: join(here, 'results'),
  };
  for (let i = 0; i < argv.length; i++) {
    const eq = argv[i].indexOf('=');
    const flag = eq === -1 ? argv[i] : argv[i].slice(0, eq);
    const value = eq === -1 ? undefined : argv[i].slice(eq + 1);
    const take = () => {
      const v = value ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--runtimes': opts.runtimes = knownList(take(), { node: true, deno: true }, 'runtime'); break;
      case '--cycles': opts.cycles = int('cycles', take(), 1); break;
      case '--max-seconds': opts.maxSeconds = int('max-seconds', take(), 1); break;
      case '--clients': opts.clients = int('clients', take(), 1); break;
      case '--workers': opts.workers = int('workers', take(), 1); break;
      case '--idle': opts.idle = int('idle', take(), 0); break;
      case '--warmup': opts.warmup = int('warmup', take(), 0); break;
      case '--oversized-every': opts.oversizedEvery = int('oversized-every', take(), 0); break;
      case '--vanish-every': opts.vanishEvery = int('vanish-every', take(), 0); break;
      case '--heap-tolerance-mb': opts.heapToleranceMB = num('heap-tolerance-mb', take(), 0); break;
      case '--quiesce-seconds': opts.quiesceSeconds = int('quiesce-seconds', take(), 1); break;
      case '--term-grace-seconds': opts.termGraceSeconds = int('term-grace-seconds', take(), 1); break;
      case '--deno': opts.deno = resolve(take()); break;
      case '--timeout': opts.timeout = int('timeout', take(), 10); break;
      case '--out': opts.out = resolve(take()); break;
      case '--addresses': opts.addresses = loopbackList('--addresses', take()); break;
      case '--help': case '-h':
        process.stdout.write(
          'usage: node bench/soak.mjs [--runtimes node,deno] [--cycles N] [--max-seconds S] [--clients C] [--workers W]\n' +
            '                           [--idle N] [--warmup N] [--addresses a,b,...] [--oversized-every N] [--vanish-every N]\n' +
            '                           [--heap-tolerance-mb MB] [--quiesce-seconds S] [--term-grace-seconds S] [--deno PATH] [--timeout S] [--out DIR]\n',
        );
        process.exit(0);
      default: throw new Error(`unknown flag ${flag}`);
    }
  }
  if (Math.ceil(opts.idle / opts.clients) + opts.workers * 2 > 18_000) throw new Error('idle pool + workers would exceed the 20000 fd limit of one client process');
  // Whole-run bound: per runtime the soak itself, a warmup, quiescing, GCs and start/stop.
  opts.timeout ??= opts.runtimes.length * (opts.maxSeconds + (opts.warmup > 0 ? 120 : 0) + opts.quiesceSeconds + opts.termGraceSeconds + 150);
  return opts;
}

const log = createLog('soak');

// ---------- server ----------
function serverCommand(runtime, opts) {
  if (runtime === 'node') return [process.execPath, ['--expose-gc', join(root, 'dist/node.js'), ...SERVER_FLAGS]];
  return [denoBinary(opts.deno), ['run', '--v8-flags=--expose-gc', '-A', join(root, 'main.ts'), ...SERVER_FLAGS]];
}

// Every line the server prints after "listening" is kept in counts (by level and event); error and
// warn lines and anything that is not JSON are kept verbatim (the first 50 of each).
function recordLine(line, name, sink) {
  {
    sink.lines++;
    let event;
    try {
      event = JSON.parse(line);
    } catch {}
    if (!event || typeof event !== 'object') {
      sink.nonJson++;
      if (sink.nonJsonSamples.length < 50) sink.nonJsonSamples.push(`${name}: ${line}`.slice(0, 2000));
      return;
    }
    const level = String(event.level ?? 'none');
    sink.byLevel[level] = (sink.byLevel[level] ?? 0) + 1;
    const key = `${level}:${event.event ?? '?'}`;
    sink.byEvent[key] = (sink.byEvent[key] ?? 0) + 1;
    if ((level === 'error' || level === 'warn' || level === 'fatal') && sink.problemSamples.length < 50) sink.problemSamples.push(line.slice(0, 2000));
    sink.tail.push(line.slice(0, 500));
    if (sink.tail.length > 20) sink.tail.shift();
  }
}

async function startServer(runtime, opts) {
  const [command, args] = serverCommand(runtime, opts);
  const output = { lines: 0, nonJson: 0, nonJsonSamples: [], byLevel: {}, byEvent: {}, problemSamples: [], tail: [] };
  const server = await spawnServer({
    name: runtime,
    command,
    args,
    env: { ...process.env, NO_COLOR: '1' },
    readyTimeoutMs: 60_000,
    log,
    // After the listening line, stdout keeps being drained (so the pipe never fills) into the counts.
    onLine: (line, stream) => recordLine(line, stream, output),
  });
  return { ...server, output };
}

// What the kernel says the server process holds, independent of the runtime: open fds (and how
// many are sockets), and the TCP sockets on the server's port by state (/proc/net/tcp, IPv4).
const TCP_STATES = { '01': 'ESTABLISHED', '02': 'SYN_SENT', '03': 'SYN_RECV', '04': 'FIN_WAIT1', '05': 'FIN_WAIT2', '06': 'TIME_WAIT', '07': 'CLOSE', '08': 'CLOSE_WAIT', '09': 'LAST_ACK', '0A': 'LISTEN', '0B': 'CLOSING' };
async function kernelFigures(pid, port) {
  const out = { fds: null, socketFds: null, tcpOnPort: null };
  try {
    const entries = await readdir(`/proc/${pid}/fd`);
    let sockets = 0;
    await Promise.all(entries.map(async (e) => {
      const target = await readlink(`/proc/${pid}/fd/${e}`).catch(() => '');
      if (target.startsWith('socket:')) sockets++;
    }));
    out.fds = entries.length;
    out.socketFds = sockets;
  } catch {}
  try {
    const hexPort = Number(port).toString(16).toUpperCase().padStart(4, '0');
    const counts = {};
    for (const line of (await readFile('/proc/net/tcp', 'utf8')).split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 4 || !cols[1].endsWith(`:${hexPort}`)) continue;
      const state = TCP_STATES[cols[3]] ?? cols[3];
      counts[state] = (counts[state] ?? 0) + 1;
    }
    out.tcpOnPort = counts;
  } catch {}
  return out;
}

// Two GCs and two reads: the second read is the one kept (the first GC may leave finalizers and
// weak callbacks that the second one collects).
async function gcStats(url) {
  await getJson(`${url}/stats?gc=1`);
  await sleep(200);
  return getJson(`${url}/stats?gc=1`);
}

// /stats?gc=1 twice, then (after the /stats connection has closed) the kernel's view.
async function measure(server) {
  const stats = await gcStats(server.url);
  await sleep(300);
  return figures(stats, await kernelFigures(server.child.pid, new URL(server.url).port));
}

function figures(stats, kernel = {}) {
  const p = stats.process ?? {};
  const num = (v) => (typeof v === 'number' ? v : null);
  return {
    heapUsedBytes: num(p.heapUsedBytes),
    rssBytes: num(p.rssBytes),
    externalBytes: num(p.externalBytes),
    live: stats.live,
    reserved: stats.reserved,
    closing: stats.closing,
    signalsPending: stats.signalsPending,
    activeHandles: num(p.activeHandles),
    upgradeListeners: num(p.upgradeListeners),
    processListeners: num(p.processListeners),
    accepted: stats.accepted,
    refused: stats.refused,
    released: stats.released,
    uptimeSeconds: stats.uptimeSeconds,
    fds: kernel.fds ?? null,
    socketFds: kernel.socketFds ?? null,
    tcpOnPort: kernel.tcpOnPort ?? null,
  };
}

// Polls /stats until live, reserved and closing are all 0. `first` is what was still pending at
// the first poll (e.g. reservations of clients that vanished mid-handshake, freed by the timeout).
async function waitQuiescent(url, seconds) {
  const startedAt = Date.now();
  let last;
  let first;
  const pick = (s) => (s.error ? s : { live: s.live, reserved: s.reserved, closing: s.closing });
  while (Date.now() - startedAt < seconds * 1000) {
    last = await getJson(`${url}/stats`).catch((error) => ({ error: error.message }));
    first ??= pick(last);
    if (last.live === 0 && last.reserved === 0 && last.closing === 0) return { reached: true, afterMs: Date.now() - startedAt, first, stats: last };
    await sleep(250);
  }
  return { reached: false, afterMs: Date.now() - startedAt, first, last: last && pick(last), stats: last };
}

// ---------- load clients ----------
function startClient(index) {
  const progress = new Map();
  const client = forkClient(join(here, 'soak-client.mjs'), { name: `load client ${index}`, onProgress: (message) => progress.set(message.label, message) });
  return { index, progress, ...client };
}

async function runCycles(clients, server, opts, { cycles, seconds, label }) {
  const deadline = Date.now() + seconds * 1000;
  const shares = split(cycles, clients.length);
  const progressTimer = setInterval(() => {
    const parts = clients.map((c) => c.progress.get(label)).filter(Boolean);
    if (!parts.length) return;
    const completed = parts.reduce((a, p) => a + p.completed, 0);
    const failed = parts.reduce((a, p) => a + p.failed, 0);
    const rate = parts.reduce((a, p) => a + (p.rate ?? 0), 0);
    log(`${label}: ${completed}/${cycles} cycles, ${failed} failed, ${r(rate, 0)}/s, ${parts[0].elapsedS} s`);
  }, 10_000);
  try {
    const results = await Promise.all(
      clients.map((client, i) =>
        client.request(
          {
            cmd: 'soak',
            label,
            url: server.url,
            cycles: shares[i],
            deadline,
            workers: opts.workers,
            addresses: opts.addresses,
            oversizedEvery: opts.oversizedEvery,
            vanishEvery: opts.vanishEvery,
            oversizedBytes: 20 * 1024,
            cycleTimeoutMs: 20_000,
            handshakeTimeoutMs: 10_000,
          },
          seconds * 1000 + 60_000,
        ),
      ),
    );
    const merged = {
      requested: cycles,
      started: 0,
      completed: 0,
      failed: 0,
      stoppedBy: [...new Set(results.map((x) => x.stoppedBy))].join(','),
      wallSeconds: r(Math.max(...results.map((x) => x.wallMs)) / 1000, 1),
      byKind: { started: {}, ok: {} },
      failures: {},
      errorsSeen: {},
      vanishVariants: {},
      vanishResponses: {},
      failureSamples: results.flatMap((x) => x.failureSamples).slice(0, 20),
      cycleMsPerClient: results.map((x) => x.cycleMs),
    };
    for (const x of results) {
      merged.started += x.started;
      merged.completed += x.completed;
      merged.failed += x.failed;
      mergeCounts(merged.byKind.started, x.byKind.started);
      mergeCounts(merged.byKind.ok, x.byKind.ok);
      mergeCounts(merged.failures, x.failures);
      mergeCounts(merged.errorsSeen, x.errorsSeen);
      mergeCounts(merged.vanishVariants, x.vanishVariants);
      mergeCounts(merged.vanishResponses, x.vanishResponses);
    }
    merged.cyclesPerSecond = r(merged.completed / merged.wallSeconds, 1);
    return merged;
  } finally {
    clearInterval(progressTimer);
  }
}

// ---------- verdicts ----------
function compare(baseline, after, opts) {
  const delta = (k) => (typeof baseline[k] === 'number' && typeof after[k] === 'number' ? after[k] - baseline[k] : null);
  const heapDeltaBytes = delta('heapUsedBytes');
  return {
    heapDeltaKB: heapDeltaBytes === null ? null : r(heapDeltaBytes / 1024, 1),
    rssDeltaMB: delta('rssBytes') === null ? null : r(delta('rssBytes') / 1048576, 2),
    externalDeltaKB: delta('externalBytes') === null ? null : r(delta('externalBytes') / 1024, 1),
    signalsPendingDelta: delta('signalsPending'),
    activeHandlesDelta: delta('activeHandles'),
    upgradeListenersDelta: delta('upgradeListeners'),
    processListenersDelta: delta('processListeners'),
    fdsDelta: delta('fds'),
    socketFdsDelta: delta('socketFds'),
  };
}

function verdicts(baseline, after, deltas, extra, opts) {
  const zero = (v) => (v === 0 ? 'pass' : 'FAIL');
  const same = (k) => (typeof baseline[k] !== 'number' || typeof after[k] !== 'number' ? 'n/a' : baseline[k] === after[k] ? 'pass' : 'FAIL');
  const releasedTotal = Object.values(after.released ?? {}).reduce((a, b) => a + b, 0);
  const v = {
    live: zero(after.live),
    reserved: zero(after.reserved),
    closing: zero(after.closing),
    signalsPending: zero(after.signalsPending),
    activeHandles: same('activeHandles'),
    upgradeListeners: same('upgradeListeners'),
    processListeners: same('processListeners'),
    fds: same('fds'),
    socketFds: same('socketFds'),
    heapUsed: deltas.heapDeltaKB === null ? 'n/a' : deltas.heapDeltaKB <= opts.heapToleranceMB * 1024 ? 'pass' : 'FAIL',
    rss: 'report-only',
    accounting: after.accepted === releasedTotal ? 'pass' : 'FAIL', // every accepted socket was released exactly once
    quiescent: extra.quiescent ? 'pass' : 'FAIL',
    clientFailures: extra.failures === 0 ? 'pass' : 'FAIL',
    idlePool: extra.idleOk ? 'pass' : 'FAIL',
    serverErrors: extra.serverErrors === 0 && !extra.serverExitedUnexpectedly ? 'pass' : 'FAIL',
    exitOnSigterm: extra.stopHow === 'SIGTERM' ? 'pass' : 'FAIL',
  };
  v.overall = Object.values(v).includes('FAIL') ? 'FAIL' : 'pass';
  return v;
}

// ---------- one runtime ----------
async function runRuntime(runtime, opts) {
  log(`--- ${runtime}: starting server`);
  const server = await startServer(runtime, opts);
  const pid = server.child.pid;
  const clients = [];
  const polls = { samples: 0, peakLive: 0, peakReserved: 0, peakClosing: 0, peakRssBytes: 0, peakHeapUsedBytes: 0, errors: 0 };
  let pollTimer;
  let result;
  let extra;
  let serverStop;
  try {
    log(`${runtime}: listening at ${server.url}, pid ${pid}`);
    await sleep(2000);
    const baseline = await measure(server);
    log(`${runtime}: baseline heap ${r(baseline.heapUsedBytes / 1048576)} MB, rss ${r(baseline.rssBytes / 1048576)} MB, handles ${baseline.activeHandles}, listeners ${baseline.upgradeListeners}/${baseline.processListeners}`);

    for (let i = 0; i < opts.clients; i++) clients.push(startClient(i));
    await Promise.all(clients.map((c) => c.ready()));

    let warm;
    if (opts.warmup > 0) {
      log(`${runtime}: warmup, ${opts.warmup} cycles`);
      const warmupRun = await runCycles(clients, server, opts, { cycles: opts.warmup, seconds: 60, label: 'warmup' });
      const q = await waitQuiescent(server.url, opts.quiesceSeconds);
      await sleep(3000);
      warm = { run: { completed: warmupRun.completed, failed: warmupRun.failed, failures: warmupRun.failures }, quiescent: q.reached, figures: await measure(server) };
      log(`${runtime}: warm baseline heap ${r(warm.figures.heapUsedBytes / 1048576)} MB, rss ${r(warm.figures.rssBytes / 1048576)} MB`);
    }

    // Idle pool, opened before the soak and held through it.
    const idleShares = split(opts.idle, clients.length);
    const idleOpened = await Promise.all(clients.map((c, i) => c.request({ cmd: 'idle-open', url: server.url, count: idleShares[i], addresses: opts.addresses, concurrency: 50 }, 60_000)));
    const idleOpen = { requested: opts.idle, opened: idleOpened.reduce((a, x) => a + x.opened, 0), failures: idleOpened.reduce((a, x) => mergeCounts(a, x.failures), {}) };
    log(`${runtime}: idle pool ${idleOpen.opened}/${opts.idle} open`);

    pollTimer = setInterval(async () => {
      const s = await getJson(`${server.url}/stats`, 4000).catch(() => null);
      if (!s) return void polls.errors++;
      polls.samples++;
      polls.peakLive = Math.max(polls.peakLive, s.live);
      polls.peakReserved = Math.max(polls.peakReserved, s.reserved);
      polls.peakClosing = Math.max(polls.peakClosing, s.closing);
      polls.peakRssBytes = Math.max(polls.peakRssBytes, s.process?.rssBytes ?? 0);
      polls.peakHeapUsedBytes = Math.max(polls.peakHeapUsedBytes, s.process?.heapUsedBytes ?? 0);
    }, 5000);

    log(`${runtime}: soak, ${opts.cycles} cycles, ${opts.clients} clients × ${opts.workers} workers, max ${opts.maxSeconds} s`);
    const soakRun = await runCycles(clients, server, opts, { cycles: opts.cycles, seconds: opts.maxSeconds, label: 'soak' });
    clearInterval(pollTimer);
    log(`${runtime}: soak done: ${soakRun.completed} cycles in ${soakRun.wallSeconds} s (${soakRun.cyclesPerSecond}/s), ${soakRun.failed} failed`);
    const statsAfterSoak = await getJson(`${server.url}/stats`).catch((error) => ({ error: error.message }));

    const idleChecked = await Promise.all(clients.map((c) => c.request({ cmd: 'idle-check', timeoutMs: 15_000 }, 30_000)));
    const idleCheck = { ok: 0, bad: 0, missing: 0, droppedBeforeCheck: 0, droppedCodes: {}, firstBad: idleChecked.find((x) => x.firstBad)?.firstBad };
    for (const x of idleChecked) {
      idleCheck.ok += x.ok;
      idleCheck.bad += x.bad;
      idleCheck.missing += x.missing;
      idleCheck.droppedBeforeCheck += x.droppedBeforeCheck;
      mergeCounts(idleCheck.droppedCodes, x.droppedCodes);
    }
    const idleClosed = await Promise.all(clients.map((c) => c.request({ cmd: 'idle-close', timeoutMs: 15_000 }, 30_000)));
    const idleClose = { closeCodes: idleClosed.reduce((a, x) => mergeCounts(a, x.closeCodes), {}), terminated: idleClosed.reduce((a, x) => a + x.terminated, 0) };
    log(`${runtime}: idle pool echo ok ${idleCheck.ok}, bad ${idleCheck.bad}, missing ${idleCheck.missing}, dropped ${idleCheck.droppedBeforeCheck}; close codes ${JSON.stringify(idleClose.closeCodes)}`);

    await Promise.all(clients.map((c) => c.exit()));

    const quiesce = await waitQuiescent(server.url, opts.quiesceSeconds);
    log(`${runtime}: ${quiesce.reached ? `quiescent after ${quiesce.afterMs} ms` : `NOT quiescent after ${quiesce.afterMs} ms: live ${quiesce.stats?.live} reserved ${quiesce.stats?.reserved} closing ${quiesce.stats?.closing}`}`);
    await sleep(3000);
    const after = await measure(server);
    const deltas = compare(baseline, after, opts);
    const warmDeltas = warm ? compare(warm.figures, after, opts) : undefined;

    const idleOk = idleOpen.opened === opts.idle && idleCheck.ok === opts.idle && (idleClose.closeCodes['1000'] ?? 0) === opts.idle;
    extra = { quiescent: quiesce.reached, failures: soakRun.failed, idleOk };
    log(`${runtime}: heap ${r(baseline.heapUsedBytes / 1048576)} → ${r(after.heapUsedBytes / 1048576)} MB (${deltas.heapDeltaKB} KB), rss ${r(baseline.rssBytes / 1048576)} → ${r(after.rssBytes / 1048576)} MB`);

    result = {
      runtime,
      serverPid: pid,
      url: server.url,
      cycles: { requested: opts.cycles, completed: soakRun.completed, failed: soakRun.failed, wallSeconds: soakRun.wallSeconds, perSecond: soakRun.cyclesPerSecond, stoppedBy: soakRun.stoppedBy },
      baseline,
      ...(warm ? { warmBaseline: warm } : {}),
      after,
      deltas,
      ...(warmDeltas ? { deltasVsWarm: warmDeltas } : {}),
      soak: soakRun,
      idlePool: { open: idleOpen, check: idleCheck, close: idleClose },
      duringSoak: { ...polls, statsAfterSoak: statsAfterSoak.error ? statsAfterSoak : { live: statsAfterSoak.live, reserved: statsAfterSoak.reserved, closing: statsAfterSoak.closing, accepted: statsAfterSoak.accepted } },
      quiesce: { reached: quiesce.reached, afterMs: quiesce.afterMs, pendingAtFirstPoll: quiesce.first, ...(quiesce.reached ? {} : { pendingAtEnd: quiesce.last }) },
    };
  } finally {
    clearInterval(pollTimer);
    for (const c of clients) await c.kill();
    server.markStopping();
    serverStop = await server.stop({ graceMs: opts.termGraceSeconds * 1000, beforeKill: () => kernelFigures(server.pid, server.port) });
    if (serverStop.heldWhenKilled) log(`${runtime}: still held when killed: ${JSON.stringify(serverStop.heldWhenKilled)}`);
    log(`${runtime}: server stopped (${serverStop.how} after ${serverStop.ms} ms, exit code ${serverStop.code}, signal ${serverStop.signal})`);
    if (server.exit.unexpected) log(`${runtime}: NOTE the server had exited on its own (code ${server.exit.code}, signal ${server.exit.signal})`);
  }
  // Server output and verdicts once the server is gone, so that shutdown errors count too.
  await sleep(100); // let the last piped lines arrive
  result.serverStop = { ...serverStop, exitedOnItsOwnBeforeStop: server.exit.unexpected };
  result.serverOutput = {
    lines: server.output.lines,
    byLevel: server.output.byLevel,
    byEvent: server.output.byEvent,
    errorAndWarnSamples: server.output.problemSamples,
    nonJsonLines: server.output.nonJson,
    nonJsonSamples: server.output.nonJsonSamples,
  };
  result.verdicts = verdicts(result.baseline, result.after, result.deltas, {
    ...extra,
    serverErrors: (server.output.byLevel.error ?? 0) + (server.output.byLevel.fatal ?? 0) + server.output.nonJson,
    serverExitedUnexpectedly: server.exit.unexpected,
    stopHow: serverStop.how,
  }, opts);
  log(`${runtime}: verdict ${result.verdicts.overall}`);
  return result;
}

// A compact row per runtime for the summary (and for BENCHMARKS.md).
function summaryOf(run) {
  if (run.error) return { error: run.error };
  const b = run.baseline;
  const a = run.after;
  const pick = (f) => ({
    heapUsedMB: r(f.heapUsedBytes / 1048576, 3),
    rssMB: r(f.rssBytes / 1048576, 2),
    externalKB: f.externalBytes === null ? null : r(f.externalBytes / 1024, 1),
    live: f.live,
    reserved: f.reserved,
    closing: f.closing,
    signalsPending: f.signalsPending,
    activeHandles: f.activeHandles,
    upgradeListeners: f.upgradeListeners,
    processListeners: f.processListeners,
    fds: f.fds,
    socketFds: f.socketFds,
    tcpOnPort: f.tcpOnPort,
  });
  return {
    cycles: run.cycles.completed,
    cyclesPerSecond: run.cycles.perSecond,
    wallSeconds: run.cycles.wallSeconds,
    failures: run.soak.failures,
    failed: run.cycles.failed,
    byKind: run.soak.byKind,
    idlePool: { opened: run.idlePool.open.opened, echoOk: run.idlePool.check.ok, dropped: run.idlePool.check.droppedBeforeCheck, closeCodes: run.idlePool.close.closeCodes },
    accepted: a.accepted,
    refused: Object.fromEntries(Object.entries(a.refused ?? {}).filter(([, n]) => n > 0)),
    released: Object.fromEntries(Object.entries(a.released ?? {}).filter(([, n]) => n > 0)),
    baseline: pick(b),
    after: pick(a),
    deltas: run.deltas,
    ...(run.deltasVsWarm ? { deltasVsWarm: run.deltasVsWarm } : {}),
    peakDuringSoak: { live: run.duringSoak.peakLive, reserved: run.duringSoak.peakReserved, closing: run.duringSoak.peakClosing, rssMB: r(run.duringSoak.peakRssBytes / 1048576, 1) },
    quiescentAfterMs: run.quiesce.afterMs,
    pendingAtFirstQuiescePoll: run.quiesce.pendingAtFirstPoll,
    serverStop: run.serverStop,
    serverLogLevels: run.serverOutput.byLevel,
    serverNonJsonLines: run.serverOutput.nonJsonLines,
    verdicts: run.verdicts,
  };
}

// ---------- main ----------
runMain(log, async ({ setLimit, clearLimit }) => {
  const opts = parseArgs(process.argv.slice(2));
  const startedAt = new Date();
  const source = sourceState();
  setLimit(opts.timeout);

  log(`runtimes=${opts.runtimes.join(',')} cycles=${opts.cycles} max-seconds=${opts.maxSeconds} clients=${opts.clients}×${opts.workers} idle=${opts.idle} addresses=${opts.addresses.join(',')} timeout=${opts.timeout} s`);
  const runs = [];
  for (const runtime of opts.runtimes) {
    let run;
    try {
      run = await runRuntime(runtime, opts);
    } catch (error) {
      log(`${runtime}: run failed: ${error.stack ?? error}`);
      run = { runtime, error: String(error.message ?? error) };
    }
    runs.push(run);
    process.stdout.write(`${JSON.stringify({ runtime, ...summaryOf(run) }, null, 2)}\n`);
    await sleep(1000); // let the kernel tidy up closed sockets before the next server
  }

  const summary = Object.fromEntries(runs.map((run) => [run.runtime, summaryOf(run)]));
  const result = {
    benchmark: 'soak',
    startedAt: startedAt.toISOString(),
    durationSeconds: r((Date.now() - startedAt.getTime()) / 1000, 1),
    command: `node bench/soak.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    source,
    machine: machineInfo({ loopback: '127.0.0.1' }),
    options: { ...opts, out: undefined, serverFlags: SERVER_FLAGS },
    verdict: Object.fromEntries(runs.map((run) => [run.runtime, run.error ? 'ERROR' : run.verdicts.overall])),
    summary,
    runs,
  };
  const file = await writeResult(opts.out, 'soak', startedAt, result);
  log(`wrote ${file}`);
  // The overall JSON on stdout is the summary (verdicts and figures); the full runs are in the file.
  process.stdout.write(`${JSON.stringify({ benchmark: 'soak', file, command: result.command, durationSeconds: result.durationSeconds, verdict: result.verdict, summary }, null, 2)}\n`);
  clearLimit();
  process.exitCode = runs.some((run) => run.error || run.verdicts.overall !== 'pass') ? 1 : 0;
});
