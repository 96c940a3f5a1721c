// A network partition of one node on the Redis backplane, made with a network namespace (test/netns.ts),
// not by killing processes: node A runs here, node B in the namespace and reaches Redis through a
// forwarder on the service link, which the test cuts. Established connections then hang silently,
// as in a real partition. B must report degraded, report connected again soon after the link
// returns, and its subscribers (who keep their sockets: only B's link to Redis is cut) must end
// with every offset exactly once in order, or with one reset when history no longer has the gap.
// Needs root (CI runs as root), Redis on 127.0.0.1:6379 (database 10) and socat; skips elsewhere.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import type WebSocket from 'ws';
import { connect, eventually, nodeServer, serviceSkip, sleep, startServer, type ServerProcess } from './helpers.ts';
import { createRemoteHost, forwardingUnavailable } from './netns.ts';

const DB = 10;
const skip = (await serviceSkip('redis', 6379)) || partitionSkip();

/** In CI (root) a missing tool fails like a missing service; elsewhere the file skips, saying why. */
function partitionSkip(): string | false {
  const reason = forwardingUnavailable();
  if (reason && process.env.CI && process.getuid?.() === 0) throw new Error(`CI: ${reason}`);
  return reason;
}

/** Offsets as runs of consecutive ones, `1-50,481-653`: a gap shows at a glance. */
function runsOf(offsets: number[]): string {
  const runs: string[] = [];
  offsets.forEach((o, i) => {
    if (i > 0 && o === offsets[i - 1]! + 1) runs[runs.length - 1] = `${runs[runs.length - 1]!.split('-')[0]}-${o}`;
    else runs.push(String(o));
  });
  return runs.join(',');
}

interface Message {
  type: string;
  offset: number;
  epoch?: string;
  reset?: boolean;
  recovered?: boolean;
  id?: unknown;
}

/** Every message of a socket, parsed, as it comes (no timer left behind once the socket closes). */
function collect(ws: WebSocket): Message[] {
  const got: Message[] = [];
  ws.on('message', (data: Buffer) => got.push(JSON.parse(data.toString()) as Message));
  return got;
}

/** A pubsub client that keeps its socket: every message and reset it got, in order. */
async function subscriber(server: ServerProcess, topic: string) {
  const ws = await connect(server.wsUrl);
  const all = collect(ws);
  ws.send(JSON.stringify({ type: 'subscribe', topic }));
  const [answer] = await eventually(async () => all, (a) => a.length > 0, 10_000);
  assert.equal(answer?.type, 'subscribed', JSON.stringify(answer));
  all.shift();
  return {
    ws,
    /** What came after the answer: messages and resets. */
    get got() {
      return all.filter((m) => m.type === 'message' || m.reset);
    },
    /** The last offset it holds (a reset's too). */
    get offset() {
      return all.length ? all[all.length - 1]!.offset : answer!.offset;
    },
  };
}

/** A client on A that publishes `{i}` on a topic, and every answer it got. */
async function publisher(server: ServerProcess) {
  const ws = await connect(server.wsUrl);
  const answers = collect(ws);
  return { ws, answers, send: (topic: string, i: number) => ws.send(JSON.stringify({ type: 'publish', topic, data: { i }, id: `${topic}/${i}` })) };
}

const health = async (node: ServerProcess) => (await (await fetch(`${node.url}/healthz`)).json()) as { status: string; backplane?: string };
const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

/** Until `ms` from now, how long until `node` reports `backplane`; -1 if it did not. */
async function timeUntil(node: ServerProcess, backplane: string, ms: number): Promise<number> {
  const start = Date.now();
  const h = await eventually(() => health(node), (h) => h.backplane === backplane, ms);
  return h.backplane === backplane ? Date.now() - start : -1;
}

describe('a network partition of one node (Redis backplane, network namespace)', { skip, timeout: 60_000 }, () => {
  before(async () => {
    const { Redis } = (await import('ioredis')) as unknown as { Redis: new (url: string) => { flushdb(): Promise<unknown>; quit(): Promise<unknown> } };
    const client = new Redis(`redis://127.0.0.1:6379/${DB}`);
    await client.flushdb();
    await client.quit();
  });

  /**
   * Node A here and node B on a remote host of its own, subscribers on B, a publisher on A
   * publishing every 10 ms on `steady` (from before the cut) and, from the cut on, on `quiet` (a
   * topic B had heard nothing of when it was cut). B's link to Redis is cut for `cutMs`, and Redis
   * lets B's connections go meanwhile (forget: a long partition, in short); then the link returns
   * and the publisher goes on for a second. Returns what each got. Everything is torn down after,
   * failed or not: a socket to a namespace that is gone would hang, and hold this process open.
   */
  async function partitionB(label: string, extra: string[], cutMs: number) {
    const remote = await createRemoteHost();
    const nodes: ServerProcess[] = [];
    const sockets: WebSocket[] = [];
    let publishing = true;
    let pump: Promise<void> | undefined;
    try {
      const redisThere = await remote.forward(6379);
      const args = ['--handler', 'pubsub', ...extra];
      const [a, b] = await Promise.all([
        startServer(nodeServer, [...args, '--backplane', `redis://127.0.0.1:6379/${DB}`]),
        startServer(remote.target(nodeServer), [...args, '--backplane', `redis://${redisThere}/${DB}`]),
      ]);
      nodes.push(a, b);
      for (const n of nodes) assert.notEqual(await timeUntil(n, 'connected', 10_000), -1, 'connected at start');

      const steady = `${label}-steady-${Date.now()}`;
      const quiet = `${label}-quiet-${Date.now()}`;
      const onSteady = await Promise.all([subscriber(b, steady), subscriber(b, steady)]);
      const onQuiet = await subscriber(b, quiet);
      const pub = await publisher(a);
      sockets.push(...[...onSteady, onQuiet, pub].map((c) => c.ws));
      const sent = { steady: 0, quiet: 0 };
      let cut = false;
      pump = (async () => {
        while (publishing) {
          pub.send(steady, ++sent.steady);
          if (cut) pub.send(quiet, ++sent.quiet);
          await sleep(10);
        }
      })();
      await eventually(async () => onSteady.every((s) => s.offset >= 50), Boolean, 5000);

      await remote.cut();
      cut = true;
      const cutAt = Date.now();
      const degradedAfter = await timeUntil(b, 'degraded', 5000);
      assert.notEqual(degradedAfter, -1, 'B reports degraded while cut off from Redis');
      assert.equal((await health(b)).status, 'degraded');
      await remote.forget();
      await sleep(cutMs - (Date.now() - cutAt));
      assert.equal((await health(a)).backplane, 'connected', 'A keeps its link');
      assert.equal((await health(b)).backplane, 'degraded', 'B is still cut off');

      await remote.heal();
      const connectedAfter = await timeUntil(b, 'connected', 10_000);
      assert.notEqual(connectedAfter, -1, 'B reports connected again once the link returns');
      await sleep(1000);
      publishing = false;
      await pump;
      const last = { ...sent };
      await eventually(async () => pub.answers.length, (n) => n === last.steady + last.quiet, 5000);
      assert.ok(pub.answers.every((m) => m.type === 'published'), 'every publication on A was taken');
      const want = [...onSteady.map(() => last.steady), last.quiet];
      const reached = await eventually(async () => [...onSteady, onQuiet].map((s) => s.offset), (o) => o.every((x, i) => x === want[i]), 5000);
      assert.deepEqual(reached, want, 'every subscriber on B reaches the last offset (one stuck short of it: B hears nothing more from Redis)');
      await sleep(200); // a duplicate would arrive now
      const figures = { degradedAfter, connectedAfter, cutMs, published: last };
      console.log(`${label}: ${JSON.stringify(figures)}`);
      return { onSteady, onQuiet, last, figures };
    } finally {
      publishing = false;
      await pump;
      for (const ws of sockets) ws.terminate();
      for (const n of nodes) await n.stop();
      await remote.close();
    }
  }

  it('history 1000: B degrades, recovers when the link returns, and its subscribers get every offset exactly once, in order, no gap', async () => {
    const { onSteady, onQuiet, last, figures } = await partitionB('history-1000', ['--history-size', '1000', '--recovery-max', '1000'], 4500);
    for (const [i, s] of onSteady.entries()) assert.deepEqual(s.got.map((m) => m.offset), range(1, last.steady), `steady subscriber ${i}: every offset once, in order`);
    assert.deepEqual(onQuiet.got.map((m) => m.offset), range(1, last.quiet), 'the topic B had heard nothing of: every offset once, in order');
    assert.ok(figures.connectedAfter < 4000, `connected again ${figures.connectedAfter} ms after the link returned`);
  });

  it('history 20, a cut longer than history holds: one reset (recovered:false), then consecutive offsets', async () => {
    const { onSteady, onQuiet, last } = await partitionB('history-20', ['--history-size', '20', '--recovery-max', '1000'], 4500);
    for (const [i, s] of [...onSteady, onQuiet].entries()) {
      const end = i < onSteady.length ? last.steady : last.quiet;
      const resets = s.got.filter((m) => m.reset);
      assert.equal(resets.length, 1, `subscriber ${i}: one reset, got ${JSON.stringify(resets)}; offsets ${runsOf(s.got.map((m) => m.offset))}`);
      assert.equal(resets[0]!.recovered, false);
      const at = s.got.indexOf(resets[0]!);
      const before = s.got.slice(0, at).map((m) => m.offset);
      const afterReset = s.got.slice(at + 1).map((m) => m.offset);
      assert.deepEqual(before, range(1, before.length), `subscriber ${i}: consecutive before the reset`);
      assert.ok(resets[0]!.offset > before.length + 20, `subscriber ${i}: the reset skips what history lost (${before.length} → ${resets[0]!.offset})`);
      assert.deepEqual(afterReset, range(resets[0]!.offset + 1, end), `subscriber ${i}: consecutive after the reset, to the end`);
    }
  });
});
