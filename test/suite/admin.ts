// Suite group: the operator's surface: /stats and /metrics for local clients only by default, behind
// --admin-token, on their own --admin-port; the demo page only where it is asked for.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connect, PREFIX, request, startServer, type RuntimeTarget } from '../helpers.ts';
import { createRemoteHost, remoteHostUnavailable } from '../netns.ts';

const TOKEN = 'op-token-0123456789abcdef';
const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

export function runAdmin(target: RuntimeTarget): void {
  describe(`${target.name}: the operator's surface`, { timeout: 60_000 }, () => {
    it(
      'by default /stats and /metrics answer local clients only: a peer on another host and a proxied request get 403; /healthz, /admission and /ws stay public',
      { skip: remoteHostUnavailable() },
      async () => {
        const server = await startServer(target, ['--host', '0.0.0.0']);
        const remote = await createRemoteHost();
        try {
          const port = new URL(server.url).port;
          const local = `http://127.0.0.1:${port}`;
          const status = async (url: string) => Number(await remote.exec(['curl', '-s', '-o', '/dev/null', '-m', '5', '-w', '%{http_code}', url]));
          for (const path of ['/stats', '/metrics']) {
            assert.equal((await fetch(`${local}${path}`)).status, 200, `local ${path}`);
            assert.equal(await status(`http://${remote.hostAddress}:${port}${path}`), 403, `remote ${path}`);
            assert.equal((await fetch(`${local}${path}`, { headers: { 'X-Forwarded-For': '203.0.113.9' } })).status, 403, `proxied ${path}`);
            assert.equal((await fetch(`${local}${path}`, { headers: { Forwarded: 'for=203.0.113.9' } })).status, 403, `proxied ${path} (Forwarded)`);
          }
          const refusal = await fetch(`${local}/stats`, { headers: { 'X-Forwarded-For': '203.0.113.9' } });
          assert.match(await refusal.text(), /--admin-token/, 'the refusal says how to open it');
          assert.equal(await status(`http://${remote.hostAddress}:${port}/healthz`), 200, 'remote /healthz');
          assert.equal(await status(`http://${remote.hostAddress}:${port}/admission`), 200, 'remote /admission');
          // A remote WebSocket client is served as before (curl's upgrade: 101 and then the timeout cuts it).
          const upgrade = await remote.exec([
            'curl', '-s', '-o', '/dev/null', '-m', '1', '-w', '%{http_code}', '--http1.1',
            '-H', 'Connection: Upgrade', '-H', 'Upgrade: websocket', '-H', 'Sec-WebSocket-Version: 13', '-H', 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
            `http://${remote.hostAddress}:${port}/ws`,
          ]).catch((error: { stdout?: string }) => error.stdout ?? '');
          assert.equal(upgrade, '101', 'remote /ws upgrade');
        } finally {
          await remote.close();
          await server.stop();
        }
      },
    );

    it('--admin-token opens /stats to a remote operator with the token, and to nobody without it (not even locally)', { skip: remoteHostUnavailable() }, async () => {
      const server = await startServer(target, ['--host', '0.0.0.0', '--admin-token', TOKEN]);
      const remote = await createRemoteHost();
      try {
        const port = new URL(server.url).port;
        const status = async (...args: string[]) => Number(await remote.exec(['curl', '-s', '-o', '/dev/null', '-m', '5', '-w', '%{http_code}', ...args]));
        assert.equal(await status('-H', `Authorization: Bearer ${TOKEN}`, `http://${remote.hostAddress}:${port}/stats`), 200);
        assert.equal(await status(`http://${remote.hostAddress}:${port}/stats`), 401);
        assert.equal((await fetch(`http://127.0.0.1:${port}/stats`)).status, 401, 'the token applies to local clients too');
      } finally {
        await remote.close();
        await server.stop();
      }
    });

    it("the demo page: not served by default with the echo handler, served with --handler pubsub, and --demo decides", async () => {
      const plain = await startServer(target, []);
      const pubsub = await startServer(target, ['--handler', 'pubsub']);
      const forced = await startServer(target, ['--handler', 'pubsub', '--demo', 'off']);
      try {
        assert.equal((await fetch(`${plain.url}/`)).status, 404);
        const page = await fetch(`${pubsub.url}/`);
        assert.equal(page.status, 200);
        assert.match(await page.text(), /<title>hubbub demo<\/title>/);
        assert.equal((await fetch(`${forced.url}/`)).status, 404);
      } finally {
        await Promise.all([plain.stop(), pubsub.stop(), forced.stop()]);
      }
    });

    it('--admin-token: /stats and /metrics answer 401 without the token and 200 with it; /healthz and /ws stay public', async () => {
      const server = await startServer(target, ['--admin-token', TOKEN]);
      try {
        for (const path of ['/stats', '/metrics']) {
          assert.equal((await fetch(`${server.url}${path}`)).status, 401, `${path} without a token`);
          assert.equal((await fetch(`${server.url}${path}`, { headers: bearer('wrong-token-0123456789') })).status, 401, `${path} with a wrong token`);
          assert.equal((await fetch(`${server.url}${path}`, { headers: bearer(TOKEN) })).status, 200, `${path} with the token`);
        }
        assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
        const ws = await connect(server.wsUrl);
        assert.equal(await request(ws, 'hi'), `${PREFIX}hi`);
        assert.equal((await server.stats()).live, 1);
        ws.close();
      } finally {
        await server.stop();
      }
    });

    it(
      '--admin-port: /stats and /metrics move to the admin listener (127.0.0.1 by default); the public one no longer has them',
      { skip: target.name === 'workerd' ? 'workerd has one listener (HUBBUB_ADMIN_PORT is a startup error there)' : false },
      async () => {
        const server = await startServer(target, ['--admin-port', '0', '--admin-token', TOKEN]);
        try {
          const admin = server.adminUrl;
          assert.ok(admin, 'the listening line names the admin listener');
          assert.equal(new URL(admin).hostname, '127.0.0.1');
          assert.notEqual(new URL(admin).port, new URL(server.url).port);
          for (const path of ['/stats', '/metrics']) {
            assert.equal((await fetch(`${server.url}${path}`, { headers: bearer(TOKEN) })).status, 404, `public ${path}`);
            assert.equal((await fetch(`${admin}${path}`)).status, 401, `admin ${path} without a token`);
            assert.equal((await fetch(`${admin}${path}`, { headers: bearer(TOKEN) })).status, 200, `admin ${path}`);
          }
          assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
          assert.equal((await fetch(`${admin}/healthz`)).status, 200);
          const ws = await connect(server.wsUrl);
          assert.equal(await request(ws, 'hi'), `${PREFIX}hi`);
          const stats = await server.stats();
          assert.equal(stats.live, 1);
          ws.close();
        } finally {
          await server.stop();
        }
      },
    );
  });
}
