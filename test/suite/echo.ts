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

    it('serves the hubbub client at /client.js, one ES module (and not with --serve-client false)', async () => {
      const res = await fetch(`${server.url}/client.js`);
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^text\/javascript/);
      assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
      const body = await res.text();
      assert.match(body, /export function createClient\(/);
      assert.doesNotMatch(body, /^\s*import\s/m);
      const off = await startServer(target, ['--serve-client', 'false']);
      try {
        const none = await fetch(`${off.url}/client.js`);
        assert.equal(none.status, 404);
        await none.text();
      } finally {
        await off.stop();
      }
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
      // What this group did so far: echo clients that each closed themselves, nothing refused or dropped.
      assert.deepEqual([stats.live, stats.reserved, stats.closing, stats.closesForced, stats.signalsPending, stats.dropped], [0, 0, 0, 0, 0, 0]);
      assert.ok(stats.uptimeSeconds >= 0 && stats.uptimeSeconds < 600, `uptimeSeconds ${stats.uptimeSeconds}`);
      assert.ok(Object.values(stats.refused).every((n) => n === 0), `refused ${JSON.stringify(stats.refused)}`);
      const { 'client-close': clientClosed, ...otherEndings } = stats.released;
      assert.ok(Object.values(otherEndings).every((n) => n === 0), `released ${JSON.stringify(stats.released)}`);
      assert.equal(clientClosed, stats.accepted, 'every connection accepted so far was closed by its client');
      assert.equal(stats.messagesOut, stats.messagesIn, 'one echo per message');
      // …and the figures move by exactly what happens: one more socket, one message, then its close.
      const ws = await connect(server.wsUrl);
      assert.equal(await request(ws, 'x'), `${PREFIX}x`);
      const open = await server.stats();
      assert.deepEqual(
        { live: open.live, accepted: open.accepted - stats.accepted, messagesIn: open.messagesIn - stats.messagesIn, messagesOut: open.messagesOut - stats.messagesOut },
        { live: 1, accepted: 1, messagesIn: 1, messagesOut: 1 },
      );
      ws.close();
      const closed = await eventually(server.stats, (s) => s.live === 0);
      assert.deepEqual(
        { live: closed.live, reserved: closed.reserved, clientClosed: closed.released['client-close'] - clientClosed, accepted: closed.accepted - stats.accepted },
        { live: 0, reserved: 0, clientClosed: 1, accepted: 1 },
      );
    });
  });
}
