// Load client for bench/soak.mjs. Runs as a forked child (IPC channel) so that its sockets, CPU and
// memory are neither the server's nor the orchestrator's. Requests arrive as IPC messages with an
// `id`; each gets exactly one reply `{ id, type: 'result', ... }` or `{ id, type: 'error', error }`.
// Unsolicited `{ type: 'progress', ... }` messages report a running soak.
//
//   { cmd: 'idle-open', url, count, addresses, concurrency }   open a pool of idle WebSockets
//   { cmd: 'soak', url, cycles, deadline, workers, addresses, oversizedEvery, vanishEvery,
//     oversizedBytes, cycleTimeoutMs }                           churn connections (see below)
//   { cmd: 'idle-check', timeoutMs }   every pooled socket sends one message and awaits its echo
//   { cmd: 'idle-close', timeoutMs }   closes the pool cleanly (code 1000), terminates stragglers
//   { cmd: 'exit' }
//
// One soak cycle (local index n): connect, send one message, verify the echo, then end the
// connection with the next of three endings in turn: an abrupt TCP reset
// (`ws._socket.resetAndDestroy()`), a FIN without a close frame (`ws.terminate()`), a clean close
// (code 1000 expected back). Every `oversizedEvery`-th cycle instead sends a message bigger than
// the server's --max-payload and expects close 1009; every `vanishEvery`-th cycle is a raw TCP
// client that writes (part of) an upgrade request and then resets. Source addresses rotate over
// `addresses` (127.0.0.x) so that ports in TIME_WAIT are spread. Only 127.0.0.1 is targeted.
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { assertLoopbackSources, bindableSource, closeSockets, echoOnce, openWebSocket, percentileSorted as percentile, pool as runPool, r, serveCommands, wsUrlOf } from './lib.mjs';

const PREFIX = 'Server received: ';
const ENDINGS = ['reset', 'terminate', 'close'];

const round = (n, digits = 3) => r(n, digits);

function bump(map, key, by = 1) {
  map[key] = (map[key] ?? 0) + by;
}

// ---------- idle pool ----------
const pool = [];

async function idleOpen({ url, count, addresses, concurrency = 50, handshakeTimeoutMs = 10_000 }) {
  const wsUrl = wsUrlOf(url);
  assertLoopbackSources(addresses);
  const failures = {};
  const wallMs = await runPool(count, concurrency, async (index) => {
    const { ws, failure } = await openWebSocket(WebSocket, wsUrl, { handshakeTimeoutMs, localAddress: addresses[index % addresses.length] });
    if (failure) return bump(failures, failure.replace(/^error: /, 'connect-error:').replace(/^http /, 'http-').replace(/^closed before open: /, 'closed-before-open-'));
    ws.poolIndex = index;
    pool.push(ws);
  });
  return { type: 'result', requested: count, opened: pool.length, failures, wallMs: round(wallMs, 1) };
}

async function idleCheck({ timeoutMs = 15_000 }) {
  const droppedCodes = {};
  // A socket the server (or the network) dropped while idle.
  for (const ws of pool) if (ws.closedEarly !== undefined) bump(droppedCodes, String(ws.closedEarly));
  const result = await echoOnce(WebSocket, pool, { timeoutMs, textFor: (ws) => `idle-${process.pid}-${ws.poolIndex}`, expectedFor: (_ws, text) => PREFIX + text });
  const droppedDuringCheck = pool.filter((ws) => ws.readyState !== WebSocket.OPEN).length;
  return {
    type: 'result',
    pooled: pool.length,
    ok: result.ok,
    bad: result.bad,
    missing: result.missing,
    droppedBeforeCheck: Object.values(droppedCodes).reduce((a, b) => a + b, 0),
    droppedCodes,
    notOpenAfterCheck: droppedDuringCheck,
    firstBad: result.firstBad,
    wallMs: result.wallMs,
  };
}

async function idleClose({ timeoutMs = 15_000 }) {
  const closed = await closeSockets(WebSocket, pool, { timeoutMs, reason: 'soak done' });
  pool.length = 0;
  return { type: 'result', closeCodes: closed.closeCodes, alreadyClosed: closed.alreadyClosed, terminated: closed.terminated, wallMs: closed.wallMs };
}

// ---------- soak ----------
async function soak(request) {
  const {
    url,
    cycles,
    deadline,
    workers = 100,
    addresses = ['127.0.0.1'],
    oversizedEvery = 100,
    vanishEvery = 100,
    oversizedBytes = 20 * 1024,
    cycleTimeoutMs = 20_000,
    handshakeTimeoutMs = 10_000,
    progressMs = 5000,
    label = 'soak',
  } = request;
  const wsUrl = wsUrlOf(url);
  assertLoopbackSources(addresses);
  const { port } = new URL(url);
  const oversized = 'x'.repeat(oversizedBytes);
  const tag = `${process.pid}`;

  const started = { reset: 0, terminate: 0, close: 0, oversized: 0, vanish: 0 };
  const ok = { reset: 0, terminate: 0, close: 0, oversized: 0, vanish: 0 };
  const failures = {}; // type → count
  const failureSamples = [];
  const errorsSeen = {}; // socket errors that did not make a cycle fail (ECONNRESET after a reset, …)
  const vanishVariants = {};
  const vanishResponses = {};
  const durations = new Float64Array(cycles);
  let durationCount = 0;
  let completed = 0;
  let failed = 0;
  let normalCount = 0;
  let next = 0;

  const fail = (type, detail) => {
    failed++;
    bump(failures, type);
    if (failureSamples.length < 20) failureSamples.push({ type, ...detail });
  };

  function normalCycle(n, kind, localAddress) {
    return new Promise((resolve) => {
      const t0 = performance.now();
      const text = `${tag}-${n}`;
      const expected = PREFIX + text;
      let phase = 'connecting';
      let settled = false;
      let ws;
      const finish = (failure, detail) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        completed++;
        if (failure) fail(failure, { kind, n, localAddress, ...detail });
        else {
          ok[kind]++;
          if (durationCount < durations.length) durations[durationCount++] = performance.now() - t0;
        }
        resolve();
      };
      const timer = setTimeout(() => {
        finish(`timeout-in-${phase}`);
        try {
          ws?.terminate();
        } catch {}
      }, cycleTimeoutMs);
      try {
        ws = new WebSocket(wsUrl, { perMessageDeflate: false, handshakeTimeout: handshakeTimeoutMs, localAddress: bindableSource(localAddress) });
      } catch (error) {
        finish(`connect-throw:${error.code ?? error.message}`);
        return;
      }
      ws.on('error', (error) => {
        const code = error.code ?? error.message;
        if (phase === 'connecting') finish(`connect-error:${code}`);
        else bump(errorsSeen, `${kind}/${phase}:${code}`);
      });
      ws.once('unexpected-response', (_req, res) => {
        finish(`http-${res.statusCode}`);
        res.resume();
        ws.terminate();
      });
      ws.once('open', () => {
        phase = 'open';
        ws.send(kind === 'oversized' ? oversized : text);
      });
      ws.once('message', (data, isBinary) => {
        if (kind === 'oversized') {
          finish('oversized-echoed', { bytes: data.length });
          ws.terminate();
          return;
        }
        const got = isBinary ? `<binary ${data.length} bytes>` : data.toString();
        if (got !== expected) {
          finish('echo-mismatch', { expected, got: got.slice(0, 200) });
          ws.terminate();
          return;
        }
        phase = 'ending';
        if (kind === 'reset') ws._socket.resetAndDestroy();
        else if (kind === 'terminate') ws.terminate();
        else ws.close(1000, 'soak');
      });
      ws.once('close', (code) => {
        if (kind === 'oversized') {
          if (code === 1009) finish();
          else finish(`unexpected-close-code:${code}:oversized`);
        } else if (phase === 'ending') {
          // reset/terminate end locally with 1006; a clean close must get 1000 back.
          if (kind === 'close' && code !== 1000) finish(`unexpected-close-code:${code}:clean-close`);
          else finish();
        } else if (phase === 'connecting') finish(`closed-before-open:${code}`);
        else finish(`unexpected-close-code:${code}:before-echo`);
      });
    });
  }

  // A client that vanishes mid-handshake. Variants rotate: 0 = full upgrade request then reset at
  // once; 1 = half the request then reset; 2 = full request, reset 1–5 ms later; 3 = full request,
  // reset as soon as the first response bytes arrive (the server may have opened the socket).
  function vanishCycle(n, localAddress) {
    return new Promise((resolve) => {
      const t0 = performance.now();
      const variant = Math.floor(n / vanishEvery) % 4;
      bump(vanishVariants, String(variant));
      let connected = false;
      let settled = false;
      const finish = (failure, detail) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        completed++;
        if (failure) fail(failure, { kind: 'vanish', variant, n, localAddress, ...detail });
        else {
          ok.vanish++;
          if (durationCount < durations.length) durations[durationCount++] = performance.now() - t0;
        }
        resolve();
      };
      const socket = net.connect({ host: '127.0.0.1', port: Number(port), localAddress: bindableSource(localAddress) });
      const timer = setTimeout(() => {
        finish(`timeout-vanish-variant-${variant}`);
        socket.destroy();
      }, cycleTimeoutMs);
      const key = randomBytes(16).toString('base64');
      const requestText =
        `GET /ws HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`;
      socket.on('error', (error) => {
        const code = error.code ?? error.message;
        if (!connected) finish(`vanish-connect-error:${code}`);
        else bump(errorsSeen, `vanish/${variant}:${code}`);
      });
      let httpFailure;
      socket.once('close', () => finish(connected ? httpFailure : 'vanish-closed-before-connect'));
      socket.once('connect', () => {
        connected = true;
        if (variant === 0) {
          socket.write(requestText);
          socket.resetAndDestroy();
        } else if (variant === 1) {
          socket.write(requestText.slice(0, Math.floor(requestText.length / 2)));
          socket.resetAndDestroy();
        } else if (variant === 2) {
          socket.write(requestText);
          setTimeout(() => socket.resetAndDestroy(), 1 + (n % 5));
        } else {
          socket.once('data', (chunk) => {
            const status = /^HTTP\/1\.1 (\d{3})/.exec(chunk.toString('latin1'))?.[1] ?? 'unparsed';
            bump(vanishResponses, status);
            if (status !== '101') httpFailure = `vanish-http-${status}`;
            socket.resetAndDestroy();
          });
          socket.write(requestText);
        }
      });
    });
  }

  const runOne = (n) => {
    const localAddress = addresses[n % addresses.length];
    if (oversizedEvery > 0 && n % oversizedEvery === Math.floor(oversizedEvery / 2)) {
      started.oversized++;
      return normalCycle(n, 'oversized', localAddress);
    }
    if (vanishEvery > 0 && n % vanishEvery === vanishEvery - 1) {
      started.vanish++;
      return vanishCycle(n, localAddress);
    }
    const kind = ENDINGS[normalCount++ % ENDINGS.length];
    started[kind]++;
    return normalCycle(n, kind, localAddress);
  };

  const startedAt = performance.now();
  let lastProgress = { at: startedAt, completed: 0 };
  const progress = setInterval(() => {
    const now = performance.now();
    process.send?.({
      type: 'progress',
      label,
      pid: process.pid,
      completed,
      failed,
      rate: round(((completed - lastProgress.completed) * 1000) / (now - lastProgress.at), 1),
      elapsedS: round((now - startedAt) / 1000, 1),
    });
    lastProgress = { at: now, completed };
  }, progressMs);
  let stoppedBy = 'cycles';
  try {
    await Promise.all(
      Array.from({ length: Math.min(workers, cycles) }, async (_, w) => {
        // Ramp up over ~0.5 s rather than opening `workers` sockets in the same tick.
        await new Promise((r) => setTimeout(r, Math.floor((w * 500) / workers)));
        while (next < cycles) {
          if (Date.now() >= deadline) {
            stoppedBy = 'deadline';
            return;
          }
          await runOne(next++);
        }
      }),
    );
  } finally {
    clearInterval(progress);
  }
  const wallMs = performance.now() - startedAt;
  const sorted = Array.from(durations.subarray(0, durationCount)).sort((a, b) => a - b);
  return {
    type: 'result',
    label,
    pid: process.pid,
    requested: cycles,
    started: next,
    completed,
    failed,
    stoppedBy,
    wallMs: round(wallMs, 1),
    cyclesPerSecond: round((completed * 1000) / wallMs, 1),
    byKind: { started, ok },
    failures,
    failureSamples,
    errorsSeen,
    vanishVariants,
    vanishResponses,
    cycleMs: { p50: round(percentile(sorted, 50)), p99: round(percentile(sorted, 99)), max: round(sorted.at(-1) ?? null) },
  };
}

serveCommands(
  { 'idle-open': idleOpen, soak, 'idle-check': idleCheck, 'idle-close': idleClose },
  {
    onExit: () => {
      for (const ws of pool) ws.terminate();
    },
  },
);
