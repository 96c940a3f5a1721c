// mergeExpositions: several Prometheus expositions as one (cluster mode's /metrics).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { mergeExpositions } from '../../src/metrics.ts';

describe('mergeExpositions', () => {
  it('keeps each family together, HELP and TYPE once, samples from every text in order', () => {
    const a = '# HELP x_total X.\n# TYPE x_total counter\nx_total{worker="1"} 3\n# HELP y Y.\n# TYPE y gauge\ny{worker="1"} 1\n';
    const b = '# HELP x_total X.\n# TYPE x_total counter\nx_total{worker="2"} 4\n# HELP z Z.\n# TYPE z gauge\nz 9\n';
    assert.equal(
      mergeExpositions([a, b]),
      '# HELP x_total X.\n# TYPE x_total counter\nx_total{worker="1"} 3\nx_total{worker="2"} 4\n# HELP y Y.\n# TYPE y gauge\ny{worker="1"} 1\n# HELP z Z.\n# TYPE z gauge\nz 9\n',
    );
  });

  it('one text comes back unchanged; none gives an empty exposition', () => {
    const a = '# HELP y Y.\n# TYPE y gauge\ny{state="live"} 1\ny{state="reserved"} 0\n';
    assert.equal(mergeExpositions([a]), a);
    assert.equal(mergeExpositions([]), '');
  });
});
