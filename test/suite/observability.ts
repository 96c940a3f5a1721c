// Black-box tests of /metrics (Prometheus text format) and the structured logs, on every runtime.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { closed, connect, eventually, request, startServer, type RuntimeTarget, type ServerProcess } from '../helpers.ts';

type Samples = Map<string, number>;

/** Parses the Prometheus text format strictly enough to catch a malformed exposition. */
export function parseMetrics(text: string): { samples: Samples; types: Map<string, string> } {
  const samples: Samples = new Map();
  const types = new Map<string, string>();
  assert.ok(text.endsWith('\n'), 'exposition ends with a newline');
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const meta = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (meta) {
      if (meta[1] === 'TYPE') {
        assert.match(meta[3]!, /^(counter|gauge|histogram|summary|untyped)$/);
        types.set(meta[2]!, meta[3]!);
      }
      continue;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$/.exec(line);
    assert.ok(m, `malformed sample line: ${line}`);
    assert.ok(types.has(m[1]!), `${m[1]} has a TYPE line before its samples`);
    samples.set(`${m[1]}${m[2] ?? ''}`, Number(m[3]));
  }
  return { samples, types };
}

export function runObservability(target: RuntimeTarget): void {
  describe(`${target.name}: /metrics and logs`, { timeout: 60_000 }, () => {
    let server: ServerProcess;
    const scrape = async () => {
      const res = await fetch(`${server.url}/metrics`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
      return parseMetrics(await res.text());
    };
    before(async () => {
      server = await startServer(target, ['--max-connections', '2', '--log-level', 'debug']);
    });
    after(() => server.stop());

    it('exposes the families, and the counters move with traffic, refusals and closes', async () => {
      const before = await scrape();
      for (const family of [
        'hubbub_connections',
        'hubbub_connection_limit',
        'hubbub_upgrades_accepted_total',
        'hubbub_upgrades_refused_total',
        'hubbub_connections_closed_total',
        'hubbub_messages_received_total',
        'hubbub_messages_sent_total',
        'hubbub_bytes_received_total',
        'hubbub_bytes_sent_total',
        'hubbub_messages_dropped_total',
        'hubbub_heartbeat_terminations_total',
        'hubbub_event_loop_lag_seconds',
      ]) {
        assert.ok(before.types.has(family), `family ${family}`);
      }
      assert.equal(before.types.get('hubbub_messages_received_total'), 'counter');
      assert.equal(before.samples.get('hubbub_connection_limit'), 2);
      assert.equal(before.samples.get(`hubbub_info{version="0.1.0",runtime="${target.name}"}`), 1);
      const get = (m: { samples: Samples }, key: string) => m.samples.get(key) ?? 0;

      const a = await connect(server.wsUrl);
      const b = await connect(server.wsUrl);
      await connect(server.wsUrl).then(
        () => assert.fail('over the limit'),
        () => undefined,
      );
      const live = await scrape();
      assert.equal(get(live, 'hubbub_connections{state="live"}'), 2);
      assert.equal(get(live, 'hubbub_upgrades_refused_total{reason="capacity"}') - get(before, 'hubbub_upgrades_refused_total{reason="capacity"}'), 1);

      assert.equal(await request(a, 'héllo'), 'Server received: héllo');
      assert.equal(await request(a, 'x'), 'Server received: x');
      const done = closed(a);
      a.close(1000);
      await done;
      b.close(4001);
      const after = await eventually(scrape, (m) => get(m, 'hubbub_connections{state="live"}') === 0);
      assert.equal(get(after, 'hubbub_messages_received_total') - get(before, 'hubbub_messages_received_total'), 2);
      assert.equal(get(after, 'hubbub_messages_sent_total') - get(before, 'hubbub_messages_sent_total'), 2);
      assert.equal(get(after, 'hubbub_bytes_received_total') - get(before, 'hubbub_bytes_received_total'), 7, 'héllo is 6 UTF-8 bytes, x is 1');
      assert.equal(get(after, 'hubbub_bytes_sent_total') - get(before, 'hubbub_bytes_sent_total'), 7 + 2 * 'Server received: '.length);
      assert.equal(get(after, 'hubbub_connections_closed_total{reason="client-close",code="1000"}'), 1);
      assert.equal(get(after, 'hubbub_connections_closed_total{reason="client-close",code="4001"}'), 1);
      assert.equal(get(after, 'hubbub_upgrades_accepted_total') - get(before, 'hubbub_upgrades_accepted_total'), 2);
    });

    it('logs one JSON object per line; connection-scoped lines carry the id; nothing per message', async () => {
      const ws = await connect(server.wsUrl);
      for (let i = 0; i < 20; i++) await request(ws, `m${i}`);
      ws.close();
      await eventually(async () => server.lines.filter((l) => l.includes('"connection.close"')).length, (n) => n >= 3);
      const records = server.lines.map((line) => JSON.parse(line) as Record<string, unknown>);
      for (const r of records) {
        assert.equal(typeof r.time, 'string');
        assert.match(String(r.level), /^(debug|info|warn|error)$/);
        assert.equal(typeof r.event, 'string');
        if (String(r.event).startsWith('connection.')) assert.equal(typeof r.id, 'string', `${String(r.event)} has the connection id`);
      }
      const perMessage = records.filter((r) => String(r.event).includes('message'));
      assert.equal(perMessage.length, 0, 'no log line per message, even at debug');
    });
  });
}
