// A connection limit shared by several nodes through Redis (--cluster-limit), black-box, on the real
// Redis; the outage test uses its own Redis on another port. In CI a missing Redis fails.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import type WebSocket from 'ws';
import { connect, eventually, nodeServer, reachable, serviceSkip, sleep, startServer, type ServerProcess } from './helpers.ts';

const node = nodeServer;
const skip = await serviceSkip('redis', 6379);

const tryConnect = (s: ServerProcess) =>
  connect(s.wsUrl).then(
    (ws) => ws,
    (e: { status?: number }) => e.status ?? -1,
  );

async function startNodes(count: number, args: string[]): Promise<ServerProcess[]> {
  return Promise.all(Array.from({ length: count }, () => startServer(node, args)));
}

describe('cluster-wide limit through Redis', { skip, timeout: 120_000 }, () => {
  it('three nodes share one limit; a node killed with SIGKILL gives its slots back within the lease time', async () => {
    const name = `test-limit-${Date.now()}`;
    const nodes = await startNodes(3, ['--cluster-limit', 'redis://127.0.0.1:6379', '--cluster-name', name, '--max-connections', '6', '--slot-block', '1', '--lease-time', '2s']);
    try {
      const sockets: WebSocket[] = [];
      for (const n of nodes) for (let i = 0; i < 2; i++) sockets.push((await tryConnect(n)) as WebSocket);
      assert.equal(sockets.filter((s) => typeof s !== 'number').length, 6);
      for (const n of nodes) assert.equal(await tryConnect(n), 503, 'the 7th is refused on every node');
      const stats = (await nodes[1]!.stats()) as unknown as { clusterLimit: { nodes: number; held: number; state: string } };
      assert.equal(stats.clusterLimit.state, 'connected');
      assert.equal(stats.clusterLimit.nodes, 3);

      const killedAt = Date.now();
      nodes[0]!.child.kill('SIGKILL');
      assert.equal(await tryConnect(nodes[1]!), 503, 'before the lease expires the dead node still holds its slots');
      const fresh = await eventually(() => tryConnect(nodes[1]!), (r) => typeof r !== 'number', 8000);
      assert.notEqual(typeof fresh, 'number', 'a slot came back');
      const waited = Date.now() - killedAt;
      assert.ok(waited < 6000, `slots came back after ${waited} ms (lease 2 s)`);
      (fresh as WebSocket).close();
      for (const s of sockets) s.terminate();
    } finally {
      for (const n of nodes) await n.stop();
    }
  });

  it('Redis unreachable: each node falls back to its share of the limit and says so in /healthz', async () => {
    const port = 16380;
    const dir = mkdtempSync(path.join(tmpdir(), 'hubbub-redis-'));
    const start = async () => {
      const child = spawn('/usr/bin/redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], { stdio: 'ignore' });
      while (!(await reachable(port))) await sleep(50);
      return child;
    };
    let redis: ChildProcess = await start();
    const nodes = await startNodes(2, ['--cluster-limit', `redis://127.0.0.1:${port}`, '--max-connections', '4', '--slot-block', '1', '--lease-time', '1s']);
    try {
      const a = (await tryConnect(nodes[0]!)) as WebSocket;
      redis.kill('SIGKILL');
      const health = await eventually(
        async () => (await (await fetch(`${nodes[0]!.url}/healthz`)).json()) as { status: string; clusterLimit: string },
        (h) => h.status === 'degraded',
        10_000,
      );
      assert.equal(health.clusterLimit, 'local share of 2');
      // Node 0 already uses 1: one more on its share of 2, then refused.
      const b = await tryConnect(nodes[0]!);
      assert.notEqual(typeof b, 'number');
      assert.equal(await tryConnect(nodes[0]!), 503);
      redis = await start();
      await eventually(async () => ((await (await fetch(`${nodes[0]!.url}/healthz`)).json()) as { status: string }).status, (s) => s === 'ok', 10_000);
      for (const ws of [a, b]) if (typeof ws !== 'number') ws.close();
    } finally {
      for (const n of nodes) await n.stop();
      redis.kill('SIGKILL');
    }
  });
});
