// The crowd benchmark (issues 5 and 15): hubbub in cluster mode holds N connections (default
// 100,000; issue 15's goal is 250,000) from several `hubbub loadtest` client processes spread over
// the source addresses 127.0.0.1–127.0.0.S. Every connection echoes once, then a fan-out reaches
// all of them through the Redis backplane. Prints one JSON object (also written to
// bench/results/crowd-<time>.json): the whole server's RSS (primary + workers, from /proc), memory
// per connection (server, client, kernel), connect time and rate, echo, fan-out time to all,
// failures, the kernel limits that bound such a run, and what limited this one.
//
//   npm run build && node bench/crowd.mjs [--connections 100000] [flags]     (--help for all)
//   node bench/crowd.mjs --connections 250000 --check                        (the plan and the limits, no run)
//
// Derived from --connections (each can be given instead):
//   workers = ceil(N / 15,000)   a worker process holds at most ~19,900 sockets (20,000 fds), and
//                                node:cluster's round robin hands a busy worker fewer, an idle one
//                                more (±7 % seen at 100k): 15,000 on average leaves ~25 % margin
//   procs   = ceil(N / 17,000)   load-client processes (they split the connections exactly)
//   sources = ceil(N / (0.75 × ephemeral ports)), at least 4: each (source IP, 127.0.0.1:port)
//                                pair has one ephemeral range of source ports; a quarter is left
//                                for ports still in TIME_WAIT from earlier runs
//   timeouts                     per reply/fan-out message max(60 s, N / 2,500 per s), handshake
//                                max(30 s, N / 5,000 per s), and the whole run bounded by
//                                startup + connect (N at 300/s) + 7 reply timeouts + 60 s
//
// Needs Redis on 127.0.0.1:6379 (db 14 by default: --backplane). Bounded: the loadtest stops itself
// (--timeout), and this script kills the server's and the client's process groups at its own
// deadline, on any exit and on SIGINT/SIGTERM. It changes no kernel setting; it reads them and
// refuses a plan the port range cannot carry.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { createInterface } from 'node:readline';

const HELP = `node bench/crowd.mjs [flags]
  --connections <n>     connections held at once (default 100000)
  --workers <n>         hubbub cluster workers (default ceil(n / --per-worker))
  --per-worker <n>      average sockets per worker the default aims at (default 15000)
  --procs <n>           load-client processes (default ceil(n / --per-proc))
  --per-proc <n>        sockets per client process the default aims at (default 17000)
  --sources <n>         source addresses 127.0.0.1–127.0.0.<n> (default from the port range)
  --concurrency <n>     handshakes in flight, all client processes together (default 500)
  --fanout <n>          fan-out messages, each to every connection (default 3)
  --reply-timeout <s>   one echo reply / subscribe / fan-out message to all (default max(60, n/2500))
  --handshake-timeout <s>                                             (default max(30, n/5000))
  --timeout <s>         hard bound on the whole run (default derived, see the file's head)
  --backplane <url>     (default redis://127.0.0.1:6379/14)
  --heartbeat <s>       the server's --heartbeat-interval (default: hubbub's, 30 s)
  --client-nice <n>     run the load clients at this nice level (default 0), so they do not starve
                        the server and Redis of the 2 cores they share
  --check               print the plan and the kernel checks as JSON; run nothing
  --force               run even when a check says the plan cannot fit`;

const argv = process.argv.slice(2);
if (argv.includes('--help')) {
  console.log(HELP);
  process.exit(0);
}
const has = (name) => argv.includes(`--${name}`);
const arg = (name, fallback) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : fallback;
};
const num = (name, fallback) => {
  const v = arg(name, undefined);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) {
    console.error(`crowd: --${name} must be a positive number (got ${JSON.stringify(v)})`);
    process.exit(2);
  }
  return n;
};

// ---------------------------------------------------------------- /proc readers
const read = (path) => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
};
const readNum = (path) => {
  const t = read(path);
  return t === undefined ? undefined : Number(t.trim().split(/\s+/)[0]);
};
const meminfo = () => {
  const out = {};
  for (const m of (read('/proc/meminfo') ?? '').matchAll(/^(\w+):\s+(\d+)/gm)) out[m[1]] = Number(m[2]) * 1024;
  return out;
};
/** TCP line of /proc/net/sockstat: inuse, orphan, tw, alloc, mem (pages). */
const sockstat = () => {
  const m = /^TCP: (.*)$/m.exec(read('/proc/net/sockstat') ?? '');
  const out = {};
  if (m) for (const [, k, v] of m[1].matchAll(/(\w+) (\d+)/g)) out[k] = Number(v);
  return out;
};
/** TcpExt (/proc/net/netstat) and Tcp (/proc/net/snmp) counters: name → value. */
const netCounters = () => {
  const out = {};
  for (const [file, prefixes] of [['/proc/net/netstat', ['TcpExt']], ['/proc/net/snmp', ['Tcp']]]) {
    const lines = (read(file) ?? '').split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      const names = lines[i].split(/\s+/);
      const values = lines[i + 1].split(/\s+/);
      if (!prefixes.includes(names[0].replace(':', ''))) continue;
      for (let j = 1; j < names.length; j++) out[names[j]] = Number(values[j]);
    }
  }
  return out;
};
const WATCHED_COUNTERS = [
  'ListenOverflows', 'ListenDrops', 'TCPBacklogDrop', 'TCPReqQFullDrop', 'TCPReqQFullDoCookies', 'SyncookiesSent',
  'TCPAbortOnMemory', 'TCPMemoryPressures', 'TCPTimeouts', 'TCPAbortOnTimeout', 'RetransSegs', 'AttemptFails', 'EstabResets',
];

function children(pid) {
  const out = [];
  for (const tid of (() => {
    try {
      return readdirSync(`/proc/${pid}/task`);
    } catch {
      return [];
    }
  })()) {
    for (const c of (read(`/proc/${pid}/task/${tid}/children`) ?? '').trim().split(/\s+/)) if (c) out.push(Number(c));
  }
  return out;
}
function tree(pid) {
  const all = [pid];
  for (let i = 0; i < all.length; i++) all.push(...children(all[i]));
  return all;
}
const rssBytes = (pid) => {
  const m = /VmRSS:\s+(\d+)/.exec(read(`/proc/${pid}/status`) ?? '');
  return m ? Number(m[1]) * 1024 : 0;
};
/** utime + stime in clock ticks (USER_HZ, 100 on Linux). */
const cpuTicks = (pid) => {
  const stat = read(`/proc/${pid}/stat`);
  if (!stat) return undefined;
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(f[11]) + Number(f[12]);
};
const fdCount = (pid) => {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return undefined;
  }
};
const maxOpenFiles = () => Number(/^Max open files\s+(\d+)/m.exec(read('/proc/self/limits') ?? '')?.[1] ?? NaN);

// ---------------------------------------------------------------- the plan
const KERNEL = {
  portRange: (read('/proc/sys/net/ipv4/ip_local_port_range') ?? '32768 60999').trim().split(/\s+/).map(Number),
  somaxconn: readNum('/proc/sys/net/core/somaxconn'),
  tcpMaxSynBacklog: readNum('/proc/sys/net/ipv4/tcp_max_syn_backlog'),
  tcpMemPages: (read('/proc/sys/net/ipv4/tcp_mem') ?? '').trim().split(/\s+/).filter(Boolean).map(Number),
  tcpMaxOrphans: readNum('/proc/sys/net/ipv4/tcp_max_orphans'),
  tcpMaxTwBuckets: readNum('/proc/sys/net/ipv4/tcp_max_tw_buckets'),
  fileMax: readNum('/proc/sys/fs/file-max'),
  fileNr: readNum('/proc/sys/fs/file-nr'),
  nrOpen: readNum('/proc/sys/fs/nr_open'),
  openFilesPerProcess: maxOpenFiles(),
  conntrackMax: readNum('/proc/sys/net/netfilter/nf_conntrack_max'),
  conntrackCount: readNum('/proc/sys/net/netfilter/nf_conntrack_count'),
};
const ports = KERNEL.portRange[1] - KERNEL.portRange[0] + 1;
const connections = Math.round(num('connections', 100_000));
const perWorkerTarget = num('per-worker', 15_000);
const perProcTarget = num('per-proc', 17_000);
const workers = Math.round(num('workers', Math.ceil(connections / perWorkerTarget)));
const procs = Math.round(num('procs', Math.ceil(connections / perProcTarget)));
const sourceCount = Math.round(num('sources', Math.max(4, Math.ceil(connections / (0.75 * ports)))));
const sources = Array.from({ length: sourceCount }, (_, i) => `127.0.0.${i + 1}`);
const concurrency = Math.round(num('concurrency', 500)); // at most the accept queue (Node's backlog 511)
const fanout = Math.round(num('fanout', 3));
const replyTimeoutS = num('reply-timeout', Math.max(60, Math.ceil(connections / 2500)));
const handshakeTimeoutS = num('handshake-timeout', Math.max(30, Math.ceil(connections / 5000)));
const startupBudgetS = 30 + 3 * workers; // forking N workers on 2 cores, then a settled baseline
const holdS = 5;
const loadtestTimeoutS = Math.ceil(connections / 300 + holdS + 7 * replyTimeoutS + 60);
const timeoutS = num('timeout', startupBudgetS + loadtestTimeoutS + 30);
const backplane = arg('backplane', 'redis://127.0.0.1:6379/14');
const heartbeatS = arg('heartbeat', undefined);
const clientNice = Number(arg('client-nice', 0));

// What one connection costs, for the memory estimate before a run: server and client RSS and the
// kernel's two socket ends, from the 30,000-connection trial (bench/results), rounded up.
const EST = { serverBytes: 6_500, clientBytes: 17_000, kernelBytes: 10_500, processBytes: 75 * 2 ** 20 };

const plan = {
  connections,
  workers,
  perWorkerAverage: Math.ceil(connections / workers),
  clientProcesses: procs,
  perClientProcess: Math.ceil(connections / procs),
  sources: sources.length > 2 ? `${sources[0]}–${sources.at(-1)} (${sources.length})` : sources.join(','),
  perSource: Math.ceil(connections / sources.length),
  target: '127.0.0.1',
  concurrency,
  fanoutMessages: fanout,
  echoMessagesPerConnection: 1,
  holdS,
  replyTimeoutS,
  handshakeTimeoutS,
  loadtestTimeoutS,
  timeoutS,
  backplane,
  ...(heartbeatS !== undefined ? { heartbeatS: Number(heartbeatS) } : {}),
  clientNice,
};

const problems = []; // the plan cannot work
const warnings = []; // it may not
const fdPerProcess = Number.isFinite(KERNEL.openFilesPerProcess) ? KERNEL.openFilesPerProcess : 20_000;
const socketsPerProcessCap = fdPerProcess - 64; // hubbub keeps 64 fds free (src/runtime/fd-limit.ts)
if (plan.perWorkerAverage > socketsPerProcessCap * 0.85) {
  problems.push(`${plan.perWorkerAverage} sockets per worker on average leaves under 15 % of the ${socketsPerProcessCap} a worker can hold (round robin is uneven): use --workers ${Math.ceil(connections / (socketsPerProcessCap * 0.75))} or more`);
}
if (plan.perClientProcess > Math.min(19_000, fdPerProcess - 1000)) problems.push(`${plan.perClientProcess} sockets per client process: more than one holds; use --procs ${Math.ceil(connections / 17_000)} or more`);
if (workers > 64 || procs > 64) problems.push('at most 64 workers and 64 client processes');
if (plan.perSource > ports * 0.9) problems.push(`${plan.perSource} connections per source address, but the port range ${KERNEL.portRange.join('–')} has ${ports} ports: use --sources ${Math.ceil(connections / (0.75 * ports))} or more`);
else if (plan.perSource > ports * 0.75) warnings.push(`${plan.perSource} connections per source address use ${Math.round((100 * plan.perSource) / ports)} % of the ${ports} ephemeral ports; ports in TIME_WAIT cost retries`);
const acceptQueue = Math.min(511, KERNEL.somaxconn ?? 4096); // Node listens with a backlog of 511
if (concurrency > acceptQueue) warnings.push(`--concurrency ${concurrency} is more than the accept queue (min(511, somaxconn ${KERNEL.somaxconn})): SYNs may be dropped and retried after 1 s, 3 s, …`);
if (KERNEL.tcpMaxSynBacklog !== undefined && concurrency > KERNEL.tcpMaxSynBacklog) warnings.push(`--concurrency ${concurrency} is more than tcp_max_syn_backlog ${KERNEL.tcpMaxSynBacklog}`);
if (KERNEL.fileMax !== undefined && KERNEL.fileMax - (KERNEL.fileNr ?? 0) < 2.2 * connections) problems.push(`fs.file-max ${KERNEL.fileMax} (in use ${KERNEL.fileNr}) cannot hold both ends of ${connections} connections`);
// Conntrack counts every loopback connection only where a rule needs it (count > 0 with sockets open).
const conntrackActive = KERNEL.conntrackCount !== undefined && KERNEL.conntrackCount > 0;
if (KERNEL.conntrackMax !== undefined && conntrackActive && KERNEL.conntrackMax < connections * 1.05 + (sockstat().tw ?? 0)) {
  problems.push(`nf_conntrack_max ${KERNEL.conntrackMax} (in use ${KERNEL.conntrackCount}) is too small for ${connections} connections plus those in TIME_WAIT: the kernel would drop packets ("table full")`);
}
const tcpMemBytes = KERNEL.tcpMemPages.map((p) => p * 4096);
if (tcpMemBytes[1] !== undefined && connections * 2 * 1500 > tcpMemBytes[1]) warnings.push(`a fan-out queues about ${Math.round((connections * 2 * 1500) / 2 ** 20)} MB in socket buffers; tcp_mem pressure starts at ${Math.round(tcpMemBytes[1] / 2 ** 20)} MB`);
const mem = meminfo();
const estimatedBytes = connections * (EST.serverBytes + EST.clientBytes + EST.kernelBytes) + (workers + procs + 3) * EST.processBytes;
if (mem.MemAvailable !== undefined && estimatedBytes > mem.MemAvailable * 0.9) problems.push(`about ${Math.round(estimatedBytes / 2 ** 30)} GiB needed, ${Math.round(mem.MemAvailable / 2 ** 30)} GiB available`);

const kernel = {
  ipLocalPortRange: KERNEL.portRange.join(' '),
  ephemeralPortsPerSourceAndDestination: ports,
  somaxconn: KERNEL.somaxconn,
  tcpMaxSynBacklog: KERNEL.tcpMaxSynBacklog,
  acceptQueue,
  nfConntrack: KERNEL.conntrackMax === undefined ? 'not loaded' : { max: KERNEL.conntrackMax, count: KERNEL.conntrackCount, tracking: conntrackActive ? 'yes' : 'no (count 0 with sockets open: no rule needs it here)' },
  tcpMemMB: tcpMemBytes.map((b) => Math.round(b / 2 ** 20)).join(' '),
  tcpMaxOrphans: KERNEL.tcpMaxOrphans,
  tcpMaxTwBuckets: KERNEL.tcpMaxTwBuckets,
  fileMax: KERNEL.fileMax,
  nrOpen: KERNEL.nrOpen,
  openFilesPerProcess: KERNEL.openFilesPerProcess,
  timeWaitNow: sockstat().tw,
  memTotalGiB: +(mem.MemTotal / 2 ** 30).toFixed(1),
  memAvailableGiB: +(mem.MemAvailable / 2 ** 30).toFixed(1),
  estimatedMemoryGiB: +(estimatedBytes / 2 ** 30).toFixed(1),
  cpus: (read('/proc/cpuinfo') ?? '').match(/^processor/gm)?.length,
  problems,
  warnings,
};

function redisPing(url) {
  return new Promise((resolve) => {
    const u = new URL(url);
    if (!u.protocol.startsWith('redis')) return resolve('not redis');
    const s = createConnection({ host: u.hostname, port: Number(u.port || 6379) });
    const done = (v) => {
      s.destroy();
      resolve(v);
    };
    s.setTimeout(2000, () => done('timeout'));
    s.on('error', (e) => done(e.code ?? e.message));
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => done(String(d).startsWith('+PONG') ? 'ok' : String(d).trim()));
  });
}

if (has('check')) {
  console.log(JSON.stringify({ bench: 'crowd', check: true, plan, kernel, redis: await redisPing(backplane) }, null, 2));
  process.exit(problems.length ? 2 : 0);
}
if (problems.length && !has('force')) {
  console.error(`crowd: the plan cannot fit:\n  ${problems.join('\n  ')}\n(--check shows the plan; --force runs anyway)`);
  process.exit(2);
}
const redis = await redisPing(backplane);
if (redis !== 'ok') {
  console.error(`crowd: the backplane ${backplane} does not answer PING (${redis})`);
  process.exit(2);
}

// ---------------------------------------------------------------- run
const t0 = Date.now();
let sampler; // the 2 s sampler, once the server is ready
let out = ''; // the loadtest's stdout (its JSON summary)
const clientStderr = [];
const elapsedS = () => +((Date.now() - t0) / 1000).toFixed(1);
const log = (msg) => process.stderr.write(`[crowd ${elapsedS()}s] ${msg}\n`);
const groups = new Set(); // process groups to kill: server, load client
const killAll = () => {
  for (const pid of groups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {}
  }
  groups.clear();
};
process.on('exit', killAll);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    log(`${sig}: killing the server and the load clients`);
    killAll();
    process.exit(130);
  });
}
const deadline = setTimeout(() => {
  log(`the overall timeout (${timeoutS} s) ran out: killing everything`);
  killAll();
  finish({ overallTimeout: true });
}, timeoutS * 1000);
deadline.unref();

const startCounters = netCounters();
const startMem = meminfo();
const startLoad = read('/proc/loadavg')?.trim();

const serverArgs = ['dist/node.js', '--host', '127.0.0.1', '--port', '0', '--workers', String(workers), '--max-connections', String(connections + 10_000),
  '--handler', 'pubsub', '--backplane', backplane, '--handshake-timeout', `${Math.min(600, handshakeTimeoutS)}s`,
  ...(heartbeatS !== undefined ? ['--heartbeat-interval', Number(heartbeatS) === 0 ? '0' : `${heartbeatS}s`] : [])];
const server = spawn(process.execPath, serverArgs, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
groups.add(server.pid);
const serverEvents = {}; // warn/error events of the server log, by name
const serverTail = [];
let serverExited;
server.on('exit', (code, signal) => (serverExited = { code, signal }));
const serverStderr = [];
server.stderr.on('data', (d) => {
  serverStderr.push(String(d));
  if (serverStderr.length > 50) serverStderr.shift();
  process.stderr.write(d);
});
let listeningUrl;
const listening = new Promise((resolve) => {
  createInterface({ input: server.stdout }).on('line', (line) => {
    let r;
    try {
      r = JSON.parse(line);
    } catch {
      return;
    }
    if (r.event === 'listening' && !listeningUrl) {
      listeningUrl = r.url;
      resolve(r.url);
    }
    if (r.level === 'warn' || r.level === 'error') {
      const key = `${r.event}${r.what ? ` (${r.what})` : ''}`;
      serverEvents[key] = (serverEvents[key] ?? 0) + 1;
      serverTail.push(line.slice(0, 300));
      if (serverTail.length > 20) serverTail.shift();
    }
  });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const startupBy = Date.now() + startupBudgetS * 1000;
const url = await Promise.race([listening, sleep(startupBudgetS * 1000).then(() => undefined)]);
if (!url) {
  log(`the server did not announce 'listening' within ${startupBudgetS} s`);
  finish({ startupFailed: `no 'listening' within ${startupBudgetS} s`, serverExited });
}
const statsUrl = `${url}/stats`;
async function stats() {
  try {
    const res = await fetch(statsUrl, { signal: AbortSignal.timeout(3000) });
    return res.ok ? (await res.json()).cluster : undefined;
  } catch {
    return undefined;
  }
}
// Ready: every worker answers /stats, and the server's RSS has settled (workers finish loading
// modules, the Redis clients connect) — the baseline the memory per connection is read against.
let ready;
let lastRss = 0;
while (Date.now() < startupBy) {
  const st = await stats();
  const rss = tree(server.pid).reduce((a, p) => a + rssBytes(p), 0);
  if (st && st.workers === workers && st.answered === workers && Math.abs(rss - lastRss) < 0.01 * rss) {
    ready = { workers: st.workers, afterS: elapsedS(), rssMB: Math.round(rss / 2 ** 20) };
    break;
  }
  lastRss = rss;
  await sleep(1000);
}
if (!ready) {
  log('the workers did not all answer /stats with a settled RSS in time');
  finish({ startupFailed: `not all ${workers} workers ready within ${startupBudgetS} s`, serverExited });
}
log(`server ready: ${workers} workers, ${ready.rssMB} MB, after ${ready.afterS} s`);

// Samples every 2 s: RSS and CPU of every server and client process, kernel memory, sockets; every
// 4 s also /stats (live per worker, and the workers' fds).
const redisPid = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).find((p) => (read(`/proc/${p}/comm`) ?? '').trim() === 'redis-server');
const cpuLast = new Map(); // pid → { ticks, role }
const cpuStart = new Map();
const peaks = { serverBytes: 0, clientBytes: 0, slabBytes: 0, tcpMemPages: 0, tcpInuse: 0, conntrack: 0, memAvailableMin: Infinity, live: 0 };
let atPeakLive; // the /stats sample with the most live connections
let clientPid;
let tick = 0;
let firstSample = true;
const sample = async () => {
  const serverPids = tree(server.pid);
  const clientPids = clientPid ? tree(clientPid) : [];
  for (const [pids, role] of [[serverPids, 'server'], [clientPids, 'client'], [redisPid ? [redisPid] : [], 'redis']]) {
    for (const pid of pids) {
      const t = cpuTicks(pid);
      if (t === undefined) continue;
      // Counted from the first sample (the server's startup is not in it); a process born later
      // (a load client, a replaced worker) from its start.
      if (!cpuStart.has(pid)) cpuStart.set(pid, firstSample ? t : 0);
      cpuLast.set(pid, { ticks: t, role });
    }
  }
  firstSample = false;
  const s = serverPids.reduce((a, p) => a + rssBytes(p), 0);
  const c = clientPids.reduce((a, p) => a + rssBytes(p), 0);
  const m = meminfo();
  const ss = sockstat();
  peaks.serverBytes = Math.max(peaks.serverBytes, s);
  peaks.clientBytes = Math.max(peaks.clientBytes, c);
  peaks.slabBytes = Math.max(peaks.slabBytes, m.Slab ?? 0);
  peaks.tcpMemPages = Math.max(peaks.tcpMemPages, ss.mem ?? 0);
  peaks.tcpInuse = Math.max(peaks.tcpInuse, ss.inuse ?? 0);
  peaks.conntrack = Math.max(peaks.conntrack, readNum('/proc/sys/net/netfilter/nf_conntrack_count') ?? 0);
  peaks.memAvailableMin = Math.min(peaks.memAvailableMin, m.MemAvailable ?? Infinity);
  if (tick++ % 2 === 0) {
    const st = await stats();
    if (st && st.live >= peaks.live) {
      peaks.live = st.live;
      atPeakLive = {
        atS: elapsedS(),
        live: st.live,
        slotsUsed: st.slotsUsed,
        replaced: st.replaced,
        answered: st.answered,
        serverRssMB: Math.round(s / 2 ** 20),
        clientRssMB: Math.round(c / 2 ** 20),
        slabMB: Math.round((m.Slab ?? 0) / 2 ** 20),
        perWorker: st.perWorker.map((w) => ({ pid: w.pid, live: w.live, fds: fdCount(w.pid), rssMB: Math.round((w.rssBytes ?? 0) / 2 ** 20) })),
      };
    }
  }
};
await sample();
let sampling = false;
sampler = setInterval(() => {
  if (sampling) return;
  sampling = true;
  sample().finally(() => (sampling = false));
}, 2000);

const loadArgs = ['dist/node.js', 'loadtest', '--url', `${url.replace('http', 'ws')}/ws`, '--connections', String(connections), '--procs', String(procs),
  '--concurrency', String(concurrency), '--source', sources.join(','), '--protocol', 'pubsub', '--echo-messages', '1', '--fanout', String(fanout),
  '--hold', `${holdS}s`, '--timeout', `${loadtestTimeoutS}s`, '--reply-timeout', `${replyTimeoutS}s`, '--handshake-timeout', `${handshakeTimeoutS}s`,
  '--server-pid', String(server.pid), '--json'];
log(`load: ${connections} connections from ${procs} client processes over ${sources.length} source addresses`);
const client = spawn(clientNice ? 'nice' : process.execPath, clientNice ? ['-n', String(clientNice), process.execPath, ...loadArgs] : loadArgs, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
groups.add(client.pid);
clientPid = client.pid;
client.stdout.on('data', (c) => (out += c));
client.stderr.on('data', (d) => {
  clientStderr.push(String(d));
  if (clientStderr.length > 50) clientStderr.shift();
  process.stderr.write(d);
});
const code = await new Promise((r) => client.on('exit', (c, sig) => r(c ?? sig)));
groups.delete(client.pid);
finish({ loadtestExitCode: code });

// ---------------------------------------------------------------- the report
function finish(extra) {
  clearInterval(sampler);
  clearTimeout(deadline);
  let lt;
  try {
    lt = JSON.parse(out);
  } catch {}
  const endCounters = netCounters();
  const netstat = {};
  for (const k of WATCHED_COUNTERS) if (k in endCounters && k in startCounters) netstat[k] = endCounters[k] - startCounters[k];
  const cpu = { server: 0, client: 0, redis: 0 };
  for (const [pid, { ticks, role }] of cpuLast) cpu[role] += (ticks - (cpuStart.get(pid) ?? 0)) / 100;
  const hold = lt?.hold?.memory;
  const open = lt?.hold?.open ?? 0;
  const slabDelta = peaks.slabBytes - (startMem.Slab ?? 0);
  const perConn = (bytes) => (open > 0 ? Math.round(bytes / open) : null);
  const workerExits = Object.entries(serverEvents).filter(([k]) => k.startsWith('worker.exit')).reduce((a, [, v]) => a + v, 0);
  const failures = lt?.failures ? { ...lt.failures, workerExits } : { total: null, workerExits };
  if (failures.total !== null) failures.total += workerExits;

  const result = {
    bench: 'crowd',
    startedAt: new Date(t0).toISOString(),
    durationS: elapsedS(),
    ok: !!lt?.ok && workerExits === 0 && !extra.overallTimeout,
    plan,
    kernel,
    loadAverage: { start: startLoad, end: read('/proc/loadavg')?.trim() },
    ready,
    server: {
      baselineMB: hold?.baselineBytes ? +(hold.baselineBytes / 2 ** 20).toFixed(1) : undefined,
      loadedMB: hold?.loadedBytes ? +(hold.loadedBytes / 2 ** 20).toFixed(1) : undefined,
      peakMB: Math.round(peaks.serverBytes / 2 ** 20),
      kBPerConnection: hold?.bytesPerConnection ? +(hold.bytesPerConnection / 1000).toFixed(2) : null,
      memorySource: hold?.source,
      cpuSeconds: +cpu.server.toFixed(1),
      workerEvents: serverEvents,
      ...(serverTail.length ? { logTail: serverTail } : {}),
    },
    redis: { pid: redisPid, cpuSeconds: +cpu.redis.toFixed(1), note: 'the shared Redis: other sessions may use it too' },
    clients: {
      peakMB: Math.round(peaks.clientBytes / 2 ** 20),
      kBPerConnection: perConn(peaks.clientBytes) !== null ? +(perConn(peaks.clientBytes) / 1000).toFixed(2) : null, // whole processes: they start with the run
      cpuSeconds: +cpu.client.toFixed(1),
    },
    kernelMemory: {
      slabPeakDeltaMB: Math.round(slabDelta / 2 ** 20),
      kBPerConnection: perConn(slabDelta) !== null ? +(perConn(slabDelta) / 1000).toFixed(2) : null,
      tcpBuffersPeakMB: Math.round((peaks.tcpMemPages * 4096) / 2 ** 20),
      tcpSocketsPeak: peaks.tcpInuse,
      conntrackPeak: peaks.conntrack,
      memAvailableMinGiB: Number.isFinite(peaks.memAvailableMin) ? +(peaks.memAvailableMin / 2 ** 30).toFixed(1) : undefined,
    },
    atPeakLive,
    connect: lt?.connect && {
      opened: lt.connect.opened,
      failed: lt.connect.failed,
      failures: lt.connect.failures,
      timeS: +(lt.connect.wallMs / 1000).toFixed(1),
      perSecond: Math.round(lt.connect.connectsPerSecond),
      handshakeMs: lt.connect.handshakeMs,
    },
    echo: lt?.echo && { connections: lt.echo.connections, sent: lt.echo.sent, received: lt.echo.received, missing: lt.echo.missing, timeS: +(lt.echo.wallMs / 1000).toFixed(1), latencyMs: lt.echo.latencyMs },
    fanout: lt?.fanout && {
      subscribers: lt.fanout.subscribers,
      subscribeFailed: lt.fanout.subscribeFailed,
      subscribeRetried: lt.fanout.subscribeRetried,
      subscribeRetries: lt.fanout.subscribeRetries,
      messages: lt.fanout.messages,
      expected: lt.fanout.expected,
      delivered: lt.fanout.delivered,
      missing: lt.fanout.missing,
      duplicates: lt.fanout.duplicates,
      timeToAllMs: lt.fanout.timeToAllMs,
      timeToFirstMs: lt.fanout.timeToFirstMs,
      deliveriesPerSecond: Math.round(lt.fanout.deliveriesPerSecond),
    },
    dropped: lt?.dropped,
    close: lt?.close,
    failures,
    netstat,
    ...extra,
    loadtest: lt ?? { unparsed: out.slice(0, 2000), stderrTail: clientStderr.join('').slice(-2000) },
  };
  result.limitedBy = limits(result, lt, cpu);
  mkdirSync('bench/results', { recursive: true });
  const file = `bench/results/crowd-${connections}-${new Date(t0).toISOString().replace(/[:.]/g, '-')}.json`;
  writeFileSync(file, JSON.stringify(result, null, 2));
  log(`written to ${file}`);
  console.log(JSON.stringify(result, null, 2));
  killAll();
  process.exit(result.ok ? 0 : 1);
}

/** What bounded the run: the failures and their causes first, else what would run out first. */
function limits(r, lt, cpu) {
  const out = [];
  if (r.overallTimeout) out.push(`this script's overall timeout (${timeoutS} s) ran out`);
  if (r.startupFailed) out.push(`server startup: ${r.startupFailed}`);
  if (lt?.timedOut) out.push(`the loadtest --timeout (${loadtestTimeoutS} s) ran out in phase ${lt.timedOut.phase} (${lt.timedOut.ok} of ${lt.timedOut.done} done ok)`);
  if (lt?.error) out.push(`loadtest error: ${lt.error}`);
  if (r.failures.workerExits) out.push(`${r.failures.workerExits} server worker(s) died (server.logTail)`);
  for (const [k, v] of Object.entries(r.server.workerEvents)) {
    if (k.startsWith('worker.exit')) continue;
    const why = k.startsWith('backplane.') ? ' — the Redis health probe (PING answered within 1 s; a socket silent 3 s is torn down) failed: worker event loops or Redis starved of CPU' : k.startsWith('fd-limit') ? ' — a worker reached its file-descriptor budget' : '';
    out.push(`server logged ${k} ×${v}${why}`);
  }
  const causes = {
    EADDRNOTAVAIL: 'source ports ran out (more --sources, or a wider ip_local_port_range)',
    EADDRINUSE: 'source ports taken (TIME_WAIT from earlier runs; more --sources)',
    ECONNREFUSED: 'the listener refused (server gone, or accept queue)',
    ECONNRESET: 'reset during the handshake (accept queue overflow or a worker at its fd limit)',
    timeout: 'handshakes slower than --handshake-timeout (CPU, or SYNs dropped and retried)',
    'HTTP 503': 'the server limit or the cluster slot round trip refused',
    EMFILE: 'a client process ran out of file descriptors',
  };
  for (const [k, v] of Object.entries(lt?.connect?.failures ?? {})) out.push(`connect failed ×${v}: ${k}${causes[k] ? ` — ${causes[k]}` : ''}`);
  if (lt?.dropped?.total) out.push(`${lt.dropped.total} connections dropped (by close code ${JSON.stringify(lt.dropped.byCode)}, by phase ${JSON.stringify(lt.dropped.byPhase)})`);
  if (lt?.echo?.missing) out.push(`${lt.echo.missing} echo replies missing (within ${replyTimeoutS} s)`);
  if (lt?.fanout?.subscribeFailed) {
    const why = {
      'error unavailable': 'the worker could not read the topic\'s position from the backplane within 2 s (src/registry.ts STORE_DEADLINE_MS; one read per topic per turn, shared by its subscribes) or the backplane was degraded, on every try until the reply timeout',
      timeout: `no answer within --reply-timeout ${replyTimeoutS} s`,
    };
    for (const [k, v] of Object.entries(lt.fanout.subscribeFailures ?? {})) out.push(`subscribe failed ×${v}: ${k}${why[k] ? ` — ${why[k]}` : ''}`);
  }
  if (lt?.fanout?.missing) out.push(`${lt.fanout.missing} fan-out deliveries missing (within ${replyTimeoutS} s per message)`);
  const ns = r.netstat;
  if (ns.ListenOverflows > 0 || ns.ListenDrops > 0) out.push(`accept queue overflowed (ListenOverflows +${ns.ListenOverflows}, ListenDrops +${ns.ListenDrops}; machine-wide counters): SYNs retried after 1 s, 3 s, … (handshake p99)`);
  if (ns.TCPAbortOnMemory > 0 || ns.TCPMemoryPressures > 0) out.push(`TCP memory pressure (TCPMemoryPressures +${ns.TCPMemoryPressures}, TCPAbortOnMemory +${ns.TCPAbortOnMemory}): tcp_mem ${kernel.tcpMemMB} MB`);
  if (KERNEL.conntrackMax && r.kernelMemory.conntrackPeak > 0.9 * KERNEL.conntrackMax) out.push(`nf_conntrack near full (${r.kernelMemory.conntrackPeak} of ${KERNEL.conntrackMax})`);
  const maxWorker = Math.max(0, ...(r.atPeakLive?.perWorker ?? []).map((w) => w.fds ?? 0));
  if (maxWorker > 0.95 * socketsPerProcessCap) out.push(`a worker reached ${maxWorker} fds of ${fdPerProcess}`);
  if (out.length === 0 || (out.length && out.every((s) => s.startsWith('accept queue')))) {
    // Nothing failed: report what bounds the figures and what runs out first at a larger count.
    const wall = r.durationS || 1;
    const perConnBytes = (r.server.kBPerConnection ?? 0) * 1000 + (r.clients.kBPerConnection ?? 0) * 1000 + (r.kernelMemory.kBPerConnection ?? 0) * 1000;
    out.push(
      `nothing failed. CPU: ${kernel.cpus} cores shared by ${workers + 1} server and ${procs + 1} client processes ` +
        `(server ${r.server.cpuSeconds} s + clients ${r.clients.cpuSeconds} s of CPU in ${wall} s; load average at the end ${r.loadAverage.end.split(' ')[0]}): ` +
        `it bounds the connect rate (${r.connect?.perSecond}/s) and the fan-out time (p50 ${r.fanout?.timeToAllMs?.p50} ms to all)`,
    );
    const maxLive = Math.max(0, ...(r.atPeakLive?.perWorker ?? []).map((w) => w.live ?? 0));
    if (maxLive) out.push(`fds: the fullest worker held ${maxLive} sockets (${maxWorker} fds) of ${socketsPerProcessCap}`);
    if (perConnBytes > 0 && r.kernel.memAvailableGiB) {
      out.push(`memory: ${(perConnBytes / 1000).toFixed(1)} kB per connection (server + client + kernel): the ${r.kernel.memAvailableGiB} GiB available would hold ~${Math.round((r.kernel.memAvailableGiB * 2 ** 30) / perConnBytes / 1000) * 1000} connections with their clients on the same box`);
    }
  }
  return out;
}
