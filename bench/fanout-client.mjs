// Load client for bench/fanout.mjs (issue 4). Runs as a forked child (IPC channel) so that its
// sockets and CPU are neither the server's nor the orchestrator's. Commands arrive as IPC messages:
//   { cmd: 'connect', url, subscribers, addresses, concurrency, handshakeTimeoutMs }
//     → opens `subscribers` WebSockets (source addresses round-robin over `addresses`, via
//       localAddress) plus one trigger connection (from the first address), at most `concurrency`
//       handshakes in flight → { type: 'connected', opened, failures, failureReasons, wallMs }
//   { cmd: 'publish', size, warmup, messages, serverPid, messageTimeoutMs }
//     → sends `warmup` then `messages` triggers `fanout <payload>` on the trigger connection, where
//       <payload> is exactly `size` bytes: `<seq>|xxxx…`. Before each next trigger it waits until every
//       open socket (the subscribers and the trigger connection, which is subscribed too) has
//       received that message, or `messageTimeoutMs` passes. For each measured message it records the
//       time from the trigger's send to the first and to the last receipt. Around the measured
//       messages it reads the server's utime+stime from /proc/<serverPid>/stat (clock ticks), and the
//       monotonic clock (for cutting a CPU profile to the publish window).
//       Every socket checks that it sees each sequence number exactly once and in order.
//     → { type: 'published', … }
//   { cmd: 'close', timeoutMs } → close handshake on every socket, then terminate stragglers
//   { cmd: 'exit' } → exits.
// Only loopback targets and source addresses are accepted.
import { performance } from 'node:perf_hooks';
import WebSocket from 'ws';
import { assertLoopbackSources, closeSockets, cpuTicks, openWebSocket, percentileSorted as percentile, pool, r, serveCommands, wsUrlOf } from './lib.mjs';

const round = (n, digits = 3) => r(n, digits);

const PIPE = 0x7c; // '|'
const FILL = 0x78; // 'x'

/** Every open socket, the trigger connection included (it is subscribed too). */
const sockets = [];
let trigger;
let seqCounter = 0; // sequence numbers keep rising across payload sizes on one connection set

// Per-phase state, read by the shared message listener.
const phase = {
  active: false,
  size: 0,
  startSeq: 0, // first sequence number of the verified window
  current: -1, // sequence number being waited for
  currentCount: 0,
  target: 0, // receipts that complete the current message
  sentAt: 0,
  firstAt: 0,
  onComplete: undefined,
  // counters for the verified window
  received: 0,
  duplicates: 0, // a sequence number at or below one this socket has already seen
  gaps: 0, // sequence numbers skipped (seen a later one first)
  outOfOrder: 0, // arrivals that skipped ahead
  badPayload: 0, // wrong length, binary, unparsable or corrupted
  late: 0, // receipts of a message after its wait had timed out
};

const monotonicUs = () => Number(process.hrtime.bigint() / 1000n);

// Shared listener: `this` is the socket. Cheap on purpose: the client must keep up with N receipts.
function onMessage(data, isBinary) {
  const ws = this;
  const p = phase;
  let seq = 0;
  let i = 0;
  const n = data.length;
  for (; i < n; i++) {
    const c = data[i];
    if (c === PIPE) break;
    if (c < 0x30 || c > 0x39) {
      i = n;
      break;
    }
    seq = seq * 10 + (c - 0x30);
  }
  if (isBinary || i === 0 || i >= n || n !== p.size || data[n - 1] !== FILL) {
    if (p.active) p.badPayload++;
    return;
  }
  if (seq < ws.expected) {
    if (p.active) p.duplicates++;
    return;
  }
  if (seq > ws.expected) {
    if (p.active && seq >= p.startSeq) {
      p.gaps += seq - Math.max(ws.expected, p.startSeq);
      p.outOfOrder++;
    }
  }
  ws.expected = seq + 1;
  if (!p.active) return;
  p.received++;
  if (seq === p.current) {
    const now = performance.now();
    if (p.currentCount === 0) p.firstAt = now;
    if (++p.currentCount === p.target) p.onComplete?.(now);
  } else if (seq < p.current) {
    p.late++;
  }
}

async function connect({ url, subscribers, addresses, concurrency, handshakeTimeoutMs }) {
  const wsUrl = wsUrlOf(url);
  assertLoopbackSources(addresses);
  const failureReasons = {};
  let failures = 0;
  const openOne = async (index, localAddress) => {
    const { ws, failure } = await openWebSocket(WebSocket, wsUrl, {
      handshakeTimeoutMs,
      localAddress,
      setup: (socket) => {
        socket.index = index;
        socket.expected = 0;
        socket.on('message', onMessage);
      },
    });
    if (failure) {
      failures++;
      failureReasons[failure] = (failureReasons[failure] ?? 0) + 1;
    }
    return ws;
  };

  const startedAt = performance.now();
  await pool(subscribers, concurrency, async (index) => {
    const ws = await openOne(index, addresses[index % addresses.length]);
    if (ws) sockets.push(ws);
  });
  trigger = await openOne(-1, addresses[0]);
  if (!trigger) throw new Error(`trigger connection failed: ${JSON.stringify(failureReasons)}`);
  sockets.push(trigger);
  const wallMs = performance.now() - startedAt;
  return {
    type: 'connected',
    requested: subscribers,
    opened: sockets.length - 1,
    failures,
    failureReasons,
    wallMs: round(wallMs, 1),
    connectRate: round((sockets.length - 1) / (wallMs / 1000), 1),
  };
}

function payloadFor(seq, size) {
  const head = `${seq}|`;
  if (head.length >= size) throw new Error(`payload size ${size} is too small for sequence number ${seq}`);
  return head + 'x'.repeat(size - head.length);
}

/** Sends one trigger and waits until `target` sockets have it (or the timeout). */
function fanOnce(seq, size, timeoutMs) {
  const p = phase;
  return new Promise((resolve) => {
    p.current = seq;
    p.currentCount = 0;
    p.firstAt = 0;
    const timer = setTimeout(() => {
      p.onComplete = undefined;
      resolve({ complete: false, got: p.currentCount, firstMs: p.firstAt ? p.firstAt - p.sentAt : null });
    }, timeoutMs);
    p.onComplete = (now) => {
      clearTimeout(timer);
      p.onComplete = undefined;
      resolve({ complete: true, got: p.currentCount, allMs: now - p.sentAt, firstMs: p.firstAt - p.sentAt });
    };
    const text = `fanout ${payloadFor(seq, size)}`;
    p.sentAt = performance.now();
    trigger.send(text);
  });
}

function openSockets() {
  return sockets.filter((ws) => ws.readyState === WebSocket.OPEN);
}

async function publish({ size, warmup, messages, serverPid, messageTimeoutMs, graceMs = 1000 }) {
  if (!trigger || trigger.readyState !== WebSocket.OPEN) throw new Error('trigger connection is not open');
  const p = phase;
  p.size = size;

  // Warm-up: same path, not verified or timed, but every one must reach everybody before we go on
  // (this is also the barrier that proves every socket is subscribed).
  const warm = { sent: 0, complete: 0, incomplete: 0 };
  p.active = true;
  for (let i = 0; i < warmup; i++) {
    p.target = openSockets().length;
    const r = await fanOnce(seqCounter++, size, messageTimeoutMs);
    warm.sent++;
    if (r.complete) warm.complete++;
    else warm.incomplete++;
  }
  p.active = false;
  await new Promise((r) => setTimeout(r, 50)); // let any straggler of the warm-up land

  // Verified, timed window.
  const targets = openSockets();
  const target = targets.length;
  p.startSeq = seqCounter;
  for (const ws of sockets) ws.expected = Math.max(ws.expected, p.startSeq);
  Object.assign(p, { received: 0, duplicates: 0, gaps: 0, outOfOrder: 0, badPayload: 0, late: 0, target });
  p.active = true;
  const results = [];
  const clientCpu0 = process.cpuUsage();
  const cpu0 = cpuTicks(serverPid);
  const mono0 = monotonicUs();
  const t0 = performance.now();
  for (let i = 0; i < messages; i++) {
    results.push(await fanOnce(seqCounter++, size, messageTimeoutMs));
  }
  const t1 = performance.now();
  const mono1 = monotonicUs();
  const cpu1 = cpuTicks(serverPid);
  const clientCpu = process.cpuUsage(clientCpu0);
  const endSeq = seqCounter;
  // Let stragglers (only after a timeout) arrive, then count what never came.
  if (results.some((r) => !r.complete)) await new Promise((r) => setTimeout(r, graceMs));
  p.active = false;
  let missing = p.gaps;
  let socketsMissing = 0;
  for (const ws of targets) {
    const tail = Math.max(0, endSeq - Math.max(ws.expected, p.startSeq));
    missing += tail;
    if (tail > 0) socketsMissing++;
  }
  const closedDuring = targets.filter((ws) => ws.readyState !== WebSocket.OPEN).length;

  const all = results.filter((r) => r.complete).map((r) => r.allMs);
  const sorted = [...all].sort((a, b) => a - b);
  const firsts = results.map((r) => r.firstMs).filter((x) => x !== null).sort((a, b) => a - b);
  return {
    type: 'published',
    size,
    warmup: warm,
    messages,
    receivers: target,
    deliveriesExpected: messages * target,
    received: p.received,
    missing,
    socketsMissing,
    duplicates: p.duplicates,
    outOfOrder: p.outOfOrder,
    badPayload: p.badPayload,
    late: p.late,
    incompleteMessages: results.filter((r) => !r.complete).length,
    closedDuring,
    wallMs: round(t1 - t0, 1),
    serverCpuTicks: { utime: cpu1.utime - cpu0.utime, stime: cpu1.stime - cpu0.stime },
    clientCpuUs: { user: clientCpu.user, system: clientCpu.system },
    monotonicWindowUs: [mono0, mono1],
    timeToAllMs: sorted.map((x) => round(x)),
    timeToAllInOrderMs: all.map((x) => round(x)),
    timeToAllP50Ms: round(percentile(sorted, 50)),
    timeToAllP99Ms: round(percentile(sorted, 99)),
    timeToFirstP50Ms: round(percentile(firsts, 50)),
  };
}

async function closeAll({ timeoutMs }) {
  const droppedEarly = sockets.filter((ws) => ws.closedEarly !== undefined).length;
  const closed = await closeSockets(WebSocket, sockets, { timeoutMs });
  sockets.length = 0;
  trigger = undefined;
  return { type: 'closed', closedCleanly: closed.closedCleanly, terminated: closed.terminated, droppedEarly, wallMs: closed.wallMs };
}

serveCommands(
  { connect, publish, close: closeAll },
  {
    onExit: () => {
      for (const ws of sockets) ws.terminate();
    },
  },
);
