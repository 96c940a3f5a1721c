// Unit tests of the topic index, hub.publish and the slow-consumer policy.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Connection } from '../../src/connection.ts';
import type { SocketLike } from '../../src/contracts.ts';
import { createHub } from '../../src/hub.ts';

function socket(buffered = 0) {
  const sent: unknown[] = [];
  const closes: number[] = [];
  const s: SocketLike & { readyState: number; bufferedAmount: number } = {
    readyState: 1,
    bufferedAmount: buffered,
    send: (d) => {
      // As in every runtime: what is sent is queued until the runtime writes it.
      sent.push(d);
      s.bufferedAmount += typeof d === 'string' ? d.length : d.byteLength;
    },
    close: (code) => {
      closes.push(code ?? 0);
      s.readyState = 2;
    },
  };
  return { s, sent, closes };
}

function openConnection(hub: ReturnType<typeof createHub>, buffered = 0) {
  const conn = hub.registry.reserve('127.0.0.1');
  assert.ok(conn instanceof Connection);
  const sock = socket(buffered);
  conn.onOpen(undefined, sock.s);
  return { conn, ...sock };
}

describe('topics', () => {
  it('publish reaches every subscriber once, with per-topic offsets, except the one excluded', async () => {
    const hub = createHub({ logLevel: 'silent', handler: { formatPublish: (_topic, offset, data) => (data === 'offset?' ? `m${offset}` : data) } });
    const a = openConnection(hub);
    const b = openConnection(hub);
    a.conn.subscribe('t');
    b.conn.subscribe('t');
    assert.equal(a.conn.subscribe('t'), false, 'a second subscribe is a no-op');
    assert.equal((await hub.publish('t', 'offset?')).delivered, 2);
    assert.equal((await hub.publish('t', 'plain', { except: a.conn })).delivered, 1);
    assert.equal((await hub.publish('t', 'by id', { except: b.conn.id })).delivered, 1);
    assert.deepEqual(a.sent, ['m1', 'by id']);
    assert.deepEqual(b.sent, ['m1', 'plain']);
    assert.equal((await hub.position('t')).offset, 3);
    assert.equal((await hub.publish('nobody', 'x')).delivered, 0);
    void hub.shutdown(0);
  });

  it('every ending unsubscribes: the index forgets the connection and empty topics', async () => {
    const hub = createHub({ logLevel: 'silent', handler: {} });
    const a = openConnection(hub);
    a.conn.subscribe('x');
    a.conn.subscribe('y');
    assert.equal(hub.topics.subscriptions, 2);
    a.conn.onClose({ code: 1006 }, a.s);
    assert.equal(hub.topics.subscriptions, 0);
    assert.equal(hub.topics.size, 0);
    assert.equal(a.conn.subscribe('z'), false, 'an ended connection cannot subscribe');
    void hub.shutdown(0);
  });

  it('slow consumer, close policy: over 4x the limit closes with 1013 at once', async () => {
    const hub = createHub({ logLevel: 'silent', handler: {}, maxBackpressure: 1024 });
    const slow = openConnection(hub, 5000);
    slow.conn.subscribe('t');
    assert.equal((await hub.publish('t', 'x')).delivered, 0);
    assert.equal(slow.conn.releaseReason?.kind, 'slow-consumer');
    assert.deepEqual(slow.closes, [1013]);
    void hub.shutdown(0);
  });

  it('slow consumer: a queue just over the limit gets a grace (a second and two sweeps without progress), then the policy (drop counts)', async () => {
    const hub = createHub({ logLevel: 'silent', handler: {}, maxBackpressure: 1024, slowConsumer: 'drop' }, undefined, { sweeper: 'manual' });
    const c = openConnection(hub, 2000);
    c.conn.subscribe('t');
    assert.equal((await hub.publish('t', 'during grace')).delivered, 1);
    await new Promise((resolve) => setTimeout(resolve, 1100)); // the queue stays over the limit past the 1 s grace
    hub.sweep();
    hub.sweep();
    assert.equal((await hub.publish('t', 'dropped')).delivered, 0);
    assert.equal(hub.counters.dropped, 1);
    c.s.bufferedAmount = 0; // drained
    assert.equal((await hub.publish('t', 'after drain')).delivered, 1);
    assert.deepEqual(c.sent, ['during grace', 'after drain']);
    assert.equal(c.conn.releaseReason, undefined);
    void hub.shutdown(0);
  });

  it('slow consumer: a queue over the limit that is draining keeps its grace, however long it stays over', async () => {
    const hub = createHub({ logLevel: 'silent', handler: {}, maxBackpressure: 1024 }, undefined, { sweeper: 'manual' });
    const c = openConnection(hub, 2000);
    c.conn.subscribe('t');
    assert.equal((await hub.publish('t', 'a')).delivered, 1);
    await new Promise((resolve) => setTimeout(resolve, 1100));
    hub.sweep();
    hub.sweep();
    c.s.bufferedAmount = 1900; // still over the limit, but bytes were written since the last send
    assert.equal((await hub.publish('t', 'b')).delivered, 1);
    assert.equal((await hub.publish('t', 'c')).delivered, 1, 'the grace started again at the progress');
    assert.deepEqual(c.sent, ['a', 'b', 'c']);
    assert.equal(c.conn.releaseReason, undefined);
    void hub.shutdown(0);
  });

  it('slow consumer: one long turn of the event loop is not time without progress (no sweep ran: the runtime could not write)', async () => {
    const hub = createHub({ logLevel: 'silent', handler: {}, maxBackpressure: 1024 }, undefined, { sweeper: 'manual' });
    const c = openConnection(hub, 2000);
    c.conn.subscribe('t');
    assert.equal((await hub.publish('t', 'first')).delivered, 1);
    for (const until = Date.now() + 1100; Date.now() < until; ); // the same turn, past the 1 s grace
    assert.equal((await hub.publish('t', 'same turn')).delivered, 1);
    hub.sweep(); // the first turn after it: still no chance to see the queue drain
    assert.equal((await hub.publish('t', 'next turn')).delivered, 1);
    hub.sweep(); // a whole sweep interval later, and still no progress: a slow consumer
    assert.equal((await hub.publish('t', 'stalled')).delivered, 0);
    assert.equal(c.conn.releaseReason?.kind, 'slow-consumer');
    assert.deepEqual(c.closes, [1013]);
    void hub.shutdown(0);
  });
});

describe('the library API of positions, history and presence', () => {
  it('hub.publish returns the position; hub.history reads what is kept; ctx.subscribe(topic, { since }) replays and reports', async () => {
    const hub = createHub({ logLevel: 'silent', historySize: 10, handler: { formatPublish: (_t, offset, data) => `${offset}:${String(data)}` } }, undefined, { sweeper: 'manual' });
    const a = openConnection(hub);
    a.conn.subscribe('t');
    const first = await hub.publish('t', 'a');
    assert.deepEqual(first, { offset: 1, epoch: first.epoch, delivered: 1 });
    hub.publish('t', 'b');
    hub.publish('t', 'c');
    assert.deepEqual(await hub.position('t'), { offset: 3, epoch: first.epoch });
    assert.deepEqual((await hub.history('t', { since: 1 })).publications.map((p) => [p.offset, p.data]), [[2, 'b'], [3, 'c']]);
    assert.deepEqual((await hub.history('t', { limit: 1 })).publications.map((p) => p.offset), [3]);
    const b = openConnection(hub);
    const told: unknown[] = [];
    const result = await b.conn.subscribe('t', { since: { offset: 1, epoch: first.epoch }, beforeReplay: (r) => told.push([r.recovered, b.sent.length]) });
    assert.deepEqual(result, { outcome: 'subscribed', position: { offset: 3, epoch: first.epoch }, recovered: true, replayed: 2 });
    assert.deepEqual(told, [[true, 0]], 'beforeReplay runs before anything is replayed');
    assert.deepEqual(b.sent, ['2:b', '3:c']);
    hub.publish('t', 'd');
    assert.deepEqual(b.sent, ['2:b', '3:c', '4:d'], 'then live');
    const c = openConnection(hub);
    assert.equal((await c.conn.subscribe('t', { since: { offset: 3, epoch: 'other' } })).recovered, false);
    assert.deepEqual(c.sent, []);
    void hub.shutdown(0);
  });

  it('hub.presence counts and lists the subscribers (with their principal), within the limit', async () => {
    const hub = createHub({ logLevel: 'silent' }, undefined, { sweeper: 'manual' });
    const conns = Array.from({ length: 3 }, () => openConnection(hub));
    const withPrincipal = hub.registry.reserve('127.0.0.1', { id: 'alice' });
    assert.ok(withPrincipal instanceof Connection);
    withPrincipal.onOpen(undefined, socket().s);
    for (const { conn } of conns) conn.subscribe('room');
    withPrincipal.subscribe('room');
    const all = await hub.presence('room');
    assert.equal(all.count, 4);
    assert.deepEqual(all.members.at(-1), { id: withPrincipal.id, principal: 'alice' });
    assert.deepEqual(all.members[0], { id: conns[0]!.conn.id });
    assert.equal((await hub.presence('room', { limit: 2 })).members.length, 2);
    assert.equal((await hub.presence('room', { limit: 2 })).count, 4, 'the count is whole');
    assert.deepEqual(await hub.presence('empty'), { topic: 'empty', count: 0, members: [] });
    void hub.shutdown(0);
  });
});
