// Suite group: the connection limit (503 + Retry-After before the upgrade; a freed slot lets a new socket in).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect, eventually, hostOf, PREFIX, rawRequest, request, startServer, withTimeout, type RuntimeTarget, type ServerProcess } from '../helpers.ts';
import { upgradeHeaders } from '../frames.ts';

export function runLimit(target: RuntimeTarget): void {
  describe(`${target.name}: connection limit`, { timeout: 90_000 }, () => {
    const LIMIT = 5;
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target, ['--max-connections', String(LIMIT), '--retry-after', '7']);
    });
    after(() => server.stop());

    it('refuses socket L+1 with 503 + Retry-After before the upgrade; a freed slot lets a new one in', async () => {
      const sockets = await Promise.all(Array.from({ length: LIMIT }, () => connect(server.wsUrl)));
      const started = Date.now();
      const refusal = await connect(server.wsUrl).then(
        () => assert.fail('socket L+1 must be refused'),
        (error: { status?: number; headers?: Record<string, string> }) => error,
      );
      assert.equal(refusal.status, 503);
      assert.equal(refusal.headers?.['retry-after'], '7');
      assert.ok(Date.now() - started < 2000, 'the refusal is immediate, nobody waits for a slot');
      // The same through a raw socket: a complete HTTP response, and the socket is closed after it.
      const raw = await rawRequest(server.url, upgradeHeaders(hostOf(server.url)));
      assert.equal(raw.status, 503);
      assert.equal(raw.headers['retry-after'], '7');
      if (target.differences?.has('refused-connection-kept-open')) raw.socket.destroy();
      else await withTimeout(new Promise((resolve) => raw.socket.once('close', resolve).resume()), 3000, 'the refused socket is closed by the server');

      let stats = await server.stats();
      assert.equal(stats.live, LIMIT);
      assert.ok((stats.refused.capacity ?? 0) >= 2);

      sockets[0]!.close();
      stats = await eventually(server.stats, (s) => s.live === LIMIT - 1);
      assert.equal(stats.live, LIMIT - 1);
      const again = await connect(server.wsUrl);
      assert.equal(await request(again, 'x'), `${PREFIX}x`);
      for (const ws of [...sockets, again]) ws.close();
      stats = await eventually(server.stats, (s) => s.live === 0);
      assert.equal(stats.live, 0);
      assert.equal(stats.reserved, 0);
    });
  });
}
