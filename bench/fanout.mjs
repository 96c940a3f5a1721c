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
import { execFileSync, fork, spawn } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, '..');

const SERVERS = {
  'naive-ws-fanout': { script: join(here, 'servers/naive-ws-fanout.mjs'), args: [] },
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
    addresses: ['127.0.0.1', '127.0.0.2'],
    concurrency: 200,
    idle: 2000,
    messageTimeout: 10_000,
    profile: [],
    timeout: 900,
    out: join(here, 'results'),
  };
  const int = (name, text, min) => {
    const n = Number(text);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min} (got ${text})`);
    return n;
  };
  const serverList = (text) => {
    const list = text.split(',').map((s) => s.trim()).filter(Boolean);
    for (const s of list) if (!SERVERS[s]) throw new Error(`unknown server ${s}; known: ${Object.keys(SERVERS).join(', ')}`);
    return list;
  };
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
      case '--addresses': {
        opts.addresses = take().split(',').map((s) => s.trim()).filter(Boolean);
        for (const a of opts.addresses) if (!/^127\.\d+\.\d+\.\d+$/.test(a)) throw new Error(`--addresses: ${a} is not a 127.0.0.0/8 address`);
        break;
      }
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

const log = (...parts) => process.stderr.write(`[fanout] ${parts.join(' ')}\n`);

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
  return new Promise((resolvePromise) => {
    const timer = setTimeout(() => resolvePromise(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolvePromise(true);
    });
  });
}

async function stop(child, name, graceMs = 5000) {
  if (child.exitCode !== null || child.signalCode !== null) return 'already-exited';
  child.kill('SIGTERM');
  if (await waitExit(child, graceMs)) return 'SIGTERM';
  log(`${name} ignored SIGTERM for ${graceMs} ms, sending SIGKILL`);
  child.kill('SIGKILL');
  await waitExit(child, 5000);
  return 'SIGKILL';
}

// ---------- measurements ----------
let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {}

async function cpuTicks(pid) {
  const text = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}

/** Server CPU over `ms` of doing nothing, as a fraction of one core. */
async function idleCpu(pid, ms) {
  const a = await cpuTicks(pid);
  const started = performance.now();
  await sleep(ms);
  const b = await cpuTicks(pid);
  const seconds = (performance.now() - started) / 1000;
  return { ticks: b - a, seconds: r(seconds, 3), coreFraction: r((b - a) / CLK_TCK / seconds, 4) };
}

function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

function percentile(values, p) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))];
}

const r = (n, digits = 2) => (n === null || n === undefined || !Number.isFinite(n) ? null : Number(n.toFixed(digits)));

async function getJson(url, timeoutMs = 5000) {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`GET ${url}: ${res.status}`);
  return res.json();
}

// ---------- server ----------
async function startServer(name, { nodeFlags = [] } = {}) {
  const spec = SERVERS[name];
  const child = track(spawn(process.execPath, [...nodeFlags, spec.script, ...spec.args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] }));
  const stderrTail = [];
  createInterface({ input: child.stderr }).on('line', (line) => {
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
        extraStdout.push(line); // keep draining so the pipe never fills
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
  return { child, url, stderrTail, extraStdout };
}

// ---------- client ----------
function startClient() {
  const child = track(fork(join(here, 'fanout-client.mjs'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
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
      if (queue.length) {
        const m = queue.shift();
        return m.type === 'error' ? reject(new Error(`load client: ${m.error}`)) : resolvePromise(m);
      }
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
async function runOne(name, opts, { nodeFlags = [], profileDir } = {}) {
  const N = opts.subscribers;
  log(`${name}: starting${nodeFlags.length ? ` with ${nodeFlags.join(' ')}` : ''}`);
  const server = await startServer(name, { nodeFlags });
  const pid = server.child.pid;
  let client;
  try {
    client = startClient();
    await client.ready();
    const connected = await client.request(
      { cmd: 'connect', url: server.url, subscribers: N, addresses: opts.addresses, concurrency: opts.concurrency, handshakeTimeoutMs: 15_000 },
      Math.max(60_000, N * 20),
    );
    log(`${name}: pid ${pid}, opened ${connected.opened}/${N} subscribers + 1 trigger in ${connected.wallMs} ms, failures ${connected.failures}`);
    const statsBefore = SERVERS[name].stats ? await getJson(`${server.url}/stats`).catch((e) => ({ error: e.message })) : undefined;

    const phases = [];
    for (const size of opts.payloads) {
      const idleBefore = await idleCpu(pid, opts.idle);
      const pub = await client.request(
        { cmd: 'publish', size, warmup: opts.warmup, messages: opts.messages, serverPid: pid, messageTimeoutMs: opts.messageTimeout },
        (opts.warmup + opts.messages) * (opts.messageTimeout + 1000) + 10_000,
      );
      const idleAfter = await idleCpu(pid, opts.idle);
      const ticks = pub.serverCpuTicks.utime + pub.serverCpuTicks.stime;
      const deliveries = pub.messages * pub.receivers;
      const cpuUs = (ticks / CLK_TCK) * 1e6;
      const idleRate = ((idleBefore.coreFraction ?? 0) + (idleAfter.coreFraction ?? 0)) / 2; // fraction of a core
      const idleShare = ticks > 0 ? (idleRate * (pub.wallMs / 1000) * CLK_TCK) / ticks : null;
      const phase = {
        size,
        receivers: pub.receivers,
        messages: pub.messages,
        deliveries,
        cpuTicks: ticks,
        cpuTicksUser: pub.serverCpuTicks.utime,
        cpuTicksSystem: pub.serverCpuTicks.stime,
        cpuUsPerDelivery: r(cpuUs / deliveries, 4),
        cpuUsPerDeliveryUser: r(((pub.serverCpuTicks.utime / CLK_TCK) * 1e6) / deliveries, 4),
        cpuUsPerDeliverySystem: r(((pub.serverCpuTicks.stime / CLK_TCK) * 1e6) / deliveries, 4),
        serverCpuCoreFraction: r(ticks / CLK_TCK / (pub.wallMs / 1000), 3),
        clientCpuCoreFraction: r((pub.clientCpuUs.user + pub.clientCpuUs.system) / 1000 / pub.wallMs, 3),
        publishWallMs: pub.wallMs,
        idleBefore,
        idleAfter,
        idleShareOfPublishCpu: r(idleShare, 4),
        timeToAllP50Ms: pub.timeToAllP50Ms,
        timeToAllP99Ms: pub.timeToAllP99Ms,
        timeToFirstP50Ms: pub.timeToFirstP50Ms,
        timeToAllMs: pub.timeToAllInOrderMs,
        missing: pub.missing,
        socketsMissing: pub.socketsMissing,
        duplicates: pub.duplicates,
        outOfOrder: pub.outOfOrder,
        badPayload: pub.badPayload,
        late: pub.late,
        incompleteMessages: pub.incompleteMessages,
        closedDuring: pub.closedDuring,
        received: pub.received,
        warmup: pub.warmup,
        monotonicWindowUs: pub.monotonicWindowUs,
      };
      phases.push(phase);
      log(
        `${name}: ${size} B × ${pub.messages} to ${pub.receivers}: ${phase.cpuUsPerDelivery} µs CPU/delivery ` +
          `(user ${phase.cpuUsPerDeliveryUser}, sys ${phase.cpuUsPerDeliverySystem}), time-to-all p50 ${pub.timeToAllP50Ms} ms p99 ${pub.timeToAllP99Ms} ms, ` +
          `missing ${pub.missing}, dup ${pub.duplicates}, ooo ${pub.outOfOrder}, bad ${pub.badPayload}, idle ${idleBefore.coreFraction}/${idleAfter.coreFraction} core`,
      );
    }

    const statsAfter = SERVERS[name].stats ? await getJson(`${server.url}/stats`).catch((e) => ({ error: e.message })) : undefined;
    const closed = await client.request({ cmd: 'close', timeoutMs: 20_000 }, 30_000);
    log(`${name}: closed cleanly ${closed.closedCleanly}, terminated ${closed.terminated}, dropped early ${closed.droppedEarly} (${closed.wallMs} ms)`);
    client.child.send({ cmd: 'exit' });
    await waitExit(client.child, 5000);
    // hubbub shuts down gracefully on SIGTERM (and a profiled process writes its profile on exit).
    const stoppedBy = await stop(server.child, name, profileDir ? 30_000 : 5000);

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
    if (client && client.child.exitCode === null) client.child.kill('SIGKILL');
    if (server.child.exitCode === null && server.child.signalCode === null) await stop(server.child, name);
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
  const div = (x, y) => (typeof x === 'number' && typeof y === 'number' && y !== 0 ? r(x / y, 3) : null);
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
/** Self time per function and per file, counting only samples inside the given windows (monotonic µs). */
function summariseProfile(profile, windows) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  const inWindow = (t) => windows.some(([a, b]) => t >= a && t <= b);
  const selfUs = new Map();
  let t = profile.startTime;
  let total = 0;
  for (let i = 0; i < samples.length; i++) {
    t += deltas[i] ?? 0;
    const weight = i + 1 < deltas.length ? deltas[i + 1] : 0; // the time until the next sample
    if (!inWindow(t)) continue;
    selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + weight);
    total += weight;
  }
  const byFunction = new Map();
  const byFile = new Map();
  for (const [id, us] of selfUs) {
    const { callFrame } = nodes.get(id);
    const url = callFrame.url ? callFrame.url.replace(`file://${root}/`, '').replace(/^.*node_modules\//, 'node_modules/') : '';
    const key = `${callFrame.functionName || '(anonymous)'} ${url ? `${url}:${callFrame.lineNumber + 1}` : '(native/VM)'}`;
    byFunction.set(key, (byFunction.get(key) ?? 0) + us);
    const file = url || (callFrame.functionName.startsWith('(') ? callFrame.functionName : '(native)');
    byFile.set(file, (byFile.get(file) ?? 0) + us);
  }
  // Percentages are of busy time: (idle) is the process waiting in epoll for the client.
  const idleUs = byFile.get('(idle)') ?? 0;
  byFunction.delete('(idle) (native/VM)');
  byFile.delete('(idle)');
  const busy = total - idleUs;
  const categories = new Map();
  for (const [id, us] of selfUs) {
    const { functionName: fn, url } = nodes.get(id).callFrame;
    let category;
    if (fn === '(idle)') continue;
    else if (!url && /^(writeBuffer|writev|write(Utf8|Latin1|Ascii|UCS2)String)$/.test(fn)) category = 'socket write (native binding + kernel send)';
    else if (!url && /^(readStart|readStop|onStreamRead)$/.test(fn)) category = 'socket read (native)';
    else if (fn === '(garbage collector)') category = 'garbage collector';
    else if (fn === '(program)') category = '(program): VM / libuv outside JS';
    else if (!url) category = `other native: ${fn}`;
    else if (url.includes('/node_modules/ws/')) category = 'ws (JS)';
    else if (url.startsWith(`file://${root}/dist/`)) category = 'hubbub dist (JS)';
    else if (url.includes('/node_modules/')) category = `${url.replace(/^.*node_modules\/((@[^/]+\/)?[^/]+).*$/, '$1')} (JS)`;
    else if (url.startsWith('node:')) category = 'node core (JS: streams, net, events)';
    else category = `${url.replace(`file://${root}/`, '')} (JS)`;
    categories.set(category, (categories.get(category) ?? 0) + us);
  }
  const top = (map, n) =>
    [...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, n).map(([name, us]) => ({ name, selfMs: r(us / 1000, 1), percentOfBusy: r((100 * us) / busy, 1) }));
  return {
    windowSampledMs: r(total / 1000, 1),
    windowIdleMs: r(idleUs / 1000, 1),
    windowBusyMs: r(busy / 1000, 1),
    profileSpanMs: r((profile.endTime - profile.startTime) / 1000, 1),
    windowsInsideProfile: windows.every(([a, b]) => a >= profile.startTime && b <= profile.endTime),
    categories: top(categories, 20),
    topFunctions: top(byFunction, 25),
    byFile: top(byFile, 15),
  };
}

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
async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const startedAt = new Date();
  const loadAtStart = loadavg().map((x) => r(x, 2));
  const overall = setTimeout(() => {
    log(`overall timeout of ${opts.timeout} s reached: killing children and exiting`);
    killAll();
    process.exit(3);
  }, opts.timeout * 1000);
  overall.unref();

  log(`N=${opts.subscribers}, M=${opts.messages} (+${opts.warmup} warm-up), payloads=${opts.payloads.join(',')} B, rounds=${opts.rounds}, servers=${opts.servers.join(',')}, addresses=${opts.addresses.join(',')}, CLK_TCK=${CLK_TCK}`);
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
      await sleep(1000); // let the kernel tidy up the closed sockets before the next server
    }
  }

  const profiles = [];
  if (opts.profile.length) {
    const dir = join(opts.out, `fanout-prof-${startedAt.toISOString().replace(/[:.]/g, '-')}`);
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
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, platform: process.platform, loopback: opts.addresses, loadClients: 1, clkTck: CLK_TCK, loadAverage: { atStart: loadAtStart, atEnd: loadavg().map((x) => r(x, 2)), note: '1/5/15-minute load averages; other work on the machine inflates time-to-all more than CPU per delivery' } },
    options: { subscribers: opts.subscribers, messages: opts.messages, warmup: opts.warmup, rounds: opts.rounds, payloads: opts.payloads, servers: opts.servers, idleMs: opts.idle, messageTimeoutMs: opts.messageTimeout },
    summary,
    ratios: {
      hubbubVsNaive: ratios(summary),
      note: 'hubbub / naive-ws-fanout: below 1 is better; goal cpuPerDelivery <= 0.7. Deliveries per message = subscribers + 1 (the trigger connection receives too, on both servers).',
    },
    ...(profiles.length ? { profiles } : {}),
    runs,
  };
  const text = JSON.stringify(result, null, 2);
  await mkdir(opts.out, { recursive: true });
  const file = join(opts.out, `fanout-${startedAt.toISOString().replace(/[:.]/g, '-')}.json`);
  await writeFile(file, `${text}\n`);
  log(`wrote ${file}`);
  process.stdout.write(`${text}\n`);
  clearTimeout(overall);
  const anyError = runs.some((run) => run.error) || profiles.some((p) => p.error);
  const anyLoss = Object.values(summary).some((bySize) => Object.values(bySize).some((s) => s.missing || s.duplicates || s.outOfOrder || s.badPayload));
  process.exitCode = anyError || anyLoss ? 1 : 0;
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
