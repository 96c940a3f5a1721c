// Load client for bench/idle.mjs and bench/run.mjs. Runs as a forked child (IPC channel, see
// serveCommands in lib.mjs) so that its sockets, CPU and memory are not the server's and not the
// orchestrator's. Commands:
//   { cmd: 'connect', url, connections, concurrency, handshakeTimeoutMs, addresses? }
//     → opens `connections` WebSockets, at most `concurrency` handshakes in flight, source addresses
//       round-robin over `addresses` (127.x.x.x; none = the kernel's choice)
//     → { type: 'connected', opened, failures, failureReasons, wallMs, connectRate, handshake: {p50,p99,max,mean}, handshakeHistogram }
//       (and a { type: 'progress', label: 'connect', done, failures, total, elapsedS } message every 10 s meanwhile)
//   { cmd: 'echo', timeoutMs } → each open socket sends one text message and awaits its echo
//     → { type: 'echoed', ok, bad, missing, droppedBeforeEcho, wallMs, firstBad }
//   { cmd: 'echo-loop', durationMs, timeoutMs } → closed loop: every open socket sends a message,
//       awaits its echo (checked), sends the next, … until `durationMs` have passed; then each
//       finishes the round trip it has in flight (up to `timeoutMs`), so every message sent was
//       echoed (or is counted missing)
//     → { type: 'echo-looped', messages, ok, bad, missing, wallMs, latency: {p50,p90,p99,max,mean}, latencyHistogram, clientCpuUs,
//         roundTrips: { <round trips completed>: <sockets> } }
//   { cmd: 'close', timeoutMs } → closes every socket (close handshake, then terminate stragglers)
//     → { type: 'closed', closedCleanly, terminated, droppedWhileIdle, wallMs }
//   { cmd: 'exit' } → exits.
// Only loopback targets and source addresses are accepted.
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { Histogram, assertLoopbackSources, closeSockets, echoOnce, openWebSocket, percentileSorted, pool, r, serveCommands, wsUrlOf } from './lib.mjs';

const PREFIX = 'Server received: ';
const sockets = [];

async function connect({ url, connections, concurrency, handshakeTimeoutMs, addresses = [] }) {
  const wsUrl = wsUrlOf(url);
  assertLoopbackSources(addresses);
  const times = [];
  const histogram = new Histogram();
  const failureReasons = {};
  let failures = 0;
  const t0 = performance.now();
  // Progress every 10 s, so that a slow connect (other load, SYN retransmits) shows while it lasts.
  const progress = setInterval(
    () => process.send?.({ type: 'progress', label: 'connect', done: sockets.length, failures, total: connections, elapsedS: r((performance.now() - t0) / 1000, 0) }),
    10_000,
  );
  const wallMs = await pool(connections, concurrency, async (index) => {
    const started = performance.now();
    const localAddress = addresses.length ? addresses[index % addresses.length] : undefined;
    const { ws, failure } = await openWebSocket(WebSocket, wsUrl, { handshakeTimeoutMs, localAddress });
    if (ws) {
      const ms = performance.now() - started;
      times.push(ms);
      histogram.record(ms);
      ws.index = index;
      sockets.push(ws);
    } else {
      failures++;
      failureReasons[failure] = (failureReasons[failure] ?? 0) + 1;
    }
  });
  clearInterval(progress);
  times.sort((a, b) => a - b);
  const mean = times.length ? times.reduce((a, b) => a + b, 0) / times.length : null;
  return {
    type: 'connected',
    requested: connections,
    opened: sockets.length,
    failures,
    failureReasons,
    wallMs: r(wallMs, 1),
    connectRate: r(sockets.length / (wallMs / 1000), 1),
    handshake: { p50: r(percentileSorted(times, 50), 3), p99: r(percentileSorted(times, 99), 3), max: r(times.at(-1) ?? null, 3), mean: r(mean, 3) },
    handshakeHistogram: histogram.toJSON(),
  };
}

async function echo({ timeoutMs }) {
  const result = await echoOnce(WebSocket, sockets, { timeoutMs, textFor: (ws) => `ping-${ws.index}` });
  const dropped = sockets.filter((ws) => ws.readyState !== WebSocket.OPEN).length;
  // A socket that closed while its echo was awaited never answered: missing.
  return { type: 'echoed', ok: result.ok, bad: result.bad, missing: result.missing + result.closedWhileWaiting, droppedBeforeEcho: dropped, wallMs: result.wallMs, firstBad: result.firstBad };
}

/** Closed loop: one message in flight per socket, each sent when the previous echo arrived. */
async function echoLoop({ durationMs, timeoutMs = 30_000 }) {
  const histogram = new Histogram();
  const open = sockets.filter((ws) => ws.readyState === WebSocket.OPEN);
  let messages = 0;
  let ok = 0;
  let bad = 0;
  let firstBad;
  let inFlight = 0;
  let sending = true;
  const cpu0 = process.cpuUsage();
  const startedAt = performance.now();
  const deadline = startedAt + durationMs;
  let finish;
  const finished = new Promise((resolvePromise) => (finish = resolvePromise));

  const sendNext = (ws) => {
    ws.seq = (ws.seq ?? 0) + 1;
    ws.expected = `${PREFIX}e${ws.index}-${ws.seq}`;
    ws.sentAt = performance.now();
    inFlight++;
    messages++;
    ws.send(ws.expected.slice(PREFIX.length));
  };
  function onMessage(data, isBinary) {
    const ws = this;
    const now = performance.now();
    if (ws.sentAt === undefined) return;
    histogram.record(now - ws.sentAt);
    ws.sentAt = undefined;
    inFlight--;
    const got = isBinary ? `<binary ${data.length} bytes>` : data.toString();
    if (got === ws.expected) ok++;
    else {
      bad++;
      firstBad ??= { expected: ws.expected, got: got.slice(0, 200) };
    }
    if (sending && now < deadline) sendNext(ws);
    else if (inFlight === 0) finish();
  }
  for (const ws of open) ws.on('message', onMessage);
  for (const ws of open) sendNext(ws);
  const stopTimer = setTimeout(() => {
    sending = false;
    if (inFlight === 0) finish();
  }, durationMs);
  const giveUp = setTimeout(finish, durationMs + timeoutMs);
  await finished;
  sending = false;
  clearTimeout(stopTimer);
  clearTimeout(giveUp);
  const wallMs = performance.now() - startedAt;
  for (const ws of open) ws.removeListener('message', onMessage);
  const cpu = process.cpuUsage(cpu0);
  // Fairness: how many round trips each socket completed (count of sockets by round trips).
  const roundTrips = {};
  for (const ws of open) {
    const done = (ws.seq ?? 0) - (ws.sentAt === undefined ? 0 : 1);
    roundTrips[done] = (roundTrips[done] ?? 0) + 1;
  }
  return {
    type: 'echo-looped',
    sockets: open.length,
    messages,
    ok,
    bad,
    missing: inFlight,
    firstBad,
    wallMs: r(wallMs, 1),
    messagesPerSecond: r((ok + bad) / (wallMs / 1000), 1),
    latency: histogram.summary(),
    latencyHistogram: histogram.toJSON(),
    clientCpuUs: { user: cpu.user, system: cpu.system },
    roundTrips,
    closedDuring: open.filter((ws) => ws.readyState !== WebSocket.OPEN).length,
  };
}

async function close({ timeoutMs }) {
  const droppedWhileIdle = sockets.filter((ws) => ws.closedEarly !== undefined).length;
  const closed = await closeSockets(WebSocket, sockets, { timeoutMs });
  sockets.length = 0;
  return { type: 'closed', closedCleanly: closed.closedCleanly, terminated: closed.terminated, droppedWhileIdle, wallMs: closed.wallMs };
}

serveCommands(
  { connect, echo, 'echo-loop': echoLoop, close },
  {
    onExit: () => {
      for (const ws of sockets) ws.terminate();
    },
  },
);
