// Cluster mode (`--workers 2`), black-box: one port, one limit for the whole server, whole-server
// and per-worker /stats, /healthz and /metrics, a killed worker replaced with its slots returned, drain on SIGTERM.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type WebSocket from 'ws';
import { closed, connect, eventually, fetchFresh, rawRequest, request, serviceSkip, startServer, type RuntimeTarget, type ServerProcess, type Stats } from './helpers.ts';
import { readdirSync } from 'node:fs';
import type { Socket } from 'node:net';
import { textFrame, upgradeHeaders } from './frames.ts';
import { trickle } from './suite/attacks.ts';
import { parseMetrics } from './suite/observability.ts';

const node: RuntimeTarget = { name: 'node', command: [process.execPath, 'dist/node.js'], testHandler: '' };

interface ClusterStats {
  workers: number;
  limit: number;
  slotsUsed: number;
  live: number;
  replaced: number;
  perWorker: { id: number; pid: number; slots: number; live?: number }[];
}

type WholeStats = Stats & { cluster: ClusterStats & { answered: number; rssBytes: number } };

/** /stats of the whole server (the admin listener's, where there is one), on a fresh connection (so round-robin reaches every worker), with a deadline. */
async function wholeStats(server: ServerProcess, timeoutMs = 5000): Promise<WholeStats> {
  const res = await fetchFresh(`${server.adminUrl ?? server.url}/stats`, { signal: AbortSignal.timeout(timeoutMs) });
  return (await res.json()) as WholeStats;
}

/** The cluster section of /stats. */
async function clusterStats(server: ServerProcess, timeoutMs = 5000): Promise<ClusterStats> {
  return (await wholeStats(server, timeoutMs)).cluster;
}

/**
 * /stats while a worker is dying. Node's round-robin primary can lose a connection it was handing to
 * that worker at the instant it died (the handoff's reply never comes, so the primary neither closes
 * nor redistributes it; nodejs/node-v0.x-archive#7928): that request would hang. So each poll has a
 * short deadline, and a lost one counts as "not yet".
 */
const pollClusterStats = (server: ServerProcess) => () => clusterStats(server, 1000).catch(() => undefined);

async function openMany(server: ServerProcess, n: number): Promise<WebSocket[]> {
  const sockets: WebSocket[] = [];
  for (let i = 0; i < n; i++) sockets.push(await connect(server.wsUrl));
  return sockets;
}

describe('cluster mode: --workers 2', { timeout: 120_000 }, () => {
  it('one limit for the whole server, spread over both workers; stats for the whole and each worker', async () => {
    const server = await startServer(node, ['--workers', '2', '--max-connections', '6', '--log-level', 'debug']);
    try {
      await eventually(() => clusterStats(server), (c) => c?.workers === 2);
      const sockets = await openMany(server, 6);
      const refused = await connect(server.wsUrl).then(
        () => assert.fail('socket 7 must be refused'),
        (e: { status?: number; headers?: Record<string, string> }) => e,
      );
      assert.equal(refused.status, 503);
      assert.equal(refused.headers?.['retry-after'], '1');
      // /admission tells the truth of the whole server, whichever worker answers (round-robin).
      for (let i = 0; i < 4; i++) {
        const res = await fetchFresh(`${server.url}/admission`);
        assert.equal(res.status, 503);
        assert.deepEqual(await res.json(), { admit: false, reason: 'capacity', live: 6, limit: 6 });
      }
      const c = await clusterStats(server);
      assert.equal(c.limit, 6);
      assert.equal(c.slotsUsed, 6);
      assert.equal(c.live, 6);
      assert.equal(c.perWorker.length, 2);
      assert.ok(c.perWorker.every((w) => w.slots > 0 && w.slots === w.live), `both workers serve: ${JSON.stringify(c.perWorker)}`);
      // The top-level /stats figures are the whole server's too, whichever worker answers.
      for (let i = 0; i < 4; i++) {
        const whole = await wholeStats(server);
        assert.equal(whole.cluster.answered, 2);
        assert.equal(whole.live, 6);
        assert.equal(whole.limit, 6);
        assert.equal(whole.accepted, 6);
        assert.equal(whole.refused.capacity, 1, 'the 7th socket, refused by one of the workers');
        assert.equal(whole.process.rssBytes, whole.cluster.rssBytes, 'memory of every worker and the primary');
      }
      // Connection ids are unique across the cluster: `<worker id>-<n>`.
      const ids = await eventually(
        async () => server.lines.filter((l) => l.includes('"connection.open"')).map((l) => (JSON.parse(l) as { id: string }).id),
        (list) => list.length === 6,
      );
      assert.ok(ids.every((id) => /^\d+-[0-9a-z]+$/.test(id)), `worker-prefixed ids: ${ids.join(' ')}`);
      assert.equal(new Set(ids).size, 6, `no id twice across workers: ${ids.join(' ')}`);
      // /metrics is the whole server whichever worker answers: every worker's families labelled
      // `worker`, each TYPE once, and the primary's cluster families. Several scrapes, so both
      // workers answer at least once (round-robin).
      for (let i = 0; i < 4; i++) {
        const text = await (await fetchFresh(`${server.url}/metrics`)).text();
        const { samples } = parseMetrics(text);
        const typeLines = text.split('\n').filter((l) => l.startsWith('# TYPE '));
        assert.equal(new Set(typeLines).size, typeLines.length, 'one TYPE line per family');
        const live = [...samples].filter(([k]) => /^hubbub_connections\{worker="\d+",state="live"\}$/.test(k));
        assert.equal(live.length, 2, `a live gauge per worker: ${live.map(([k]) => k).join(', ')}`);
        assert.equal(live.reduce((a, [, v]) => a + v, 0), 6, 'the workers’ live sockets add up to the whole server');
        assert.equal(samples.get('hubbub_cluster_workers'), 2);
        assert.equal(samples.get('hubbub_cluster_slots_used'), 6);
        assert.equal(samples.get('hubbub_cluster_connection_limit'), 6);
        const accepted = [...samples].filter(([k]) => k.startsWith('hubbub_upgrades_accepted_total{worker='));
        assert.equal(accepted.reduce((a, [, v]) => a + v, 0), 6);
      }
      const health = (await (await fetch(`${server.url}/healthz`)).json()) as { status: string; cluster: ClusterStats };
      assert.equal(health.status, 'ok');
      assert.equal(health.cluster.workers, 2);
      sockets[0]!.close();
      await eventually(() => clusterStats(server), (s) => s.slotsUsed === 5);
      const again = await connect(server.wsUrl);
      assert.equal(await request(again, 'hi'), 'Server received: hi');
      for (const ws of [...sockets, again]) ws.close();
    } finally {
      await server.stop();
    }
  });

  it('a worker killed with SIGKILL is replaced and its slots come back', async () => {
    const server = await startServer(node, ['--workers', '2', '--max-connections', '4']);
    try {
      await eventually(() => clusterStats(server), (c) => c?.workers === 2);
      const sockets = await openMany(server, 4);
      const before = await clusterStats(server);
      const victim = before.perWorker.find((w) => w.slots > 0)!;
      const closes = sockets.map((ws) => closed(ws, 10_000).catch(() => undefined));
      process.kill(victim.pid, 'SIGKILL');
      const after = await eventually(
        pollClusterStats(server),
        (c) => c?.workers === 2 && c.replaced === 1 && c.slotsUsed === 4 - victim.slots,
        15_000,
      );
      assert.ok(after, 'no /stats answer within 15 s of the kill');
      assert.equal(after.slotsUsed, 4 - victim.slots, 'the dead worker’s slots returned');
      assert.ok(!after.perWorker.some((w) => w.pid === victim.pid));
      // The freed slots can be used again.
      const fresh = await openMany(server, victim.slots);
      assert.equal((await clusterStats(server)).slotsUsed, 4);
      for (const ws of [...sockets, ...fresh]) ws.terminate();
      await Promise.all(closes);
    } finally {
      await server.stop();
    }
  });

  it('SIGTERM drains every worker: 1001 for live sockets, 503 for new ones, exit 0', async () => {
    const server = await startServer(node, ['--workers', '2', '--shutdown-timeout', '2s']);
    try {
      await eventually(() => clusterStats(server), (c) => c?.workers === 2);
      const sockets = await openMany(server, 4);
      const stuck = await rawRequest(server.url, upgradeHeaders(new URL(server.url).host)); // never answers the close frame
      assert.equal(stuck.status, 101);
      const closes = sockets.map((ws) => closed(ws));
      server.child.kill('SIGTERM');
      for (const c of await Promise.all(closes)) assert.equal(c.code, 1001);
      const refused = await rawRequest(server.url, upgradeHeaders(new URL(server.url).host)).catch(() => undefined);
      if (refused) assert.equal(refused.status, 503); // or already closed: the worker that got it had stopped listening
      const { code } = await server.exited;
      assert.equal(code, 0);
      stuck.socket.destroy();
    } finally {
      await server.stop();
    }
  });
});

/** File descriptors held by the whole server: the primary and every worker. */
function serverFds(server: ServerProcess, workers: ClusterStats): number {
  return [server.child.pid!, ...workers.perWorker.map((w) => w.pid)].reduce((n, pid) => n + readdirSync(`/proc/${pid}/fd`).length, 0);
}

describe('cluster mode: attacks on the limit (--workers 2)', { timeout: 120_000 }, () => {
  it('lingering closes: sockets the workers are closing hold their cluster slot until gone; refused clients that never close hold nothing', async (t) => {
    const LIMIT = 20;
    const ATTACKERS = 200;
    const WAVE = 20;
    // The test handler throws on `throw`: a handler error is closed with courtesy (1011, then up to
    // --close-timeout for the peer's answer), the longest a server-initiated close may linger.
    const server = await startServer(node, ['--workers', '2', '--max-connections', String(LIMIT), '--close-timeout', '60s', '--handler', '.test-build/test/fixtures/handler.js']);
    const held: Socket[] = [];
    try {
      const workers = await eventually(() => clusterStats(server), (c) => c?.workers === 2 && c.perWorker.every((w) => w.pid > 0));
      const baseline = serverFds(server, workers);
      let peak = baseline;
      const sampler = setInterval(() => (peak = Math.max(peak, serverFds(server, workers))), 20);
      let upgraded = 0;
      let refused = 0;
      for (let sent = 0; sent < ATTACKERS; sent += WAVE) {
        await Promise.all(
          Array.from({ length: WAVE }, async () => {
            const response = await rawRequest(server.url, upgradeHeaders(new URL(server.url).host));
            held.push(response.socket);
            response.socket.on('error', () => {});
            if (response.status === 101) {
              upgraded++;
              // Make the handler throw, then never read again and never answer the close frame.
              response.socket.pause();
              response.socket.write(textFrame('throw', { mask: Buffer.from([1, 2, 3, 4]) }));
            } else {
              assert.equal(response.status, 503);
              refused++;
              response.socket.pause(); // and never close it: the worker must
            }
          }),
        );
        const whole = await wholeStats(server);
        assert.ok(whole.live + whole.reserved + whole.closing <= LIMIT, `the whole server holds ${whole.live} live + ${whole.reserved} reserved + ${whole.closing} closing against a limit of ${LIMIT}`);
        assert.ok(whole.cluster.slotsUsed <= LIMIT);
      }
      const settled = await eventually(
        () => wholeStats(server),
        (s) => s.closing === upgraded,
      );
      const fdsAfter = await eventually(async () => serverFds(server, workers), (n) => n <= baseline + LIMIT + 5, 5000);
      clearInterval(sampler);
      t.diagnostic(`${ATTACKERS} attackers against --workers 2, limit ${LIMIT}: ${upgraded} upgraded, ${refused} refused; closing ${settled.closing}, slots used ${settled.cluster.slotsUsed}; server fds ${baseline} → peak ${peak} → ${fdsAfter}`);
      assert.equal(upgraded, LIMIT, 'while the closed sockets linger, their slots stay taken');
      assert.equal(settled.cluster.slotsUsed, LIMIT, 'the cluster slots of the lingering sockets are still held');
      assert.ok(peak <= baseline + LIMIT + WAVE + 10, `the server held ${peak} fds (baseline ${baseline}) against ${ATTACKERS} attackers`);
      assert.ok(fdsAfter <= baseline + LIMIT + 5, `the refused sockets are closed by the server: ${fdsAfter} fds (baseline ${baseline})`);
      // Once the attackers go, the slots come back.
      for (const socket of held) socket.destroy();
      const free = await eventually(() => clusterStats(server), (c) => c.slotsUsed === 0);
      assert.equal(free.slotsUsed, 0);
      const ws = await connect(server.wsUrl);
      ws.close();
    } finally {
      for (const socket of held) socket.destroy();
      await server.stop();
    }
  });

  it('slowloris: each worker caps the connections trickling their head; the whole server counts the drops', async (t) => {
    const CAP = 50;
    // The public listener is full of trickling heads: the figures come from the admin listener.
    const server = await startServer(node, ['--workers', '2', '--max-pending-connections', String(CAP), '--headers-timeout', '60s', '--admin-port', '0']);
    const held: Socket[] = [];
    try {
      const workers = await eventually(() => clusterStats(server), (c) => c?.workers === 2 && c.perWorker.every((w) => w.pid > 0));
      const baseline = serverFds(server, workers);
      await trickle(server.url, 600, held);
      const stats = await eventually(
        () => wholeStats(server),
        (s) => (s.process.pendingConnections ?? 0) + s.connectionsDropped['pending-limit'] >= 600,
      );
      const fds = serverFds(server, workers);
      t.diagnostic(`600 trickling heads against --workers 2, cap ${CAP} per worker: server fds ${baseline} → ${fds}; pending ${stats.process.pendingConnections}, dropped ${stats.connectionsDropped['pending-limit']}`);
      // Each worker: CAP, and up to 4× while they are fresh (src/runtime/node/sockets.ts BURST).
      assert.ok((stats.process.pendingConnections ?? Infinity) <= 2 * 4 * CAP, `pending ${stats.process.pendingConnections}`);
      assert.ok(stats.connectionsDropped['pending-limit'] >= 600 - 2 * 4 * CAP, JSON.stringify(stats.connectionsDropped));
      assert.ok(fds <= baseline + 2 * 4 * CAP + 15, `the server holds ${fds} fds (baseline ${baseline})`);
      assert.equal((await fetchFresh(`${server.adminUrl}/healthz`)).status, 200);
    } finally {
      for (const socket of held) socket.destroy();
      await server.stop();
    }
  });

  it('subscription flood: one connection asking for 20,000 topics holds --max-subscriptions of them, counted for the whole server', async () => {
    const server = await startServer(node, ['--workers', '2', '--handler', '.test-build/test/fixtures/handler.js']);
    try {
      await eventually(() => clusterStats(server), (c) => c?.workers === 2);
      const ws = await connect(server.wsUrl);
      const COUNT = 20_000;
      let answered = 0;
      let refused = 0;
      const done = new Promise<void>((resolve) =>
        ws.on('message', (data) => {
          if (String(data) === 'subscription-limit') refused++;
          if (++answered === COUNT) resolve();
        }),
      );
      for (let i = 0; i < COUNT; i++) ws.send(`try-subscribe flood-${i}`);
      await done;
      assert.equal(refused, COUNT - 128);
      const stats = await wholeStats(server);
      assert.equal(stats.topics.subscriptions, 128);
      assert.equal(stats.subscribesRefused['subscription-limit'], COUNT - 128);
      ws.close();
    } finally {
      await server.stop();
    }
  });

  it('--handler pubsub with --workers and no backplane is a startup error naming the options (each worker would be a topic space of its own)', async () => {
    const child = (await import('node:child_process')).spawnSync(process.execPath, ['dist/node.js', '--workers', '2', '--handler', 'pubsub', '--port', '0'], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(child.status, 2);
    assert.match(child.stderr, /^hubbub: --handler pubsub with --workers needs a --backplane/);
  });
});

describe('cluster mode: one topic space on Redis (--workers 2 --backplane redis://…)', { skip: await serviceSkip('redis', 6379), timeout: 120_000 }, () => {
  /** A pubsub client, and the process it landed on (the random first part of its connection id, learnt from its own publish). */
  async function client(server: ServerProcess) {
    const ws = await connect(server.wsUrl);
    const got: { type: string; topic?: string; offset?: number; data?: unknown; from?: string; id?: number }[] = [];
    ws.on('message', (data: Buffer) => got.push(JSON.parse(data.toString()) as (typeof got)[number]));
    const whoami = `whoami-${Math.random()}`;
    ws.send(JSON.stringify({ type: 'subscribe', topic: whoami }));
    await eventually(async () => got.some((m) => m.type === 'subscribed'), (yes) => yes, 5000);
    ws.send(JSON.stringify({ type: 'publish', topic: whoami, data: 'me' }));
    const own = await eventually(async () => got.find((m) => m.type === 'message' && m.topic === whoami), (m) => m !== undefined, 5000);
    assert.ok(own?.from, 'its own publication came back');
    ws.send(JSON.stringify({ type: 'unsubscribe', topic: whoami }));
    return { ws, got, worker: own.from.split('-')[0]! };
  }

  it('a publisher on one worker reaches the subscribers of the other, with one offset sequence for the topic', async () => {
    const redisDb = 'redis://127.0.0.1:6379/8';
    const server = await startServer(node, ['--workers', '2', '--handler', 'pubsub', '--backplane', redisDb, '--history-size', '100']);
    const sockets: WebSocket[] = [];
    try {
      await eventually(() => clusterStats(server), (c) => c?.workers === 2);
      const topic = `workers-${Date.now()}`;
      // Round-robin spreads the connections; keep going until both workers have subscribers and a publisher.
      const subs: Awaited<ReturnType<typeof client>>[] = [];
      for (let i = 0; i < 20 && (subs.length < 6 || new Set(subs.map((s) => s.worker)).size < 2); i++) {
        const s = await client(server);
        sockets.push(s.ws);
        s.ws.send(JSON.stringify({ type: 'subscribe', topic }));
        subs.push(s);
      }
      const workers = [...new Set(subs.map((s) => s.worker))];
      assert.equal(workers.length, 2, 'subscribers on both workers');
      const pubs: Awaited<ReturnType<typeof client>>[] = [];
      for (let i = 0; i < 20 && pubs.length < 2; i++) {
        const p = await client(server);
        sockets.push(p.ws);
        if (!pubs.some((q) => q.worker === p.worker)) pubs.push(p);
      }
      assert.equal(pubs.length, 2, 'a publisher on each worker');
      await eventually(async () => subs.filter((s) => s.got.some((m) => m.type === 'subscribed' && m.topic === topic)).length, (n) => n === subs.length, 5000);
      const N = 100;
      for (let i = 0; i < N; i++) for (const [k, p] of pubs.entries()) p.ws.send(JSON.stringify({ type: 'publish', topic, data: { k, i }, id: i }));
      const onTopic = (s: (typeof subs)[number]) => s.got.filter((m) => m.type === 'message' && m.topic === topic);
      await eventually(async () => subs.map((s) => onTopic(s).length), (counts) => counts.every((c) => c >= 2 * N), 20_000);
      const reference = onTopic(subs[0]!).map((m) => JSON.stringify(m.data));
      for (const s of subs) {
        const messages = onTopic(s);
        assert.deepEqual(messages.map((m) => m.offset), Array.from({ length: 2 * N }, (_, i) => i + 1), `worker ${s.worker}: every offset exactly once, in order`);
        assert.deepEqual(messages.map((m) => JSON.stringify(m.data)), reference, 'the same publication at the same offset on both workers');
      }
      const published = pubs.flatMap((p) => p.got.filter((m) => m.type === 'published' && m.topic === topic).map((m) => m.offset!));
      assert.deepEqual(published.sort((a, b) => a - b), Array.from({ length: 2 * N }, (_, i) => i + 1), 'the two workers drew from one sequence');
    } finally {
      for (const ws of sockets) ws.terminate();
      await server.stop();
    }
  });
});
