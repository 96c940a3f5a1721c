// The server API across nodes: two real servers on one backplane (the real Redis, db 13, and
// NATS JetStream; node A on Node, node B on Deno), black box. `POST /api/publish` on node A reaches a subscriber on node B with its
// position; `POST /api/disconnect {principal}` on A closes that principal's sockets on B and on A
// with the code given; an `idempotencyKey` repeated on the same node or on the other one is not
// published twice. Idempotency keys are kept in Redis with the Redis backplane (SET NX PX: one
// claim for the whole cluster); with NATS they are each node's own (documented in the README), so
// only the same-node case is tested there. In CI (CI=true) a missing broker fails; elsewhere these skip.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { apiCall, closed, denoBinary, eventually, nodeServer, serviceSkip, startServer, type RuntimeTarget, type ServerProcess } from './helpers.ts';
import { API_KEY, SECRET, subscriber } from './suite/api.ts';

const DB = 13;
const denoServer: RuntimeTarget = { name: 'deno', command: [denoBinary(), 'run', '-A', 'main.ts'], testHandler: '' };
/** Topics of this run: the NATS stream is shared with other test files and runs. */
const run = Date.now().toString(36);

async function flushDb(db: number): Promise<void> {
  const { Redis } = (await import('ioredis')) as unknown as { Redis: new (url: string) => { flushdb(): Promise<unknown>; quit(): Promise<unknown> } };
  const client = new Redis(`redis://127.0.0.1:6379/${db}`);
  try {
    await client.flushdb();
  } finally {
    await client.quit();
  }
}

type Subscriber = Awaited<ReturnType<typeof subscriber>>;
const next = async (s: Subscriber) => JSON.parse(await s.box.next(10_000)) as { type: string; topic: string; offset: number; data: unknown };

const brokers = [
  { kind: 'redis', port: 6379, url: `redis://127.0.0.1:6379/${DB}`, sharedIdempotency: true, reset: () => flushDb(DB) },
  { kind: 'nats', port: 4222, url: 'nats://127.0.0.1:4222', sharedIdempotency: false, reset: async () => {} },
] as const;

for (const broker of brokers) {
  const skip = await serviceSkip(broker.kind === 'redis' ? 'Redis' : 'NATS', broker.port);
  describe(`the server API across two nodes on ${broker.kind}`, { skip, timeout: 60_000 }, () => {
    let a: ServerProcess;
    let b: ServerProcess;
    const call = (server: ServerProcess, path: string, body: unknown) => apiCall(server.url, API_KEY, 'POST', path, body);
    /** A first publication on A reaches every subscriber (of both nodes) before the test goes on. */
    async function linked(topic: string, subs: Subscriber[]) {
      assert.equal((await call(a, '/api/publish', { topic, data: 'probe' })).status, 200);
      for (const s of subs) assert.equal((await next(s)).data, 'probe');
    }

    before(async () => {
      await broker.reset();
      const args = ['--handler', 'pubsub', '--backplane', broker.url, '--api-key', API_KEY, '--jwt-secret', SECRET];
      // A on Node, B on Deno: a mixed cluster, as the backplane test runs one.
      [a, b] = await Promise.all([startServer(nodeServer, args), startServer(denoServer, args)]);
    });
    after(async () => {
      await Promise.all([a?.stop(), b?.stop()]);
    });

    it('POST /api/publish on A reaches the subscribers on B and on A, once, with the position the API answered', async () => {
      const topic = `api-x-${run}`;
      const onB = await subscriber(b, topic);
      const onA = await subscriber(a, topic);
      try {
        await linked(topic, [onB, onA]);
        const r = await call(a, '/api/publish', { topic, data: { text: 'from the backend' } });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.equal(r.body.topic, topic);
        assert.equal(r.body.offset, onB.answer.offset + 2, 'the probe, then this one');
        assert.equal(r.body.epoch, onB.answer.epoch);
        assert.equal(onA.answer.epoch, onB.answer.epoch, 'one stream for both nodes');
        // With a shared store every node (A too) delivers from the store: no local count (README, server API).
        assert.equal(r.body.delivered, undefined);
        for (const s of [onB, onA]) assert.deepEqual(await next(s), { type: 'message', topic, offset: r.body.offset, data: { text: 'from the backend' } });
        const marker = await call(b, '/api/publish', { topic, data: 'marker' });
        assert.equal(marker.body.offset, r.body.offset + 1, 'a publish on B takes the next offset');
        for (const s of [onB, onA]) assert.deepEqual([(await next(s)).data], ['marker'], 'nothing twice in between');
      } finally {
        onB.ws.close();
        onA.ws.close();
      }
    });

    it('POST /api/disconnect {principal} on A closes the principal on B and on A with the code given; others stay', async () => {
      const topic = `api-d-${run}`;
      const erinB1 = await subscriber(b, topic, `erin-${broker.kind}`);
      const erinB2 = await subscriber(b, topic, `erin-${broker.kind}`);
      const erinA = await subscriber(a, topic, `erin-${broker.kind}`);
      const frankB = await subscriber(b, topic, `frank-${broker.kind}`);
      try {
        await linked(topic, [erinB1, erinB2, erinA, frankB]);
        const closes = [erinB1, erinB2, erinA].map((s) => closed(s.ws));
        const r = await call(a, '/api/disconnect', { principal: `erin-${broker.kind}`, code: 4010, reason: 'account suspended' });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.deepEqual(r.body, { closedHere: 1, cluster: true });
        for (const c of await Promise.all(closes)) assert.deepEqual([c.code, c.reason.includes('account suspended')], [4010, true], JSON.stringify(c));
        // Frank's socket on B outlives the disconnect: B handled it (it closed erin there) and kept him.
        const stats = await eventually(b.stats, (s) => s.live === 1);
        assert.equal(stats.live, 1);
        assert.equal(frankB.ws.readyState, frankB.ws.OPEN);
        const after = await call(a, '/api/publish', { topic, data: 'still here' });
        assert.equal((await next(frankB)).data, 'still here');
        assert.equal(after.status, 200);
      } finally {
        for (const s of [erinB1, erinB2, erinA, frankB]) s.ws.close();
      }
    });

    it(
      broker.sharedIdempotency
        ? 'an idempotencyKey repeated on the same node or on the other one is answered with the first result and not published again'
        : 'an idempotencyKey repeated on the same node is not published again (with NATS the keys are each node\'s own)',
      async () => {
        const topic = `api-i-${run}`;
        const onB = await subscriber(b, topic);
        try {
          await linked(topic, [onB]);
          const first = await call(a, '/api/publish', { topic, data: 'once', idempotencyKey: 'order-1' });
          assert.equal(first.status, 200, JSON.stringify(first.body));
          assert.equal(first.body.duplicate, undefined);
          const sameNode = await call(a, '/api/publish', { topic, data: 'once', idempotencyKey: 'order-1' });
          assert.deepEqual([sameNode.status, sameNode.body.duplicate, sameNode.body.offset, sameNode.body.epoch], [200, true, first.body.offset, first.body.epoch]);
          if (broker.sharedIdempotency) {
            const otherNode = await call(b, '/api/publish', { topic, data: 'once', idempotencyKey: 'order-1' });
            assert.deepEqual([otherNode.status, otherNode.body.duplicate, otherNode.body.offset], [200, true, first.body.offset]);
            // Both nodes at once with a fresh key: one publishes; the other is its duplicate, or 409 while it is under way.
            const racing = await Promise.all([a, b].map((s) => call(s, '/api/publish', { topic, data: 'raced', idempotencyKey: 'order-2' })));
            const published = racing.filter((x) => x.status === 200 && x.body.duplicate === undefined);
            assert.equal(published.length, 1, JSON.stringify(racing.map((x) => x.body)));
            for (const x of racing.filter((y) => y !== published[0])) {
              assert.ok((x.status === 200 && x.body.duplicate === true && x.body.offset === published[0]!.body.offset) || (x.status === 409 && x.body.error.code === 'in-progress'), JSON.stringify(x.body));
            }
          }
          const marker = await call(a, '/api/publish', { topic, data: 'marker' });
          assert.equal(marker.status, 200);
          const got: unknown[] = [];
          for (;;) {
            const m = await next(onB);
            got.push(m.data);
            if (m.data === 'marker') break;
          }
          assert.deepEqual(got, broker.sharedIdempotency ? ['once', 'raced', 'marker'] : ['once', 'marker'], 'each key published once');
        } finally {
          onB.ws.close();
        }
      },
    );
  });
}
