// Suite group: slots come back exactly once on every path (churn, failed handshakes, clients that vanish mid-handshake).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { closed, connect, eventually, hostOf, PREFIX, rawRequest, request, startServer, type RuntimeTarget, type ServerProcess, type Stats } from '../helpers.ts';
import { upgradeHeaders } from '../frames.ts';

export function runRelease(target: RuntimeTarget): void {
  describe(`${target.name}: slots are released exactly once on every path`, { timeout: 90_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      // A long handshake timeout: slots must come back by the release paths, not by expiry.
      server = await startServer(target, ['--max-connections', '60', '--handshake-timeout', '60s']);
    });
    after(() => server.stop());

    it('churn: thousands of connect/echo/close cycles, clean and abrupt, leave 0 live and 0 reserved', async () => {
      const CYCLES = 2000;
      const PARALLEL = 40;
      const before = await server.stats();
      let next = 0;
      let failures = 0;
      const worker = async () => {
        while (next < CYCLES) {
          const i = next++;
          try {
            const ws = await connect(server.wsUrl);
            if (i % 2 === 0) assert.equal(await request(ws, `m${i}`), `${PREFIX}m${i}`);
            switch (i % 4) {
              case 0:
                ws.close();
                await closed(ws);
                break;
              case 1: // TCP reset, no close frame
                (ws as unknown as { _socket: import('node:net').Socket })._socket.resetAndDestroy();
                break;
              case 2: // FIN without a close frame
                ws.terminate();
                break;
              default: {
                ws.close(4001, 'bye');
                await closed(ws);
              }
            }
          } catch (error) {
            failures++;
            if (failures < 3) console.error(error);
          }
        }
      };
      await Promise.all(Array.from({ length: PARALLEL }, worker));
      assert.equal(failures, 0);
      const stats = await eventually(server.stats, (s) => s.live === 0 && s.reserved === 0, 10_000);
      assert.equal(stats.live, 0);
      assert.equal(stats.reserved, 0);
      assert.equal(stats.accepted - before.accepted, CYCLES);
      const releasedNow = Object.values(stats.released).reduce((a, b) => a + b, 0);
      const releasedBefore = Object.values(before.released).reduce((a, b) => a + b, 0);
      assert.equal(releasedNow - releasedBefore, CYCLES, 'each connection released exactly once');
      assert.equal(stats.released['handshake-timeout'], 0);
      assert.ok(stats.released['connection-lost']! - before.released['connection-lost']! >= CYCLES / 4, 'abrupt closes are counted as connection-lost');
    });

    it('a handshake that fails after admission (bad key, bad version) is answered and leaks nothing', async () => {
      const before = await server.stats();
      const host = hostOf(server.url);
      const badKey = await rawRequest(server.url, upgradeHeaders(host, { 'Sec-WebSocket-Key': 'not-a-key' }));
      assert.equal(badKey.status, 400);
      badKey.socket.destroy();
      const noKey = await rawRequest(server.url, upgradeHeaders(host, { 'Sec-WebSocket-Key': undefined }));
      assert.equal(noKey.status, 400);
      noKey.socket.destroy();
      const badVersion = await rawRequest(server.url, upgradeHeaders(host, { 'Sec-WebSocket-Version': '12' }));
      assert.equal(badVersion.status, 426);
      assert.equal(badVersion.headers['sec-websocket-version'], '13');
      badVersion.socket.destroy();
      const stats = await eventually(server.stats, (s) => s.reserved === 0 && s.live === 0);
      assert.equal(stats.reserved, 0);
      assert.equal(stats.live, 0);
      assert.equal(stats.accepted - before.accepted, 3, 'they were admitted first');
      assert.equal(stats.released['handshake-failed']! - before.released['handshake-failed']!, 3);
    });
  });

  describe(`${target.name}: clients that vanish mid-handshake`, { timeout: 90_000 }, () => {
    const expires = target.differences?.has('vanished-handshake-expires') ?? false;
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target, ['--max-connections', '200', '--handshake-timeout', expires ? '2s' : '60s']);
    });
    after(() => server.stop());

    it(expires ? 'give their slots back by the handshake timeout (documented runtime difference)' : 'give their slots back at once, without waiting for expiry', async () => {
      const before = await server.stats();
      const { hostname, port } = new URL(server.url);
      const net = await import('node:net');
      const N = 100;
      await Promise.all(
        Array.from({ length: N }, async (_, i) => {
          const socket = net.connect(Number(port), hostname);
          await new Promise((resolve) => socket.once('connect', resolve));
          const head = `GET /ws HTTP/1.1\r\n${Object.entries(upgradeHeaders(hostOf(server.url))).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`;
          socket.on('error', () => {});
          if (i % 2) socket.end(head); // request then FIN
          else {
            socket.write(head);
            socket.resetAndDestroy(); // request then RST
          }
        }),
      );
      // The server reads these heads when it gets to them (Deno: after the sockets are gone), so wait
      // until it has admitted some and released every one it admitted, not only for 0 held: 0 held is
      // also what it shows before it has read any.
      const releasedTotal = (s: Stats) => Object.values(s.released).reduce((a, b) => a + b, 0);
      const settled = (s: Stats) => s.accepted > before.accepted && s.reserved === 0 && s.live === 0 && releasedTotal(s) - releasedTotal(before) === s.accepted - before.accepted;
      const stats = await eventually(server.stats, settled, expires ? 8000 : 5000);
      assert.ok(stats.accepted - before.accepted > 0, 'some were admitted before they vanished');
      assert.equal(stats.reserved, 0);
      assert.equal(stats.live, 0);
      assert.equal(releasedTotal(stats) - releasedTotal(before), stats.accepted - before.accepted, 'every admitted one was released');
      if (!expires) assert.equal(stats.released['handshake-timeout'], before.released['handshake-timeout'], 'no slot had to wait for expiry');
      // The server still serves.
      const ws = await connect(server.wsUrl);
      assert.equal(await request(ws, 'still here'), `${PREFIX}still here`);
      ws.close();
    });

    it('and the server still shuts down promptly on SIGTERM', async () => {
      await eventually(server.stats, (s) => s.live === 0);
      const started = Date.now();
      server.child.kill('SIGTERM');
      const { code } = await server.exited;
      assert.equal(code, 0);
      assert.ok(Date.now() - started < 5000, `exited after ${Date.now() - started} ms`);
    });
  });
}
