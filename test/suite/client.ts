// Suite group: the hubbub client (src/client) against this runtime's real server, running in Node,
// and on Deno and Bun also running in that runtime (test/fixtures/client-smoke.ts with the
// runtime's own WebSocket): publish, subscribe, for-await, an error code, and a restart of the
// server (SIGTERM: 1001, then the same port again) that the client rides out by itself.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import WebSocket from 'ws';
import { createClient, type SubscribedInfo, type WebSocketConstructor } from '../../src/client/index.ts';
import { denoBinary, eventually, root, startServer, withTimeout, type RuntimeTarget, type ServerProcess } from '../helpers.ts';

/** The runtime the client itself runs in, for the Deno and Bun servers. */
function clientRuntime(target: RuntimeTarget): string[] | undefined {
  if (target.name === 'deno') return [denoBinary(), 'run', '-A', 'test/fixtures/client-smoke.ts'];
  if (target.name === 'bun') return [realpathSync(path.join(root, 'node_modules', '.bin', 'bun')), 'test/fixtures/client-smoke.ts'];
  return undefined;
}

export function runClient(target: RuntimeTarget): void {
  const restartable = target.name !== 'workerd'; // workerd's launcher picks its own port
  describe(`${target.name}: the hubbub client`, { timeout: 90_000 }, () => {
    it('the client (in Node): publish resolves with the position, subscribers get every message; across a server restart it reconnects and resubscribes (recovered:false: the store restarted)', async () => {
      let server: ServerProcess = await startServer(target, ['--handler', 'pubsub', '--history-size', '100']);
      const port = new URL(server.url).port;
      const client = createClient(server.wsUrl, { WebSocket: WebSocket as unknown as WebSocketConstructor, backoff: { min: 50, max: 300 } });
      try {
        const infos: SubscribedInfo[] = [];
        const offsets: number[] = [];
        const sub = client.subscribe('suite', (_d, meta) => offsets.push(meta.offset));
        sub.on('subscribed', (info) => infos.push(info));
        await eventually(async () => infos.length, (n) => n === 1);
        const answers = [];
        for (let i = 0; i < 3; i++) answers.push((await client.publish('suite', i)).offset);
        assert.deepEqual(answers, [1, 2, 3]);
        await eventually(async () => offsets.length, (n) => n === 3);
        assert.deepEqual(offsets, [1, 2, 3]);
        if (!restartable) return;
        server.child.kill('SIGTERM');
        await server.exited;
        server = await startServer(target, ['--handler', 'pubsub', '--history-size', '100', '--port', port]);
        await eventually(async () => infos.length, (n) => n === 2, 15_000);
        assert.equal(infos[1]!.recovered, false, 'a new server: its stream has a new epoch');
        assert.notEqual(infos[1]!.position.epoch, infos[0]!.position.epoch);
        assert.equal((await client.publish('suite', 'after')).offset, 1);
        await eventually(async () => offsets.at(-1), (o) => o === 1);
        assert.equal(client.stats.reconnects, 1);
      } finally {
        client.close();
        await server.stop();
      }
    });

    const runtime = clientRuntime(target);
    it(`the client running in ${target.name} itself, with its own WebSocket and fetch`, { skip: runtime ? false : 'the client in Node is the group above' }, async () => {
      let server: ServerProcess = await startServer(target, ['--handler', 'pubsub', '--history-size', '100']);
      const port = new URL(server.url).port;
      const [cmd, ...args] = runtime!;
      const child = spawn(cmd!, [...args, server.wsUrl], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1' } });
      let stderr = '';
      child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
      const lines: Record<string, unknown>[] = [];
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (line.startsWith('{')) lines.push(JSON.parse(line) as Record<string, unknown>);
      });
      try {
        await withTimeout(eventually(async () => lines.length, (n) => n >= 1, 30_000), 31_000, `phase 1 (${stderr})`);
        assert.deepEqual(lines[0], { phase: 1, answers: [1, 2, 3], read: [1, 2, 3], forbidden: 'forbidden', runtime: target.name });
        server.child.kill('SIGTERM');
        await server.exited;
        server = await startServer(target, ['--handler', 'pubsub', '--history-size', '100', '--port', port]);
        await withTimeout(eventually(async () => lines.length, (n) => n >= 2, 20_000), 21_000, `phase 2 (${stderr})`);
        assert.deepEqual(lines[1], { phase: 2, recovered: false, offset: 1, reconnects: 1, sawDisconnect: true });
      } finally {
        child.kill('SIGKILL');
        await server.stop();
      }
    });
  });
}
