// Load client for bench/idle.mjs. Runs as a forked child (IPC channel) so that its sockets, CPU and
// memory are not the server's and not the orchestrator's. Commands arrive as IPC messages:
//   { cmd: 'connect', url, connections, concurrency, handshakeTimeoutMs }
//     → { type: 'connected', opened, failures, failureReasons, wallMs, connectRate, handshake: {p50,p99,max,mean} }
//   { cmd: 'echo', timeoutMs } → each open socket sends one text message and awaits its echo
//     → { type: 'echoed', ok, bad, missing, wallMs, firstBad }
//   { cmd: 'close', timeoutMs } → closes every socket (close handshake, then terminate stragglers)
//     → { type: 'closed', closedCleanly, terminated, wallMs }
//   { cmd: 'exit' } → exits.
// Only loopback targets are accepted.
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';

const sockets = [];

function send(message) {
  process.send?.(message);
}

function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index];
}

function round(n, digits = 3) {
  return n === null || n === undefined ? n : Number(n.toFixed(digits));
}

function assertLoopback(url) {
  const { hostname } = new URL(url);
  if (hostname !== '127.0.0.1') throw new Error(`refusing to target ${hostname}: loopback 127.0.0.1 only`);
}

async function connect({ url, connections, concurrency, handshakeTimeoutMs }) {
  assertLoopback(url);
  const wsUrl = new URL('/ws', url.replace(/^http/, 'ws')).href;
  const times = [];
  const failureReasons = {};
  let failures = 0;
  let next = 0;
  const fail = (reason) => {
    failures++;
    failureReasons[reason] = (failureReasons[reason] ?? 0) + 1;
  };

  const openOne = (index) =>
    new Promise((resolve) => {
      const started = performance.now();
      let settled = false;
      const done = (ok, reason) => {
        if (settled) return;
        settled = true;
        if (ok) times.push(performance.now() - started);
        else fail(reason);
        resolve();
      };
      let ws;
      try {
        ws = new WebSocket(wsUrl, { perMessageDeflate: false, handshakeTimeout: handshakeTimeoutMs });
      } catch (error) {
        done(false, `throw: ${error.message}`);
        return;
      }
      ws.index = index;
      ws.once('open', () => {
        sockets.push(ws);
        done(true);
      });
      ws.once('unexpected-response', (_req, res) => {
        done(false, `http ${res.statusCode}`);
        res.resume();
        ws.terminate?.();
      });
      ws.on('error', (error) => done(false, `error: ${error.code ?? error.message}`));
      ws.once('close', (code) => {
        if (!settled) done(false, `closed before open: ${code}`);
        else ws.closedEarly = code; // an open socket the server dropped while idle
      });
    });

  const startedAt = performance.now();
  const worker = async () => {
    while (next < connections) {
      const index = next++;
      await openOne(index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, connections) }, worker));
  const wallMs = performance.now() - startedAt;
  times.sort((a, b) => a - b);
  const mean = times.length ? times.reduce((a, b) => a + b, 0) / times.length : null;
  return {
    type: 'connected',
    requested: connections,
    opened: sockets.length,
    failures,
    failureReasons,
    wallMs: round(wallMs, 1),
    connectRate: round(sockets.length / (wallMs / 1000), 1),
    handshake: { p50: round(percentile(times, 50)), p99: round(percentile(times, 99)), max: round(times.at(-1) ?? null), mean: round(mean) },
  };
}

async function echo({ timeoutMs }) {
  const startedAt = performance.now();
  let ok = 0;
  let bad = 0;
  let firstBad;
  const pending = new Set();
  await new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    const check = () => {
      if (pending.size === 0) {
        clearTimeout(timer);
        resolve();
      }
    };
    for (const ws of sockets) {
      if (ws.readyState !== WebSocket.OPEN) continue;
      const text = `ping-${ws.index}`;
      const expected = `Server received: ${text}`;
      pending.add(ws);
      ws.once('message', (data, isBinary) => {
        const got = isBinary ? `<binary ${data.length} bytes>` : data.toString();
        if (got === expected) ok++;
        else {
          bad++;
          firstBad ??= { expected, got };
        }
        pending.delete(ws);
        check();
      });
      ws.send(text);
    }
    check();
  });
  const dropped = sockets.filter((ws) => ws.readyState !== WebSocket.OPEN).length;
  return { type: 'echoed', ok, bad, missing: pending.size, droppedBeforeEcho: dropped, wallMs: round(performance.now() - startedAt, 1), firstBad };
}

async function closeAll({ timeoutMs }) {
  const startedAt = performance.now();
  const droppedWhileIdle = sockets.filter((ws) => ws.closedEarly !== undefined).length;
  let closedCleanly = 0;
  await new Promise((resolve) => {
    let remaining = 0;
    const timer = setTimeout(resolve, timeoutMs);
    for (const ws of sockets) {
      if (ws.readyState === WebSocket.CLOSED) continue;
      remaining++;
      ws.once('close', () => {
        closedCleanly++;
        if (--remaining === 0) {
          clearTimeout(timer);
          resolve();
        }
      });
      ws.close(1000, 'bench done');
    }
    if (remaining === 0) {
      clearTimeout(timer);
      resolve();
    }
  });
  let terminated = 0;
  for (const ws of sockets) {
    if (ws.readyState !== WebSocket.CLOSED) {
      terminated++;
      ws.terminate();
    }
  }
  sockets.length = 0;
  return { type: 'closed', closedCleanly, terminated, droppedWhileIdle, wallMs: round(performance.now() - startedAt, 1) };
}

process.on('message', async (message) => {
  try {
    if (message.cmd === 'connect') send(await connect(message));
    else if (message.cmd === 'echo') send(await echo(message));
    else if (message.cmd === 'close') send(await closeAll(message));
    else if (message.cmd === 'exit') {
      for (const ws of sockets) ws.terminate();
      process.exit(0);
    } else send({ type: 'error', error: `unknown command ${message.cmd}` });
  } catch (error) {
    send({ type: 'error', error: error?.stack ?? String(error) });
  }
});

// Never outlive the orchestrator.
process.on('disconnect', () => process.exit(0));
send({ type: 'ready', pid: process.pid });
