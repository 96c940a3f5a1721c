#!/usr/bin/env node
// What the server process holds under each attack of issue 11, for two hubbub trees (before/after):
//
//   node bench/attacks.mjs --a ../before --b . [--runtime node|deno|bun] [--attack NAME[,NAME…]]
//                          [--max-connections 100] [--close-timeout 60s]
//
// For each attack and each tree (A then B, one server at a time) a fresh server is started on
// 127.0.0.1 port 0, the attack runs (bounded in count and time, stopping by itself), every client
// socket is destroyed and the server is stopped (SIGTERM, SIGKILL after 3 s). A worker thread samples
// the server's /proc/<pid>/fd count and VmRSS every 20 ms, so a busy load loop does not skew the peak.
// Per attack and tree: baseline fds, peak fds, fds after (attackers still holding their sockets, at
// the end of the attack), fds once they are gone, peak RSS (KiB), what the attack got, and this
// process's CPU share (well under 100 %: the load client was not the bottleneck). Then b ÷ a of peak
// fds, peak RSS and fds held over the baseline. Prints one JSON object. Loopback only.
//
// Attacks (--max-payload 64KiB and --close-timeout on every server that accepts the flag; a flag the
// tree's --help does not list is not passed):
//   lingering-close      1,000 raw clients in waves of 100: handshake, then the 14-byte header of a
//                        masked 100 KB binary frame (over --max-payload), never read, never close
//   rate-close           the same with --message-rate 1: three small masked text frames, then nothing
//   slowloris            500 sockets trickle a request head (one header line a second), kept 5 s
//   subscription-flood   --handler pubsub, one connection, 300,000 subscribes to distinct topics
//   refused-never-close  the limit filled by normal clients, then 500 upgrades (503) kept paused 3 s
// Each tree must be built (`npm run build`) and have node_modules.
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import { resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import WebSocket from 'ws';

const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []));
const runtime = args.runtime ?? 'node';
const trees = { a: resolve(args.a ?? root), b: resolve(args.b ?? root) };
const LIMIT = Number(args['max-connections'] ?? 100);
const CLOSE_TIMEOUT = args['close-timeout'] ?? '60s';
const ALL = ['lingering-close', 'rate-close', 'slowloris', 'subscription-flood', 'refused-never-close'];
const selected = args.attack ? args.attack.split(',') : ALL;
for (const name of selected) if (!ALL.includes(name)) throw new Error(`unknown attack ${name} (one of ${ALL.join(', ')})`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (text) => process.stderr.write(`[attacks] ${text}\n`);
const fdCount = (pid) => readdirSync(`/proc/${pid}/fd`).length;
const rssKiB = (pid) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
const tally = (counts, key) => (counts[key] = (counts[key] ?? 0) + 1);

function command(tree) {
  if (runtime === 'deno') return [resolve(root, 'node_modules/.bin/deno'), ['run', '-A', 'main.ts']];
  if (runtime === 'bun') return [resolve(root, 'node_modules/.bin/bun'), ['run', '--no-env-file', 'bun.ts']];
  return [process.execPath, [resolve(tree, 'dist/node.js')]];
}

/** The flags a tree's CLI lists in --help (the options are the same on every runtime). */
const flagsOf = new Map();
function acceptedFlags(tree) {
  if (!flagsOf.has(tree)) {
    const help = execFileSync(process.execPath, [resolve(tree, 'dist/node.js'), '--help'], { encoding: 'utf8' });
    flagsOf.set(tree, new Set([...help.matchAll(/^\s+--([a-z0-9-]+)/gm)].map((m) => m[1])));
  }
  return flagsOf.get(tree);
}

/** Keeps the pairs [flag, value] the tree accepts; returns [argv, skipped flags]. */
function argvFor(tree, pairs) {
  const accepted = acceptedFlags(tree);
  const argv = [];
  const skipped = [];
  for (const [flag, value] of pairs) {
    if (accepted.has(flag)) argv.push(`--${flag}`, value);
    else skipped.push(flag);
  }
  return [argv, skipped];
}

async function startServer(tree, pairs) {
  const [flags, skipped] = argvFor(tree, [['host', '127.0.0.1'], ['port', '0'], ['max-connections', String(LIMIT)], ['max-payload', '64KiB'], ['close-timeout', CLOSE_TIMEOUT], ...pairs]);
  const [cmd, lead] = command(tree);
  const child = spawn(cmd, [...lead, ...flags], { cwd: tree, stdio: ['ignore', 'pipe', 'pipe'] });
  const stderr = [];
  child.stderr.on('data', (chunk) => stderr.push(chunk));
  const exited = new Promise((r) => child.once('exit', r));
  const url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error(`${tree}: no "listening" line within 30 s`)), 30_000);
    child.once('exit', (code) => fail(new Error(`${tree}: server exited (${code}): ${Buffer.concat(stderr).toString().slice(-2000)}`)));
    createInterface({ input: child.stdout }).on('line', (line) => {
      try {
        const record = JSON.parse(line);
        if (record.url) {
          clearTimeout(timer);
          ok(record.url);
        }
      } catch {}
    });
  });
  const port = Number(new URL(url).port);
  return {
    child,
    pid: child.pid,
    port,
    url,
    flags,
    skipped,
    async stats() {
      try {
        const response = await fetch(`${url}/stats`, { signal: AbortSignal.timeout(3000) });
        return response.ok ? await response.json() : { status: response.status };
      } catch (error) {
        return { error: String(error.message ?? error) };
      }
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return 'exited';
      child.kill('SIGTERM');
      const timer = sleep(3000).then(() => 'timeout');
      if ((await Promise.race([exited.then(() => 'exit'), timer])) === 'exit') return 'SIGTERM';
      child.kill('SIGKILL');
      await exited;
      return 'SIGKILL';
    },
  };
}

/** The fd count once it stops moving: two reads 100 ms apart that agree, within 3 s. */
async function settledFdCount(pid) {
  let last = fdCount(pid);
  for (const end = Date.now() + 3000; Date.now() < end; ) {
    await sleep(100);
    const now = fdCount(pid);
    if (now === last) return now;
    last = now;
  }
  return last;
}

/** A worker thread reading the server's fds and RSS every 20 ms; peaks in shared memory. */
function startSampler(pid) {
  const shared = new Int32Array(new SharedArrayBuffer(16)); // peak fds, peak RSS KiB, samples, stop
  const worker = new Worker(
    `const { workerData: { pid, shared } } = require('node:worker_threads');
     const { readdirSync, readFileSync } = require('node:fs');
     const tick = () => {
       try {
         Atomics.store(shared, 0, Math.max(Atomics.load(shared, 0), readdirSync('/proc/' + pid + '/fd').length));
         const rss = Number(/VmRSS:\\s+(\\d+)/.exec(readFileSync('/proc/' + pid + '/status', 'utf8'))[1]);
         Atomics.store(shared, 1, Math.max(Atomics.load(shared, 1), rss));
         Atomics.add(shared, 2, 1);
       } catch {}
       if (Atomics.load(shared, 3) === 0) setTimeout(tick, 20);
     };
     tick();`,
    { eval: true, workerData: { pid, shared } },
  );
  return {
    peaks: () => ({ peakFds: Atomics.load(shared, 0), peakRssKiB: Atomics.load(shared, 1), samples: Atomics.load(shared, 2) }),
    async stop() {
      Atomics.store(shared, 3, 1);
      await sleep(40);
      await worker.terminate();
    },
  };
}

// Raw RFC 6455 pieces (client side: masked).
function frame(opcode, payload, declaredLength = payload.length) {
  const mask = randomBytes(4);
  let head;
  if (declaredLength < 126) head = Buffer.from([0x80 | opcode, 0x80 | declaredLength]);
  else if (declaredLength < 65536) (head = Buffer.from([0x80 | opcode, 0x80 | 126, 0, 0])).writeUInt16BE(declaredLength, 2);
  else (head = Buffer.alloc(10)).writeBigUInt64BE(BigInt(declaredLength), 2), (head[0] = 0x80 | opcode), (head[1] = 0x80 | 127);
  const body = Buffer.from(payload.map((byte, i) => byte ^ mask[i & 3]));
  return Buffer.concat([head, mask, body]);
}
/** The 14-byte header of a masked 100 KB binary frame, without its payload. */
const oversizedHeader = () => frame(0x2, Buffer.alloc(0), 100 * 1024);
const smallText = (text) => frame(0x1, Buffer.from(text));

/**
 * A raw upgrade request; resolves with its status (a number, 'timeout', 'reset' or 'closed') once
 * the response head is in, the socket then paused (nothing more is read) and not closed.
 */
function rawUpgrade(port, held, timeoutMs = 5000) {
  return new Promise((done) => {
    const started = Date.now();
    const socket = net.connect({ port, host: '127.0.0.1' });
    held.push(socket);
    let head = '';
    let settled = false;
    const finish = (status) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.removeListener('data', onData);
      socket.pause();
      done({ status, socket, ms: Date.now() - started });
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    const onData = (chunk) => {
      head += chunk.toString('latin1');
      const end = head.indexOf('\r\n\r\n');
      if (end >= 0) finish(Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? 0));
    };
    socket.on('data', onData);
    socket.on('error', () => finish('reset'));
    socket.on('close', () => finish('closed'));
    socket.once('connect', () =>
      socket.write(
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      ),
    );
  });
}

/** A well-behaved client between waves: its answer and how long it took; its socket destroyed. */
async function probe(port) {
  const mine = [];
  const { status, ms } = await rawUpgrade(port, mine, 5000);
  for (const socket of mine) socket.destroy();
  return { status, ms };
}

/** Waves of raw attackers, each run by `onUpgraded(socket)` when it gets 101. */
async function waves(server, held, { total, wave, onUpgraded }) {
  const statuses = {};
  const normal = { statuses: {}, maxMs: 0 };
  for (let sent = 0; sent < total; sent += wave) {
    await Promise.all(
      Array.from({ length: Math.min(wave, total - sent) }, async () => {
        const { status, socket } = await rawUpgrade(server.port, held);
        tally(statuses, status);
        socket.on('error', () => {});
        if (status === 101) onUpgraded(socket);
      }),
    );
    const answer = await probe(server.port);
    tally(normal.statuses, answer.status);
    normal.maxMs = Math.max(normal.maxMs, answer.ms);
  }
  return { statuses, normalClient: normal };
}

const pick = (stats, keys) => Object.fromEntries(keys.filter((k) => stats?.[k] !== undefined).map((k) => [k, stats[k]]));
const STAT_KEYS = ['live', 'reserved', 'closing', 'refused', 'closed', 'connectionsDropped', 'error', 'status'];

const attacks = {
  'lingering-close': {
    flags: [],
    async run(server, held) {
      const header = oversizedHeader();
      // Then never read again (not even the server's FIN is seen), never answer the close frame, never close.
      const got = await waves(server, held, { total: 1000, wave: 100, onUpgraded: (socket) => socket.write(header) });
      await sleep(3000);
      return got;
    },
  },
  'rate-close': {
    flags: [['message-rate', '1']],
    async run(server, held) {
      const got = await waves(server, held, {
        total: 1000,
        wave: 100,
        onUpgraded: (socket) => socket.write(Buffer.concat([smallText('a'), smallText('b'), smallText('c')])),
      });
      await sleep(3000);
      return got;
    },
  },
  slowloris: {
    flags: [],
    async run(server, held) {
      const COUNT = 500;
      let droppedByServer = 0;
      const tickers = [];
      const started = Date.now();
      await Promise.all(
        Array.from({ length: COUNT }, () => {
          const socket = net.connect({ port: server.port, host: '127.0.0.1' });
          held.push(socket);
          socket.on('error', () => {});
          socket.on('data', () => {});
          let mine = true;
          socket.once('close', () => {
            if (mine) droppedByServer++;
            mine = false;
          });
          socket.destroyOurs = () => (mine = false);
          return new Promise((ok) => {
            socket.once('connect', () => {
              socket.write('GET /ws HTTP/1.1\r\nHost: x\r\n');
              let n = 0;
              tickers.push(setInterval(() => socket.writable && socket.write(`X-Trickle-${n++}: y\r\n`), 1000));
              ok();
            });
            socket.once('close', ok);
          });
        }),
      );
      const connectedMs = Date.now() - started;
      await sleep(2500);
      const normal = await probe(server.port); // a well-behaved client in the middle of it
      await sleep(2500);
      const stats = await server.stats();
      for (const t of tickers) clearInterval(t);
      for (const socket of held) socket.destroyOurs?.();
      return {
        sockets: COUNT,
        connectedMs,
        droppedByServerWithin5s: droppedByServer,
        normalClient: normal,
        pendingConnections: stats?.process?.pendingConnections,
        connectionsDropped: stats?.connectionsDropped,
      };
    },
  },
  'subscription-flood': {
    flags: [['handler', 'pubsub']],
    async run(server, held, result) {
      const COUNT = 300_000;
      const WINDOW = 4000; // subscribes in flight (~0.4 MB of answers queued at most)
      const rssBefore = result.baselineRssKiB;
      const ws = await new Promise((ok, fail) => {
        const socket = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
        socket.once('open', () => ok(socket));
        socket.once('error', fail);
      });
      held.push({ destroy: () => ws.terminate() });
      await sleep(300);
      const rssConnected = rssKiB(server.pid);
      const answers = {};
      let answered = 0;
      let closed;
      let allAnswered;
      let roomAgain = () => {};
      const done = new Promise((r) => (allAnswered = r));
      ws.on('message', (data) => {
        const message = JSON.parse(String(data));
        tally(answers, message.type === 'error' ? `error:${message.code}` : message.type);
        if (++answered === COUNT) allAnswered();
        if (sent - answered < WINDOW / 2) roomAgain();
      });
      ws.on('close', (code) => {
        closed = code;
        allAnswered();
        roomAgain();
      });
      ws.on('error', () => {});
      const started = Date.now();
      const deadline = started + 60_000;
      let sent = 0;
      // Batches bounded by this side's send buffer and by the answers not yet read (a client that
      // sends far ahead of its reading is closed by the current tree as a slow consumer, 1013).
      while (sent < COUNT && closed === undefined && Date.now() < deadline) {
        while (sent < COUNT && ws.bufferedAmount < 256 * 1024 && sent - answered < WINDOW) ws.send(`{"type":"subscribe","topic":"flood-${sent++}"}`);
        if (sent - answered >= WINDOW) await Promise.race([new Promise((r) => (roomAgain = r)), sleep(1000)]);
        else await new Promise((r) => setImmediate(r));
      }
      const sentMs = Date.now() - started;
      await Promise.race([done, sleep(Math.max(0, deadline - Date.now()))]);
      const answeredMs = Date.now() - started;
      const stats = await server.stats();
      const rssAfter = rssKiB(server.pid);
      return {
        sent,
        sentMs,
        answered,
        answeredMs,
        answers,
        closedWith: closed ?? null,
        topics: stats?.topics && { count: stats.topics.count, subscriptions: stats.topics.subscriptions },
        rssBeforeKiB: rssBefore,
        rssConnectedKiB: rssConnected,
        rssAfterKiB: rssAfter,
        rssGrowthKiB: rssAfter - rssConnected,
      };
    },
  },
  'refused-never-close': {
    flags: [],
    async run(server, held, result) {
      const full = [];
      const fill = {};
      await Promise.all(
        Array.from({ length: LIMIT }, () =>
          new Promise((ok) => {
            const ws = new WebSocket(`ws://127.0.0.1:${server.port}/ws`);
            full.push(ws);
            held.push({ destroy: () => ws.terminate() });
            ws.once('open', () => ok(tally(fill, 101)));
            ws.once('unexpected-response', (_req, res) => ok(tally(fill, res.statusCode)));
            ws.once('error', () => ok(tally(fill, 'error')));
          }),
        ),
      );
      await sleep(300);
      result.baselineFullFds = fdCount(server.pid);
      const statuses = {};
      for (let sent = 0; sent < 500; sent += 100) {
        await Promise.all(
          Array.from({ length: 100 }, async () => {
            const { status, socket } = await rawUpgrade(server.port, held);
            socket.on('error', () => {});
            tally(statuses, status); // paused: only the server can end it
          }),
        );
      }
      await sleep(3000);
      return { fill, statuses, normalClientsStillOpen: full.filter((ws) => ws.readyState === WebSocket.OPEN).length };
    },
  },
};

async function runOne(name, tree) {
  const attack = attacks[name];
  const server = await startServer(tree, attack.flags);
  const held = [];
  const result = { flags: server.flags.join(' '), skippedFlags: server.skipped };
  let sampler;
  try {
    await sleep(1000); // let startup work finish
    result.baselineFds = await settledFdCount(server.pid);
    result.baselineRssKiB = rssKiB(server.pid);
    sampler = startSampler(server.pid);
    const cpu = process.cpuUsage();
    const started = Date.now();
    let timer;
    result.got = await Promise.race([
      attack.run(server, held, result).catch((error) => ({ error: String(error?.stack ?? error) })),
      new Promise((r) => (timer = setTimeout(() => r({ error: 'attack did not finish within 120 s' }), 120_000))),
    ]);
    clearTimeout(timer);
    const wallMs = Date.now() - started;
    const used = process.cpuUsage(cpu);
    result.wallMs = wallMs;
    result.clientCpuPct = Math.round(((used.user + used.system) / 1000 / wallMs) * 100);
    result.fdsAfter = fdCount(server.pid); // attackers still hold their sockets
    result.statsAfter = pick(await server.stats(), STAT_KEYS);
    for (const socket of held) socket.destroy();
    held.length = 0;
    let released = fdCount(server.pid);
    for (const end = Date.now() + 3000; Date.now() < end && released > result.baselineFds + 5; ) {
      await sleep(100);
      released = fdCount(server.pid);
    }
    result.fdsAfterRelease = released;
    result.statsAfterRelease = pick(await server.stats(), STAT_KEYS);
    Object.assign(result, sampler.peaks());
    result.heldFds = result.peakFds - result.baselineFds;
  } finally {
    await sampler?.stop();
    for (const socket of held) socket.destroy();
    result.stoppedBy = await server.stop();
  }
  return result;
}

const ratio = (b, a) => (a > 0 ? Math.round((b / a) * 1000) / 1000 : null);
const out = { runtime, maxConnections: LIMIT, closeTimeout: CLOSE_TIMEOUT, trees, attacks: {} };
for (const name of selected) {
  const entry = {};
  for (const side of ['a', 'b']) {
    log(`${runtime} ${name} ${side} (${trees[side]})…`);
    entry[side] = await runOne(name, trees[side]);
    const r = entry[side];
    log(`  fds ${r.baselineFds} → peak ${r.peakFds} → after ${r.fdsAfter} → released ${r.fdsAfterRelease}; peak RSS ${r.peakRssKiB} KiB; client CPU ${r.clientCpuPct} %; ${JSON.stringify(r.got).slice(0, 300)}`);
  }
  entry.ratio = {
    peakFds: ratio(entry.b.peakFds, entry.a.peakFds),
    peakRss: ratio(entry.b.peakRssKiB, entry.a.peakRssKiB),
    heldFds: ratio(entry.b.heldFds, entry.a.heldFds),
  };
  out.attacks[name] = entry;
}
console.log(JSON.stringify(out));
