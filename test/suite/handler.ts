// Suite group: the handler's context on a real server (ctx.signal, handler errors, hub.close(id) kicks, ctx.close).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { closed, connect, eventually, inbox, PREFIX, request, startServer, type RuntimeTarget, type ServerProcess } from '../helpers.ts';

export function runHandler(target: RuntimeTarget): void {
  describe(`${target.name}: signal, handler errors, kicks`, { timeout: 90_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target, ['--handler', target.testHandler]);
    });
    after(() => server.stop());

    async function watcher() {
      const ws = await connect(server.wsUrl);
      const messages = inbox(ws);
      assert.equal(await messages.request('watch'), 'watching');
      return { ws, messages };
    }

    it('aborts ctx.signal once, with a typed reason, when the client leaves; the pending timer is cancelled', async () => {
      const watch = await watcher();
      const clean = await connect(server.wsUrl);
      const cleanId = (await request(clean, 'hold')).split(' ')[1];
      clean.close(1000);
      assert.equal(await watch.messages.next(), `aborted ${cleanId} client-close 1000 typed timer-cleared`);

      const abrupt = await connect(server.wsUrl);
      const abruptId = (await request(abrupt, 'hold')).split(' ')[1];
      (abrupt as unknown as { _socket: import('node:net').Socket })._socket.resetAndDestroy();
      assert.equal(await watch.messages.next(), `aborted ${abruptId} connection-lost 1006 typed timer-cleared`);

      // Nothing else arrives: the signal fired exactly once per connection.
      const extra = await watch.messages.next(300).catch(() => null);
      assert.equal(extra, null);
      watch.ws.close();
      const stats = await eventually(server.stats, (s) => s.live === 0);
      assert.equal(stats.signalsPending, 0, 'every AbortController handed out was aborted');
    });

    it('hub.close(id) kicks a connection: close 4000 and reason kicked', async () => {
      const watch = await watcher();
      const victim = await connect(server.wsUrl);
      const id = (await request(victim, 'hold')).split(' ')[1];
      const victimClosed = closed(victim);
      watch.ws.send(`kick ${id}`);
      // The watcher hears the abort notice, then the reply to its kick.
      assert.equal(await watch.messages.next(), `aborted ${id} kicked 4000 typed timer-cleared`);
      assert.equal(await watch.messages.next(), 'kicked true');
      assert.equal((await victimClosed).code, 4000);
      assert.equal(await watch.messages.request('kick nosuchid'), 'kicked false');
      watch.ws.close();
    });

    it('ctx.close(code) closes with that code', async () => {
      const ws = await connect(server.wsUrl);
      const done = closed(ws);
      ws.send('close 4321');
      assert.deepEqual(await done, { code: 4321, reason: 'bye' });
    });

    it('a handler that throws or rejects closes only that socket with 1011 and is logged with its id', async () => {
      const bystander = await connect(server.wsUrl);
      const before = await server.stats();
      for (const command of ['throw', 'reject']) {
        const ws = await connect(server.wsUrl);
        const id = await request(ws, 'id');
        const done = closed(ws);
        ws.send(command);
        assert.equal((await done).code, 1011);
        const logged = await eventually(
          async () => server.lines.find((l) => l.includes('"handler.error"') && l.includes(`"id":"${id}"`)),
          (l) => l !== undefined,
        );
        assert.ok(logged, `handler.error logged with id ${id}`);
        assert.equal(JSON.parse(logged!).level, 'error');
      }
      assert.equal(await request(bystander, 'still'), `${PREFIX}still`);
      const stats = await server.stats();
      assert.equal(stats.released['handler-error']! - before.released['handler-error']!, 2);
      assert.equal(server.child.exitCode, null, 'the server is still running');
      bystander.close();
    });
  });
}
