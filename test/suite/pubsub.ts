// Black-box tests of topics and the JSON pubsub protocol (`--handler pubsub`), on every runtime.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type WebSocket from 'ws';
import { connect, eventually, inbox, nextMessage, rawRequest, request, rssKiB, sleep, startServer, type RuntimeTarget, type ServerProcess } from '../helpers.ts';
import { textFrame, upgradeHeaders } from '../frames.ts';
import { parseMetrics } from './observability.ts';

interface Envelope {
  type: string;
  topic?: string;
  offset?: number;
  epoch?: string;
  recovered?: boolean;
  data?: unknown;
  from?: string;
  code?: string;
  delivered?: number;
  id?: unknown;
  count?: number;
  members?: { id: string; principal?: string }[];
}

/** A pubsub client: JSON in, JSON out, every message buffered. */
async function client(url: string) {
  const ws = await connect(url);
  const messages = inbox(ws);
  const next = async (timeoutMs?: number) => JSON.parse(await messages.next(timeoutMs)) as Envelope;
  const send = (msg: unknown) => ws.send(typeof msg === 'string' ? msg : JSON.stringify(msg));
  const call = async (msg: unknown) => {
    send(msg);
    return next();
  };
  return { ws, next, send, call };
}

export function runPubSub(target: RuntimeTarget): void {
  describe(`${target.name}: topics and the pubsub protocol`, { timeout: 90_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target, ['--handler', 'pubsub']);
    });
    after(() => server.stop());

    it('subscribe, publish to every subscriber with an offset, unsubscribe', async () => {
      const a = await client(server.wsUrl);
      const b = await client(server.wsUrl);
      const subscribed = await a.call({ type: 'subscribe', topic: 'room' });
      assert.deepEqual(subscribed, { type: 'subscribed', topic: 'room', offset: 0, epoch: subscribed.epoch });
      assert.match(subscribed.epoch ?? '', /^[0-9a-z]{6,}$/);
      assert.equal((await b.call({ type: 'subscribe', topic: 'room' })).type, 'subscribed');
      const stats = await server.stats();
      assert.deepEqual(stats.topics.largest, [{ topic: 'room', subscribers: 2, offset: 0 }]);

      a.send({ type: 'publish', topic: 'room', data: { text: 'héllo ☃' }, id: 'p1' });
      const [m1, ack] = [await a.next(), await a.next()];
      assert.deepEqual(m1, { type: 'message', topic: 'room', offset: 1, data: { text: 'héllo ☃' }, from: m1.from });
      assert.deepEqual(ack, { type: 'published', id: 'p1', topic: 'room', offset: 1, epoch: subscribed.epoch, delivered: 2 });
      assert.deepEqual(await b.next(), m1);

      assert.deepEqual(await b.call({ type: 'unsubscribe', topic: 'room' }), { type: 'unsubscribed', topic: 'room' });
      a.send({ type: 'publish', topic: 'room', data: 2 });
      assert.equal((await a.next()).offset, 2);
      assert.equal(await b.next(300).catch(() => 'nothing'), 'nothing');
      a.ws.close();
      b.ws.close();
    });

    it('malformed messages get error envelopes and the socket stays open', async () => {
      const c = await client(server.wsUrl);
      const cases: [unknown, string][] = [
        ['{not json', 'bad-json'],
        ['[1,2]', 'bad-message'],
        [{ type: 'dance', topic: 'x' }, 'unknown-type'],
        [{ type: 'subscribe' }, 'bad-topic'],
        [{ type: 'subscribe', topic: '' }, 'bad-topic'],
        [{ type: 'subscribe', topic: 'x'.repeat(257) }, 'bad-topic'],
        [{ type: 'subscribe', topic: '$system' }, 'forbidden'],
        [{ type: 'publish', topic: '$system', data: 1 }, 'forbidden'],
        [{ type: 'publish', topic: 'room' }, 'bad-message'],
      ];
      for (const [msg, code] of cases) {
        const reply = await c.call(msg);
        assert.equal(reply.type, 'error', JSON.stringify(msg));
        assert.equal(reply.code, code, JSON.stringify(msg));
      }
      c.ws.send(Buffer.from([1, 2, 3]));
      assert.equal((await c.next()).code, 'binary-unsupported');
      assert.deepEqual(await c.call({ type: 'ping' }), { type: 'pong' });
      assert.equal((await c.call({ type: 'subscribe', topic: 'still-open' })).type, 'subscribed');
      c.ws.close();
    });

    it('messages from one publisher arrive in order and gapless at every subscriber', async () => {
      const subscribers = await Promise.all(Array.from({ length: 4 }, () => client(server.wsUrl)));
      for (const s of subscribers) assert.equal((await s.call({ type: 'subscribe', topic: 'ordered' })).type, 'subscribed');
      const publisher = await client(server.wsUrl);
      const N = 1000;
      for (let i = 1; i <= N; i++) publisher.send({ type: 'publish', topic: 'ordered', data: i });
      await Promise.all(
        subscribers.map(async (s) => {
          for (let i = 1; i <= N; i++) {
            const m = await s.next();
            assert.equal(m.offset, i);
            assert.equal(m.data, i);
          }
        }),
      );
      for (const s of [...subscribers, publisher]) s.ws.close();
    });

    it('fan-out counters match what the clients received: messages and bytes sent, subscribers on two topics, an unsubscribe and a subscribe again between publications', async () => {
      /** A client that keeps every frame it gets (text) and their UTF-8 bytes. */
      async function counting() {
        const c = await client(server.wsUrl);
        const r = { c, frames: 0, bytes: 0, offsets: new Map<string, number[]>(), replies: [] as string[] };
        c.ws.on('message', (data: Buffer) => {
          r.frames++;
          r.bytes += data.byteLength;
          const m = JSON.parse(data.toString()) as Envelope;
          if (m.type === 'message') r.offsets.set(m.topic!, [...(r.offsets.get(m.topic!) ?? []), m.offset!]);
          else r.replies.push(`${m.type} ${m.topic}`);
        });
        /** Sends a subscribe or unsubscribe and waits for its answer (the inbox also holds the messages). */
        const ask = async (type: 'subscribe' | 'unsubscribe', topic: string) => {
          const answers = r.replies.length;
          c.send({ type, topic });
          const got = await eventually(async () => r.replies.slice(answers), (x) => x.length > 0, 5000);
          assert.equal(got[0], `${type}d ${topic}`);
        };
        return Object.assign(r, { ask });
      }
      const counters = async () => {
        const { samples } = parseMetrics(await (await fetch(`${server.url}/metrics`)).text());
        return { messagesOut: samples.get('hubbub_messages_sent_total')!, bytesOut: samples.get('hubbub_bytes_sent_total')!, dropped: samples.get('hubbub_messages_dropped_total')! };
      };
      const before = await counters();
      const [a, b, c] = [await counting(), await counting(), await counting()];
      for (const r of [a, b, c]) await r.ask('subscribe', 'counted-1');
      for (const r of [a, b]) await r.ask('subscribe', 'counted-2');
      const publisher = await counting();
      const publishAll = async (from: number, to: number) => {
        for (let i = from; i <= to; i++) {
          publisher.c.send({ type: 'publish', topic: 'counted-1', data: { i, text: 'héllo ☃'.repeat(i % 7) } });
          publisher.c.send({ type: 'publish', topic: 'counted-2', data: i, id: i });
        }
        // Every `published` ack back (in order, after its own publication went out to everyone).
        await eventually(async () => publisher.frames, (n) => n === to, 10_000);
      };
      await publishAll(1, 40);
      await b.ask('unsubscribe', 'counted-1');
      await publishAll(41, 60);
      await b.ask('subscribe', 'counted-1');
      await publishAll(61, 80);
      const range = (from: number, to: number) => Array.from({ length: to - from + 1 }, (_, k) => from + k);
      await eventually(async () => [a, b, c].map((r) => r.offsets.get('counted-1')?.length ?? 0), (n) => n[0] === 80 && n[1] === 60 && n[2] === 80, 10_000);
      for (const r of [a, c]) assert.deepEqual(r.offsets.get('counted-1'), range(1, 80), 'every message of the topic, in order');
      assert.deepEqual(b.offsets.get('counted-1'), [...range(1, 40), ...range(61, 80)], 'nothing while unsubscribed, everything after subscribing again');
      for (const r of [a, b]) assert.deepEqual(r.offsets.get('counted-2'), range(1, 80));
      assert.equal(c.offsets.get('counted-2'), undefined);
      const after = await counters();
      assert.equal((await server.stats()).messagesOut, after.messagesOut, '/stats and /metrics agree');
      const everyone = [a, b, c, publisher];
      assert.deepEqual(
        { messagesOut: after.messagesOut - before.messagesOut, bytesOut: after.bytesOut - before.bytesOut, dropped: after.dropped - before.dropped },
        { messagesOut: everyone.reduce((n, r) => n + r.frames, 0), bytesOut: everyone.reduce((n, r) => n + r.bytes, 0), dropped: 0 },
        'the counters are what the clients got, message for message and byte for byte',
      );
      for (const r of everyone) r.c.ws.close();
    });

    it('abrupt closes unsubscribe: the topic index forgets the socket', async () => {
      const keeper = await client(server.wsUrl);
      await keeper.call({ type: 'subscribe', topic: 'abrupt' });
      const goners = await Promise.all(Array.from({ length: 10 }, () => client(server.wsUrl)));
      for (const g of goners) await g.call({ type: 'subscribe', topic: 'abrupt' });
      for (const g of goners) (g.ws as unknown as { _socket: import('node:net').Socket })._socket.resetAndDestroy();
      await eventually(server.stats, (s) => s.live === 1);
      keeper.send({ type: 'publish', topic: 'abrupt', data: 'x', id: 1 });
      const replies = [await keeper.next(), await keeper.next()];
      assert.equal(replies.find((r) => r.type === 'published')?.delivered, 1);
      keeper.ws.close();
      const stats = await eventually(server.stats, (s) => s.live === 0);
      assert.equal(stats.topics.subscriptions, 0);
      assert.equal(stats.topics.count, 0);
    });
  });

  describe(`${target.name}: positions, history and recovery`, { timeout: 90_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target, ['--handler', 'pubsub', '--history-size', '5', '--recovery-max', '50']);
    });
    after(() => server.stop());

    /** Publishes `count` messages on `topic` and waits for each ack; returns their offsets. */
    async function publish(publisher: Awaited<ReturnType<typeof client>>, topic: string, count: number): Promise<number[]> {
      const offsets: number[] = [];
      for (let i = 0; i < count; i++) {
        publisher.send({ type: 'publish', topic, data: i, id: i });
        const ack = await publisher.next();
        assert.equal(ack.type, 'published', JSON.stringify(ack));
        offsets.push(ack.offset!);
      }
      return offsets;
    }

    it('a client that comes back with `since` gets exactly what it missed, then live messages; a wrong epoch, a position older than the history, or a malformed since does not', async () => {
      const publisher = await client(server.wsUrl);
      const first = await client(server.wsUrl);
      const start = await first.call({ type: 'subscribe', topic: 'rec' });
      assert.equal(start.offset, 0);
      const epoch = start.epoch!;
      assert.deepEqual(await publish(publisher, 'rec', 3), [1, 2, 3]);
      for (const offset of [1, 2, 3]) assert.equal((await first.next()).offset, offset);
      first.ws.close();
      assert.deepEqual(await publish(publisher, 'rec', 3), [4, 5, 6]);

      const back = await client(server.wsUrl);
      assert.deepEqual(await back.call({ type: 'subscribe', topic: 'rec', since: { offset: 3, epoch } }), { type: 'subscribed', topic: 'rec', offset: 6, epoch, recovered: true });
      const replay = [await back.next(), await back.next(), await back.next()];
      assert.deepEqual(replay.map((m) => [m.type, m.offset, m.data]), [['message', 4, 0], ['message', 5, 1], ['message', 6, 2]]);
      await publish(publisher, 'rec', 1);
      assert.equal((await back.next()).offset, 7, 'then the live ones');

      // Another epoch (a restarted server, a lost history): not recovered, told the current position, nothing replayed.
      const stranger = await client(server.wsUrl);
      assert.deepEqual(await stranger.call({ type: 'subscribe', topic: 'rec', since: { offset: 6, epoch: 'not-this-one' } }), { type: 'subscribed', topic: 'rec', offset: 7, epoch, recovered: false });
      await publish(publisher, 'rec', 1);
      assert.equal((await stranger.next()).offset, 8, 'no replay: the next message is the live one');

      // History keeps 5: from offset 2, offsets 3 to 8 would be needed, and 3 is gone.
      const late = await client(server.wsUrl);
      assert.deepEqual(await late.call({ type: 'subscribe', topic: 'rec', since: { offset: 2, epoch } }), { type: 'subscribed', topic: 'rec', offset: 8, epoch, recovered: false });
      // From offset 3 (4 to 8: five publications), it is all there.
      const justInTime = await client(server.wsUrl);
      assert.equal((await justInTime.call({ type: 'subscribe', topic: 'rec', since: { offset: 3, epoch } })).recovered, true);
      for (const offset of [4, 5, 6, 7, 8]) assert.equal((await justInTime.next()).offset, offset);
      // A position from the future (the client is confused): not recovered.
      assert.equal((await late.call({ type: 'subscribe', topic: 'rec2', since: { offset: 99, epoch } })).recovered, false);

      for (const since of [{ offset: -1, epoch }, { offset: 1.5, epoch }, { offset: 1 }, 'x', { offset: 1, epoch: '' }]) {
        const answer = await late.call({ type: 'subscribe', topic: 'rec', since });
        assert.equal(answer.type, 'error', JSON.stringify(since));
        assert.equal(answer.code, 'bad-message');
      }
      const stats = await server.stats();
      assert.ok(stats.recovered.recovered >= 2 && stats.recovered['not-recovered'] >= 3, JSON.stringify(stats.recovered));
      assert.ok(stats.replayed >= 8);
      assert.ok(stats.history.publications >= 5 && stats.history.publications <= 10, JSON.stringify(stats.history));
      const { samples } = parseMetrics(await (await fetch(`${server.url}/metrics`)).text());
      assert.equal(samples.get('hubbub_recoveries_total{outcome="recovered"}'), stats.recovered.recovered);
      assert.equal(samples.get('hubbub_recoveries_total{outcome="not-recovered"}'), stats.recovered['not-recovered']);
      assert.equal(samples.get('hubbub_recovery_replayed_total'), stats.replayed);
      assert.equal(samples.get('hubbub_history_publications'), stats.history.publications);
      for (const c of [publisher, back, stranger, late, justInTime]) c.ws.close();
    });

    it('the seam: publications racing a recovering subscribe reach it once each and in order (seeded rounds)', async (t) => {
      let seed = 7;
      const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
      // History deep enough for every round: what is tested is the seam, not the bound.
      const server = await startServer(target, ['--handler', 'pubsub', '--history-size', '100']);
      t.after(() => server.stop());
      const publisher = await client(server.wsUrl);
      for (let round = 0; round < 5; round++) {
        const topic = `seam-${round}`;
        const watcher = await client(server.wsUrl);
        const { epoch } = await watcher.call({ type: 'subscribe', topic });
        const TOTAL = 60;
        // A client that saw the first `k` then lost its connection comes back while the publisher
        // keeps publishing, unacknowledged, as fast as it can.
        const k = 1 + Math.floor(random() * 4);
        await publish(publisher, topic, k);
        for (let i = 0; i < TOTAL - k; i++) publisher.send({ type: 'publish', topic, data: i });
        await sleep(Math.floor(random() * 3));
        const back = await client(server.wsUrl);
        const answer = await back.call({ type: 'subscribe', topic, since: { offset: k, epoch } });
        assert.equal(answer.recovered, true, JSON.stringify(answer));
        const seen: number[] = [];
        while (seen.length < TOTAL - k) seen.push((await back.next()).offset!);
        assert.deepEqual(seen, Array.from({ length: TOTAL - k }, (_, i) => k + 1 + i), `round ${round}: every offset after ${k} once, in order`);
        back.ws.close();
        watcher.ws.close();
      }
      publisher.ws.close();
    });
  });

  describe(`${target.name}: presence`, { timeout: 60_000 }, () => {
    it('presence answers who is subscribed; with --presence-events the others hear joins and leaves (unsubscribe, close); without, nothing', async () => {
      const server = await startServer(target, ['--handler', 'pubsub', '--presence-events', 'true']);
      const quiet = await startServer(target, ['--handler', 'pubsub']);
      try {
        const a = await client(server.wsUrl);
        const b = await client(server.wsUrl);
        const c = await client(server.wsUrl);
        await a.call({ type: 'subscribe', topic: 'p' });
        assert.equal((await b.call({ type: 'subscribe', topic: 'p' })).type, 'subscribed', 'the joiner hears no join of its own first');
        const joinB = await a.next();
        assert.equal(joinB.type, 'join');
        assert.equal(joinB.topic, 'p');
        const presence = await c.call({ type: 'presence', topic: 'p' });
        assert.equal(presence.type, 'presence');
        assert.equal(presence.count, 2);
        assert.equal(presence.members?.length, 2);
        assert.ok(presence.members?.some((m) => m.id === joinB.id), JSON.stringify(presence));
        assert.deepEqual(await c.call({ type: 'presence', topic: 'nobody-here' }), { type: 'presence', topic: 'nobody-here', count: 0, members: [] });
        assert.equal((await c.call({ type: 'presence', topic: '$reserved' })).code, 'forbidden');
        await b.call({ type: 'unsubscribe', topic: 'p' });
        assert.deepEqual(await a.next(), { type: 'leave', topic: 'p', id: joinB.id });
        await c.call({ type: 'subscribe', topic: 'p' });
        const joinC = await a.next();
        assert.equal(joinC.type, 'join');
        c.ws.terminate();
        assert.deepEqual(await a.next(), { type: 'leave', topic: 'p', id: joinC.id }, 'a connection that ends leaves its topics');
        assert.equal((await a.call({ type: 'presence', topic: 'p' })).count, 1);

        // Without --presence-events: the next thing a subscriber hears after another joins is the next message, not a join.
        const x = await client(quiet.wsUrl);
        const y = await client(quiet.wsUrl);
        await x.call({ type: 'subscribe', topic: 'p' });
        await y.call({ type: 'subscribe', topic: 'p' });
        y.send({ type: 'publish', topic: 'p', data: 'after the join' });
        assert.equal((await x.next()).type, 'message');
        for (const ws of [a.ws, b.ws, x.ws, y.ws]) ws.close();
      } finally {
        await Promise.all([server.stop(), quiet.stop()]);
      }
    });
  });

  describe(`${target.name}: order under compression`, { timeout: 60_000 }, () => {
    it('a publish right after a large compressed reply arrives after it (the fan-out fast path waits for a busy sender)', async () => {
      const server = await startServer(target, ['--handler', 'pubsub', '--per-message-deflate', 'true']);
      try {
        const ws = await connect(server.wsUrl, { perMessageDeflate: true });
        const messages = inbox(ws);
        ws.send(JSON.stringify({ type: 'subscribe', topic: 'order' }));
        assert.equal(JSON.parse(await messages.next()).type, 'subscribed');
        for (let round = 0; round < 20; round++) {
          // The first draws a ~6 KB error reply (compressed: over the 1 KiB threshold), the second a publish.
          ws.send(JSON.stringify({ type: 'x'.repeat(6000) }));
          ws.send(JSON.stringify({ type: 'publish', topic: 'order', data: round }));
          const first = JSON.parse(await messages.next()) as { type: string; code?: string };
          const second = JSON.parse(await messages.next()) as { type: string; data?: unknown };
          assert.deepEqual([first.type, first.code, second.type, second.data], ['error', 'unknown-type', 'message', round], `round ${round}`);
        }
        ws.close();
      } finally {
        await server.stop();
      }
    });
  });

  describe(`${target.name}: subscription caps`, { timeout: 60_000 }, () => {
    it('--max-subscriptions and --max-topics refuse a subscribe with an error envelope; the socket stays open and counts it', async () => {
      const server = await startServer(target, ['--handler', 'pubsub', '--max-subscriptions', '3', '--max-topics', '4']);
      try {
        const a = await client(server.wsUrl);
        for (const topic of ['t1', 't2', 't3']) assert.equal((await a.call({ type: 'subscribe', topic })).type, 'subscribed');
        const over = await a.call({ type: 'subscribe', topic: 't4' });
        assert.deepEqual([over.type, over.code, over.topic], ['error', 'subscription-limit', 't4']);
        // Already subscribed is not a new subscription: still fine at the cap.
        assert.equal((await a.call({ type: 'subscribe', topic: 't1' })).type, 'subscribed');
        assert.equal((await a.call({ type: 'ping' })).type, 'pong', 'the socket stays open');
        // Unsubscribing makes room again.
        await a.call({ type: 'unsubscribe', topic: 't3' });
        assert.equal((await a.call({ type: 'subscribe', topic: 't4' })).type, 'subscribed');

        const b = await client(server.wsUrl);
        assert.equal((await b.call({ type: 'subscribe', topic: 't5' })).type, 'subscribed'); // the 4th topic of the process
        const full = await b.call({ type: 'subscribe', topic: 't6' });
        assert.deepEqual([full.type, full.code], ['error', 'topic-limit']);
        assert.equal((await b.call({ type: 'subscribe', topic: 't1' })).type, 'subscribed', 'an existing topic can still be joined');

        const stats = await server.stats();
        assert.deepEqual(stats.subscribesRefused, { 'subscription-limit': 1, 'topic-limit': 1, unavailable: 0 });
        assert.equal(stats.topics.count, 4);
        assert.equal(stats.live, 2);
        a.ws.close();
        b.ws.close();
      } finally {
        await server.stop();
      }
    });
  });

  describe(`${target.name}: slow consumers`, { timeout: 120_000 }, () => {
    /**
     * A subscriber that stops reading: a raw socket that subscribes and then never reads again.
     * Returns a function that starts reading again and collects the sequence numbers it gets.
     */
    async function stalledSubscriber(server: ServerProcess, topic: string) {
      const response = await rawRequest(server.url, upgradeHeaders(new URL(server.url).host));
      const { socket } = response;
      socket.setNoDelay(true);
      let received: Buffer = response.rest;
      const reading = (chunk: Buffer) => (received = Buffer.concat([received, chunk]));
      socket.on('data', reading);
      socket.write(textFrame(JSON.stringify({ type: 'subscribe', topic }), { mask: Buffer.from([9, 8, 7, 6]) }));
      // Reads until the server has confirmed the subscription, then never again.
      await eventually(async () => received.includes('"type":"subscribed"'), Boolean, 5000);
      socket.pause();
      socket.off('data', reading);
      assert.ok(received.includes('"type":"subscribed"'), `the stalled subscriber is subscribed (got ${JSON.stringify(received.toString('latin1'))})`);
      return { socket, rest: received };
    }

    async function publishBurst(publisher: Awaited<ReturnType<typeof client>>, topic: string, count: number, size: number) {
      const blob = 'x'.repeat(size);
      for (let i = 1; i <= count; i++) {
        publisher.send({ type: 'publish', topic, data: { i, blob } });
        if (i % 2 === 0) await sleep(1); // pacing, not waiting: the healthy reader shares this process, let it read
      }
    }

    async function healthyReads(server: ServerProcess, s: Awaited<ReturnType<typeof client>>, count: number) {
      for (let i = 1; i <= count; i++) {
        const m = await s.next(20_000).catch(async (error: Error) => {
          throw new Error(`${error.message} waiting for message ${i}; server: ${JSON.stringify(await server.stats())}`);
        });
        assert.equal(m.offset, i, 'a healthy subscriber gets every message, in order, with no gap');
      }
    }

    const noBackpressure = target.differences?.has('no-backpressure') ?? false;

    it(noBackpressure ? 'no backpressure on this runtime: healthy subscribers get everything, the stalled one is not closed (documented)' : 'policy close (default): the stalled socket is closed with 1013, healthy ones get everything, memory stays bounded', async () => {
      const server = await startServer(target, ['--handler', 'pubsub']); // the default limit: 1 MiB
      try {
        const healthy = await client(server.wsUrl);
        await healthy.call({ type: 'subscribe', topic: 'firehose' });
        const stalled = await stalledSubscriber(server, 'firehose');
        const publisher = await client(server.wsUrl);
        const rssBefore = rssKiB(server.child.pid!);
        const COUNT = 1500;
        const reading = healthyReads(server, healthy, COUNT);
        await publishBurst(publisher, 'firehose', COUNT, 16 * 1024); // ~24 MiB
        await reading;
        if (noBackpressure) {
          // workerd: no send queue to read, so no policy acts; workerd itself buffers what the stalled reader does not read.
          const stats = await server.stats();
          assert.deepEqual([stats.released['slow-consumer'], stats.live], [0, 3]);
          stalled.socket.destroy();
          healthy.ws.close();
          publisher.ws.close();
          return;
        }
        const stats = await eventually(server.stats, (s) => s.released['slow-consumer'] === 1, 10_000);
        assert.equal(stats.released['slow-consumer'], 1);
        const grew = rssKiB(server.child.pid!) - rssBefore;
        assert.ok(grew < 64 * 1024, `server RSS grew by ${grew} KiB while 24 MiB went to a stalled reader`);
        stalled.socket.destroy();
        healthy.ws.close();
        publisher.ws.close();
      } finally {
        await server.stop();
      }
    });

    it(noBackpressure ? 'policy drop: nothing is dropped on this runtime; the stalled reader, resumed, gets every message (documented)' : 'policy drop: messages for the stalled socket are dropped and counted; it sees a gap', async () => {
      const server = await startServer(target, ['--handler', 'pubsub', '--max-backpressure', '1MiB', '--slow-consumer', 'drop']);
      try {
        const healthy = await client(server.wsUrl);
        await healthy.call({ type: 'subscribe', topic: 'firehose' });
        const stalled = await stalledSubscriber(server, 'firehose');
        const publisher = await client(server.wsUrl);
        const COUNT = 1500;
        const sentBefore = (await server.stats()).messagesOut;
        const reading = healthyReads(server, healthy, COUNT);
        await publishBurst(publisher, 'firehose', COUNT, 16 * 1024);
        await reading;
        const stats = await server.stats();
        // Counted per delivery: every message to the healthy reader, and to the stalled one all but those dropped.
        assert.equal(stats.messagesOut - sentBefore, 2 * COUNT - stats.dropped, 'messages sent = deliveries (the dropped ones are not counted as sent)');
        if (noBackpressure) assert.equal(stats.dropped, 0, 'the runtime exposes no queue: nothing is dropped');
        else assert.ok(stats.dropped > 0, 'messages were dropped for the stalled socket');
        assert.equal(stats.live, 3, 'nobody was closed under the drop policy');
        // The stalled reader resumes: it gets every message that was not dropped (only its own are:
        // the healthy reader got all of them), so a gap in the sequence numbers where they were.
        const chunks: Buffer[] = [stalled.rest];
        stalled.socket.on('data', (chunk: Buffer) => chunks.push(chunk));
        stalled.socket.resume();
        const sent = COUNT - stats.dropped;
        const seqsSeen = () => new Set([...Buffer.concat(chunks).toString('latin1').matchAll(/"type":"message","topic":"firehose","offset":(\d+)/g)].map((m) => Number(m[1])));
        const distinct = await eventually(async () => seqsSeen(), (seen) => seen.size >= sent, 15_000);
        assert.equal(distinct.size, sent, `stalled reader got ${distinct.size} messages; ${stats.dropped} of ${COUNT} were dropped for it`);
        if (noBackpressure) assert.equal(distinct.size, COUNT, 'the runtime buffered them all');
        else assert.ok(distinct.size > 0 && distinct.size < COUNT, `stalled reader got ${distinct.size} of ${COUNT}`);
        // Drained, it is no slow consumer any more: what comes next reaches it again, every message, in order.
        const offsets = () => [...Buffer.concat(chunks).toString('latin1').matchAll(/"type":"message","topic":"firehose","offset":(\d+)/g)].map((m) => Number(m[1]));
        const MORE = 20;
        for (let i = 1; i <= MORE; i++) publisher.send({ type: 'publish', topic: 'firehose', data: { i } });
        for (let i = 1; i <= MORE; i++) assert.equal((await healthy.next(10_000)).offset, COUNT + i);
        const tail = await eventually(async () => offsets().filter((o) => o > COUNT), (o) => o.length >= MORE, 10_000);
        assert.deepEqual(tail, Array.from({ length: MORE }, (_, k) => COUNT + 1 + k), 'the resumed reader gets every later message, in order');
        assert.equal((await server.stats()).dropped, stats.dropped, 'nothing more was dropped');
        stalled.socket.destroy();
        healthy.ws.close();
        publisher.ws.close();
      } finally {
        await server.stop();
      }
    });

    it(noBackpressure ? 'a burst published in one long turn: every reader gets every message (no backpressure on this runtime: nothing to judge, documented)' : 'a burst over the limit published in one long turn closes no reader that drains; a stalled reader is still closed with 1013', async () => {
      const server = await startServer(target, ['--handler', target.testHandler]); // the default limit: 1 MiB
      try {
        /** A reader that reads normally and checks that messages come in order (`<i> xxx…`, i from 1 in each burst). */
        async function reader() {
          const ws = await connect(server.wsUrl);
          assert.equal(await request(ws, 'subscribe burst'), 'subscribed burst');
          const r = { ws, got: 0, last: 0, outOfOrder: 0, code: 0 };
          ws.on('message', (data: Buffer) => {
            const i = Number.parseInt(data.toString('latin1', 0, 12), 10);
            if (i !== r.last + 1 && i !== 1) r.outOfOrder++;
            r.last = i;
            r.got++;
          });
          ws.once('close', (code: number) => (r.code = code));
          return r;
        }
        const readers = [await reader(), await reader(), await reader()];
        const { socket: stalled } = await rawRequest(server.url, upgradeHeaders(new URL(server.url).host));
        stalled.write(textFrame('subscribe burst', { mask: Buffer.from([9, 8, 7, 6]) }));
        await sleep(200);
        stalled.pause();
        const publisher = await connect(server.wsUrl);
        let expected = 0;
        const burst = async (count: number, holdMs: number) => {
          const done = nextMessage(publisher, 60_000);
          publisher.send(`burst burst ${count} 400 ${holdMs}`);
          assert.equal((await done).text, `burst ${count}`);
          expected += count;
          const caughtUp = await eventually(async () => readers.map((r) => r.got), (got) => got.every((n) => n === expected), 30_000);
          assert.deepEqual(caughtUp, readers.map(() => expected), 'every reader gets every message of the burst');
        };
        // 1.6 MB to each subscriber in one turn that lasts over a second once 1.2 MB is queued: no
        // runtime can write within it, so no reader has had a chance to drain. None is slow.
        await burst(4000, 1200);
        assert.deepEqual(readers.map((r) => [r.code, r.outOfOrder]), [[0, 0], [0, 0], [0, 0]], 'no reader closed, none saw a gap');
        assert.equal((await server.stats()).released['slow-consumer'], 0, 'nobody was a slow consumer after the burst');
        if (!noBackpressure) {
          // The stalled reader makes no progress: more bursts (1 MB each, in short turns) until the
          // kernel's buffers and the limit are full; it is closed, the readers are not.
          for (let n = 0; n < 40 && (await server.stats()).released['slow-consumer'] === 0; n++) await burst(2500, 0);
          const stats = await eventually(server.stats, (s) => s.released['slow-consumer'] === 1, 10_000);
          assert.equal(stats.released['slow-consumer'], 1, 'the stalled reader was closed as a slow consumer');
          assert.equal(stats.live, 4, 'the three readers and the publisher are still open');
        }
        assert.deepEqual(readers.map((r) => [r.code, r.outOfOrder]), [[0, 0], [0, 0], [0, 0]]);
        stalled.destroy();
        for (const r of readers) r.ws.close();
        publisher.close();
      } finally {
        await server.stop();
      }
    });
  });
}

export type { WebSocket };
