#!/usr/bin/env node
// The whole benchmark in one run (issue 5): hubbub and its baselines on Node, Deno and Bun, the same
// load clients for all, and the results written into BENCHMARKS.md (between the markers
// <!-- bench:run:start --> and <!-- bench:run:end -->) and bench/results/run-<timestamp>.json.
//
//   npm run bench          (= npm run build && node bench/run.mjs)
//   npm run bench:quick    (= npm run build && node bench/run.mjs --quick; about 2 minutes, 2 cores)
//
//   node bench/run.mjs [--quick] [--runtimes node,deno,bun] [--servers a,b,…] [--rounds R]
//                      [--connections N] [--clients C] [--concurrency H] [--hold MS]
//                      [--echo-seconds S] [--subscribers N] [--messages M] [--warmup W]
//                      [--payloads 100,4096] [--large hubbub-node:19000,hubbub-deno:15000,…]
//                      [--addresses 127.0.0.1,…,127.0.0.4] [--markdown FILE | --no-markdown]
//                      [--profile server,…] [--timeout S] [--out bench/results]
//   node bench/run.mjs --render bench/results/run-<timestamp>.json [--markdown FILE]   (rewrite the section from saved results)
//
// Defaults: full run 3 rounds, 10,000 connections, 8 s echo loop, fan-out to 5,000 + 1 with 20 timed
// messages of 100 and 4096 B, then the large runs; --quick: 1 round, 1,000 connections, 2 s echo,
// fan-out to 1,000 + 1 with 10 messages of 100 B, no large runs, and BENCHMARKS.md is left alone
// (results in bench/results/run-quick-<timestamp>.json; --markdown FILE writes it anyway).
//
// Servers, by runtime group (the peers are devDependencies, pinned, used only here):
//   node: raw-ws (bench/servers/raw-ws.mjs; fan-out: naive-ws-fanout.mjs, ws.send per socket),
//         raw-ws-frame-once (fan-out only: ws's Sender.frame once, the same bytes to every socket),
//         crossws (crossws/adapters/node), fastify-ws (fastify + @fastify/websocket),
//         naive-hono-node-ws (Hono + @hono/node-ws), hubbub-node (dist/node.js)
//   deno: raw-deno (Deno.serve + Deno.upgradeWebSocket), naive-hono-deno (Hono + 'hono/deno'), hubbub-deno (main.ts)
//   bun:  raw-bun (Bun.serve websocket; fan-out: a send loop), raw-bun-publish (fan-out only: ws.subscribe +
//         server.publish), hubbub-bun (bun.ts)
// Every server echoes `Server received: <msg>` on /ws and prints a JSON "listening" line first.
// Ratios: hubbub ÷ every other server of its group. The goals (GOALS below) judge issue 15's: on Node
// against raw-ws (connect rate ≥ 0.9×, server CPU per handshake ≤ 1.15×, memory per idle connection
// ≤ 1.0×, echo CPU ≤ 1.0×) and raw-ws-frame-once (fan-out CPU per delivery ≤ 1.0×); on Bun against
// raw-bun (connect rate ≥ 0.9×, memory ≤ 1.1×) and raw-bun-publish (fan-out ≤ 1.0×); on Deno against
// naive-hono-deno (memory ≤ 1.0×; connect rate ≥ 1.0× and echo CPU ≤ 1.1× from issue 5).
//
// For each round, for each server in turn (one server process at a time, rounds interleaved):
//   A. idle + echo: start the server on 127.0.0.1 port 0, wait, take the median VmRSS as baseline;
//      C load-client processes (bench/client.mjs) open N WebSockets between them (source addresses
//      round-robin over --addresses, H handshakes in flight in all), timing each handshake; each
//      socket sends one message and checks the echo; after --hold ms the VmRSS is sampled again:
//      kB per connection = (loaded − baseline) / open. Then the echo phase, a closed loop: every
//      socket sends a message, awaits its echo (checked), sends the next, for --echo-seconds; then
//      each finishes the round trip in flight. The server's utime+stime (/proc/<pid>/stat) is read
//      before and after: CPU µs per message = CPU time / messages echoed (per-thread ticks are kept
//      too). Latency = send → echo. Fairness: the round trips each socket completed (a socket the
//      server left waiting through the whole loop completed 1).
//   B. fan-out: the server again, in its fan-out mode (hubbub: bench/handlers/fanout.mjs with
//      --heartbeat-interval 0; a peer: `--fanout`, a Set of sockets and a send loop; raw-ws:
//      bench/servers/naive-ws-fanout.mjs; the fan-out-only floors have no phase A), one
//      bench/fanout-client.mjs process with S subscribers + 1 trigger, per payload size W untimed
//      and M timed messages, each sent when every connection has the previous one: CPU µs per
//      delivery and time to all delivered (as bench/fanout.mjs).
// Then the large runs (full run only): one server, one round, --large connections (hubbub-node at
// 19,000: zero failures wanted; hubbub-deno at 15,000: echo p99 under 1 s wanted), phase A only.
// --profile a,b (Node and Deno servers): one more, unreported phase-A run of each with a V8 CPU
// profile of its connect and its echo phase taken through the inspector (--inspect=127.0.0.1:<port>),
// summarised by category and function; the .cpuprofile files go to bench/results/run-prof-<timestamp>/.
// The load average is sampled every 5 s and reported: other work on the two cores moves absolute
// numbers, so the ratios (same conditions, interleaved) are what count. Loopback only; every child
// is killed on exit, error or the overall timeout.
// Output: the result as one JSON object on stdout (also saved in bench/results/); progress, and with
// --quick or --no-markdown the tables, on stderr.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, relative, resolve } from 'node:path';
import {
  CLK_TCK, Histogram, bunBinary, createLog, knownList, denoBinary, fanOutPhase, forkClient, freePort, getJson, here, inspectorSession, int, interleavedRounds, loadAverage, loopbackList,
  machineInfo, median, r, ratio, root, runMain, runtimeVersions, sampleRss, sleep, sourceState, split, stamp, startServer, summariseProfile, tcpCounters, countersDelta, threadTicks, threadTicksDelta, totalTicks, writeResult,
} from './lib.mjs';

const log = createLog('bench');

const HUBBUB_FLAGS = ['--host', '127.0.0.1', '--port', '0', '--max-connections', '100000', '--log-level', 'info'];
const HUBBUB_FANOUT_FLAGS = ['--handler', join(here, 'handlers/fanout.mjs'), '--heartbeat-interval', '0'];

// command(mode, inspectPort): [executable, args]; mode is 'echo' or 'fanout'; with an inspectPort
// the runtime (Node or Deno) opens its inspector on 127.0.0.1:<port> (--profile).
const fanoutArg = (mode) => (mode === 'fanout' ? ['--fanout'] : []);
const nodeCmd = (script, args) => (inspect) => [process.execPath, [...(inspect ? [`--inspect=127.0.0.1:${inspect}`] : []), script, ...args]];
const denoCmd = (script, args) => (inspect) => [denoBinary(), ['run', ...(inspect ? [`--inspect=127.0.0.1:${inspect}`] : []), '-A', script, ...args]];
const bunCmd = (script, args) => () => [bunBinary(), ['run', '--no-env-file', script, ...args]];
const hubbubArgs = (mode) => [...HUBBUB_FLAGS, ...(mode === 'fanout' ? HUBBUB_FANOUT_FLAGS : [])];
const SERVERS = {
  'raw-ws': { runtime: 'node', command: (mode, i) => nodeCmd(join(here, mode === 'fanout' ? 'servers/naive-ws-fanout.mjs' : 'servers/raw-ws.mjs'), [])(i) },
  // Fan-out only (no idle/echo phase): the frame-once loop, issue 15's fan-out floor on Node.
  'raw-ws-frame-once': { runtime: 'node', fanoutOnly: true, command: (mode, i) => nodeCmd(join(here, 'servers/raw-ws-frame-once.mjs'), [])(i) },
  crossws: { runtime: 'node', command: (mode, i) => nodeCmd(join(here, 'servers/crossws-node.mjs'), fanoutArg(mode))(i) },
  'fastify-ws': { runtime: 'node', command: (mode, i) => nodeCmd(join(here, 'servers/fastify-ws.mjs'), fanoutArg(mode))(i) },
  'naive-hono-node-ws': { runtime: 'node', command: (mode, i) => nodeCmd(join(here, 'servers/naive-hono-node-ws.mjs'), fanoutArg(mode))(i) },
  'hubbub-node': { runtime: 'node', stats: true, command: (mode, i) => nodeCmd(join(root, 'dist/node.js'), hubbubArgs(mode))(i) },
  'raw-deno': { runtime: 'deno', command: (mode, i) => denoCmd(join(here, 'servers/raw-deno.ts'), fanoutArg(mode))(i) },
  'naive-hono-deno': { runtime: 'deno', command: (mode, i) => denoCmd(join(here, 'servers/naive-hono-deno.ts'), fanoutArg(mode))(i) },
  'hubbub-deno': { runtime: 'deno', stats: true, command: (mode, i) => denoCmd(join(root, 'main.ts'), hubbubArgs(mode))(i) },
  'raw-bun': { runtime: 'bun', command: (mode) => bunCmd(join(here, 'servers/raw-bun.ts'), fanoutArg(mode))() },
  // Fan-out only: Bun's native topics (ws.subscribe + server.publish), issue 15's fan-out floor on Bun.
  'raw-bun-publish': { runtime: 'bun', fanoutOnly: true, command: () => bunCmd(join(here, 'servers/raw-bun.ts'), ['--fanout-publish'])() },
  'hubbub-bun': { runtime: 'bun', stats: true, command: (mode) => bunCmd(join(root, 'bun.ts'), hubbubArgs(mode))() },
};
// Every server of a group is measured in the same rounds; the ratio table has hubbub ÷ each of them.
const GROUPS = {
  node: { servers: ['raw-ws', 'raw-ws-frame-once', 'crossws', 'fastify-ws', 'naive-hono-node-ws', 'hubbub-node'], hubbub: 'hubbub-node' },
  deno: { servers: ['raw-deno', 'naive-hono-deno', 'hubbub-deno'], hubbub: 'hubbub-deno' },
  bun: { servers: ['raw-bun', 'raw-bun-publish', 'hubbub-bun'], hubbub: 'hubbub-bun' },
};
// The ratios the goals judge: hubbub's figure ÷ the `against` server's, at most `max` or at least
// `min`. Node and Bun: issue 15 (against the raw libraries and their fan-out floors); Deno: memory
// from issue 15, connect rate and echo CPU kept from issue 5 (against naive Hono).
const METRICS = {
  memory: { label: 'memory per idle connection', field: 'kbPerConnection' },
  connectRate: { label: 'connect rate', field: 'connectRate' },
  connectCpu: { label: 'server CPU per handshake', field: 'connectCpuUsPerHandshake' },
  echoCpuPerMessage: { label: 'echo CPU per message', field: 'echoCpuUsPerMessage' },
  fanoutCpuPerDelivery: { label: 'fan-out CPU per delivery', fanout: true },
};
const GOALS = {
  node: [
    { metric: 'connectRate', against: 'raw-ws', min: 0.9 },
    { metric: 'connectCpu', against: 'raw-ws', max: 1.15 },
    { metric: 'memory', against: 'raw-ws', max: 1.0 },
    { metric: 'echoCpuPerMessage', against: 'raw-ws', max: 1.0 },
    { metric: 'fanoutCpuPerDelivery', against: 'raw-ws-frame-once', max: 1.0 },
  ],
  deno: [
    { metric: 'memory', against: 'naive-hono-deno', max: 1.0 },
    { metric: 'connectRate', against: 'naive-hono-deno', min: 1.0 },
    { metric: 'echoCpuPerMessage', against: 'naive-hono-deno', max: 1.1 },
  ],
  bun: [
    { metric: 'connectRate', against: 'raw-bun', min: 0.9 },
    { metric: 'memory', against: 'raw-bun', max: 1.1 },
    { metric: 'fanoutCpuPerDelivery', against: 'raw-bun-publish', max: 1.0 },
  ],
};
const LARGE_GOALS = {
  nodeConnections: 19_000, // in one Node process, zero failures
  denoConnections: 15_000, // on Deno, echo latency p99 < 1 s
  denoP99Ms: 1000,
};
const MAX_SOCKETS_PER_PROCESS = 19_000;

// ---------- options ----------
function parseArgs(argv) {
  const quick = argv.includes('--quick');
  const opts = quick
    ? { quick, rounds: 1, connections: 1000, hold: 500, settle: 300, rssSamples: 3, rssIntervalMs: 100, echoSeconds: 2, subscribers: 1000, messages: 10, warmup: 2, payloads: [100], idle: 200, pauseMs: 200, large: [], timeout: 240 }
    : {
        quick,
        rounds: 3,
        connections: 10_000,
        hold: 3000,
        settle: 1000,
        rssSamples: 5,
        rssIntervalMs: 200,
        echoSeconds: 8,
        subscribers: 5000,
        messages: 20,
        warmup: 5,
        payloads: [100, 4096],
        idle: 500,
        pauseMs: 500,
        large: [{ server: 'hubbub-node', connections: 19_000 }, { server: 'hubbub-deno', connections: 15_000 }, { server: 'naive-hono-deno', connections: 15_000 }],
        timeout: 4800, // twelve servers × 3 rounds at 10,000 connections, then the large runs (2 rounds at 5,000 took 16 min)
      };
  Object.assign(opts, {
    runtimes: Object.keys(GROUPS),
    servers: undefined,
    clients: 2,
    concurrency: 200,
    // One source: up to ~28,000 connections to one port, and 127.0.0.1 is not bound (bindableSource).
    addresses: ['127.0.0.1'],
    profile: [],
    messageTimeout: 10_000,
    out: join(here, 'results'),
    markdown: quick ? undefined : join(root, 'BENCHMARKS.md'),
  });
  const serverList = (text) => knownList(text, SERVERS, 'server');
  for (let i = 0; i < argv.length; i++) {
    const [flag, value] = argv[i].split('=', 2);
    const take = () => {
      const v = value ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--quick': break;
      case '--runtimes': opts.runtimes = knownList(take(), GROUPS, 'runtime'); break;
      case '--servers': opts.servers = serverList(take()); break;
      case '--rounds': opts.rounds = int('rounds', take(), 0); break;
      case '--connections': opts.connections = int('connections', take(), 1); break;
      case '--clients': opts.clients = int('clients', take(), 1); break;
      case '--concurrency': opts.concurrency = int('concurrency', take(), 1); break;
      case '--hold': opts.hold = int('hold', take(), 0); break;
      case '--echo-seconds': opts.echoSeconds = int('echo-seconds', take(), 1); break;
      case '--subscribers': opts.subscribers = int('subscribers', take(), 0); break;
      case '--messages': opts.messages = int('messages', take(), 1); break;
      case '--warmup': opts.warmup = int('warmup', take(), 0); break;
      case '--payload': case '--payloads': opts.payloads = take().split(',').map((s) => int('payload', s.trim(), 16)); break;
      case '--large': {
        const text = take();
        opts.large = text === '' || text === 'none' ? [] : text.split(',').map((item) => {
          const [server, n] = item.split(':');
          serverList(server);
          if (SERVERS[server].fanoutOnly) throw new Error(`--large: ${server} has no idle/echo phase (fan-out only)`);
          return { server, connections: int('large', n, 1) };
        });
        break;
      }
      case '--addresses': opts.addresses = loopbackList('--addresses', take()); break;
      case '--profile': {
        opts.profile = serverList(take());
        for (const s of opts.profile) if (SERVERS[s].runtime === 'bun') throw new Error(`--profile: ${s} runs on Bun, whose inspector is not V8's`);
        for (const s of opts.profile) if (SERVERS[s].fanoutOnly) throw new Error(`--profile: ${s} has no idle/echo phase (fan-out only)`);
        break;
      }
      case '--markdown': opts.markdown = resolve(take()); break;
      case '--no-markdown': opts.markdown = undefined; break;
      case '--timeout': opts.timeout = int('timeout', take(), 10); break;
      case '--out': opts.out = resolve(take()); break;
      case '--help': case '-h':
        process.stdout.write(`${usage()}\n`);
        process.exit(0);
      default: throw new Error(`unknown flag ${flag}`);
    }
  }
  const perClient = (n) => Math.ceil(n / opts.clients) + 10;
  for (const n of [opts.connections, ...opts.large.map((l) => l.connections)]) {
    if (perClient(n) > MAX_SOCKETS_PER_PROCESS) throw new Error(`${n} connections over ${opts.clients} client processes is more than ${MAX_SOCKETS_PER_PROCESS} sockets per process: raise --clients`);
    if (n > MAX_SOCKETS_PER_PROCESS) throw new Error(`${n} connections is more than one server process may hold here (${MAX_SOCKETS_PER_PROCESS})`);
  }
  if (opts.subscribers + 1 > MAX_SOCKETS_PER_PROCESS) throw new Error(`--subscribers above ${MAX_SOCKETS_PER_PROCESS - 1} would exceed one client process`);
  // A fan-out-only server has nothing to measure without subscribers.
  opts.serverList = opts.runtimes.flatMap((rt) => GROUPS[rt].servers).filter((s) => (!opts.servers || opts.servers.includes(s)) && !(SERVERS[s].fanoutOnly && opts.subscribers === 0));
  opts.large = opts.large.filter((l) => opts.runtimes.includes(SERVERS[l.server].runtime) && (!opts.servers || opts.servers.includes(l.server)));
  return opts;
}

function usage() {
  return 'usage: node bench/run.mjs [--quick] [--runtimes node,deno,bun] [--servers a,b] [--rounds R] [--connections N] [--clients C]\n' +
    '       [--concurrency H] [--hold MS] [--echo-seconds S] [--subscribers N] [--messages M] [--warmup W] [--payloads 100,4096]\n' +
    '       [--large server:N,…|none] [--addresses 127.0.0.1,…] [--markdown FILE | --no-markdown] [--profile a,b] [--timeout S] [--out DIR]\n' +
    '(see the comment at the top of bench/run.mjs)';
}

// ---------- load average ----------
const loadSamples = [];
function sampleLoad() {
  loadSamples.push({ t: Date.now(), load: loadAverage() });
}

// ---------- phase A: idle connections + echo ----------
async function startClients(count, label) {
  const clients = Array.from({ length: count }, (_, i) =>
    forkClient(join(here, 'client.mjs'), {
      name: `load client ${i}`,
      onProgress: (m) => log(`${label}: client ${i} ${m.label}: ${m.done}/${m.total} (${m.failures} failed) after ${m.elapsedS} s`),
    }),
  );
  await Promise.all(clients.map((c) => c.ready()));
  return clients;
}

async function runIdleEcho(name, opts, { connections, echoSeconds = opts.echoSeconds, label = name, profileDir }) {
  const spec = SERVERS[name];
  const inspectPort = profileDir ? await freePort() : undefined;
  const [command, args] = spec.command('echo', inspectPort);
  const loadAtStart = loadAverage();
  log(`${label}: starting (${connections} connections)`);
  const server = await startServer({ name, command, args, readyTimeoutMs: 60_000, log });
  const pid = server.pid;
  let clients = [];
  let inspector;
  const profiles = {};
  // With --profile: a V8 CPU profile (through the inspector) of the connect phase and of the echo phase.
  const profiled = async (phase, run) => {
    if (!inspector) return run();
    const { result, profile } = await inspector.cpuProfile(run);
    const file = join(profileDir, `${name}-${phase}.cpuprofile`);
    await writeFile(file, JSON.stringify(profile));
    profiles[phase] = { file: relative(root, file), ...summariseProfile(profile, []) };
    return result;
  };
  try {
    if (profileDir) inspector = await inspectorSession(inspectPort);
    await sleep(opts.settle);
    const baseline = await sampleRss(pid, opts.rssSamples, opts.rssIntervalMs);
    const nClients = Math.max(1, Math.min(opts.clients, connections));
    clients = await startClients(nClients, label);
    const shares = split(connections, nClients);
    const concurrency = split(opts.concurrency, nClients).map((c) => Math.max(1, c));
    const tcp0 = tcpCounters();
    const connectTicks0 = totalTicks(pid);
    const connected = await profiled('connect', () => Promise.all(
      clients.map((c, i) =>
        c.request(
          { cmd: 'connect', url: server.url, connections: shares[i], concurrency: concurrency[i], handshakeTimeoutMs: 15_000, addresses: rotate(opts.addresses, i) },
          // Bounded, but generous: under other load a handshake can wait for SYN retransmits.
          Math.max(120_000, shares[i] * 40),
        ),
      ),
    ));
    // Machine-wide: a slow connect with SYN retransmissions waited on the kernel, not on the server.
    const connectTcp = countersDelta(tcp0, tcpCounters());
    // Server CPU per handshake: steadier than the rate, which also depends on the load clients and on
    // whatever else the machine runs (the rate is wall time; this is the server's own utime + stime).
    const connectTicks = totalTicks(pid) - connectTicks0;
    const opened = connected.reduce((a, c) => a + c.opened, 0);
    const connectFailures = connected.reduce((a, c) => a + c.failures, 0);
    const failureReasons = {};
    for (const c of connected) for (const [k, v] of Object.entries(c.failureReasons)) failureReasons[k] = (failureReasons[k] ?? 0) + v;
    const connectWallMs = Math.max(...connected.map((c) => c.wallMs));
    const handshake = new Histogram();
    for (const c of connected) handshake.merge(c.handshakeHistogram);
    const connectRate = r(opened / (connectWallMs / 1000), 1);
    const connectCpuUsPerHandshake = opened > 0 ? r(((connectTicks / CLK_TCK) * 1e6) / opened, 2) : null;
    log(`${label}: opened ${opened}/${connections} in ${r(connectWallMs, 0)} ms (${connectRate}/s, ${connectCpuUsPerHandshake} µs server CPU each), handshake p99 ${r(handshake.percentile(99), 1)} ms, failures ${connectFailures}, SYN retransmits ${connectTcp.TCPSynRetrans ?? '?'}, listen overflows ${connectTcp.ListenOverflows ?? '?'}`);

    const echoed = await Promise.all(clients.map((c) => c.request({ cmd: 'echo', timeoutMs: 30_000 }, 40_000)));
    const echoCheck = { ok: 0, bad: 0, missing: 0, firstBad: echoed.find((e) => e.firstBad)?.firstBad };
    for (const e of echoed) (echoCheck.ok += e.ok), (echoCheck.bad += e.bad), (echoCheck.missing += e.missing);

    await sleep(opts.hold);
    const loaded = await sampleRss(pid, opts.rssSamples, opts.rssIntervalMs);
    const statsLoaded = spec.stats ? await getJson(`${server.url}/stats`).catch((e) => ({ error: e.message })) : undefined;
    const kbPerConnection = opened > 0 ? r((loaded.medianKB - baseline.medianKB) / opened, 3) : null;
    log(`${label}: RSS ${r(baseline.medianKB / 1024, 1)} → ${r(loaded.medianKB / 1024, 1)} MB, ${kbPerConnection} kB/connection; echo check ok ${echoCheck.ok}, bad ${echoCheck.bad}, missing ${echoCheck.missing}`);

    // Echo phase: closed loop on every socket; the server's CPU over exactly that work.
    const ticks0 = totalTicks(pid);
    const threads0 = threadTicks(pid);
    const t0 = Date.now();
    const loops = await profiled('echo', () => Promise.all(clients.map((c) => c.request({ cmd: 'echo-loop', durationMs: echoSeconds * 1000, timeoutMs: 30_000 }, echoSeconds * 1000 + 45_000))));
    const ticks = totalTicks(pid) - ticks0;
    const serverThreadTicks = threadTicksDelta(threads0, threadTicks(pid));
    const wallMs = Date.now() - t0;
    const latency = new Histogram();
    for (const l of loops) latency.merge(l.latencyHistogram);
    const messages = loops.reduce((a, l) => a + l.ok + l.bad, 0);
    const echo = {
      seconds: echoSeconds,
      sockets: loops.reduce((a, l) => a + l.sockets, 0),
      messages,
      bad: loops.reduce((a, l) => a + l.bad, 0),
      missing: loops.reduce((a, l) => a + l.missing, 0),
      closedDuring: loops.reduce((a, l) => a + l.closedDuring, 0),
      firstBad: loops.find((l) => l.firstBad)?.firstBad,
      wallMs,
      messagesPerSecond: r(messages / (Math.max(...loops.map((l) => l.wallMs)) / 1000), 0),
      serverCpuTicks: ticks,
      serverThreadTicks,
      cpuUsPerMessage: messages > 0 ? r(((ticks / CLK_TCK) * 1e6) / messages, 3) : null,
      serverCpuCoreFraction: r(ticks / CLK_TCK / (wallMs / 1000), 3),
      clientCpuCoreFraction: r(loops.reduce((a, l) => a + l.clientCpuUs.user + l.clientCpuUs.system, 0) / 1000 / wallMs, 3),
      latencyMs: latency.summary(),
      // Fairness: round trips completed per socket (a socket served only at the end has 1).
      roundTripsPerSocket: mergeRoundTrips(loops.map((l) => l.roundTrips)),
    };
    log(`${label}: echo ${echo.messages} messages in ${wallMs} ms (${echo.messagesPerSecond}/s), ${echo.cpuUsPerMessage} µs CPU/message, latency p50 ${echo.latencyMs.p50} p99 ${echo.latencyMs.p99} max ${echo.latencyMs.max} ms, bad ${echo.bad}, missing ${echo.missing}`);

    const closed = await Promise.all(clients.map((c) => c.request({ cmd: 'close', timeoutMs: 20_000 }, 30_000)));
    await Promise.all(clients.map((c) => c.exit()));
    const statsAfter = spec.stats ? await getJson(`${server.url}/stats`).catch((e) => ({ error: e.message })) : undefined;
    const failures = connectFailures + echoCheck.bad + echoCheck.missing + echo.bad + echo.missing + echo.closedDuring;
    return {
      server: name,
      runtime: spec.runtime,
      phase: 'idle-echo',
      connections,
      opened,
      failures,
      connectFailures,
      failureReasons,
      kbPerConnection,
      connectRate,
      connectCpuUsPerHandshake,
      connectWallMs,
      connectTcp,
      handshakeMs: handshake.summary(),
      rssBaselineMB: r(baseline.medianKB / 1024),
      rssLoadedMB: r(loaded.medianKB / 1024),
      echoCheck,
      echo,
      close: {
        cleanly: closed.reduce((a, c) => a + c.closedCleanly, 0),
        terminated: closed.reduce((a, c) => a + c.terminated, 0),
        droppedWhileIdle: closed.reduce((a, c) => a + c.droppedWhileIdle, 0),
      },
      ...(statsLoaded ? { statsLoaded: pickStats(statsLoaded) } : {}),
      ...(statsAfter ? { statsAfterClose: pickStats(statsAfter) } : {}),
      loadAverage: { atStart: loadAtStart, atEnd: loadAverage() },
      serverStderrTail: server.stderrTail.slice(-5),
      ...(profileDir ? { profiles } : {}),
    };
  } finally {
    inspector?.close();
    for (const c of clients) await c.kill();
    const { how } = await server.stop();
    log(`${label}: stopped (${how})`);
  }
}

/** Per-socket round-trip counts from several clients: min, 1st percentile, median, max, and how many sockets had at most one. */
function mergeRoundTrips(parts) {
  const counts = new Map();
  for (const part of parts) for (const [k, v] of Object.entries(part ?? {})) counts.set(Number(k), (counts.get(Number(k)) ?? 0) + v);
  const keys = [...counts.keys()].sort((a, b) => a - b);
  const n = keys.reduce((a, k) => a + counts.get(k), 0);
  const at = (p) => {
    let seen = 0;
    for (const k of keys) if ((seen += counts.get(k)) >= Math.max(1, Math.ceil((p / 100) * n))) return k;
    return null;
  };
  return { sockets: n, min: keys[0] ?? null, p1: at(1), p50: at(50), max: keys.at(-1) ?? null, atMostOne: (counts.get(0) ?? 0) + (counts.get(1) ?? 0) };
}

const pickStats = (s) => (s.error ? { error: s.error } : { live: s.live, reserved: s.reserved, closing: s.closing, accepted: s.accepted, refused: nonZero(s.refused), released: nonZero(s.released), messagesIn: s.messagesIn, messagesOut: s.messagesOut });
const nonZero = (o) => Object.fromEntries(Object.entries(o ?? {}).filter(([, v]) => v));
/** The same list starting at index i, so two clients do not start on the same source address. */
const rotate = (list, i) => list.map((_, k) => list[(k + i) % list.length]);

// ---------- phase B: fan-out ----------
async function runFanOut(name, opts) {
  const spec = SERVERS[name];
  const [command, args] = spec.command('fanout');
  const loadAtStart = loadAverage();
  log(`${name}: fan-out, starting`);
  const server = await startServer({ name, command, args, readyTimeoutMs: 60_000, log });
  const pid = server.pid;
  let client;
  try {
    client = forkClient(join(here, 'fanout-client.mjs'), { name: 'fan-out client' });
    await client.ready();
    const connected = await client.request(
      { cmd: 'connect', url: server.url, subscribers: opts.subscribers, addresses: opts.addresses, concurrency: opts.concurrency, handshakeTimeoutMs: 15_000 },
      Math.max(60_000, opts.subscribers * 20),
    );
    const phases = [];
    for (const size of opts.payloads) {
      const phase = await fanOutPhase(client, pid, { size, warmup: opts.warmup, messages: opts.messages, messageTimeout: opts.messageTimeout, idle: opts.idle });
      delete phase.timeToAllMs;
      phases.push(phase);
      log(`${name}: fan-out ${size} B × ${phase.messages} to ${phase.receivers}: ${phase.cpuUsPerDelivery} µs CPU/delivery, time-to-all p50 ${phase.timeToAllP50Ms} ms p99 ${phase.timeToAllP99Ms} ms, missing ${phase.missing}, dup ${phase.duplicates}, ooo ${phase.outOfOrder}`);
    }
    await client.request({ cmd: 'close', timeoutMs: 20_000 }, 30_000);
    await client.exit();
    return {
      server: name,
      runtime: spec.runtime,
      phase: 'fanout',
      subscribers: opts.subscribers,
      opened: connected.opened,
      connectFailures: connected.failures,
      phases,
      loadAverage: { atStart: loadAtStart, atEnd: loadAverage() },
    };
  } finally {
    await client?.kill();
    await server.stop();
  }
}

/**
 * One retry after a failed run (e.g. handshakes timing out while other work saturates the cores);
 * the first error is kept in the result.
 */
async function withRetry(label, run) {
  try {
    return await run();
  } catch (error) {
    log(`${label}: failed (${error.message}); retrying once in 5 s`);
    await sleep(5000);
    return { ...(await run()), retriedAfter: String(error.message ?? error) };
  }
}

// ---------- summary ----------
function summariseServer(runs, name) {
  const idle = runs.filter((x) => x.server === name && x.phase === 'idle-echo' && !x.error);
  const fan = runs.filter((x) => x.server === name && x.phase === 'fanout' && !x.error);
  const m = (list, f, digits = 3) => r(median(list.map(f)), digits);
  const out = {
    rounds: idle.length,
    fanoutRounds: fan.length,
    kbPerConnection: m(idle, (x) => x.kbPerConnection),
    connectRate: m(idle, (x) => x.connectRate, 1),
    connectCpuUsPerHandshake: m(idle, (x) => x.connectCpuUsPerHandshake, 2),
    handshakeP99Ms: m(idle, (x) => x.handshakeMs.p99),
    echoMessagesPerSecond: m(idle, (x) => x.echo.messagesPerSecond, 0),
    echoCpuUsPerMessage: m(idle, (x) => x.echo.cpuUsPerMessage),
    echoP50Ms: m(idle, (x) => x.echo.latencyMs.p50),
    echoP99Ms: m(idle, (x) => x.echo.latencyMs.p99),
    echoMaxMs: m(idle, (x) => x.echo.latencyMs.max),
    echoStarvedSockets: m(idle, (x) => x.echo.roundTripsPerSocket?.atMostOne, 0),
    failures: idle.reduce((a, x) => a + x.failures, 0),
    rssBaselineMB: m(idle, (x) => x.rssBaselineMB, 1),
    rssLoadedMB: m(idle, (x) => x.rssLoadedMB, 1),
    perRound: {
      kbPerConnection: idle.map((x) => x.kbPerConnection),
      connectRate: idle.map((x) => x.connectRate),
      connectCpuUsPerHandshake: idle.map((x) => x.connectCpuUsPerHandshake),
      echoCpuUsPerMessage: idle.map((x) => x.echo.cpuUsPerMessage),
      fanoutCpuUsPerDelivery: {},
    },
    fanout: {},
    errors: runs.filter((x) => x.server === name && x.error).map((x) => `${x.phase}: ${x.error}`),
  };
  for (const size of new Set(fan.flatMap((x) => x.phases.map((p) => p.size)))) {
    const ph = fan.map((x) => x.phases.find((p) => p.size === size)).filter(Boolean);
    out.perRound.fanoutCpuUsPerDelivery[`${size}B`] = ph.map((p) => p.cpuUsPerDelivery);
    out.fanout[`${size}B`] = {
      receivers: m(ph, (p) => p.receivers, 0),
      cpuUsPerDelivery: m(ph, (p) => p.cpuUsPerDelivery),
      timeToAllP50Ms: m(ph, (p) => p.timeToAllP50Ms, 2),
      timeToAllP99Ms: m(ph, (p) => p.timeToAllP99Ms, 2),
      lost: ph.reduce((a, p) => a + p.missing + p.duplicates + p.outOfOrder + p.badPayload, 0),
    };
  }
  out.failures += fan.reduce((a, x) => a + x.connectFailures + x.phases.reduce((b, p) => b + p.missing + p.duplicates + p.outOfOrder + p.badPayload, 0), 0);
  return out;
}

/** hubbub ÷ one peer on every figure (a fan-out-only peer has only the fan-out ratios). */
function pairRatios(h, b) {
  const out = {
    memory: ratio(h.kbPerConnection, b.kbPerConnection),
    connectRate: ratio(h.connectRate, b.connectRate),
    connectCpu: ratio(h.connectCpuUsPerHandshake, b.connectCpuUsPerHandshake),
    handshakeP99: ratio(h.handshakeP99Ms, b.handshakeP99Ms),
    echoCpuPerMessage: ratio(h.echoCpuUsPerMessage, b.echoCpuUsPerMessage),
    echoThroughput: ratio(h.echoMessagesPerSecond, b.echoMessagesPerSecond),
    echoP50: ratio(h.echoP50Ms, b.echoP50Ms),
    echoP99: ratio(h.echoP99Ms, b.echoP99Ms),
    fanout: {},
  };
  for (const [size, f] of Object.entries(h.fanout)) {
    const bf = b.fanout[size];
    if (!bf) continue;
    out.fanout[size] = { cpuPerDelivery: ratio(f.cpuUsPerDelivery, bf.cpuUsPerDelivery), timeToAllP50: ratio(f.timeToAllP50Ms, bf.timeToAllP50Ms), timeToAllP99: ratio(f.timeToAllP99Ms, bf.timeToAllP99Ms) };
  }
  return out;
}

/** { hubbub, against: { peer: ratios } } for one runtime group: hubbub ÷ every other server measured. */
function groupRatios(summary, group) {
  const h = summary[group.hubbub];
  if (!h) return undefined;
  const against = {};
  for (const name of group.servers) if (name !== group.hubbub && summary[name]) against[name] = pairRatios(h, summary[name]);
  return Object.keys(against).length ? { hubbub: group.hubbub, against } : undefined;
}

const allRatios = (summary, runtimes) => Object.fromEntries(runtimes.map((rt) => [rt, groupRatios(summary, GROUPS[rt])]).filter(([, v]) => v));

/** The goal (if any) on `metric` of hubbub ÷ `against` in runtime `rt`. */
const goalFor = (rt, against, metric) => GOALS[rt]?.find((g) => g.against === against && g.metric === metric);
const meets = (goal, value) => (value === null || value === undefined ? null : goal.max !== undefined ? value <= goal.max : value >= goal.min);

function goals(ratios, large, summary = {}) {
  const out = [];
  // Round by round (hubbub's round i ÷ the peer's round i), to show how far noise moves a ratio.
  const perRound = (hubbub, against, pick) => {
    const h = pick(summary[hubbub]?.perRound) ?? [];
    const b = pick(summary[against]?.perRound) ?? [];
    return h.length > 1 && h.length === b.length ? h.map((x, i) => ratio(x, b[i], 2)) : undefined;
  };
  for (const rt of Object.keys(GROUPS)) {
    const g = ratios[rt];
    if (!g) continue;
    for (const goal of GOALS[rt]) {
      const pair = g.against[goal.against];
      if (!pair) continue; // the peer was not measured (--servers)
      const metric = METRICS[goal.metric];
      const times = (x) => `${Number.isInteger(x) ? x.toFixed(1) : x}×`;
      const bound = goal.max !== undefined ? `≤ ${times(goal.max)}` : `≥ ${times(goal.min)}`;
      if (metric.fanout) {
        for (const [size, f] of Object.entries(pair.fanout)) {
          out.push({ goal: `${rt}: ${metric.label} (${size}) ${bound} ${goal.against}`, value: f.cpuPerDelivery, perRound: perRound(g.hubbub, goal.against, (p) => p?.fanoutCpuUsPerDelivery?.[size]), met: meets(goal, f.cpuPerDelivery) });
        }
        continue;
      }
      const value = pair[goal.metric];
      out.push({ goal: `${rt}: ${metric.label} ${bound} ${goal.against}`, value, perRound: perRound(g.hubbub, goal.against, (p) => p?.[metric.field]), met: meets(goal, value) });
    }
  }
  const node = large.find((l) => l.server === 'hubbub-node' && !l.error);
  if (node) out.push({ goal: `node: ${LARGE_GOALS.nodeConnections.toLocaleString('en-US')} connections in one process, zero failures`, value: `${node.opened.toLocaleString('en-US')} open, ${node.failures} failures`, met: node.opened >= LARGE_GOALS.nodeConnections && node.failures === 0 });
  const deno = large.find((l) => l.server === 'hubbub-deno' && !l.error);
  if (deno) out.push({ goal: `deno: echo latency p99 < ${LARGE_GOALS.denoP99Ms} ms at ${LARGE_GOALS.denoConnections.toLocaleString('en-US')} connections`, value: `p99 ${Math.round(deno.echo.latencyMs.p99).toLocaleString('en-US')} ms (${deno.opened.toLocaleString('en-US')} open, ${deno.failures} failures)`, met: deno.opened >= LARGE_GOALS.denoConnections && deno.failures === 0 && deno.echo.latencyMs.p99 < LARGE_GOALS.denoP99Ms });
  for (const l of large.filter((x) => x.error)) out.push({ goal: `${l.server} at ${l.connections} connections`, value: l.error, met: false });
  return out;
}

// ---------- BENCHMARKS.md ----------
const START = '<!-- bench:run:start -->';
const END = '<!-- bench:run:end -->';
const fmt = (n, digits = 2) => (n === null || n === undefined ? '–' : Number(n).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }));
const fx = (n) => (n === null || n === undefined ? '–' : `${fmt(n, 2)}×`);
const mark = (v, ok) => (v === null || v === undefined ? '–' : ok ? `**${fx(v)}** ✓` : `**${fx(v)}** ✗`);

function table(head, rows, align) {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((row) => String(row[i]).length), 3));
  const line = (cells) => `| ${cells.map((c, i) => (align[i] === 'r' ? String(c).padStart(widths[i]) : String(c).padEnd(widths[i]))).join(' | ')} |`;
  return [line(head), `| ${widths.map((w, i) => (align[i] === 'r' ? `${'-'.repeat(w - 1)}:` : '-'.repeat(w))).join(' | ')} |`, ...rows.map(line)].join('\n');
}

/** ' (baseline)' for a server a goal is judged against; ' (fan-out baseline)' if only fan-out goals are. */
function baselineNote(rt, name) {
  const judged = (GOALS[rt] ?? []).filter((g) => g.against === name);
  if (!judged.length) return '';
  return judged.every((g) => METRICS[g.metric].fanout) ? ' (fan-out baseline)' : ' (baseline)';
}

function renderMarkdown(result) {
  const { options: o, summary, ratios, large, goals: goalList, machine, load } = result;
  const sizes = o.payloads.map((p) => `${p}B`);
  const lines = [];
  lines.push(START);
  lines.push(`## All runtimes in one run (\`npm run bench\`)${o.quick ? ' — quick run' : ''}`);
  lines.push('');
  lines.push(`Written by \`${result.command}\` (\`npm run bench\`; \`npm run bench:quick\` is the ~2 minute version and writes only \`bench/results/\`). Method: the comment at the top of \`bench/run.mjs\`. hubbub and its peers on three runtimes with the same Node \`ws\` load clients; each ratio is hubbub ÷ one peer on the same runtime, measured in the same interleaved rounds. The goals (issue 15) are against the raw library: raw \`ws\` on Node (fan-out: the frame-once \`ws\` loop, raw-ws-frame-once), raw \`Bun.serve\` on Bun (fan-out: its native \`server.publish\`, raw-bun-publish), and naive Hono on Deno. Memory and CPU below 1 are better, rates above 1.`);
  lines.push('');
  lines.push(`Run ${result.startedAt.slice(0, 16).replace('T', ' ')} UTC, ${fmt(result.durationSeconds / 60, 1)} min; ${machine.cpus} cores (${machine.cpuModel}), Node ${result.versions.node}, ${result.versions.deno?.split(' (')[0]}, Bun ${result.versions.bun}; tree ${result.source.head?.slice(0, 7)}${result.source.dirty?.length ? ` + uncommitted changes in ${result.source.dirty.length} src/entry files` : ''}. ${o.connections.toLocaleString('en-US')} connections (${o.clients} load-client processes, ${o.concurrency} handshakes in flight, sources ${o.addresses.join(', ')}), echo loop ${o.echoSeconds} s, fan-out to ${o.subscribers.toLocaleString('en-US')} + 1 connections, ${o.messages} timed messages of ${o.payloads.join(' and ')} B, median of ${o.rounds} interleaved round${o.rounds === 1 ? '' : 's'}.`);
  lines.push('');
  lines.push(`**Load average during the run: ${fmt(load.min1.min, 1)}–${fmt(load.min1.max, 1)} (1-minute, mean ${fmt(load.min1.mean, 1)}) on 2 cores** — the server and its load clients share the two cores (and whatever else runs there), so absolute numbers move between runs; the ratios compare servers measured under the same conditions, interleaved.`);
  lines.push('');
  lines.push('Goals (hubbub ÷ the named server, same run):');
  lines.push('');
  for (const g of goalList) {
    const rounds = g.perRound ? ` (round by round: ${g.perRound.map((x) => fmt(x, 2)).join(' / ')})` : '';
    lines.push(`- ${g.met === null ? '–' : g.met ? '✓ met' : '✗ **missed**'}: ${g.goal} — ${typeof g.value === 'number' ? `${fmt(g.value, 3)}×` : g.value}${rounds}`);
  }
  lines.push('');
  const ratioRows = [];
  for (const rt of o.runtimes) {
    const g = ratios[rt];
    if (!g) continue;
    for (const [peer, p] of Object.entries(g.against)) {
      // A cell a goal judges is bold with ✓ or ✗; the others are for comparison.
      const cell = (metric, value) => {
        const goal = goalFor(rt, peer, metric);
        return goal ? mark(value, meets(goal, value)) : fx(value);
      };
      ratioRows.push([
        `${g.hubbub} ÷ ${peer}`,
        cell('memory', p.memory),
        cell('connectRate', p.connectRate),
        cell('connectCpu', p.connectCpu),
        fx(p.handshakeP99),
        cell('echoCpuPerMessage', p.echoCpuPerMessage),
        fx(p.echoThroughput),
        fx(p.echoP50),
        fx(p.echoP99),
        ...sizes.flatMap((s) => [cell('fanoutCpuPerDelivery', p.fanout[s]?.cpuPerDelivery), fx(p.fanout[s]?.timeToAllP99)]),
      ]);
    }
  }
  lines.push(table(
    ['ratio', 'memory / idle conn', 'connect rate', 'connect CPU / handshake', 'handshake p99', 'echo CPU / msg', 'echo msg/s', 'echo p50', 'echo p99', ...sizes.flatMap((s) => [`fan-out CPU / delivery ${s}`, `fan-out time-to-all p99 ${s}`])],
    ratioRows,
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', ...sizes.flatMap(() => ['r', 'r'])],
  ));
  lines.push('');
  lines.push('Absolute figures (medians over rounds):');
  lines.push('');
  const absRows = [];
  for (const rt of o.runtimes) {
    // The group's servers in order, then any other measured server of that runtime (a saved run's).
    const names = [...new Set([...GROUPS[rt].servers, ...Object.keys(summary).filter((n) => SERVERS[n]?.runtime === rt)])];
    for (const name of names) {
      const s = summary[name];
      if (!s) continue;
      absRows.push([
        `${rt}: ${name}${baselineNote(rt, name)}`,
        fmt(s.kbPerConnection, 2),
        fmt(s.connectRate, 0),
        fmt(s.connectCpuUsPerHandshake, 1),
        fmt(s.handshakeP99Ms, 1),
        fmt(s.echoMessagesPerSecond, 0),
        fmt(s.echoCpuUsPerMessage, 2),
        `${fmt(s.echoP50Ms, 1)} / ${fmt(s.echoP99Ms, 1)} / ${fmt(s.echoMaxMs, 0)}`,
        fmt(s.echoStarvedSockets, 0),
        ...sizes.map((sz) => (s.fanout[sz] ? `${fmt(s.fanout[sz].cpuUsPerDelivery, 2)} µs, ${fmt(s.fanout[sz].timeToAllP50Ms, 0)} / ${fmt(s.fanout[sz].timeToAllP99Ms, 0)} ms` : '–')),
        `${s.failures}${s.errors.length ? ` (+${s.errors.length} errors)` : ''}`,
      ]);
    }
  }
  lines.push(table(
    ['server', 'kB / idle conn', 'conn/s', 'connect CPU µs / handshake', 'handshake p99 ms', 'echo msg/s', 'echo CPU µs / msg', 'echo p50 / p99 / max ms', 'echo: sockets served ≤ once', ...sizes.map((s) => `fan-out ${s}: CPU / delivery, time-to-all p50 / p99`), 'failures'],
    absRows,
    ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', ...sizes.map(() => 'r'), 'r'],
  ));
  lines.push('');
  if (large.length) {
    lines.push('Large runs (one server process, one round, phase A only; 2 load clients):');
    lines.push('');
    lines.push(table(
      ['server', 'connections', 'open', 'failures', 'conn/s', 'kB / conn', 'RSS loaded MB', 'echo msg/s', 'echo CPU µs / msg', 'echo p50 / p99 / max ms', 'echo: sockets served ≤ once', 'load avg'],
      large.map((l) =>
        l.error
          ? [l.server, l.connections.toLocaleString('en-US'), '–', `error: ${l.error.slice(0, 60)}`, '–', '–', '–', '–', '–', '–', '–', '–']
          : [
              l.server,
              l.connections.toLocaleString('en-US'),
              l.opened.toLocaleString('en-US'),
              String(l.failures),
              fmt(l.connectRate, 0),
              fmt(l.kbPerConnection, 2),
              fmt(l.rssLoadedMB, 0),
              fmt(l.echo.messagesPerSecond, 0),
              fmt(l.echo.cpuUsPerMessage, 2),
              `${fmt(l.echo.latencyMs.p50, 0)} / ${fmt(l.echo.latencyMs.p99, 0)} / ${fmt(l.echo.latencyMs.max, 0)}`,
              fmt(l.echo.roundTripsPerSocket?.atMostOne, 0),
              fmt(l.loadAverage.atStart[0], 1),
            ],
      ),
      ['l', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'r'],
    ));
    lines.push('');
  }
  lines.push(`Raw data: \`${result.file}\` (gitignored). Where the cost goes for a missed goal: the next section.`);
  lines.push(END);
  return lines.join('\n');
}

async function writeMarkdown(file, block) {
  let text = await readFile(file, 'utf8');
  const a = text.indexOf(START);
  const b = text.indexOf(END);
  if (a !== -1 && b > a) text = text.slice(0, a) + block + text.slice(b + END.length);
  else {
    // First run: the section goes at the top, after the title line.
    const nl = text.startsWith('# ') ? text.indexOf('\n') + 1 : 0;
    text = `${text.slice(0, nl)}\n${block}\n${text.slice(nl)}`;
  }
  await writeFile(file, text);
}

// ---------- main ----------
runMain(log, async ({ setLimit, clearLimit }) => {
  // `--render bench/results/run-….json [--markdown FILE]`: rewrite the section from a saved run.
  const renderAt = process.argv.indexOf('--render');
  if (renderAt !== -1) {
    const saved = JSON.parse(await readFile(resolve(process.argv[renderAt + 1]), 'utf8'));
    saved.file ??= relative(root, resolve(process.argv[renderAt + 1]));
    // Ratios and goals from the saved figures, so a run saved before the groups or goals changed renders too.
    saved.ratios = allRatios(saved.summary, saved.options.runtimes);
    saved.goals = goals(saved.ratios, saved.large, saved.summary);
    const mdAt = process.argv.indexOf('--markdown');
    const target = mdAt !== -1 ? resolve(process.argv[mdAt + 1]) : join(root, 'BENCHMARKS.md');
    const markdown = renderMarkdown(saved);
    await writeMarkdown(target, markdown);
    process.stdout.write(`${markdown}\n`);
    log(`updated ${relative(root, target)} from ${saved.file}`);
    return;
  }
  const opts = parseArgs(process.argv.slice(2));
  const startedAt = new Date();
  setLimit(opts.timeout);
  sampleLoad();
  const loadTimer = setInterval(sampleLoad, 5000);
  loadTimer.unref();
  const versions = runtimeVersions();
  log(`${opts.quick ? 'quick' : 'full'} run: servers ${opts.serverList.join(',')}, N=${opts.connections}, rounds=${opts.rounds}, clients=${opts.clients}, echo ${opts.echoSeconds} s, fan-out ${opts.subscribers}×${opts.messages} (${opts.payloads.join(',')} B), large ${opts.large.map((l) => `${l.server}:${l.connections}`).join(',') || 'none'}, load ${loadAverage().join(' ')}`);

  const runs = await interleavedRounds(
    opts.rounds,
    opts.serverList,
    async (name) => {
      let idle;
      if (!SERVERS[name].fanoutOnly) {
        idle = await withRetry(name, () => runIdleEcho(name, opts, { connections: opts.connections }));
        await sleep(opts.pauseMs);
      }
      let fan;
      if (opts.subscribers > 0) {
        try {
          fan = await withRetry(`${name} fan-out`, () => runFanOut(name, opts));
        } catch (error) {
          log(`${name}: fan-out failed: ${error.stack ?? error}`);
          fan = { server: name, phase: 'fanout', error: String(error.message ?? error) };
        }
      }
      return { server: name, phase: 'both', idle, fan };
    },
    { log, pauseMs: opts.pauseMs },
  );
  // Flatten: interleavedRounds records a failed idle-echo as one error entry.
  const flat = runs.flatMap((x) => (x.error ? [{ ...x, phase: 'idle-echo' }] : [...(x.idle ? [{ round: x.round, ...x.idle }] : []), ...(x.fan ? [{ round: x.round, ...x.fan }] : [])]));

  const large = [];
  for (const l of opts.large) {
    try {
      large.push(await withRetry(`${l.server} (large)`, () => runIdleEcho(l.server, opts, { connections: l.connections, label: `${l.server} (large)` })));
    } catch (error) {
      log(`${l.server} (large): failed: ${error.stack ?? error}`);
      large.push({ server: l.server, connections: l.connections, error: String(error.message ?? error) });
    }
    await sleep(1000);
  }
  // --profile: one extra, unreported phase-A run per listed server with a V8 CPU profile of its
  // connect and echo phases (Node and Deno, through --inspect).
  const profiles = [];
  if (opts.profile.length) {
    const profileDir = join(opts.out, `run-prof-${stamp(startedAt)}`);
    await mkdir(profileDir, { recursive: true });
    for (const name of opts.profile) {
      try {
        const run = await runIdleEcho(name, opts, { connections: opts.connections, label: `${name} (profiled)`, profileDir });
        profiles.push({ server: name, connectRate: run.connectRate, echoCpuUsPerMessage: run.echo.cpuUsPerMessage, profiles: run.profiles });
        for (const [phase, p] of Object.entries(run.profiles)) log(`${name} (profiled) ${phase}: ${p.categories.slice(0, 6).map((c) => `${c.name} ${c.percentOfBusy}%`).join(', ')}`);
      } catch (error) {
        log(`${name} (profiled): failed: ${error.stack ?? error}`);
        profiles.push({ server: name, error: String(error.message ?? error) });
      }
      await sleep(1000);
    }
  }
  clearInterval(loadTimer);
  sampleLoad();

  const summary = Object.fromEntries(opts.serverList.map((name) => [name, summariseServer(flat, name)]));
  const ratios = allRatios(summary, opts.runtimes);
  const load1 = loadSamples.map((s) => s.load[0]);
  const result = {
    benchmark: 'run',
    startedAt: startedAt.toISOString(),
    durationSeconds: r((Date.now() - startedAt.getTime()) / 1000, 1),
    command: `node bench/run.mjs ${process.argv.slice(2).join(' ')}`.trim(),
    source: sourceState(),
    versions,
    machine: machineInfo({ clkTck: CLK_TCK, loopback: opts.addresses }),
    load: { min1: { min: Math.min(...load1), max: Math.max(...load1), mean: r(load1.reduce((a, b) => a + b, 0) / load1.length, 2) }, samples: loadSamples, note: '1/5/15-minute load averages sampled every 5 s; 2 cores' },
    options: { ...opts, out: undefined, markdown: opts.markdown && relative(root, opts.markdown), goals: GOALS, largeGoals: LARGE_GOALS },
    summary,
    ratios,
    large,
    ...(profiles.length ? { profiles } : {}),
    runs: flat,
  };
  result.goals = goals(ratios, large, summary);
  const file = await writeResult(opts.out, opts.quick ? 'run-quick' : 'run', startedAt, result);
  result.file = relative(root, file);
  const markdown = renderMarkdown(result);
  if (opts.markdown && opts.rounds > 0) {
    await writeMarkdown(opts.markdown, markdown);
    log(`updated ${relative(root, opts.markdown)}`);
  }
  log(`wrote ${file}`);
  // Machines read stdout (the JSON result, as every bench/ script prints); people read the tables.
  if (!opts.markdown) process.stderr.write(`${markdown}\n`);
  process.stdout.write(`${JSON.stringify(result)}\n`);
  clearLimit();
  const anyError = flat.some((x) => x.error) || large.some((x) => x.error);
  const anyFailure = Object.values(summary).some((s) => s.failures > 0) || large.some((x) => x.failures > 0);
  log(`done in ${result.durationSeconds} s${anyError ? ', with errors' : ''}${anyFailure ? ', with failures' : ''}; goals: ${result.goals.map((g) => (g.met === null ? 'n/a' : g.met ? 'met' : 'MISSED')).join(', ')}`);
  process.exitCode = anyError || anyFailure ? 1 : 0;
});
