// Suite group: the operator's surface: /stats and /metrics behind --admin-token, on their own --admin-port.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { connect, PREFIX, request, startServer, type RuntimeTarget } from '../helpers.ts';

const TOKEN = 'op-token-0123456789abcdef';
const bearer = (token: string) => ({ Authorization: `Bearer ${token}` });

export function runAdmin(target: RuntimeTarget): void {
  describe(`${target.name}: the operator's surface`, { timeout: 60_000 }, () => {
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
