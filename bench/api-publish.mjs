#!/usr/bin/env node
// Server API publish throughput (issue 14): `POST /api/publish` to one topic with a large crowd
// subscribed, against the same with one subscriber (the baseline: what a request costs without
// the fan-out).
//
//   npm run build && node bench/api-publish.mjs [--subscribers 10000] [--requests 400]
//       [--baseline-requests 4000] [--concurrency 8] [--rounds 1] [--addresses 127.0.0.1,…,127.0.0.4]
//
// Per round and crowd size (the crowd, then the one subscriber), with one server process at a time:
//   1. a hubbub Node server (`dist/node.js --handler pubsub --api-key …`, heartbeat off) on 127.0.0.1;
//   2. load-client processes (bench/api-publish-client.mjs, at most 5,000 sockets each: every process
//      has a 20,000-fd hard limit) open the subscribers, source addresses round-robin over
//      --addresses, and each subscribes to `bench` and waits for its answer;
//   3. 50 untimed publishes (warm-up), each delivery awaited; then the server's utime+stime is read,
//      `requests` publishes go out over `concurrency` kept-alive HTTP connections (node:http Agent,
//      at most `concurrency` in flight), and the time to the last answer (requests/s) and to the
//      last delivery counted by the clients (deliveries/s) are taken; the CPU is read again once
//      every delivery has arrived. CPU µs per request = CPU ÷ requests; per delivery = CPU ÷
//      (requests × subscribers).
// Every answer must be 200, and every subscriber must count every publication (no more, no less).
// One JSON object goes to stdout; progress to stderr. Loopback only. Not part of `npm test`.
import http from 'node:http';
import { join } from 'node:path';
import { CLK_TCK, cpuTicks, createLog, forkClient, here, int, loadAverage, loopbackList, machineInfo, median, r, ratio, root, runMain, sleep, split, startServer } from './lib.mjs';

const log = createLog('api-publish');
const KEY = 'bench-api-key-0123456789';
const TOPIC = 'bench';
const PER_CLIENT = 5000;
const WARMUP = 50;

function parseArgs(argv) {
  const opts = { subscribers: 10_000, requests: 400, baselineRequests: 4000, concurrency: 8, rounds: 1, addresses: ['127.0.0.1', '127.0.0.2', '127.0.0.3', '127.0.0.4'], timeout: 900 };
  for (let i = 0; i < argv.length; i++) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '--subscribers') opts.subscribers = int(flag, value, 1);
    else if (flag === '--requests') opts.requests = int(flag, value, 1);
    else if (flag === '--baseline-requests') opts.baselineRequests = int(flag, value, 1);
    else if (flag === '--concurrency') opts.concurrency = int(flag, value, 1);
    else if (flag === '--rounds') opts.rounds = int(flag, value, 1);
    else if (flag === '--addresses') opts.addresses = loopbackList(flag, value);
    else if (flag === '--timeout') opts.timeout = int(flag, value, 1);
    else throw new Error(`unknown flag ${flag}`);
    i++;
  }
  return opts;
}

const cpuUs = (before, after) => ((after.utime + after.stime - before.utime - before.stime) * 1e6) / CLK_TCK;

/** `count` publishes, at most `concurrency` in flight on kept-alive connections; resolves when every answer is in. */
async function publishMany(agent, url, count, concurrency, firstSeq) {
  let next = 0;
  const pad = 'x'.repeat(64);
  const one = (seq) =>
    new Promise((resolve, reject) => {
      const body = JSON.stringify({ topic: TOPIC, data: { seq, pad } });
      const req = http.request(`${url}/api/publish`, { method: 'POST', agent, headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
        let text = '';
        res.setEncoding('utf8').on('data', (c) => (text += c));
        res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`publish answered ${res.statusCode}: ${text.slice(0, 200)}`))));
      });
      req.on('error', reject);
      req.end(body);
    });
  const started = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(concurrency, count) }, async () => {
      while (next < count) await one(firstSeq + next++);
    }),
  );
  return performance.now() - started;
}

/** Waits until the clients together counted `expected` messages (or fails after `timeoutMs` with what they counted). */
async function deliveries(clients, expected, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const counts = await Promise.all(clients.map((c) => c.request({ cmd: 'received' }, 10_000)));
    const messages = counts.reduce((a, c) => a + c.messages, 0);
    const bad = counts.reduce((a, c) => a + c.bad, 0);
    const closedEarly = counts.reduce((a, c) => a + c.closedEarly, 0);
    if (bad || closedEarly) throw new Error(`${bad} unexpected frames, ${closedEarly} sockets closed early`);
    if (messages > expected) throw new Error(`${messages} deliveries counted, ${expected} expected: duplicates`);
    if (messages === expected) return;
    if (Date.now() > deadline) throw new Error(`${messages} of ${expected} deliveries after ${timeoutMs} ms`);
    await sleep(20);
  }
}

async function measure(opts, subscribers, requests, round) {
  const name = `${subscribers} subscriber${subscribers === 1 ? '' : 's'}`;
  const server = await startServer({
    name,
    command: process.execPath,
    args: [join(root, 'dist/node.js'), '--host', '127.0.0.1', '--port', '0', '--handler', 'pubsub', '--api-key', KEY, '--max-connections', '20000', '--heartbeat-interval', '0', '--log-level', 'info'],
    log,
  });
  const clients = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: opts.concurrency });
  try {
    const sizes = split(subscribers, Math.ceil(subscribers / PER_CLIENT));
    for (const [i, count] of sizes.entries()) {
      const client = forkClient(join(here, 'api-publish-client.mjs'), { name: `load client ${i + 1}` });
      clients.push(client);
      await client.ready();
      // Each process its own share of the source addresses' round-robin.
      const addresses = opts.addresses.map((_, k) => opts.addresses[(k + i) % opts.addresses.length]);
      const c = await client.request({ cmd: 'connect', url: server.url, count, topic: TOPIC, addresses, concurrency: 100 }, 180_000);
      if (c.failures > 0) throw new Error(`${name}: ${c.failures} subscribers failed: ${JSON.stringify(c.failureReasons)}`);
    }
    log(`round ${round} ${name}: subscribed; warm-up`);
    await publishMany(agent, server.url, WARMUP, opts.concurrency, 0);
    await deliveries(clients, WARMUP * subscribers, 60_000);
    const before = cpuTicks(server.pid);
    const started = performance.now();
    const requestMs = await publishMany(agent, server.url, requests, opts.concurrency, WARMUP);
    await deliveries(clients, (WARMUP + requests) * subscribers, 300_000);
    const allMs = performance.now() - started;
    const after = cpuTicks(server.pid);
    const cpu = cpuUs(before, after);
    const result = {
      requestsPerSecond: r((requests * 1000) / requestMs, 1),
      deliveriesPerSecond: r((requests * subscribers * 1000) / allMs, 0),
      lastDeliveryAfterLastAnswerMs: r(allMs - requestMs, 1),
      serverCpuUsPerRequest: r(cpu / requests, 1),
      serverCpuUsPerDelivery: r(cpu / (requests * subscribers), 3),
    };
    log(`round ${round} ${name}: ${JSON.stringify(result)}`);
    return result;
  } finally {
    agent.destroy();
    await Promise.all(clients.map(async (c) => {
      await c.request({ cmd: 'close', timeoutMs: 20_000 }, 30_000).catch(() => {});
      await c.exit();
    }));
    await server.stop();
  }
}

runMain(log, async ({ setLimit }) => {
  const opts = parseArgs(process.argv.slice(2));
  setLimit(opts.timeout);
  const loadBefore = loadAverage();
  const runs = { crowd: [], baseline: [] };
  for (let round = 1; round <= opts.rounds; round++) {
    runs.crowd.push(await measure(opts, opts.subscribers, opts.requests, round));
    await sleep(500);
    runs.baseline.push(await measure(opts, 1, opts.baselineRequests, round));
  }
  const med = (list, key) => median(list.map((x) => x[key]));
  const summarise = (list) => Object.fromEntries(Object.keys(list[0]).map((key) => [key, med(list, key)]));
  const crowd = summarise(runs.crowd);
  const baseline = summarise(runs.baseline);
  const summary = {
    [`${opts.subscribers} subscribers`]: crowd,
    '1 subscriber': baseline,
    ratios: {
      requestsPerSecond: ratio(crowd.requestsPerSecond, baseline.requestsPerSecond),
      serverCpuPerRequest: ratio(crowd.serverCpuUsPerRequest, baseline.serverCpuUsPerRequest),
      serverCpuPerDelivery: ratio(crowd.serverCpuUsPerDelivery, baseline.serverCpuUsPerDelivery),
    },
  };
  process.stdout.write(`${JSON.stringify({ bench: 'api-publish', options: opts, machine: machineInfo({ loadBefore, loadAfter: loadAverage() }), summary, runs }, null, 2)}\n`);
});
