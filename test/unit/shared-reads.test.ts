// SharedReads: the same recovery read under way is made once, publications are one object per
// topic, epoch and offset (so the registry frames each once), and what is kept stays within its bound.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SharedReads } from '../../src/delivery/shared-reads.ts';
import type { SharedStreams, StreamRead } from '../../src/delivery/streams.ts';

/** A store of one stream per topic, offsets 1…head, counting the reads that reach it. */
function store(head: number, epoch = 'e1') {
  const counts = { reads: 0 };
  const s: SharedStreams = {
    append: async () => ({ offset: ++head, epoch }),
    listening: async () => undefined,
    read: async (_topic, q): Promise<StreamRead> => {
      counts.reads++;
      await new Promise((r) => setTimeout(r, 5));
      const after = q.after ?? Math.max(0, head - q.limit);
      const publications = Array.from({ length: Math.min(q.limit, head - after) }, (_, i) => ({ offset: after + 1 + i, data: `m${after + 1 + i}` }));
      return { position: { offset: head, epoch }, publications, complete: true };
    },
  };
  return { s, counts, setEpoch: (e: string) => (epoch = e) };
}

describe('SharedReads', () => {
  it('the same read asked within one timer turn reaches the store once, one asked after it is sent does not join it; overlapping reads share their publication objects', async () => {
    const { s, counts } = store(100);
    const reads = new SharedReads(s, 1000);
    const same = await Promise.all(Array.from({ length: 50 }, () => reads.read('t', { after: 40, epoch: 'e1', limit: 300, recover: true })));
    assert.equal(counts.reads, 1);
    for (const r of same) assert.equal(r.publications[0], same[0]!.publications[0]);
    // Sent (a timer turn later) and not answered yet: a new asker gets a read of its own.
    const first = reads.read('t', { after: 40, epoch: 'e1', limit: 300, recover: true });
    await new Promise((r) => setTimeout(r, 1));
    const second = reads.read('t', { after: 40, epoch: 'e1', limit: 300, recover: true });
    await Promise.all([first, second]);
    assert.equal(counts.reads, 3, 'a read already sent may have started before the asker\'s hold: not joined');
    const later = await reads.read('t', { after: 60, epoch: 'e1', limit: 300, recover: true });
    assert.equal(counts.reads, 4, 'a different read goes to the store');
    assert.equal(later.publications[0], same[0]!.publications[20], 'offset 61 is the same object as before');
    assert.equal(reads.kept, 60);
    // Position reads (fresh subscribes) are shared by the same rule: joined while not yet sent.
    const positions = await Promise.all(Array.from({ length: 50 }, () => reads.read('t', { limit: 0 })));
    for (const p of positions) assert.equal(p.publications.length, 0);
    assert.equal(counts.reads, 5, 'fifty position reads asked together are one read');
    const sent = reads.read('t', { limit: 0 });
    await new Promise((r) => setTimeout(r, 1));
    await Promise.all([sent, reads.read('t', { limit: 0 })]);
    assert.equal(counts.reads, 7, 'a position read already sent is not joined');
  });

  it('a new epoch is a new stream; what is kept stays within the bound and is forgotten when unused', async () => {
    let now = 0;
    const { s, setEpoch } = store(100);
    const reads = new SharedReads(s, 150, () => now);
    await reads.read('a', { after: 0, limit: 100 });
    await reads.read('b', { after: 0, limit: 100 });
    assert.ok(reads.kept <= 150 + 100, `within the bound and one read: ${reads.kept}`);
    assert.equal(reads.kept, 100, 'the oldest topic went first');
    const before = await reads.read('b', { after: 10, limit: 5 });
    setEpoch('e2');
    const after = await reads.read('b', { after: 10, limit: 5 });
    assert.notEqual(after.publications[0], before.publications[0], 'not mixed across epochs');
    now += 6000;
    reads.sweep(now);
    assert.equal(reads.kept, 0);
  });
});
