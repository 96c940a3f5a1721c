// Shared parts of the benchmark scripts (orchestrators and load clients): starting servers and
// reading their JSON "listening" line, tracking and killing child processes, /proc readings (RSS,
// CPU ticks), statistics, the IPC protocol between an orchestrator and its load clients, opening and
// closing many WebSockets, and writing results. Loopback only: every target and source address is
// checked to be 127.x.x.x.
import { execFileSync, fork, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { createServer } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export const here = dirname(fileURLToPath(import.meta.url));
export const root = resolve(here, '..');
export { sleep };

// ---------- numbers ----------
/** Rounds to `digits`; null for anything that is not a finite number. */
export const r = (n, digits = 2) => (n === null || n === undefined || !Number.isFinite(n) ? null : Number(n.toFixed(digits)));

export function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return null;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
}

/** Nearest-rank percentile of an already sorted array. */
export function percentileSorted(sorted, p) {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/** Nearest-rank percentile of any array (non-numbers are ignored). */
export function percentile(values, p) {
  return percentileSorted(values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b), p);
}

/** a / b rounded, or null when either is missing or b is 0. */
export const ratio = (a, b, digits = 3) => (typeof a === 'number' && typeof b === 'number' && b !== 0 ? r(a / b, digits) : null);

/** Splits `total` over `parts` as evenly as possible. */
export const split = (total, parts) => Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0));

export function mergeCounts(target, source) {
  for (const [k, v] of Object.entries(source ?? {})) target[k] = (target[k] ?? 0) + v;
  return target;
}

/**
 * Latency histogram with ~1% resolution (log buckets from 10 µs), small enough to send over IPC
 * and merge across load clients. Values in ms.
 */
export class Histogram {
  static BASE = 0.01;
  static GROWTH = Math.log(1.01);
  constructor(counts = {}) {
    this.counts = new Map(Object.entries(counts).map(([k, v]) => [Number(k), v]));
    this.n = 0;
    this.max = 0;
    this.sum = 0;
    for (const v of this.counts.values()) this.n += v;
  }
  record(ms) {
    const b = ms <= Histogram.BASE ? 0 : Math.ceil(Math.log(ms / Histogram.BASE) / Histogram.GROWTH);
    this.counts.set(b, (this.counts.get(b) ?? 0) + 1);
    this.n++;
    this.sum += ms;
    if (ms > this.max) this.max = ms;
  }
  merge(json) {
    for (const [k, v] of Object.entries(json.counts)) this.counts.set(Number(k), (this.counts.get(Number(k)) ?? 0) + v);
    this.n += json.n;
    this.sum += json.sum;
    this.max = Math.max(this.max, json.max);
    return this;
  }
  /** Upper edge of the bucket holding the p-th percentile (within 1%); the exact max for p = 100. */
  percentile(p) {
    if (this.n === 0) return null;
    if (p >= 100) return this.max;
    const rank = Math.max(1, Math.ceil((p / 100) * this.n));
    let seen = 0;
    for (const b of [...this.counts.keys()].sort((x, y) => x - y)) {
      seen += this.counts.get(b);
      if (seen >= rank) return Math.min(this.max, Histogram.BASE * Math.exp(b * Histogram.GROWTH));
    }
    return this.max;
  }
  summary(digits = 3) {
    return { count: this.n, p50: r(this.percentile(50), digits), p90: r(this.percentile(90), digits), p99: r(this.percentile(99), digits), max: r(this.max, digits), mean: this.n ? r(this.sum / this.n, digits) : null };
  }
  toJSON() {
    return { counts: Object.fromEntries(this.counts), n: this.n, sum: this.sum, max: this.max };
  }
  static from(json) {
    return new Histogram().merge(json);
  }
}

// ---------- logging, options ----------
export const createLog = (tag) => (...parts) => process.stderr.write(`[${tag}] ${parts.join(' ')}\n`);

/** Integer option check shared by the scripts' flag parsers. */
export function int(name, text, min) {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer >= ${min} (got ${text})`);
  return n;
}

export function num(name, text, min) {
  const n = Number(text);
  if (!Number.isFinite(n) || n < min) throw new Error(`--${name} must be a number >= ${min} (got ${text})`);
  return n;
}

/** A comma-separated list of names, each a key of `known` (servers, runtimes, …). */
export function knownList(text, known, what) {
  const list = text.split(',').map((s) => s.trim()).filter(Boolean);
  for (const s of list) if (!Object.hasOwn(known, s)) throw new Error(`unknown ${what} ${s}; known: ${Object.keys(known).join(', ')}`);
  return list;
}

/** A comma-separated list of 127.x.x.x source addresses. */
export function loopbackList(flag, text) {
  const list = text.split(',').map((s) => s.trim()).filter(Boolean);
  for (const a of list) if (!/^127\.\d+\.\d+\.\d+$/.test(a)) throw new Error(`${flag}: ${a} is not a 127.0.0.0/8 address`);
  return list;
}

export const stamp = (date) => date.toISOString().replace(/[:.]/g, '-');

// ---------- child processes: everything we start, we stop ----------
const children = new Set();

export function track(child) {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

export function killAll() {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {}
  }
}

export const isRunning = (child) => child.exitCode === null && child.signalCode === null;

export function waitExit(child, ms) {
  if (!isRunning(child)) return Promise.resolve(true);
  return new Promise((resolvePromise) => {
    const timer = setTimeout(() => resolvePromise(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolvePromise(true);
    });
  });
}

/**
 * SIGTERM, then SIGKILL after `graceMs`; says how it ended and how long it took. `beforeKill` may
 * look at a process that ignored SIGTERM (what it still holds) before it is killed.
 */
export async function stop(child, { name = 'child', graceMs = 5000, log, beforeKill } = {}) {
  if (!isRunning(child)) return { how: 'already-exited', code: child.exitCode, signal: child.signalCode, ms: 0 };
  const t0 = Date.now();
  child.kill('SIGTERM');
  if (await waitExit(child, graceMs)) return { how: 'SIGTERM', code: child.exitCode, signal: child.signalCode, ms: Date.now() - t0 };
  log?.(`${name} did not exit within ${graceMs} ms of SIGTERM, sending SIGKILL`);
  const held = await Promise.resolve(beforeKill?.()).catch((error) => ({ error: error.message }));
  child.kill('SIGKILL');
  await waitExit(child, 5000);
  return { how: 'SIGKILL', code: child.exitCode, signal: child.signalCode, ms: Date.now() - t0, ...(held ? { heldWhenKilled: held } : {}) };
}

/**
 * Runs an orchestrator's main: kills every child on SIGINT/SIGTERM, on exit, on a fatal error, and
 * once the time limit set with `setLimit(seconds)` has passed (exit 3). `clearLimit()` cancels it.
 */
export function runMain(log, main) {
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.on(signal, () => {
      log(`${signal}: killing children`);
      killAll();
      process.exit(130);
    });
  }
  process.on('exit', killAll);
  let overall;
  const setLimit = (seconds) => {
    clearTimeout(overall);
    if (!seconds) return;
    overall = setTimeout(() => {
      log(`overall timeout of ${seconds} s reached: killing children and exiting`);
      killAll();
      process.exit(3);
    }, seconds * 1000);
    overall.unref();
  };
  Promise.resolve()
    .then(() => main({ setLimit, clearLimit: () => clearTimeout(overall) }))
    .catch((error) => {
      log(`fatal: ${error.stack ?? error}`);
      killAll();
      process.exit(1);
    });
}

/**
 * Rounds interleaved over servers (a, b, c, a, b, c, …): `runOne(name, round)` for each; a failed
 * run is logged and recorded as `{ round, server, error }`. Waits `pauseMs` between servers so the
 * kernel can tidy up the closed sockets.
 */
export async function interleavedRounds(rounds, servers, runOne, { log, pauseMs = 500 } = {}) {
  const runs = [];
  for (let round = 1; round <= rounds; round++) {
    for (const name of servers) {
      log?.(`--- round ${round}/${rounds}: ${name}`);
      try {
        runs.push({ round, ...(await runOne(name, round)) });
      } catch (error) {
        log?.(`${name}: run failed: ${error.stack ?? error}`);
        runs.push({ round, server: name, error: String(error.message ?? error) });
      }
      await sleep(pauseMs);
    }
  }
  return runs;
}

// ---------- /proc readings ----------
export let CLK_TCK = 100;
try {
  CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
} catch {}

/** utime and stime of a process, in clock ticks (/proc/<pid>/stat fields 14 and 15). */
export function cpuTicks(pid) {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  return { utime: Number(fields[11]), stime: Number(fields[12]) };
}

/** utime+stime (clock ticks) of every thread of a process, summed by thread name (comm). */
export function threadTicks(pid) {
  const out = {};
  let names;
  try {
    names = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of names) {
    try {
      const text = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const comm = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
      const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
      out[comm] = (out[comm] ?? 0) + Number(fields[11]) + Number(fields[12]);
    } catch {}
  }
  return out;
}

/** Per-thread-name ticks between two threadTicks readings, biggest first, zeros left out. */
export function threadTicksDelta(before, after) {
  return Object.fromEntries(
    Object.entries(after)
      .map(([name, t]) => [name, t - (before[name] ?? 0)])
      .filter(([, t]) => t > 0)
      .sort((a, b) => b[1] - a[1]),
  );
}

export const totalTicks = (pid) => {
  const t = cpuTicks(pid);
  return t.utime + t.stime;
};

/** Process CPU over `ms` of doing nothing, as a fraction of one core. */
export async function idleCpu(pid, ms) {
  const a = totalTicks(pid);
  const started = performance.now();
  await sleep(ms);
  const b = totalTicks(pid);
  const seconds = (performance.now() - started) / 1000;
  return { ticks: b - a, seconds: r(seconds, 3), coreFraction: r((b - a) / CLK_TCK / seconds, 4) };
}

export async function rssKB(pid) {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** The median of `samples` VmRSS readings `intervalMs` apart. */
export async function sampleRss(pid, samples = 5, intervalMs = 200) {
  const values = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(intervalMs);
    values.push(await rssKB(pid));
  }
  return { medianKB: median(values), samplesKB: values };
}

/**
 * Machine-wide TCP counters (/proc/net/netstat TcpExt): SYN retransmissions and listen-queue
 * overflows. Other processes count too; a delta over a phase still tells whether handshakes waited
 * for a retransmitted SYN (1 s, then 3 s, …) rather than for the server.
 */
export function tcpCounters() {
  const out = {};
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n');
    for (let i = 0; i + 1 < lines.length; i += 2) {
      if (!lines[i].startsWith('TcpExt:')) continue;
      const names = lines[i].split(/\s+/).slice(1);
      const values = lines[i + 1].split(/\s+/).slice(1);
      names.forEach((name, k) => {
        if (['TCPSynRetrans', 'ListenOverflows', 'ListenDrops', 'TCPTimeWaitOverflow', 'TCPReqQFullDrop'].includes(name)) out[name] = Number(values[k]);
      });
    }
  } catch {}
  return out;
}

export const countersDelta = (before, after) => Object.fromEntries(Object.keys(after).map((k) => [k, after[k] - (before[k] ?? 0)]));

// ---------- HTTP ----------
/**
 * GET a JSON document. One request per connection (no keep-alive pool), so the orchestrator's own
 * requests do not linger in the server's socket and fd counts.
 */
export function getJson(url, timeoutMs = 10_000) {
  return new Promise((resolvePromise, reject) => {
    const req = http.get(url, { agent: false, headers: { connection: 'close' }, timeout: timeoutMs }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new Error(`GET ${url}: ${res.statusCode}`));
        try {
          resolvePromise(JSON.parse(Buffer.concat(chunks).toString('utf8')));
        } catch (error) {
          reject(error);
        }
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: no answer within ${timeoutMs} ms`)));
    req.on('error', reject);
  });
}

// ---------- runtimes ----------
let denoPath;
/** The deno binary of the `deno` npm package (installed on first use), or `explicit`. */
export function denoBinary(explicit) {
  if (explicit) return explicit;
  if (denoPath) return denoPath;
  const local = join(root, 'node_modules/deno/deno');
  if (existsSync(local)) return (denoPath = local);
  const printed = execFileSync(process.execPath, ['-e', "Promise.resolve(require('deno/install_api.cjs').runInstall()).then((p) => console.log(p))"], {
    cwd: root,
    encoding: 'utf8',
    timeout: 120_000,
  }).trim().split('\n').at(-1);
  if (!printed || !existsSync(printed)) throw new Error(`cannot find the deno binary (install_api printed ${JSON.stringify(printed)})`);
  return (denoPath = printed);
}

/** The bun binary of the `bun` npm package. */
export function bunBinary() {
  const bin = join(root, 'node_modules/.bin/bun');
  if (!existsSync(bin)) throw new Error('node_modules/.bin/bun is missing (npm install installs the bun package)');
  return bin;
}

export function runtimeVersions() {
  const v = (cmd, args) => {
    try {
      return execFileSync(cmd, args, { encoding: 'utf8', timeout: 60_000 }).trim().split('\n')[0];
    } catch {
      return null;
    }
  };
  return { node: process.version, deno: v(denoBinary(), ['--version']), bun: v(bunBinary(), ['--version']) };
}

// ---------- servers ----------
/**
 * Spawns a server and waits for its JSON `listening` event with a url on 127.0.0.1 (JSON log lines
 * before it, such as a backplane's state, are kept; anything else first is an error). stdout and
 * stderr are drained for the server's whole life (the last `tail` lines of each are kept);
 * `onLine(line, stream)` sees every line after the listening one.
 */
export async function startServer({ name, command, args = [], env, readyTimeoutMs = 15_000, tail = 20, onLine, log }) {
  const child = track(spawn(command, args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env }));
  const stderrTail = [];
  const stdoutTail = [];
  let stderrLines = 0;
  let stopping = false;
  const exit = { code: null, signal: null, unexpected: false };
  const keep = (list, line) => {
    list.push(line.slice(0, 2000));
    if (list.length > tail) list.shift();
  };
  createInterface({ input: child.stderr }).on('line', (line) => {
    stderrLines++;
    keep(stderrTail, line);
    onLine?.(line, 'stderr');
  });
  const stdoutLines = createInterface({ input: child.stdout });
  const url = await new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: no listening line within ${readyTimeoutMs / 1000} s; stderr: ${stderrTail.join(' | ')}`)), readyTimeoutMs);
    let first = true;
    stdoutLines.on('line', (line) => {
      if (!first) {
        keep(stdoutTail, line); // keep draining so the pipe never fills
        onLine?.(line, 'stdout');
        return;
      }
      first = false;
      clearTimeout(timer);
      try {
        const event = JSON.parse(line);
        // Lines before it (a backplane's state, say) are fine; the server is ready at `listening`.
        if (event.event !== 'listening' && typeof event.event === 'string' && event.level !== 'error') {
          first = true;
          keep(stdoutTail, line);
          return;
        }
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
  }).catch(async (error) => {
    if (isRunning(child)) {
      child.kill('SIGKILL');
      await waitExit(child, 5000);
    }
    throw error;
  });
  child.once('exit', (code, signal) => {
    exit.code = code;
    exit.signal = signal;
    exit.unexpected = !stopping;
    if (!stopping) log?.(`${name}: server exited unexpectedly (code ${code}, signal ${signal}); stderr: ${stderrTail.slice(-8).join(" | ")}; stdout: ${stdoutTail.slice(-8).join(" | ")}`);
  });
  return {
    name,
    child,
    pid: child.pid,
    url,
    port: Number(new URL(url).port),
    stderrTail,
    stdoutTail,
    stderrCount: () => stderrLines,
    exit,
    markStopping: () => (stopping = true),
    /** SIGTERM (SIGKILL after graceMs); an exit from here on is expected. */
    stop: (options = {}) => {
      stopping = true;
      return stop(child, { name, log, ...options });
    },
  };
}

// ---------- load clients: the orchestrator's side ----------
/**
 * Forks a load client (a script that calls `serveCommands`). Every request gets an id and exactly
 * one answer; `{ type: 'progress' }` messages go to `onProgress`.
 */
export function forkClient(script, { name = 'load client', onProgress, execArgv } = {}) {
  const child = track(fork(script, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], ...(execArgv ? { execArgv } : {}) }));
  let nextId = 1;
  const pending = new Map();
  let ready;
  const readyPromise = new Promise((resolvePromise, reject) => {
    ready = { resolve: resolvePromise, reject };
    setTimeout(() => reject(new Error(`${name} not ready within 10 s`)), 10_000).unref();
  });
  readyPromise.catch(() => {});
  child.on('message', (message) => {
    if (message.type === 'ready') return ready.resolve(message);
    if (message.type === 'progress') return onProgress?.(message);
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.type === 'error') waiter.reject(new Error(`${name}: ${message.error}`));
    else waiter.resolve(message);
  });
  child.once('exit', (code, signal) => {
    const error = new Error(`${name} exited (code ${code}, signal ${signal})`);
    ready.reject(error);
    for (const waiter of pending.values()) waiter.reject(error);
    pending.clear();
  });
  return {
    child,
    ready: () => readyPromise,
    request(message, timeoutMs) {
      if (!isRunning(child) || !child.connected) return Promise.reject(new Error(`${name} is gone`));
      const id = nextId++;
      return new Promise((resolvePromise, reject) => {
        const timer = setTimeout(() => {
          pending.delete(id);
          reject(new Error(`${name}: no answer to ${message.cmd} within ${timeoutMs} ms`));
        }, timeoutMs);
        pending.set(id, {
          resolve: (m) => (clearTimeout(timer), resolvePromise(m)),
          reject: (e) => (clearTimeout(timer), reject(e)),
        });
        child.send({ ...message, id });
      });
    },
    /** Asks the client to exit, waits, kills it if it lingers. */
    async exit(ms = 5000) {
      if (isRunning(child) && child.connected) child.send({ cmd: 'exit' });
      if (!(await waitExit(child, ms)) && isRunning(child)) {
        child.kill('SIGKILL');
        await waitExit(child, 5000);
      }
    },
    kill: async () => {
      if (isRunning(child)) {
        child.kill('SIGKILL');
        await waitExit(child, 5000);
      }
    },
  };
}

// ---------- load clients: the client's side ----------
/**
 * Answers the orchestrator's requests: `handlers[cmd](message)` → `{ id, ...result }`, or
 * `{ id, type: 'error', error }`. `exit` runs `onExit` and exits. The client exits when the
 * orchestrator goes away.
 */
export function serveCommands(handlers, { onExit } = {}) {
  const reply = (id, body) => process.send?.({ id, ...body });
  process.on('message', async (message) => {
    const { id, cmd } = message;
    try {
      if (cmd === 'exit') {
        onExit?.();
        process.exit(0);
      }
      const handler = handlers[cmd];
      if (!handler) return reply(id, { type: 'error', error: `unknown command ${cmd}` });
      reply(id, await handler(message));
    } catch (error) {
      reply(id, { type: 'error', error: error?.stack ?? String(error) });
    }
  });
  // Never outlive the orchestrator.
  process.on('disconnect', () => process.exit(0));
  process.send?.({ type: 'ready', pid: process.pid });
}

export function assertLoopback(url) {
  const { hostname } = new URL(url);
  if (hostname !== '127.0.0.1') throw new Error(`refusing to target ${hostname}: loopback 127.0.0.1 only`);
}

export function assertLoopbackSources(addresses = []) {
  for (const a of addresses) if (a !== undefined && !/^127\.\d+\.\d+\.\d+$/.test(a)) throw new Error(`source address ${a} is not a loopback address`);
}

/** ws://…/ws for a server's http://127.0.0.1:port url (checked to be loopback). */
export function wsUrlOf(url, path = '/ws') {
  assertLoopback(url);
  return new URL(path, url.replace(/^http/, 'ws')).href;
}

/**
 * The source address to bind, or undefined for 127.0.0.1: the kernel picks 127.0.0.1 for a loopback
 * target by itself, and then chooses the port at connect() time, where only the whole 4-tuple must
 * be unique. Binding an address first makes bind() search a port that no socket on that address
 * holds, TIME_WAIT ones included, and that search grows with them: measured here, 5,000 connects
 * went from 4,300/s to 112–638/s (client system time 0.6 s → 6–28 s) when the previous round's
 * sockets were still in TIME_WAIT on the address. Other sources still bind (they are only needed
 * beyond ~28,000 connections to one port), and pay that cost after a previous round.
 */
export const bindableSource = (address) => (address === '127.0.0.1' ? undefined : address);

/**
 * Opens one client WebSocket. Resolves `{ ws }` once open or `{ failure }` (a short reason). After
 * it opened, a close the client did not ask for (`ws.closingOnPurpose`) is remembered as
 * `ws.closedEarly = code`. `setup(ws)` runs before any event (add message listeners there).
 */
export function openWebSocket(WebSocket, wsUrl, { handshakeTimeoutMs = 15_000, localAddress, setup } = {}) {
  localAddress = bindableSource(localAddress);
  return new Promise((resolvePromise) => {
    let settled = false;
    const done = (result) => {
      if (settled) return;
      settled = true;
      resolvePromise(result);
    };
    let ws;
    try {
      ws = new WebSocket(wsUrl, { perMessageDeflate: false, handshakeTimeout: handshakeTimeoutMs, ...(localAddress ? { localAddress } : {}) });
    } catch (error) {
      done({ failure: `throw: ${error.message}` });
      return;
    }
    setup?.(ws);
    ws.once('open', () => done({ ws }));
    ws.once('unexpected-response', (_req, res) => {
      done({ failure: `http ${res.statusCode}` });
      res.resume();
      ws.terminate();
    });
    ws.on('error', (error) => {
      ws.lastError = error.code ?? error.message;
      done({ failure: `error: ${ws.lastError}` });
    });
    ws.once('close', (code) => {
      if (!settled) done({ failure: `closed before open: ${code}` });
      else if (!ws.closingOnPurpose) ws.closedEarly = code;
    });
  });
}

/**
 * Runs `count` tasks `task(index)` with at most `concurrency` in flight; resolves with the wall time.
 * `task` may return false to stop early.
 */
export async function pool(count, concurrency, task) {
  let next = 0;
  let stopped = false;
  const startedAt = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (!stopped && next < count) if ((await task(next++)) === false) stopped = true;
    }),
  );
  return performance.now() - startedAt;
}

/**
 * Each open socket sends `textFor(ws)` once and awaits one message, expected to be
 * `expectedFor(ws, text)`. A socket that closes while waiting counts as `closedWhileWaiting`.
 */
export async function echoOnce(WebSocket, sockets, { timeoutMs, textFor, expectedFor = (_ws, text) => `Server received: ${text}` }) {
  const startedAt = performance.now();
  let ok = 0;
  let bad = 0;
  let closedWhileWaiting = 0;
  let firstBad;
  const pending = new Set();
  await new Promise((resolvePromise) => {
    const timer = setTimeout(resolvePromise, timeoutMs);
    const check = () => {
      if (pending.size === 0) {
        clearTimeout(timer);
        resolvePromise();
      }
    };
    for (const ws of sockets) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      const text = textFor(ws);
      const expected = expectedFor(ws, text);
      pending.add(ws);
      const onClose = () => {
        closedWhileWaiting++;
        pending.delete(ws);
        check();
      };
      ws.once('close', onClose);
      ws.once('message', (data, isBinary) => {
        ws.removeListener('close', onClose);
        const got = isBinary ? `<binary ${data.length} bytes>` : data.toString();
        if (got === expected) ok++;
        else {
          bad++;
          firstBad ??= { expected, got: got.slice(0, 200) };
        }
        pending.delete(ws);
        check();
      });
      ws.send(text);
    }
    check();
  });
  return { ok, bad, missing: pending.size, closedWhileWaiting, firstBad, wallMs: r(performance.now() - startedAt, 1) };
}

/**
 * Closes every socket with a close handshake (`code`), waits up to `timeoutMs`, then terminates the
 * stragglers. Counts the close codes seen.
 */
export async function closeSockets(WebSocket, sockets, { timeoutMs = 20_000, code = 1000, reason = 'bench done' } = {}) {
  const startedAt = performance.now();
  const closeCodes = {};
  let closedCleanly = 0;
  let alreadyClosed = 0;
  await new Promise((resolvePromise) => {
    let remaining = 0;
    const timer = setTimeout(resolvePromise, timeoutMs);
    for (const ws of sockets) {
      if (ws.readyState === WebSocket.CLOSED) {
        alreadyClosed++;
        continue;
      }
      remaining++;
      ws.closingOnPurpose = true;
      ws.once('close', (closeCode) => {
        closedCleanly++;
        closeCodes[closeCode] = (closeCodes[closeCode] ?? 0) + 1;
        if (--remaining === 0) {
          clearTimeout(timer);
          resolvePromise();
        }
      });
      ws.close(code, reason);
    }
    if (remaining === 0) {
      clearTimeout(timer);
      resolvePromise();
    }
  });
  let terminated = 0;
  for (const ws of sockets) {
    if (ws.readyState !== WebSocket.CLOSED) {
      terminated++;
      ws.terminate();
    }
  }
  return { closedCleanly, terminated, alreadyClosed, closeCodes, wallMs: r(performance.now() - startedAt, 1) };
}

// ---------- fan-out measurement (bench/fanout.mjs, bench/run.mjs) ----------
/**
 * One payload size of a fan-out run against a connected bench/fanout-client.mjs: the server's idle
 * CPU for `idle` ms, `warmup` untimed and `messages` timed triggers (the client reads the server's
 * utime+stime around the timed ones), the idle CPU again. CPU µs per delivery = CPU time /
 * (messages × receivers).
 */
export async function fanOutPhase(client, pid, { size, warmup, messages, messageTimeout, idle }) {
  const idleBefore = await idleCpu(pid, idle);
  const pub = await client.request(
    { cmd: 'publish', size, warmup, messages, serverPid: pid, messageTimeoutMs: messageTimeout },
    (warmup + messages) * (messageTimeout + 1000) + 10_000,
  );
  const idleAfter = await idleCpu(pid, idle);
  const ticks = pub.serverCpuTicks.utime + pub.serverCpuTicks.stime;
  const deliveries = pub.messages * pub.receivers;
  const cpuUs = (ticks / CLK_TCK) * 1e6;
  const idleRate = ((idleBefore.coreFraction ?? 0) + (idleAfter.coreFraction ?? 0)) / 2; // fraction of a core
  const idleShare = ticks > 0 ? (idleRate * (pub.wallMs / 1000) * CLK_TCK) / ticks : null;
  return {
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
}

// ---------- CPU profiles ----------
/**
 * A V8 CPU profile (node --cpu-prof, deno --v8-flags=--cpu-prof) summarised by self time per
 * function, per file and per category, counting only samples inside the given windows (monotonic
 * µs; all samples when `windows` is empty).
 */
export function summariseProfile(profile, windows) {
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  const inWindow = (t) => windows.length === 0 || windows.some(([a, b]) => t >= a && t <= b);
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
    else if (url.startsWith('ext:')) category = 'deno runtime (JS: ext:)';
    else if (fn === '(garbage collector)') category = 'garbage collector';
    else if (fn === '(program)') category = '(program): VM / libuv outside JS';
    else if (!url) category = `other native: ${fn}`;
    else if (url.includes('/node_modules/ws/')) category = 'ws (JS)';
    else if (url.startsWith(`file://${root}/dist/`) || url.startsWith(`file://${root}/src/`)) category = 'hubbub (JS)';
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

/** A TCP port free on 127.0.0.1 right now (for a child's inspector). */
export function freePort() {
  return new Promise((resolvePromise, reject) => {
    const probe = createServer();
    probe.once('error', reject);
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolvePromise(port));
    });
  });
}

/**
 * A Chrome DevTools Protocol session with a process started with `--inspect=127.0.0.1:<port>` (Node
 * and Deno): `cpuProfile(run)` records a V8 CPU profile while `run()` runs and returns it with
 * run's result. Loopback only.
 */
export async function inspectorSession(port, { timeoutMs = 15_000 } = {}) {
  const { default: WebSocket } = await import('ws');
  let targets;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    targets = await getJson(`http://127.0.0.1:${port}/json/list`, 2000).catch(() => undefined);
    if (targets?.length) break;
    if (Date.now() > deadline) throw new Error(`no inspector target on 127.0.0.1:${port}`);
    await sleep(200);
  }
  const url = targets[0].webSocketDebuggerUrl.replace(/^ws:\/\/[^/]+/, `ws://127.0.0.1:${port}`);
  const ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1024 * 1024 * 1024 });
  await new Promise((resolvePromise, reject) => {
    ws.once('open', resolvePromise);
    ws.once('error', reject);
  });
  let nextId = 0;
  const pending = new Map();
  ws.on('message', (data) => {
    const message = JSON.parse(data.toString());
    const waiter = message.id !== undefined && pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.error) waiter.reject(new Error(`${waiter.method}: ${message.error.message}`));
    else waiter.resolve(message.result);
  });
  const send = (method, params = {}) =>
    new Promise((resolvePromise, reject) => {
      const id = ++nextId;
      pending.set(id, { resolve: resolvePromise, reject, method });
      ws.send(JSON.stringify({ id, method, params }));
    });
  await send('Profiler.enable');
  await send('Profiler.setSamplingInterval', { interval: 500 });
  return {
    send,
    async cpuProfile(run) {
      await send('Profiler.start');
      let result;
      let failure;
      try {
        result = await run();
      } catch (error) {
        failure = error;
      }
      const { profile } = await send('Profiler.stop');
      if (failure) throw failure;
      return { result, profile };
    },
    close: () => ws.close(),
  };
}

// ---------- results ----------
export function machineInfo(extra = {}) {
  return { cpus: cpus().length, cpuModel: cpus()[0]?.model, node: process.version, platform: process.platform, ...extra };
}

export const loadAverage = () => loadavg().map((x) => r(x, 2));

/** The tree under test: src/ may carry uncommitted work, so record exactly what was measured. */
export function sourceState() {
  const git = (...args) => {
    try {
      return execFileSync('git', args, { cwd: root, encoding: 'utf8', timeout: 10_000 }).trim();
    } catch {
      return null;
    }
  };
  const paths = ['src', 'main.ts', 'bun.ts', 'deno.json', 'package.json'];
  const diff = git('diff', 'HEAD', '--', ...paths);
  return {
    head: git('rev-parse', 'HEAD'),
    dirty: git('status', '--short', '--', ...paths)?.split('\n').filter(Boolean) ?? null,
    srcDiffSha256: diff === null ? null : createHash('sha256').update(diff).digest('hex').slice(0, 16),
  };
}

/** Writes `<dir>/<prefix>-<timestamp>.json` and returns its path. */
export async function writeResult(dir, prefix, startedAt, result) {
  await mkdir(dir, { recursive: true });
  const file = join(dir, `${prefix}-${stamp(startedAt)}.json`);
  await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
  return file;
}
