// Backplanes, black-box: three real hubbub nodes sharing the real Redis (127.0.0.1:6379) and NATS
// (127.0.0.1:4222). Fault tests start their own broker on another port and kill or freeze it.
// In CI (CI=true) a missing broker fails; elsewhere those tests skip with a message.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connect, denoBinary, eventually, inbox, nodeServer, reachable, root, serviceSkip, sleep, startServer, tcpProxy, type RuntimeTarget, type ServerProcess } from './helpers.ts';

const node = nodeServer;
const deno: RuntimeTarget = { name: 'deno', command: [denoBinary(), 'run', '-A', 'main.ts'], testHandler: '' };

interface Broker {
  kind: 'redis' | 'nats';
  port: number;
  url: string;
  shared: boolean;
}

const brokers: Broker[] = [
  { kind: 'redis', port: 6379, url: 'redis://127.0.0.1:6379', shared: true },
  { kind: 'nats', port: 4222, url: 'nats://127.0.0.1:4222', shared: true },
];

/** A broker of our own for fault tests, on a port nobody else uses; stopped at the end. */
function ownBroker(kind: 'redis' | 'nats', port: number): { start(): Promise<ChildProcess>; binary: string } {
  const binary = kind === 'redis' ? '/usr/bin/redis-server' : '/usr/sbin/nats-server';
  const dir = mkdtempSync(path.join(tmpdir(), `hubbub-${kind}-`));
  // NATS with JetStream (it keeps the positions), its store in `dir`: a restart finds the stream again.
  const args = kind === 'redis' ? ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir] : ['-a', '127.0.0.1', '-p', String(port), '-js', '-sd', dir];
  return {
    binary,
    async start() {
      const child = spawn(binary, args, { stdio: 'ignore' });
      process.once('exit', () => child.kill('SIGKILL'));
      const deadline = Date.now() + 10_000;
      while (!(await reachable(port))) {
        if (Date.now() > deadline) throw new Error(`${kind} on ${port} did not start`);
        await sleep(50);
      }
      return child;
    },
  };
}

type Client = Awaited<ReturnType<typeof pubsubClient>>;
async function pubsubClient(server: ServerProcess, topic: string) {
  const ws = await connect(server.wsUrl);
  const messages = inbox(ws);
  ws.send(JSON.stringify({ type: 'subscribe', topic }));
  assert.equal(JSON.parse(await messages.next()).type, 'subscribed');
  const received: { data: unknown; from: string; offset: number }[] = [];
  const pump = async () => {
    for (;;) {
      const text = await messages.next(60_000).catch(() => undefined);
      if (text === undefined) return;
      const m = JSON.parse(text) as { type: string; data: unknown; from: string; offset: number };
      if (m.type === 'message') received.push(m);
    }
  };
  void pump();
  const publish = (data: unknown) => ws.send(JSON.stringify({ type: 'publish', topic, data }));
  return { ws, received, publish };
}

function pick(object: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.map((k) => [k, object[k]]));
}

async function health(server: ServerProcess) {
  const res = await fetch(`${server.url}/healthz`);
  return { status: res.status, body: (await res.json()) as { status: string; backplane?: string } };
}

async function startNodes(url: string, count = 3, runtimes: RuntimeTarget[] = [node]): Promise<ServerProcess[]> {
  const nodes = await Promise.all(Array.from({ length: count }, (_, i) => startServer(runtimes[i % runtimes.length]!, ['--handler', 'pubsub', '--backplane', url])));
  for (const n of nodes) await eventually(() => health(n), (h) => h.body.backplane === 'connected', 10_000);
  return nodes;
}

for (const broker of brokers) {
  const skip = await serviceSkip(broker.kind, broker.port);

  describe(`${broker.kind} backplane: three nodes`, { skip, timeout: 120_000 }, () => {
    let nodes: ServerProcess[];
    before(async () => {
      nodes = await startNodes(broker.url);
    });
    after(async () => {
      for (const n of nodes ?? []) await n.stop();
    });

    it('a publish on one node reaches every subscriber on every node exactly once, in order per publisher', async () => {
      const topic = `exactly-once-${Date.now()}`;
      const clients: Client[] = [];
      for (const n of nodes) for (let i = 0; i < 2; i++) clients.push(await pubsubClient(n, topic));
      await sleep(300); // subscriptions reach the broker
      const N = 100;
      for (let i = 0; i < N; i++) {
        clients[0]!.publish({ p: 'a', i });
        clients[2]!.publish({ p: 'b', i });
      }
      await eventually(async () => clients.map((c) => c.received.length), (counts) => counts.every((n) => n >= 2 * N), 15_000);
      await sleep(300); // a duplicate would arrive now
      for (const c of clients) {
        assert.equal(c.received.length, 2 * N, 'exactly once: no loss, no duplicate');
        for (const p of ['a', 'b']) {
          const mine = c.received.map((m) => m.data as { p: string; i: number }).filter((d) => d.p === p).map((d) => d.i);
          assert.deepEqual(mine, Array.from({ length: N }, (_, i) => i), `publisher ${p} in order`);
        }
        // Offsets are the shared store's: the same on every node, and gapless.
        assert.deepEqual(c.received.map((m) => m.offset), Array.from({ length: 2 * N }, (_, i) => i + 1));
      }
      const stats = await Promise.all(nodes.map((n) => n.stats()));
      for (const s of stats) assert.equal((s as unknown as { backplane: { malformed: number } }).backplane.malformed, 0);
      for (const c of clients) c.ws.close();
    });

    it('a malformed message on the broker is counted, logged and ignored', async () => {
      const topic = `malformed-${Date.now()}`;
      const c = await pubsubClient(nodes[1]!, topic);
      await sleep(300);
      const channel = `${broker.kind === 'redis' ? 'hubbub:' : 'hubbub.'}${Buffer.from(topic).toString('base64url')}`;
      await rawPublish(broker, channel, '{"v":99,"garbage":true}');
      await rawPublish(broker, channel, 'not json at all');
      const s = await eventually(() => nodes[1]!.stats(), (st) => (st as unknown as { backplane: { malformed: number } }).backplane.malformed >= 2);
      assert.equal((s as unknown as { backplane: { malformed: number } }).backplane.malformed, 2);
      assert.ok(nodes[1]!.lines.some((l) => l.includes('"backplane.error"') && l.includes(`${broker.kind}.receive`)));
      // Still delivering.
      const d = await pubsubClient(nodes[2]!, topic);
      await sleep(300);
      d.publish('after garbage');
      await eventually(async () => c.received.length, (n) => n === 1);
      assert.equal(c.received[0]!.data, 'after garbage');
      c.ws.close();
      d.ws.close();
    });
  });

  describe(`${broker.kind} backplane: a Node node and a Deno node`, { skip, timeout: 120_000 }, () => {
    let nodes: ServerProcess[];
    before(async () => {
      nodes = await startNodes(broker.url, 2, [node, deno]);
    });
    after(async () => {
      for (const n of nodes ?? []) await n.stop();
    });

    it('share topics exactly once across runtimes', async () => {
      const topic = `mixed-${Date.now()}`;
      const onNode = await pubsubClient(nodes[0]!, topic);
      const onDeno = await pubsubClient(nodes[1]!, topic);
      await sleep(300);
      for (let i = 0; i < 20; i++) (i % 2 ? onNode : onDeno).publish(i);
      await eventually(async () => [onNode.received.length, onDeno.received.length], ([a, b]) => a! >= 20 && b! >= 20, 10_000);
      await sleep(300);
      for (const c of [onNode, onDeno]) assert.deepEqual(c.received.map((m) => m.data).sort((a, b) => Number(a) - Number(b)), Array.from({ length: 20 }, (_, i) => i));
      onNode.ws.close();
      onDeno.ws.close();
    });
  });

  const faultPort = broker.kind === 'redis' ? 16379 : 14222;
  const own = ownBroker(broker.kind, faultPort);
  const faultSkip = skip || (!existsSync(own.binary) ? `${own.binary} is missing` : false);

  describe(`${broker.kind} backplane: broker faults (own broker on ${faultPort})`, { skip: faultSkip, timeout: 180_000 }, () => {
    let child: ChildProcess;
    let nodes: ServerProcess[];
    const url = `${broker.kind}://127.0.0.1:${faultPort}`;
    before(async () => {
      child = await own.start();
      nodes = await startNodes(url, 2);
    });
    after(async () => {
      for (const n of nodes ?? []) await n.stop();
      child?.kill('SIGKILL');
    });

    async function crossNodeDelivery(topic: string) {
      const a = await pubsubClient(nodes[0]!, topic);
      const b = await pubsubClient(nodes[1]!, topic);
      return { a, b };
    }

    for (const fault of ['kill -9 and restart', 'SIGSTOP and SIGCONT'] as const) {
      it(`${fault}: nodes keep serving locally, report degraded, then reconnect, resubscribe and deliver again`, async () => {
        const topic = `fault-${fault.replace(/\W+/g, '-')}-${Date.now()}`;
        const { a, b } = await crossNodeDelivery(topic);
        await sleep(300);
        a.publish('before');
        await eventually(async () => b.received.length, (n) => n === 1, 5000);

        if (fault === 'kill -9 and restart') child.kill('SIGKILL');
        else child.kill('SIGSTOP');
        for (const n of nodes) {
          const h = await eventually(() => health(n), (x) => x.body.status === 'degraded', 10_000);
          assert.equal(h.status, 200, 'a degraded node is still healthy for its local clients');
          assert.equal(h.body.backplane, 'degraded');
        }
        // The broker keeps the positions (Redis, NATS JetStream): without it a publish or a subscribe
        // cannot get one, so each is answered `unavailable` (the client may try again) rather than
        // numbered on one node only.
        const ws = await connect(nodes[0]!.wsUrl);
        const box = inbox(ws);
        assert.deepEqual(pick(JSON.parse(await box.request(JSON.stringify({ type: 'subscribe', topic }))), ['type', 'code']), { type: 'error', code: 'unavailable' });
        assert.deepEqual(pick(JSON.parse(await box.request(JSON.stringify({ type: 'publish', topic, data: 'during' }))), ['type', 'code']), { type: 'error', code: 'unavailable' });
        ws.close();
        const degradedStats = (await nodes[0]!.stats()) as unknown as { backplane: { droppedWhileDegraded: number } };
        assert.ok(degradedStats.backplane.droppedWhileDegraded >= 1, 'the outage policy drops and counts');

        if (fault === 'kill -9 and restart') child = await own.start();
        else child.kill('SIGCONT');
        for (const n of nodes) await eventually(() => health(n), (x) => x.body.backplane === 'connected', 20_000);
        await sleep(500);
        a.publish('after');
        await eventually(async () => b.received.map((m) => m.data), (d) => d.includes('after'), 10_000);
        // The publish during the outage was refused, not replayed later.
        assert.deepEqual(
          b.received.map((m) => m.data),
          ['before', 'after'],
        );
        // No offset was given during the outage. A Redis that lost its data starts a new stream; the
        // NATS server finds its stream again in its store.
        assert.equal(b.received[1]!.offset, fault === 'kill -9 and restart' && broker.kind === 'redis' ? 1 : b.received[0]!.offset + 1);
        for (const c of [a, b]) c.ws.close();
      });
    }
  });
}

describe('redis backplane: connections that go silent (held open by a proxy that forwards nothing)', { skip: await serviceSkip('redis', 6379), timeout: 60_000 }, () => {
  it('each is torn down after three unanswered PING probes and made again: the node reports degraded, then connected, and delivers', async () => {
    const proxy = await tcpProxy(6379);
    const [proxied, direct] = await Promise.all([startNodes(`redis://127.0.0.1:${proxy.port}`, 1), startNodes('redis://127.0.0.1:6379', 1)]).then((n) => n.flat());
    try {
      const topic = `silent-${Date.now()}`;
      const onDirect = await pubsubClient(direct!, topic);
      const onProxied = await pubsubClient(proxied!, topic);
      await sleep(300); // subscriptions reach the broker
      onProxied.publish('before');
      assert.deepEqual(await eventually(async () => onDirect.received.map((m) => m.data), (d) => d.includes('before'), 5000), ['before']);
      const made = proxy.accepted;
      proxy.silence();
      assert.equal((await eventually(() => health(proxied!), (h) => h.body.backplane === 'degraded', 10_000)).body.backplane, 'degraded');
      // Only hubbub's teardown ends them: TCP sees its segments acknowledged and would wait forever.
      assert.equal((await eventually(() => health(proxied!), (h) => h.body.backplane === 'connected', 20_000)).body.backplane, 'connected', 'connected again while the old connections are still held');
      assert.ok(proxy.accepted >= made + 2, `the publisher and the subscriber connections were made again (${made} → ${proxy.accepted})`);
      await sleep(300); // the resubscription reaches the broker
      onProxied.publish('after');
      assert.deepEqual(await eventually(async () => onDirect.received.map((m) => m.data), (d) => d.includes('after'), 10_000), ['before', 'after']);
      for (const c of [onDirect, onProxied]) c.ws.close();
    } finally {
      await Promise.all([proxied?.stop(), direct?.stop()]);
      proxy.close();
    }
  });
});

describe('nats backplane: a server without JetStream', { skip: existsSync('/usr/sbin/nats-server') ? false : '/usr/sbin/nats-server is missing', timeout: 60_000 }, () => {
  it('is a startup error naming it: the node exits 1 before listening (positions could not be shared)', async () => {
    const port = 14223;
    const broker = spawn('/usr/sbin/nats-server', ['-a', '127.0.0.1', '-p', String(port)], { stdio: 'ignore' });
    process.once('exit', () => broker.kill('SIGKILL'));
    try {
      await eventually(() => reachable(port), Boolean, 10_000);
      const child = spawn(process.execPath, ['dist/node.js', '--handler', 'pubsub', '--port', '0', '--backplane', `nats://127.0.0.1:${port}`], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
      const [code] = (await once(child, 'exit')) as [number | null];
      assert.equal(code, 1, out);
      assert.ok(out.includes('has no JetStream') && out.includes('nats-server with -js'), out);
      assert.ok(!out.includes('"event":"listening"'), 'it never listened');
    } finally {
      broker.kill('SIGKILL');
    }
  });
});

/** Publishes a raw string on a broker channel, bypassing hubbub (malformed-message test). */
async function rawPublish(broker: Broker, channel: string, payload: string): Promise<void> {
  if (broker.kind === 'redis') {
    const { Redis } = (await import('ioredis')) as unknown as { Redis: new (url: string) => { publish(c: string, m: string): Promise<unknown>; quit(): Promise<unknown> } };
    const client = new Redis(broker.url);
    await client.publish(channel, payload);
    await client.quit();
  } else {
    const { connect: natsConnect } = (await import('@nats-io/transport-node')) as unknown as {
      connect(o: object): Promise<{ publish(s: string, p: string): void; flush(): Promise<void>; close(): Promise<void> }>;
    };
    const nc = await natsConnect({ servers: broker.url });
    nc.publish(channel, payload);
    await nc.flush();
    await nc.close();
  }
}
