// The whole server's /stats from its workers' (cluster mode): what is summed, what is not.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createHub } from '../../src/hub.ts';
import { mergeHubStats, sumFigures, type HubStats } from '../../src/stats.ts';

function figures(change: (s: HubStats) => void): HubStats {
  const s = createHub({ logLevel: 'silent' }, undefined, { sweeper: 'manual' }).stats();
  change(s);
  return s;
}

describe('cluster stats', () => {
  it('sums counts and counters level by level, keeps the furthest state and the longest uptime, merges the largest topics', () => {
    const a = figures((s) => {
      s.live = 3;
      s.accepted = 10;
      s.refused.capacity = 2;
      s.released['client-close'] = 4;
      s.uptimeSeconds = 5;
      s.topics = { count: 2, subscriptions: 3, largest: [{ topic: 'chat', subscribers: 2, offset: 7 }, { topic: 'a', subscribers: 1, offset: 1 }] };
    });
    const b = figures((s) => {
      s.state = 'draining';
      s.live = 1;
      s.accepted = 5;
      s.refused.capacity = 1;
      s.refused.origin = 3;
      s.uptimeSeconds = 9;
      s.topics = { count: 1, subscriptions: 5, largest: [{ topic: 'chat', subscribers: 5, offset: 9 }] };
    });
    const whole = mergeHubStats([a, b], 42);
    assert.equal(whole.state, 'draining');
    assert.equal(whole.live, 4);
    assert.equal(whole.accepted, 15);
    assert.equal(whole.refused.capacity, 3);
    assert.equal(whole.refused.origin, 3);
    assert.equal(whole.released['client-close'], 4);
    assert.equal(whole.uptimeSeconds, 9);
    assert.equal(whole.limit, 42, "the cluster's limit, not a sum");
    assert.deepEqual(whole.topics, { count: 3, subscriptions: 8, largest: [{ topic: 'chat', subscribers: 7, offset: 9 }, { topic: 'a', subscribers: 1, offset: 1 }] });
    assert.equal(whole.backplane, null);
    assert.throws(() => mergeHubStats([], 1));
  });

  it('sumFigures adds nested numbers and treats missing keys as 0', () => {
    assert.deepEqual(sumFigures<Record<string, unknown>>([{ a: 1, n: { x: 1 } }, { a: 2, b: 3, n: { x: 2, y: 1 } }]), { a: 3, b: 3, n: { x: 3, y: 1 } });
  });
});
