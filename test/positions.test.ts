// Positions, history and recovery across nodes, black-box: real hubbub nodes sharing the real Redis
// (127.0.0.1:6379, a database of its own per group) or the real NATS with JetStream (127.0.0.1:4222,
// its stream purged at the start of each group). Offsets must be the same on every node and
// consecutive per topic; a subscriber that comes back on another node, or after its node was killed
// with SIGKILL, gets exactly what it missed. In CI (CI=true) a missing broker fails; elsewhere these skip.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect, eventually, nodeServer, serviceSkip, sleep, startServer, withTimeout, type ServerProcess } from './helpers.ts';

/** A shared store of positions, and how a group gets a store of its own (or one emptied). */
interface Store {
  kind: 'redis' | 'nats';
  port: number;
  /** The --backplane of group `group`. */
  url(group: number): string;
  /** Empties the group's store before it starts. */
  reset(group: number): Promise<void>;
  /** The broker loses every position and publication of the group (Redis: FLUSHDB; NATS: the stream is deleted). */
  lose(group: number): Promise<void>;
}

async function redis(db: number) {
  const { Redis } = (await import('ioredis')) as unknown as { Redis: new (url: string) => { flushdb(): Promise<unknown>; quit(): Promise<unknown> } };
  return new Redis(`redis://127.0.0.1:6379/${db}`);
}

/** The stream the nodes keep in JetStream (the default prefix's), purged or deleted through a connection of our own. */
async function onNatsStream(action: 'purge' | 'delete'): Promise<void> {
  const { connect: natsConnect } = (await import('@nats-io/transport-node')) as unknown as { connect(o: object): Promise<{ close(): Promise<void> }> };
  const { jetstreamManager } = (await import('@nats-io/jetstream')) as unknown as {
    jetstreamManager(nc: object): Promise<{ streams: { purge(name: string): Promise<unknown>; delete(name: string): Promise<unknown> } }>;
  };
  const nc = await natsConnect({ servers: 'nats://127.0.0.1:4222' });
  try {
    const jsm = await jetstreamManager(nc);
    // Absent before the first node made it: nothing to empty.
    await jsm.streams[action](`HUBBUB_${Buffer.from('hubbub.').toString('base64url')}`).catch((error: { code?: number }) => {
      if (error.code !== 10059) throw error;
    });
  } finally {
    await nc.close();
  }
}

const stores: Store[] = [
  {
    kind: 'redis',
    port: 6379,
    url: (db) => `redis://127.0.0.1:6379/${db}`,
    async reset(db) {
      const client = await redis(db);
      await client.flushdb();
      await client.quit();
    },
    lose(db) {
      return this.reset(db);
    },
  },
  {
    // One stream for every group (the tests' topics are their own); the groups run one after another.
    kind: 'nats',
    port: 4222,
    url: () => 'nats://127.0.0.1:4222',
    reset: () => onNatsStream('purge'),
    lose: () => onNatsStream('delete'),
  },
];

interface Position {
  offset: number;
  epoch: string;
}
interface Message {
  type: string;
  offset: number;
  epoch?: string;
  data?: unknown;
  recovered?: boolean;
  id?: unknown;
}

/** A pubsub client: what it was answered, and every message it got, in order. */
async function subscriber(server: ServerProcess, topic: string, since?: Position) {
  const ws = await connect(server.wsUrl);
  const messages: Message[] = [];
  /** Everything after the answer, in order (messages, resets). */
  const all: Message[] = [];
  let closed = false;
  ws.on('close', () => (closed = true));
  // A listener, not a loop of awaits with a timeout: nothing here keeps the test process alive.
  const answered = new Promise<Message>((resolve) => {
    let first = true;
    ws.on('message', (raw) => {
      const m = JSON.parse(String(raw)) as Message;
      if (first) {
        first = false;
        resolve(m);
      } else {
        all.push(m);
        if (m.type === 'message') messages.push(m);
      }
    });
  });
  ws.send(JSON.stringify({ type: 'subscribe', topic, ...(since ? { since } : {}) }));
  const answer = await withTimeout(answered, 10_000, 'the subscribe answer');
  assert.equal(answer.type, 'subscribed', JSON.stringify(answer));
  return {
    ws,
    answer,
    messages,
    all,
    get closed() {
      return closed;
    },
    /** Where this client stands: its last message, or what it was answered. */
    position(): Position {
      const last = messages[messages.length - 1];
      return { offset: last ? last.offset : answer.offset, epoch: answer.epoch! };
    },
  };
}

/** A client that publishes `count` messages `{p, i}` and collects the `published` answers. */
async function publisher(server: ServerProcess, topic: string, p: string) {
  const ws = await connect(server.wsUrl);
  const answers: Message[] = [];
  ws.on('message', (raw) => answers.push(JSON.parse(String(raw)) as Message));
  return {
    ws,
    answers,
    send(i: number) {
      ws.send(JSON.stringify({ type: 'publish', topic, data: { p, i }, id: i }));
    },
  };
}

async function startNodes(store: Store, count: number, group: number, extra: string[] = []): Promise<ServerProcess[]> {
  const url = store.url(group);
  const nodes = await Promise.all(Array.from({ length: count }, () => startServer(nodeServer, ['--handler', 'pubsub', '--backplane', url, ...extra])));
  for (const n of nodes) await eventually(async () => (await (await fetch(`${n.url}/healthz`)).json()) as { backplane?: string }, (h) => h.backplane === 'connected', 10_000);
  return nodes;
}

const offsetsOf = (messages: readonly Message[]) => messages.map((m) => m.offset);
const range = (from: number, to: number) => Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i);

/** A small seeded generator (mulberry32): the same rounds every run. */
function seeded(seed: number) {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

for (const store of stores) {
  const skip = await serviceSkip(store.kind, store.port);
  const name = store.kind === 'redis' ? 'Redis' : 'NATS';

  describe(`positions across nodes (${name}): three nodes`, { skip, timeout: 180_000 }, () => {
    let nodes: ServerProcess[];
    before(async () => {
      await store.reset(3);
      nodes = await startNodes(store, 3, 3, ['--history-size', '1000', '--recovery-max', '300']);
    });
    after(async () => {
      for (const n of nodes ?? []) await n.stop();
    });

    it('concurrent publishers on every node: every subscriber on every node gets offsets 1…N exactly once, in order, the same publication at the same offset', async () => {
      const topic = `shared-${Date.now()}`;
      const subs: Awaited<ReturnType<typeof subscriber>>[] = [];
      for (const n of nodes) for (let i = 0; i < 2; i++) subs.push(await subscriber(n, topic));
      for (const s of subs) assert.deepEqual([s.answer.offset, s.answer.epoch], [0, subs[0]!.answer.epoch], 'one stream, one epoch, on every node');
      const pubs = await Promise.all(nodes.map((n, i) => publisher(n, topic, `p${i}`)));
      const N = 200;
      for (let i = 0; i < N; i++) for (const p of pubs) p.send(i);
      const total = N * pubs.length;
      await eventually(async () => subs.map((s) => s.messages.length), (counts) => counts.every((c) => c >= total), 30_000);
      await sleep(300); // a duplicate would arrive now
      const reference = subs[0]!.messages.map((m) => JSON.stringify(m.data));
      for (const s of subs) {
        assert.deepEqual(offsetsOf(s.messages), range(1, total), 'every offset exactly once, in order');
        assert.deepEqual(s.messages.map((m) => JSON.stringify(m.data)), reference, 'the same publication at the same offset on every node');
        for (const p of ['p0', 'p1', 'p2']) {
          const mine = s.messages.map((m) => m.data as { p: string; i: number }).filter((d) => d.p === p).map((d) => d.i);
          assert.deepEqual(mine, range(0, N - 1), `publisher ${p} in its order`);
        }
      }
      // Each `published` answer names the offset its publication was delivered at.
      const atOffset = new Map(subs[0]!.messages.map((m) => [m.offset, m.data as { p: string; i: number }]));
      for (const [k, p] of pubs.entries()) {
        const answers = p.answers.filter((a) => a.type === 'published');
        assert.equal(answers.length, N);
        for (const a of answers) assert.deepEqual(atOffset.get(a.offset), { p: `p${k}`, i: a.id });
      }
      for (const c of [...subs, ...pubs]) c.ws.close();
    });

    it('a subscriber that leaves node A comes back on node B with `since`: exactly what it missed, then live; a wrong epoch or a position past --recovery-max is not recovered', async () => {
      const topic = `comeback-${Date.now()}`;
      const first = await subscriber(nodes[0]!, topic);
      const pub = await publisher(nodes[2]!, topic, 'p');
      for (let i = 0; i < 20; i++) pub.send(i);
      await eventually(async () => first.messages.length, (n) => n === 20);
      const left = first.position();
      first.ws.close();
      for (let i = 20; i < 70; i++) pub.send(i);
      await eventually(async () => pub.answers.length, (n) => n === 70);
      const back = await subscriber(nodes[1]!, topic, left);
      assert.deepEqual([back.answer.recovered, back.answer.offset, back.answer.epoch], [true, 70, left.epoch]);
      for (let i = 70; i < 80; i++) pub.send(i);
      await eventually(async () => back.messages.length, (n) => n >= 60);
      await sleep(200);
      assert.deepEqual(offsetsOf(back.messages), range(21, 80), 'the 50 missed, then the 10 live: no gap, no duplicate');
      assert.deepEqual(back.messages.map((m) => (m.data as { i: number }).i), range(20, 79));

      const wrong = await subscriber(nodes[1]!, topic, { offset: 10, epoch: 'not-this-one' });
      assert.deepEqual([wrong.answer.recovered, wrong.answer.offset, wrong.answer.epoch], [false, 80, left.epoch]);
      const tooFar = await subscriber(nodes[0]!, topic, { offset: 0, epoch: left.epoch });
      assert.equal(tooFar.answer.recovered, true, '80 missed is within --recovery-max 300');
      for (let i = 80; i < 400; i++) pub.send(i);
      await eventually(async () => pub.answers.length, (n) => n === 400);
      const pastMax = await subscriber(nodes[2]!, topic, { offset: 50, epoch: left.epoch });
      assert.deepEqual([pastMax.answer.recovered, pastMax.answer.offset], [false, 400], '350 missed is past --recovery-max 300');
      await sleep(200);
      assert.deepEqual(pastMax.messages, [], 'nothing is replayed when the recovery fails');
      const stats = await nodes[0]!.stats();
      assert.ok(stats.recovered.recovered >= 1 && stats.replayed >= 80, JSON.stringify({ recovered: stats.recovered, replayed: stats.replayed }));
      for (const c of [back, wrong, tooFar, pastMax, pub]) c.ws.close();
    });

    it('the seam across nodes: a subscriber that hops to another node while a publisher keeps publishing sees every offset once, in order (seeded rounds)', async () => {
      const random = seeded(12);
      for (let round = 0; round < 6; round++) {
        const topic = `seam-${round}-${Date.now()}`;
        const pub = await publisher(nodes[round % 3]!, topic, 'p');
        let s = await subscriber(nodes[(round + 1) % 3]!, topic);
        const seen: Message[] = [];
        const N = 300;
        let sent = 0;
        const pump = (async () => {
          while (sent < N) {
            for (let k = 0; k < 10 && sent < N; k++) pub.send(sent++);
            await sleep(1 + Math.floor(random() * 3));
          }
        })();
        for (let hop = 0; hop < 3; hop++) {
          await sleep(10 + Math.floor(random() * 40));
          const at = s.position();
          seen.push(...s.messages);
          s.ws.close();
          s = await subscriber(nodes[(round + hop + 2) % 3]!, topic, at);
          assert.equal(s.answer.recovered, true, `round ${round}, hop ${hop}: recovered from ${at.offset}`);
        }
        await pump;
        await eventually(async () => s.position().offset, (o) => o === N, 15_000);
        await sleep(100);
        seen.push(...s.messages);
        assert.deepEqual(offsetsOf(seen), range(1, N), `round ${round}: every offset exactly once, in order`);
        s.ws.close();
        pub.ws.close();
      }
    });
  });

  describe(`positions across nodes (${name}): the node a crowd is on is killed with SIGKILL`, { skip, timeout: 180_000 }, () => {
    it('while publishers on the other nodes keep publishing, every subscriber reconnects elsewhere with its position and ends with every offset once, in order', async () => {
      await store.reset(4);
      const nodes = await startNodes(store, 3, 4, ['--history-size', '1000', '--recovery-max', '1000']);
      try {
        const topic = `crowd-${Date.now()}`;
        const CROWD = 60;
        type Sub = Awaited<ReturnType<typeof subscriber>>;
        const crowd: { current: Sub; seen: Message[]; recovered: boolean[]; trace: string[] }[] = [];
        for (let i = 0; i < CROWD; i++) crowd.push({ current: await subscriber(nodes[0]!, topic), seen: [], recovered: [], trace: [] });
        const pubs = await Promise.all([publisher(nodes[1]!, topic, 'a'), publisher(nodes[2]!, topic, 'b')]);
        const N = 400;
        let sent = 0;
        const pump = (async () => {
          while (sent < N) {
            for (const p of pubs) p.send(sent);
            sent++;
            await sleep(5);
          }
        })();
        await eventually(async () => sent, (n) => n >= N / 4, 10_000);
        nodes[0]!.child.kill('SIGKILL');
        // Each one notices (1006) and comes back on one of the others with where it stood.
        await Promise.all(
          crowd.map(async (c, i) => {
            await eventually(async () => c.current.closed, Boolean, 10_000);
            c.seen.push(...c.current.messages);
            const at = c.current.position();
            c.trace.push(`old tail ${offsetsOf(c.current.messages.slice(-3))} at ${at.offset}`);
            c.current = await subscriber(nodes[1 + (i % 2)]!, topic, at);
            c.trace.push(`answer ${JSON.stringify(c.current.answer)} node ${1 + (i % 2)}`);
            c.recovered.push(c.current.answer.recovered === true);
          }),
        );
        await pump;
        const total = 2 * N;
        await eventually(async () => crowd.map((c) => c.current.position().offset), (o) => o.every((x) => x === total), 20_000);
        await sleep(200);
        for (const [i, c] of crowd.entries()) {
          c.seen.push(...c.current.messages);
          assert.deepEqual(c.recovered, [true], `subscriber ${i} recovered`);
          assert.deepEqual(offsetsOf(c.seen), range(1, total), `subscriber ${i}: every offset exactly once, in order; ${c.trace.join('; ')}; new head ${offsetsOf(c.current.messages.slice(0, 5))}; first wrong at ${offsetsOf(c.seen).findIndex((o, k) => o !== k + 1)}: ${offsetsOf(c.seen).slice(Math.max(0, offsetsOf(c.seen).findIndex((o, k) => o !== k + 1) - 3)).slice(0, 8)}`);
        }
        for (const c of crowd) c.current.ws.close();
        for (const p of pubs) p.ws.close();
      } finally {
        for (const n of nodes) await n.stop();
      }
    });
  });

  describe(`positions across nodes (${name}): history lost`, { skip, timeout: 120_000 }, () => {
    it(`after ${name} loses its data (${store.kind === 'redis' ? 'FLUSHDB' : 'the stream is deleted'}) the epoch is new, an old position answers recovered:false, publishing goes on; a position older than the history is not recovered either`, async () => {
      const DB = 5;
      await store.reset(DB);
      const nodes = await startNodes(store, 2, DB, ['--history-size', '10', '--recovery-max', '300']);
      const subs: Awaited<ReturnType<typeof subscriber>>[] = [];
      try {
        const topic = `lost-${Date.now()}`;
        const s = await subscriber(nodes[0]!, topic);
        subs.push(s);
        const pub = await publisher(nodes[1]!, topic, 'p');
        for (let i = 0; i < 30; i++) pub.send(i);
        await eventually(async () => s.messages.length, (n) => n === 30);
        // Older than the 10 kept: 25 missed is within --recovery-max, but history no longer has them.
        const old = await subscriber(nodes[1]!, topic, { offset: 5, epoch: s.answer.epoch! });
        subs.push(old);
        assert.deepEqual([old.answer.recovered, old.answer.offset], [false, 30]);
        const recent = await subscriber(nodes[1]!, topic, { offset: 25, epoch: s.answer.epoch! });
        subs.push(recent);
        assert.equal(recent.answer.recovered, true);
        await store.lose(DB);
        for (let i = 30; i < 35; i++) pub.send(i);
        await eventually(async () => s.messages.length, (n) => n === 35);
        assert.deepEqual(offsetsOf(s.messages.slice(30)), range(1, 5), 'the stream starts again');
      // The live subscriber was told, once, before the new stream's first message: reload your state.
      const resets = s.all.filter((m) => m.type === 'subscribed');
      assert.equal(resets.length, 1, JSON.stringify(resets));
      assert.deepEqual([resets[0]!.recovered, (resets[0] as Message & { reset?: boolean }).reset], [false, true]);
      assert.notEqual(resets[0]!.epoch, s.answer.epoch);
      assert.ok(s.all.indexOf(resets[0]!) < s.all.indexOf(s.messages[30]!), 'the reset comes before offset 1 of the new epoch');
        const after = await subscriber(nodes[0]!, topic, s.position());
        subs.push(after);
        assert.equal(after.answer.recovered, false, 'the old epoch is gone');
        assert.notEqual(after.answer.epoch, s.answer.epoch, 'a new epoch');
        assert.equal(after.answer.offset, 5);
        for (const n of nodes) assert.equal((await fetch(`${n.url}/healthz`)).status, 200);
        pub.ws.close();
      } finally {
        for (const c of subs) c.ws.close();
        subs.length = 0;
        for (const n of nodes) await n.stop();
      }
    });
  });
}
