// Suite group: graceful shutdown on SIGTERM/SIGINT (draining, 1001 closes, the deadline, a second signal).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { closed, connect, eventually, hostOf, rawRequest, startServer, type RuntimeTarget } from '../helpers.ts';
import { upgradeHeaders } from '../frames.ts';
import type WebSocket from 'ws';

export function runShutdown(target: RuntimeTarget): void {
  describe(`${target.name}: graceful shutdown`, { timeout: 90_000 }, () => {
    it('SIGTERM: /healthz and /ws answer 503 while draining, live sockets get 1001, exit 0 by the deadline', async () => {
      const server = await startServer(target, ['--shutdown-timeout', '2s', '--retry-after', '3']);
      try {
        const a = await connect(server.wsUrl);
        const b = await connect(server.wsUrl);
        // A client that upgrades and then never answers the close frame keeps the drain going.
        const stuck = await rawRequest(server.url, upgradeHeaders(hostOf(server.url)));
        assert.equal(stuck.status, 101);
        await eventually(server.stats, (s) => s.live === 3);
        const closes = [closed(a), closed(b)];
        const started = Date.now();
        server.child.kill('SIGTERM');
        // Draining: checked before the closes complete, because workerd ends the TCP connections it
        // closed together only once every one of those peers has answered (here: at the deadline).
        const health = await eventually(() => fetch(`${server.url}/healthz`).then(async (r) => (await r.text(), r.status)), (status) => status === 503, 3000);
        assert.equal(health, 503);
        const refused = await rawRequest(server.url, upgradeHeaders(hostOf(server.url)));
        assert.equal(refused.status, 503);
        assert.equal(refused.headers['retry-after'], '3');
        refused.socket.destroy();
        for (const c of await Promise.all(closes)) assert.equal(c.code, 1001);
        const { code } = await server.exited;
        assert.equal(code, 0);
        const elapsed = Date.now() - started;
        assert.ok(elapsed >= 1500 && elapsed < 6000, `waited for the deadline (${elapsed} ms)`);
        stuck.socket.destroy();
      } finally {
        await server.stop();
      }
    });

    // Bun (documented): the linger it cannot see the end of is waited out, about 5 s.
    const promptly = target.differences?.has('shutdown-waits-out-linger') ? 7000 : 5000;
    it(`exits promptly with 0 when every socket closes in time (within ${promptly / 1000} s)`, async () => {
      const server = await startServer(target, ['--shutdown-timeout', '20s']);
      try {
        const ws = await connect(server.wsUrl);
        const done = closed(ws);
        const started = Date.now();
        server.child.kill('SIGINT');
        assert.equal((await done).code, 1001);
        const { code } = await server.exited;
        assert.equal(code, 0);
        assert.ok(Date.now() - started < promptly, `exited ${Date.now() - started} ms after SIGINT`);
      } finally {
        await server.stop();
      }
    });

    // workerd's SIGTERM is the local launcher's (Miniflare): under this load its drain was seen to
    // miss (every client 1006) and to take 20 s to exit; on Cloudflare nothing sends a signal (README).
    const launcherDrain = target.name === 'workerd' ? "workerd's local launcher drain is not bounded under this load (documented); Cloudflare sends no signal" : false;
    it('SIGTERM under load: 1,000 clients each sending 50 messages a second all get 1001, exit 0', { skip: launcherDrain }, async () => {
      const server = await startServer(target, ['--max-connections', '2000', '--shutdown-timeout', '10s']);
      const clients: WebSocket[] = [];
      const senders: ReturnType<typeof setInterval>[] = [];
      try {
        for (let i = 0; i < 1000; i += 50) clients.push(...(await Promise.all(Array.from({ length: 50 }, () => connect(server.wsUrl)))));
        const closes = clients.map((ws) => closed(ws, 30_000));
        for (const ws of clients) {
          ws.on('error', () => {}); // a write racing the close; the close code is what is checked
          senders.push(setInterval(() => ws.readyState === ws.OPEN && ws.send('tick'), 20));
        }
        // Every client is busy: the server has heard from all of them, more than once each. (A
        // thousand, because the close frames Deno lost to busy peers showed at 200 only now and then.)
        await eventually(server.stats, (s) => s.messagesIn >= 10_000, 20_000);
        const started = Date.now();
        server.child.kill('SIGTERM');
        const codes: Record<number, number> = {};
        for (const { code } of await Promise.all(closes)) codes[code] = (codes[code] ?? 0) + 1;
        assert.deepEqual(codes, { 1001: 1000 }, 'every busy client got the close frame');
        const { code } = await server.exited;
        assert.equal(code, 0);
        // The 10 s deadline, plus the process's own exit (workerd's launcher then disposes Miniflare).
        assert.ok(Date.now() - started < 13_000, `exited ${Date.now() - started} ms after SIGTERM: within the shutdown deadline`);
      } finally {
        for (const timer of senders) clearInterval(timer);
        for (const ws of clients) ws.terminate();
        await server.stop();
      }
    });

    it('a second signal exits at once', async () => {
      const server = await startServer(target, ['--shutdown-timeout', '30s']);
      try {
        const stuck = await rawRequest(server.url, upgradeHeaders(hostOf(server.url)));
        assert.equal(stuck.status, 101);
        server.child.kill('SIGTERM');
        // The drain has begun (logged), and the stuck socket holds it open.
        await eventually(async () => server.lines.some((line) => line.includes('"shutdown.start"')), Boolean, 5000);
        assert.ok(server.lines.some((line) => line.includes('"shutdown.start"')), 'the first signal starts the drain');
        assert.equal(server.child.exitCode, null, 'still draining after the first signal');
        const started = Date.now();
        server.child.kill('SIGTERM');
        const { code } = await server.exited;
        assert.equal(code, 143);
        assert.ok(Date.now() - started < 3000);
        stuck.socket.destroy();
      } finally {
        await server.stop();
      }
    });
  });
}
