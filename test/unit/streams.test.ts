// Positions and history in memory: offsets, the ring, the TTL, the byte and stream caps, epochs.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MemoryStreams, type MemoryStreamsOptions } from '../../src/delivery/streams.ts';

function streams(options: Partial<MemoryStreamsOptions> = {}) {
  let now = 1_000_000;
  const store = new MemoryStreams({ historySize: 3, historyTtl: 10_000, historyMaxBytes: 1 << 20, maxStreams: 100, ...options }, () => now);
  return { store, advance: (ms: number) => (now += ms), now: () => now };
}

describe('memory streams', () => {
  it('offsets grow by one per publication and topic; recovery reads the ring, and says when it cannot', () => {
    const { store } = streams();
    const start = store.position('a');
    assert.equal(start.offset, 0);
    for (let i = 1; i <= 5; i++) assert.deepEqual(store.append('a', `m${i}`), { offset: i, epoch: start.epoch });
    assert.equal(store.append('b', 'x').offset, 1, 'each topic counts its own');
    assert.notEqual(store.position('b').epoch, start.epoch, 'each stream has its own epoch');
    // The ring keeps 3 (offsets 3, 4, 5).
    assert.deepEqual(store.recover('a', { offset: 2, epoch: start.epoch }, 100), { recovered: true, position: { offset: 5, epoch: start.epoch }, publications: [{ offset: 3, data: 'm3' }, { offset: 4, data: 'm4' }, { offset: 5, data: 'm5' }] });
    assert.equal(store.recover('a', { offset: 1, epoch: start.epoch }, 100).recovered, false, 'offset 2 is gone');
    assert.equal(store.recover('a', { offset: 2, epoch: start.epoch }, 2).recovered, false, 'over the replay bound');
    assert.equal(store.recover('a', { offset: 5, epoch: 'other' }, 100).recovered, false, 'another epoch');
    assert.deepEqual(store.recover('a', { offset: 5, epoch: start.epoch }, 100).publications, [], 'nothing missed');
    assert.equal(store.recover('a', { offset: 6, epoch: start.epoch }, 100).recovered, false, 'a position from the future');
    assert.deepEqual(store.history('a', { limit: 2 }).publications.map((p) => p.offset), [4, 5]);
    assert.deepEqual(store.history('a', { since: 3, limit: 10 }).publications.map((p) => p.offset), [4, 5]);
    assert.deepEqual(store.stats(), { streams: 2, publications: 4, bytes: store.stats().bytes, evicted: 0 });
  });

  it('history expires historyTtl after the last publication; a held stream keeps its position, an idle one is forgotten (new epoch)', () => {
    const { store, advance } = streams();
    store.hold('held');
    const held = store.append('held', 'x');
    const idle = store.append('idle', 'y');
    advance(10_001);
    store.sweep();
    assert.equal(store.stats().publications, 0, 'both histories expired');
    assert.deepEqual(store.position('held'), held, 'the subscribed topic keeps offset and epoch');
    assert.equal(store.recover('held', { offset: 0, epoch: held.epoch }, 100).recovered, false, 'its history is gone');
    const fresh = store.position('idle');
    assert.equal(fresh.offset, 0);
    assert.notEqual(fresh.epoch, idle.epoch, 'the forgotten stream starts over under a new epoch');
    store.release('held');
    advance(10_001);
    store.sweep();
    assert.notEqual(store.position('held').epoch, held.epoch, 'released and idle: forgotten too');
  });

  it('historyMaxBytes and maxStreams bound memory: the streams published on longest ago go first, a held one keeps its position', () => {
    const { store } = streams({ historySize: 10, historyMaxBytes: 64 * 1024, maxStreams: 5 });
    store.hold('keep');
    const kept = store.append('keep', 'k');
    const big = 'x'.repeat(10_000); // ~20 kB each as UTF-16
    for (let i = 0; i < 20; i++) store.append(`t${i}`, big);
    const stats = store.stats();
    assert.ok(stats.bytes <= 64 * 1024, `bytes ${stats.bytes}`);
    assert.ok(stats.streams <= 5 + 1, `streams ${stats.streams}`);
    assert.ok(stats.evicted > 0);
    assert.deepEqual(store.position('keep'), kept, 'a subscribed topic never restarts under its subscribers');
    assert.equal(store.append('t19', 'y').offset, 2, 'the newest stream is still there');
  });

  it('historySize 0: offsets are counted, nothing is kept, recovery of anything missed is refused', () => {
    const { store } = streams({ historySize: 0 });
    const { epoch } = store.append('a', 'x');
    assert.equal(store.append('a', 'y').offset, 2);
    assert.equal(store.stats().publications, 0);
    assert.equal(store.recover('a', { offset: 1, epoch }, 100).recovered, false);
    assert.equal(store.recover('a', { offset: 2, epoch }, 100).recovered, true, 'nothing missed is recovered');
  });
});
