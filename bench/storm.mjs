#!/usr/bin/env node
// The reconnect storm (issue 13): C hubbub clients (default 20,000, over several client processes
// and source addresses 127.0.0.x) on a hubbub server in cluster mode (the crowd is beyond one
// process's 20,000 fds), each subscribed to one of T topics. A second hubbub node on the same Redis
// publishes steadily to every topic (R publications/s in all). The server is restarted — SIGTERM
// (every client gets 1001), then started again on the same port — and the bench measures how the
// crowd comes back: time until 99% and 100% have resubscribed, the peak rate of connection attempts
// and of successful opens the server saw (1 s windows), refused handshakes, and the messages lost
// (each client checks it ends with every offset of its topic exactly once, in order: with history
// on in Redis it must be 0). Modes, one fresh server pair each, rounds interleaved:
//   jitter  the hubbub client's defaults: full-jitter backoff 0.5 s → 20 s, /admission + Retry-After
//   naive   a hand-rolled client: a fixed 100 ms retry, no jitter, no backoff, no /admission
//
//   npm run build && node bench/storm.mjs [--clients 20000] [--procs 4] [--workers 2] [--topics 200]
//                                         [--rate 20] [--modes jitter,naive] [--rounds 1] [--upgrade-rate 0]
//                                         [--redis redis://127.0.0.1:6379/9]
//
// Needs Redis on 127.0.0.1 (its database is flushed before each run). Loopback only; bounded (10 min).
import { createWriteStream } from 'node:fs';
import WebSocket from 'ws';
import { countersDelta, createLog, forkClient, tcpCounters, getJson, here, int, interleavedRounds, knownList, machineInfo, median, percentile, r, ratio, runMain, sleep, startServer, wsUrlOf } from './lib.mjs';

const log = createLog('storm');
const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []));
const known = new Set(['clients', 'procs', 'workers', 'topics', 'rate', 'modes', 'rounds', 'upgrade-rate', 'redis', 'hub-log']);
for (const key of Object.keys(args)) if (!known.has(key)) throw new Error(`unknown option --${key} (known: ${[...known].join(', ')})`);
const clients = int('clients', args.clients ?? '20000', 1);
const procs = int('procs', args.procs ?? String(Math.max(1, Math.ceil(clients / 5000))), 1);
const workers = int('workers', args.workers ?? String(Math.max(1, Math.ceil(clients / 12_000))), 1);
const topics = int('topics', args.topics ?? '200', 1);
const rate = int('rate', args.rate ?? '20', 1);
const rounds = int('rounds', args.rounds ?? '1', 1);
const upgradeRate = int('upgrade-rate', args['upgrade-rate'] ?? '0', 0);
const modes = knownList(args.modes ?? 'jitter,naive', { jitter: 1, naive: 1 }, 'mode');
const redisUrl = String(args.redis ?? 'redis://127.0.0.1:6379/9');
// Every line the hub writes, to a file (for a run that goes wrong).
const hubLog = args['hub-log'] ? createWriteStream(args['hub-log']) : undefined;
const onLine = hubLog ? (line, stream) => hubLog.write(`${stream} ${line}\n`) : undefined;
if (!/^redis:\/\/127\.0\.0\.1[:/]/.test(redisUrl)) throw new Error('--redis must be on 127.0.0.1');
if (clients / procs > 18_000) throw new Error(`--procs ${procs}: ${Math.ceil(clients / procs)} clients per process is over one process's 20,000 fds`);

const serverArgs = (port) => [
  'dist/node.js', '--host', '127.0.0.1', '--port', String(port), '--handler', 'pubsub', '--backplane', redisUrl,
  '--history-size', '1000', '--max-connections', String(clients + 1000), '--log-level', 'info',
  ...(upgradeRate ? ['--upgrade-rate', String(upgradeRate)] : []),
];

/** Publishes `rate` publications a second round-robin over the topics until stopped; keeps each topic's last offset. */
async function publisher(url) {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  await new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject)));
  const finals = {};
  let sent = 0;
  let answered = 0;
  let failed = 0;
  ws.on('message', (raw) => {
    const m = JSON.parse(String(raw));
    if (m.type === 'published') {
      answered++;
      finals[m.topic] = Math.max(finals[m.topic] ?? 0, m.offset);
    } else if (m.type === 'error') failed++;
  });
  let timer;
  const t0 = Date.now();
  const tick = () => {
    const due = Math.floor(((Date.now() - t0) * rate) / 1000);
    while (sent < due) {
      ws.send(JSON.stringify({ type: 'publish', topic: `storm-${sent % topics}`, id: sent, data: { n: sent } }));
      sent++;
    }
    timer = setTimeout(tick, 20);
  };
  tick();
  return {
    async stop() {
      clearTimeout(timer);
      const deadline = Date.now() + 10_000;
      while (answered + failed < sent && Date.now() < deadline) await sleep(20);
      ws.close();
      return { sent, answered, failed, finals };
    },
  };
}

async function flushRedis() {
  const { Redis } = await import('ioredis');
  const redis = new Redis(redisUrl);
  await redis.flushdb();
  await redis.quit();
}

/** Peak count in any 1 s window of sorted timestamps (ms). */
function peakPerSecond(sorted) {
  let peak = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (sorted[i] - sorted[j] >= 1000) j++;
    peak = Math.max(peak, i - j + 1);
  }
  return peak;
}

async function runOne(mode, round) {
  await flushRedis();
  let hub = await startServer({ name: `hub (${mode})`, command: process.execPath, args: [...serverArgs(0), '--workers', String(workers)], log, onLine });
  const port = hub.port;
  const source = await startServer({ name: 'publisher node', command: process.execPath, args: serverArgs(0), log });
  const loaders = [];
  try {
    for (let p = 0; p < procs; p++) {
      const loader = forkClient(`${here}/storm-client.mjs`, { name: `storm client ${p}` });
      await loader.ready();
      loaders.push(loader);
    }
    // Each run its own source addresses (127.0.<run>.<proc+1>), so no TIME_WAIT of an earlier run slows bind().
    const per = Math.ceil(clients / procs);
    log(`${mode} round ${round}: opening ${clients} clients in ${procs} processes on ${hub.url} (${workers} workers)`);
    const t0 = Date.now();
    await Promise.all(loaders.map((l, p) => l.request({ cmd: 'open', url: wsUrlOf(hub.url), count: Math.min(per, clients - p * per), first: p * per, topics, source: `127.0.${round - 1 + (mode === 'naive' ? 10 : 0)}.${p + 1}`, mode, pace: Math.ceil(1500 / procs) }, 180_000)));
    log(`all ${clients} subscribed in ${Date.now() - t0} ms`);
    const pub = await publisher(wsUrlOf(source.url));
    await sleep(3000);

    await Promise.all(loaders.map((l) => l.request({ cmd: 'mark' }, 5000)));
    const marked = Date.now();
    const tcpBefore = tcpCounters();
    const stopped = await hub.stop({ graceMs: 30_000 });
    const down = Date.now() - marked;
    hub = await startServer({ name: `hub (${mode}, again)`, command: process.execPath, args: [...serverArgs(port), '--workers', String(workers)], log, onLine });
    const up = Date.now() - marked;
    log(`stopped (${stopped.how}) after ${down} ms, listening again at ${up} ms`);
    const deadline = Date.now() + 120_000;
    let back = 0;
    const lastCounts = loaders.map(() => 0);
    while (Date.now() < deadline) {
      // A client process busy with its own retries answers late; a late answer is not a failure.
      const counts = await Promise.all(loaders.map((l, i) => l.request({ cmd: 'count' }, 60_000).then((c) => (lastCounts[i] = c.back), () => lastCounts[i])));
      back = counts.reduce((s, c) => s + c, 0);
      if (back === clients) break;
      await sleep(250);
    }
    log(`${back}/${clients} back at ${Date.now() - marked} ms`);
    await sleep(3000);
    const published = await pub.stop();
    const verified = await Promise.all(loaders.map((l) => l.request({ cmd: 'verify', finals: published.finals, timeoutMs: 20_000 }, 30_000)));
    const reports = await Promise.all(loaders.map((l) => l.request({ cmd: 'report' }, 30_000)));
    // The kernel's view: SYNs dropped at a full accept queue (then retried by the client's TCP after 1, 3, 7 … s).
    const tcp = countersDelta(tcpBefore, tcpCounters());
    const stats = await getJson(`${hub.url}/stats`).catch(() => undefined);
    const attempts = reports.flatMap((x) => x.attempts).sort((a, b) => a - b);
    const backAt = reports.flatMap((x) => x.backAt).filter((x) => x !== null).sort((a, b) => a - b);
    const sum = (key) => verified.reduce((s, v) => s + v[key], 0);
    const counters = reports.map((x) => x.counters);
    const add = (key) => counters.reduce((s, c) => s + c[key], 0);
    const closes = {};
    for (const c of counters) for (const [code, n] of Object.entries(c.closesSeen)) closes[code] = (closes[code] ?? 0) + n;
    const result = {
      server: mode,
      mode,
      clients,
      back: backAt.length,
      stopMs: down,
      listeningAgainMs: up,
      // From the SIGTERM, and from the new server's listening line.
      back99Ms: backAt.length >= Math.ceil(clients * 0.99) ? backAt[Math.ceil(clients * 0.99) - 1] : null,
      back100Ms: backAt.length === clients ? backAt.at(-1) : null,
      back99AfterListeningMs: backAt.length >= Math.ceil(clients * 0.99) ? backAt[Math.ceil(clients * 0.99) - 1] - up : null,
      back100AfterListeningMs: backAt.length === clients ? backAt.at(-1) - up : null,
      attempts: attempts.length,
      attemptsPerClient: r(attempts.length / clients, 2),
      peakAttemptsPerSecond: peakPerSecond(attempts),
      peakOpensPerSecond: peakPerSecond(backAt),
      handshakesFailed: add('failedHandshakes'),
      refusedHttp: add('refusedHttp'),
      serverRefused: stats?.refused,
      serverDropped: stats?.connectionsDropped,
      tcp,
      closesSeen: closes,
      notRecovered: add('notRecovered'),
      published: published.answered,
      publishFailures: published.failed,
      delivered: sum('delivered'),
      lost: sum('lost'),
      duplicates: sum('duplicates'),
      outOfOrder: sum('outOfOrder'),
      clientsMissing: sum('clientsMissing'),
      duplicatesDroppedByClient: add('duplicatesDropped'),
    };
    log(JSON.stringify(result));
    await Promise.all(loaders.map((l) => l.request({ cmd: 'close' }, 30_000).catch(() => {})));
    return result;
  } finally {
    await Promise.all(loaders.map((l) => l.exit()));
    await Promise.all([hub.stop(), source.stop()]);
  }
}

runMain(log, async ({ setLimit }) => {
  setLimit(600 * rounds * modes.length);
  const runs = await interleavedRounds(rounds, modes, runOne, { log, pauseMs: 3000 });
  const by = (mode, key) => median(runs.filter((x) => x.mode === mode && typeof x[key] === 'number').map((x) => x[key]));
  const keys = ['back99Ms', 'back100Ms', 'back99AfterListeningMs', 'back100AfterListeningMs', 'attemptsPerClient', 'peakAttemptsPerSecond', 'peakOpensPerSecond', 'handshakesFailed', 'lost'];
  const medians = Object.fromEntries(modes.map((m) => [m, Object.fromEntries(keys.map((k) => [k, by(m, k)]))]));
  const ratios = modes.includes('jitter') && modes.includes('naive') ? Object.fromEntries(keys.filter((k) => k !== 'lost').map((k) => [k, ratio(medians.jitter[k], medians.naive[k])])) : undefined;
  process.stdout.write(`${JSON.stringify({ bench: 'storm', machine: machineInfo(), config: { clients, procs, workers, topics, rate, rounds, upgradeRate, redis: redisUrl }, runs, medians, ratiosJitterOverNaive: ratios }, null, 2)}\n`, () => process.exit(0));
});
