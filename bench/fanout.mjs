#!/usr/bin/env node
// Fan-out benchmark (issue 4): what it costs the server to send one message to a large crowd, and
// how long until the whole crowd has it, for hubbub's `hub.publish` (the message is encoded and
// framed once, the same bytes written to every socket) against a naive `ws` server that calls
// `ws.send(payload)` for each client (encoded and framed once per socket).
//
//   node bench/fanout.mjs [--subscribers 10000] [--messages 50] [--warmup 5] [--rounds 3]
//                         [--payload 100,4096] [--servers naive-ws-fanout,hubbub]
//                         [--addresses 127.0.0.1,127.0.0.2] [--concurrency 200] [--idle 2000]
//                         [--message-timeout 10000] [--profile hubbub,naive-ws-fanout] (--rounds 0: profile only)
//                         [--timeout 900] [--out bench/results]
//
// For each round, for each server in turn (one server process at a time):
//   1. spawn the server on 127.0.0.1 port 0 (hubbub: `dist/node.js --handler
//      bench/handlers/fanout.mjs --heartbeat-interval 0`, so no timer work runs; the naive server is
//      bench/servers/naive-ws-fanout.mjs) and read its JSON "listening" line;
//   2. a separate load-client process (bench/fanout-client.mjs) opens N subscriber WebSockets
//      (source addresses round-robin over --addresses) and one trigger connection. Every connection
//      receives every fan-out (hubbub: each subscribes to `bench` on open; naive: wss.clients), so one
//      message makes N + 1 deliveries;
//   3. for each payload size: the server's CPU is read over --idle ms while nothing happens (the
//      "before" idle rate), then the client sends --warmup untimed triggers and --messages timed ones
//      (`fanout <payload>`, payload exactly `size` bytes, `<seq>|xxx…`), each sent only once every
//      connection has received the previous one; the time from sending a trigger to the last
//      receipt is recorded per message. The server's utime+stime (/proc/<pid>/stat, clock ticks) is
//      read right before the first and right after the last timed message; then the idle rate is
//      read again ("after"). CPU µs per delivery = CPU time / (messages × (N + 1)).
//      Every connection checks it sees each sequence number exactly once and in order;
//   4. the client closes everything and the server gets SIGTERM (SIGKILL if it lingers).
// Per server and payload size: CPU per delivery is the median over rounds; time-to-all percentiles
// pool every timed message of every round; missing / duplicates are totals.
// With --profile, one extra, unreported run per listed server is made under `node --cpu-prof`; the
// samples that fall inside the timed publish windows are summarised by self time (top functions,
// and by file). Profiles go to <out>/fanout-prof-<timestamp>/ (gitignored).
// One JSON object goes to stdout and to bench/results/fanout-<timestamp>.json; progress goes to
// stderr. Loopback only.
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import {
  CLK_TCK, bunBinary, createLog, knownList, interleavedRounds, fanOutPhase, forkClient, getJson, here, int, loadAverage, loopbackList, machineInfo, median, percentile, r, ratio, root, runMain, sleep, stamp,
  startServer, summariseProfile, writeResult,
} from './lib.mjs';

const SERVERS = {
  'naive-ws-fanout': { script: join(here, 'servers/naive-ws-fanout.mjs'), args: [] },
  // ws's Sender.frame once, the same bytes written to every socket: issue 15's fan-out floor on Node.
  'raw-ws-frame-once': { script: join(here, 'servers/raw-ws-frame-once.mjs'), args: [] },
  hubbub: {
    script: join(root, 'dist/node.js'),
    args: [
      '--host', '127.0.0.1',
      '--port', '0',
      '--max-connections', '20000',
      '--heartbeat-interval', '0',
      '--handler', join(here, 'handlers/fanout.mjs'),
      // info, not warn: the listening line is logged at info; nothing is logged per connection or message at info.
      '--log-level', 'info',
    ],
    stats: true,
  },
};
// On Bun (run with bun run; --servers raw-bun-publish,hubbub-bun): Bun's native topic publish, its
// send loop, and hubbub on Bun. BENCH_HUBBUB_BEFORE=<dir of another checkout> adds hubbub-bun-before
// (that tree's bun.ts) for before/after comparisons in the same interleaved rounds (not HUBBUB_*: hubbub
// refuses environment variables it does not know).
const HUBBUB_BUN_ARGS = SERVERS.hubbub.args;
SERVERS['raw-bun'] = { bun: true, script: join(here, 'servers/raw-bun.ts'), args: ['--fanout'] };
SERVERS['raw-bun-publish'] = { bun: true, script: join(here, 'servers/raw-bun.ts'), args: ['--fanout-publish'] };
SERVERS['hubbub-bun'] = { bun: true, script: join(root, 'bun.ts'), args: HUBBUB_BUN_ARGS, stats: true };
if (process.env.BENCH_HUBBUB_BEFORE) SERVERS['hubbub-bun-before'] = { bun: true, script: join(resolve(process.env.BENCH_HUBBUB_BEFORE), 'bun.ts'), args: HUBBUB_BUN_ARGS, stats: true };
const BASELINE = 'naive-ws-fanout';

// ---------- options ----------
function parseArgs(argv) {
  const opts = {
    subscribers: 10_000,
    messages: 50,
    warmup: 5,
    rounds: 3,
    payloads: [100, 4096],
    servers: [BASELINE, 'hubbub'],
    addresses: ['127.0.0.1'], // not bound: see bindableSource in lib.mjs
    concurrency: 200,
    idle: 2000,
    messageTimeout: 10_000,
    profile: [],
    timeout: 900,
    out: join(here, 'results'),
  };
  const serverList = (text) => knownList(text, SERVERS, 'server');
  for (let i = 0; i < argv.length; i++) {
    const [flag, value] = argv[i].split('=', 2);
    const take = () => value ?? argv[++i];
    switch (flag) {
      case '--subscribers': opts.subscribers = int('subscribers', take(), 1); break;
      case '--messages': opts.messages = int('messages', take(), 1); break;
      case '--warmup': opts.warmup = int('warmup', take(), 0); break;
      case '--rounds': opts.rounds = int('rounds', take(), 0); break; // 0: only the --profile runs
      case '--concurrency': opts.concurrency = int('concurrency', take(), 1); break;
      case '--idle': opts.idle = int('idle', take(), 100); break;
      case '--message-timeout': opts.messageTimeout = int('message-timeout', take(), 100); break;
      case '--timeout': opts.timeout = int('timeout', take(), 10); break;
      case '--out': opts.out = resolve(take()); break;
      case '--payload': case '--payloads':
        opts.payloads = take().split(',').map((s) => int('payload', s.trim(), 16));
        break;
      case '--servers': opts.servers = serverList(take()); break;
      case '--profile': opts.profile = serverList(take()); break;
      case '--addresses': opts.addresses = loopbackList('--addresses', take()); break;
      case '--help': case '-h':
        process.stdout.write('usage: node bench/fanout.mjs [--subscribers N] [--messages M] [--warmup W] [--rounds R] [--payload 100,4096] [--servers a,b] [--addresses 127.0.0.1,127.0.0.2] [--concurrency C] [--idle MS] [--message-timeout MS] [--profile a,b] [--timeout S] [--out DIR]\n');
        process.exit(0);
      default: throw new Error(`unknown flag ${flag}`);
    }
  }
  if (opts.rounds === 0 && opts.profile.length === 0) throw new Error('--rounds 0 only makes sense with --profile');
  if (opts.subscribers > 18_000) throw new Error('--subscribers above 18000 would exceed the 20000 fd limit of one client process');
  return opts;
}

const log = createLog('fanout');

// ---------- one run of one server ----------
async function runOne(name, opts, { nodeFlags = [], profileDir } = {}) {
  const N = opts.subscribers;
  log(`${name}: starting${nodeFlags.length ? ` with ${nodeFlags.join(' ')}` : ''}`);
  const spec = SERVERS[name];
  const [command, args] = spec.bun ? [bunBinary(), ['run', '--no-env-file', spec.script, ...spec.args]] : [process.execPath, [...nodeFlags, spec.script, ...spec.args]];
  const server = await startServer({ name, command, args, log });
  const pid = server.pid;
  let client;
  try {
    client = forkClient(join(here, 'fanout-client.mjs'));
    await client.ready();
    const connected = await client.request(
      { cmd: 'connect', url: server.url, subscribers: N, addresses: opts.addresses, concurrency: opts.concurrency, handshakeTimeoutMs: 15_000 },
      Math.max(60_000, N * 20),
    );
    log(`${name}: pid ${pid}, opened ${connected.opened}/${N} subscribers + 1 trigger in ${connected.wallMs} ms, failures ${connected.failures}`);
    const statsBefore = SERVERS[name].stats ? await getJson(`${server.url}/stats`).catch((e) => ({ error: e.message })) : undefined;

    const phases = [];
    for (const size of opts.payloads) {
      const phase = await fanOutPhase(client, pid, { size, warmup: opts.warmup, messages: opts.messages, messageTimeout: opts.messageTimeout, idle: opts.idle });
      phases.push(phase);
      log(
        `${name}: ${size} B × ${phase.messages} to ${phase.receivers}: ${phase.cpuUsPerDelivery} µs CPU/delivery ` +
          `(user ${phase.cpuUsPerDeliveryUser}, sys ${phase.cpuUsPerDeliverySystem}), time-to-all p50 ${phase.timeToAllP50Ms} ms p99 ${phase.timeToAllP99Ms} ms, ` +
          `missing ${phase.missing}, dup ${phase.duplicates}, ooo ${phase.outOfOrder}, bad ${phase.badPayload}, idle ${phase.idleBefore.coreFraction}/${phase.idleAfter.coreFraction} core`,
      );
    }

    const statsAfter = SERVERS[name].stats ? await getJson(`${server.url}/stats`).catch((e) => ({ error: e.message })) : undefined;
    const closed = await client.request({ cmd: 'close', timeoutMs: 20_000 }, 30_000);
    log(`${name}: closed cleanly ${closed.closedCleanly}, terminated ${closed.terminated}, dropped early ${closed.droppedEarly} (${closed.wallMs} ms)`);
    await client.exit();
    // hubbub shuts down gracefully on SIGTERM (and a profiled process writes its profile on exit).
    const stoppedBy = (await server.stop({ graceMs: profileDir ? 30_000 : 5000 })).how;

    return {
      server: name,
      subscribers: N,
      opened: connected.opened,
      connectFailures: connected.failures,
      failureReasons: connected.failureReasons,
      connectWallMs: connected.wallMs,
      phases,
      ...(statsAfter
        ? {
            hubStats: {
              messagesOut: statsAfter.messagesOut - (statsBefore?.messagesOut ?? 0),
              dropped: statsAfter.dropped,
              released: statsAfter.released,
              live: statsAfter.live,
              subscriptions: statsAfter.topics?.subscriptions,
              error: statsAfter.error,
            },
          }
        : {}),
      close: { cleanly: closed.closedCleanly, terminated: closed.terminated, droppedEarly: closed.droppedEarly },
      stoppedBy,
      serverStderrTail: server.stderrTail.slice(-5),
    };
  } finally {
    await client?.kill();
    await server.stop();
  }
}

// ---------- summary ----------
function summarise(runs, opts) {
  const out = {};
  for (const size of opts.payloads) {
    const bySize = {};
    for (const name of opts.servers) {
      const mine = runs.filter((run) => run.server === name && !run.error).map((run) => run.phases.find((p) => p.size === size)).filter(Boolean);
      const pooled = mine.flatMap((p) => p.timeToAllMs).filter((x) => x !== null);
      const sum = (field) => mine.reduce((a, p) => a + (p[field] ?? 0), 0);
      bySize[name] = {
        rounds: mine.length,
        receivers: median(mine.map((p) => p.receivers)),
        cpuUsPerDelivery: r(median(mine.map((p) => p.cpuUsPerDelivery)), 3),
        cpuUsPerDeliveryUser: r(median(mine.map((p) => p.cpuUsPerDeliveryUser)), 3),
        cpuUsPerDeliverySystem: r(median(mine.map((p) => p.cpuUsPerDeliverySystem)), 3),
        cpuUsPerDeliveryPerRound: mine.map((p) => p.cpuUsPerDelivery),
        timeToAllP50Ms: r(percentile(pooled, 50), 2),
        timeToAllP99Ms: r(percentile(pooled, 99), 2),
        timeToAllMaxMs: r(percentile(pooled, 100), 2),
        timeToFirstP50Ms: r(median(mine.map((p) => p.timeToFirstP50Ms)), 2),
        serverCpuCoreFraction: r(median(mine.map((p) => p.serverCpuCoreFraction)), 3),
        clientCpuCoreFraction: r(median(mine.map((p) => p.clientCpuCoreFraction)), 3),
        idleShareOfPublishCpu: r(Math.max(0, ...mine.map((p) => p.idleShareOfPublishCpu ?? 0)), 4),
        deliveries: sum('deliveries'),
        missing: sum('missing'),
        duplicates: sum('duplicates'),
        outOfOrder: sum('outOfOrder'),
        badPayload: sum('badPayload'),
        incompleteMessages: sum('incompleteMessages'),
        errors: runs.filter((run) => run.server === name && run.error).map((run) => run.error),
      };
    }
    out[`${size}B`] = bySize;
  }
  return out;
}

function ratios(summary) {
  const div = ratio;
  const out = {};
  for (const [size, bySize] of Object.entries(summary)) {
    const h = bySize.hubbub;
    const b = bySize[BASELINE];
    if (!h || !b) continue;
    const cpu = div(h.cpuUsPerDelivery, b.cpuUsPerDelivery);
    out[size] = {
      cpuPerDelivery: cpu,
      cpuPerDeliveryUser: div(h.cpuUsPerDeliveryUser, b.cpuUsPerDeliveryUser),
      cpuPerDeliverySystem: div(h.cpuUsPerDeliverySystem, b.cpuUsPerDeliverySystem),
      timeToAllP50: div(h.timeToAllP50Ms, b.timeToAllP50Ms),
      timeToAllP99: div(h.timeToAllP99Ms, b.timeToAllP99Ms),
      cpuGoalMet: cpu === null ? null : cpu <= 0.7,
    };
  }
  return out;
}

// ---------- CPU profiles ----------
async function profileOne(name, opts, dir) {
  const serverDir = join(dir, name);
  await mkdir(serverDir, { recursive: true });
  const run = await runOne(name, opts, { nodeFlags: ['--cpu-prof', `--cpu-prof-dir=${serverDir}`], profileDir: serverDir });
  const files = (await readdir(serverDir)).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) throw new Error(`${name}: no .cpuprofile written in ${serverDir} (stopped by ${run.stoppedBy})`);
  const file = join(serverDir, files[0]);
  const profile = JSON.parse(await readFile(file, 'utf8'));
  const perSize = {};
  for (const phase of run.phases) perSize[`${phase.size}B`] = { cpuUsPerDeliveryUnderProfiler: phase.cpuUsPerDelivery, ...summariseProfile(profile, [phase.monotonicWindowUs]) };
  return { server: name, file: relative(root, file), perSize };
}

// ---------- main ----------
runMain(log, async ({ setLimit, clearLimit }) => {
  const opts = parseArgs(process.argv.slice(2));
  const startedAt = new Date();
  const loadAtStart = loadAverage();
  setLimit(opts.timeout);

  log(`N=${opts.subscribers}, M=${opts.messages} (+${opts.warmup} warm-up), payloads=${opts.payloads.join(',')} B, rounds=${opts.rounds}, servers=${opts.servers.join(',')}, addresses=${opts.addresses.join(',')}, CLK_TCK=${CLK_TCK}`);
  const runs = await interleavedRounds(opts.rounds, opts.servers, (name) => runOne(name, opts), { log, pauseMs: 1000 });


  const profiles = [];
  if (opts.profile.length) {
    const dir = join(opts.out, `fanout-prof-${stamp(startedAt)}`);
    for (const name of opts.profile) {
      log(`--- profile run (not in the summary): ${name}`);
      try {
        profiles.push(await profileOne(name, opts, dir));
      } catch (error) {
        log(`${name}: profile run failed: ${error.stack ?? error}`);
        profiles.push({ server: name, error: String(error.message ?? error) });
      }
      await sleep(1000);
    }
  }

  const summary = summarise(runs, opts);
  const result = {
    benchmark: 'fan-out',
    startedAt: startedAt.toISOString(),
    durationSeconds: r((Date.now() - startedAt.getTime()) / 1000, 1),
    command: `node bench/fanout.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    machine: machineInfo({ loopback: opts.addresses, loadClients: 1, clkTck: CLK_TCK, loadAverage: { atStart: loadAtStart, atEnd: loadAverage(), note: '1/5/15-minute load averages; other work on the machine inflates time-to-all more than CPU per delivery' } }),
    options: { subscribers: opts.subscribers, messages: opts.messages, warmup: opts.warmup, rounds: opts.rounds, payloads: opts.payloads, servers: opts.servers, idleMs: opts.idle, messageTimeoutMs: opts.messageTimeout },
    summary,
    ratios: {
      hubbubVsNaive: ratios(summary),
      note: 'hubbub / naive-ws-fanout: below 1 is better; goal cpuPerDelivery <= 0.7. Deliveries per message = subscribers + 1 (the trigger connection receives too, on both servers).',
    },
    ...(profiles.length ? { profiles } : {}),
    runs,
  };
  const file = await writeResult(opts.out, 'fanout', startedAt, result);
  log(`wrote ${file}`);
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  clearLimit();
  const anyError = runs.some((run) => run.error) || profiles.some((p) => p.error);
  const anyLoss = Object.values(summary).some((bySize) => Object.values(bySize).some((s) => s.missing || s.duplicates || s.outOfOrder || s.badPayload));
  process.exitCode = anyError || anyLoss ? 1 : 0;
});
