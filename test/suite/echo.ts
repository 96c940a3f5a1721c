// Suite group: echo of text and binary, the 426 answer to a plain GET /ws, /healthz and /stats.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect, eventually, nextMessage, PREFIX, request, startServer, type RuntimeTarget, type ServerProcess } from '../helpers.ts';

export function runEcho(target: RuntimeTarget): void {
  describe(`${target.name}: echo and routes`, { timeout: 90_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target);
    });
    after(() => server.stop());

    it('echoes text with the seed prefix, including multi-byte UTF-8 and empty messages', async () => {
      const ws = await connect(server.wsUrl);
      assert.equal(await request(ws, 'hi'), `${PREFIX}hi`);
      const utf8 = 'héllo ☃ — 日本語 🎉🚀';
      const reply = nextMessage(ws);
      ws.send(utf8);
      const got = await reply;
      assert.equal(got.binary, false);
      assert.equal(got.text, PREFIX + utf8);
      assert.equal(await request(ws, ''), PREFIX);
      ws.close();
    });

    it('echoes binary as binary: the prefix bytes then the payload', async () => {
      const ws = await connect(server.wsUrl);
      const payload = Buffer.from([0, 1, 2, 0xfe, 0xff, 0x80]);
      const reply = nextMessage(ws);
      ws.send(payload);
      const got = await reply;
      assert.equal(got.binary, true);
      assert.deepEqual(got.data, Buffer.concat([Buffer.from(PREFIX), payload]));
      ws.close();
    });

    it('answers a plain GET /ws with 426 Upgrade Required', async () => {
      const res = await fetch(`${server.url}/ws`);
      assert.equal(res.status, 426);
      // workerd strips Upgrade from a non-101 answer; Sec-WebSocket-Version still says what to use.
      if (target.differences?.has('no-upgrade-header-on-426')) assert.equal(res.headers.get('sec-websocket-version'), '13');
      else assert.equal(res.headers.get('upgrade'), 'websocket');
      await res.text();
    });

    it('serves /healthz and /stats', async () => {
      const health = await fetch(`${server.url}/healthz`);
      assert.equal(health.status, 200);
      assert.deepEqual(await health.json(), { status: 'ok' });
      // (Sockets of the tests before are closed first, so that the deltas below are this test's own.)
      const stats = await eventually(server.stats, (s) => s.live === 0 && s.reserved === 0);
      assert.equal(stats.runtime, target.name);
      assert.equal(stats.state, 'running');
      assert.equal(stats.limit, 100, 'the default limit is the seed maxConnections = 100');
      for (const key of ['live', 'reserved', 'accepted'] as const) assert.equal(typeof stats[key], 'number');
      assert.equal(typeof stats.refused.capacity, 'number');
      assert.equal(typeof stats.released['client-close'], 'number');
      // …and the figures move with what happens: one more socket, then its close.
      const ws = await connect(server.wsUrl);
      assert.equal(await request(ws, 'x'), `${PREFIX}x`);
      const open = await server.stats();
      assert.deepEqual([open.live - stats.live, open.accepted - stats.accepted, open.messagesIn - stats.messagesIn >= 1], [1, 1, true]);
      ws.close();
      const closed = await eventually(server.stats, (s) => s.released['client-close'] === open.released['client-close'] + 1);
      assert.equal(closed.live, stats.live);
    });
  });
}
