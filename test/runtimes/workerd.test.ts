// Runs the black-box suite against hubbub on Cloudflare's workerd (test/fixtures/workerd-launcher.mjs),
// and checks what only workerd has: the offline bundle, `wrangler dev` on wrangler.toml, hibernation.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, it } from 'node:test';
import { closed, connect, eventually, inbox, PREFIX, request, sleep, startServer, root, type RuntimeDifference, type RuntimeTarget, type ServerProcess } from '../helpers.ts';
import { runSuite } from '../suite/index.ts';

// Bundles are made once per run and shared by every server the suite starts.
const cache = mkdtempSync(path.join(tmpdir(), 'hubbub-workerd-test-'));
process.env.HUBBUB_WORKERD_CACHE = cache;
process.on('exit', () => rmSync(cache, { recursive: true, force: true }));

/** wrangler, offline, without prompts or telemetry; its bin script refuses Node < 22.12, its CLI runs on 20. */
function wrangler(args: readonly string[], home: string) {
  return {
    command: process.execPath,
    args: ['--no-warnings', path.join(root, 'node_modules', 'wrangler', 'wrangler-dist', 'cli.js'), ...args],
    env: {
      ...process.env,
      CI: 'true',
      NO_COLOR: '1',
      WRANGLER_SEND_METRICS: 'false',
      CLOUDFLARE_CF_FETCH_ENABLED: 'false',
      WRANGLER_HIDE_BANNER: 'true',
      XDG_CONFIG_HOME: home,
    },
  };
}

/** workerd's documented differences (README, "Runtime differences"); helpers.ts names each one. */
const differences: RuntimeDifference[] = [
  // workerd keeps the TCP connection of a refused upgrade open (it drops `Connection: close`).
  'refused-connection-kept-open',
  // An application cannot send a ping: hubbub has no heartbeat, a silent peer is never dropped as idle.
  'no-heartbeat',
  // workerd's WebSocket has no bufferedAmount: the slow-consumer policies never see a queue (and
  // workerd buffers whatever is sent to a stalled reader).
  'no-backpressure',
  // hubbub declines permessage-deflate: workerd would inflate up to 32 MiB whatever --max-payload says.
  'no-permessage-deflate',
  // workerd's HTTP server has no headers timeout hubbub can set.
  'no-headers-timeout',
  // workerd drops the Upgrade header from a 426 answer.
  'no-upgrade-header-on-426',
  // workerd echoes a ping payload over 125 bytes in its pong, and its close frames can carry a reason
  // over 123 bytes: control frames RFC 6455 forbids.
  'oversized-control-frames',
  // workerd accepts connections itself: no hook on them for the adapter.
  'no-pending-connection-cap',
  // No sweeper timer (it would keep the object awake): token expiry is acted on at the next event.
  'sweeps-on-events',
  // (workerd parses frames itself: its answers to bad frames are listed in test/suite/conformance.ts, by name.)
];

const target: RuntimeTarget = {
  name: 'workerd',
  command: [process.execPath, 'test/fixtures/workerd-launcher.mjs'],
  testHandler: 'test/fixtures/handler.ts',
  differences: new Set(differences),
};

describe('workerd: wrangler and the Durable Object', { timeout: 180_000 }, () => {
  it('wrangler deploy --dry-run bundles wrangler.toml offline: one module exporting HubObject and the Worker', () => {
    const home = mkdtempSync(path.join(tmpdir(), 'hubbub-wrangler-'));
    try {
      const out = path.join(home, 'out');
      const run = wrangler(['deploy', '--dry-run', '--outdir', out], home);
      const result = spawnSync(run.command, run.args, { cwd: root, env: run.env, encoding: 'utf8', timeout: 120_000 });
      assert.equal(result.status, 0, `${result.stdout}\n${result.stderr}`);
      assert.match(result.stdout, /env\.HUB \(HubObject\)\s+Durable Object/);
      const script = readdirSync(out).find((f) => f.endsWith('.js'));
      assert.ok(script, 'a bundle was written');
      const code = readFileSync(path.join(out, script), 'utf8');
      assert.match(code, /export\s*\{[^}]*HubObject[^}]*\}/);
      assert.doesNotMatch(code, /require\("(net|tls|dns)"\)/, 'no Node-only client library (backplanes) in the bundle');
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('wrangler dev (local, no account) serves wrangler.toml: echo over /ws, 503 + Retry-After over the limit', async () => {
    const home = mkdtempSync(path.join(tmpdir(), 'hubbub-wrangler-'));
    const run = wrangler(
      ['dev', '--local', '--ip', '127.0.0.1', '--port', '0', '--show-interactive-dev-session=false', '--persist-to', path.join(home, 'state'), '--var', 'HUBBUB_MAX_CONNECTIONS:2', '--var', 'HUBBUB_RETRY_AFTER:9'],
      home,
    );
    // Its own process group: wrangler starts workerd, and both must go at the end.
    const child = spawn(run.command, run.args, { cwd: root, env: run.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let output = '';
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (output += chunk));
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      const url = await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout! }).on('line', (line) => {
          output += `${line}\n`;
          const ready = /Ready on (http:\/\/[^\s]+)/.exec(line);
          if (ready) resolve(ready[1]!.replace(/\/$/, ''));
        });
        void exited.then(() => reject(new Error(`wrangler dev exited: ${output}`)));
        setTimeout(() => reject(new Error(`wrangler dev not ready within 60 s: ${output}`)), 60_000).unref();
      });
      const health = await eventually(
        () => fetch(`${url}/healthz`).then((r) => r.status, () => 0),
        (status) => status === 200 || child.exitCode !== null,
        20_000,
      );
      assert.equal(health, 200, output);
      const wsUrl = `${url.replace(/^http/, 'ws')}/ws`;
      const a = await connect(wsUrl);
      const b = await connect(wsUrl);
      assert.equal(await request(a, 'from wrangler dev'), `${PREFIX}from wrangler dev`);
      const refused = await connect(wsUrl).then(
        () => assert.fail('the third socket must be refused'),
        (error: { status?: number; headers?: Record<string, string> }) => error,
      );
      assert.equal(refused.status, 503);
      assert.equal(refused.headers?.['retry-after'], '9');
      const stats = (await (await fetch(`${url}/stats`)).json()) as { runtime: string; live: number; limit: number };
      assert.deepEqual([stats.runtime, stats.live, stats.limit], ['workerd', 2, 2]);
      a.close();
      b.close();
    } finally {
      try {
        process.kill(-child.pid!, 'SIGTERM');
      } catch {
        // already gone
      }
      const gone = await Promise.race([exited.then(() => true), sleep(5000).then(() => false)]);
      if (!gone) {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
      }
      rmSync(home, { recursive: true, force: true });
    }
  });

  it('hibernation: the object is evicted while its sockets stay open, and rebuilt with them (counts, topics, principals and their cap)', async () => {
    type Full = Awaited<ReturnType<ServerProcess['stats']>> & { uptimeSeconds: number; process: { webSockets?: number } };
    const authHandler = target.testHandler.replace(/handler\.ts$/, 'auth-handler.ts');
    const [pubsub, auth] = await Promise.all([
      startServer(target, ['--handler', 'pubsub']),
      startServer(target, ['--handler', authHandler, '--max-connections-per-principal', '1']),
    ]);
    try {
      // One after another: sockets whose upgrades reach the object at the same time keep it from ever
      // hibernating in this workerd (cloudflare/workerd#6862, fixed after 1.20260730).
      const clients = [];
      for (let i = 0; i < 3; i++) clients.push(await connect(pubsub.wsUrl));
      const boxes = clients.map((ws) => inbox(ws));
      for (const box of boxes.slice(0, 2)) assert.equal(JSON.parse(await box.request('{"type":"subscribe","topic":"sleepy"}')).type, 'subscribed');
      const alice = await connect(`${auth.wsUrl}?token=alice`);
      assert.equal(await request(alice, 'whoami'), 'alice tester');
      assert.equal((await pubsub.stats()).live, 3);
      assert.equal((await auth.stats()).live, 1);

      // No event for > 10 s: workerd evicts the objects (no timer holds them); the sockets stay with workerd.
      await sleep(12_000);

      const after = (await pubsub.stats()) as Full;
      assert.ok(after.uptimeSeconds < 5, `a new instance answers (uptime ${after.uptimeSeconds} s)`);
      // Its log line comes through workerd's stdout, after the answer.
      const restored = await eventually(async () => pubsub.lines.find((l) => l.includes('"hibernation.restored"')), (l) => l !== undefined);
      assert.equal(JSON.parse(restored!).live, 3, 'the object was rebuilt from 3 hibernated sockets');
      assert.equal(after.live, 3, 'live counts the hibernated sockets');
      assert.equal(after.process.webSockets, 3, 'ctx.getWebSockets()');
      assert.equal(after.topics.subscriptions, 2, 'subscriptions came back from the attachments');
      // Every socket still works, and a publish reaches the subscribers it had before.
      const ack = JSON.parse(await boxes[2]!.request('{"type":"publish","topic":"sleepy","data":"wake up","id":1}')) as { type: string; delivered: number };
      assert.deepEqual([ack.type, ack.delivered], ['published', 2]);
      for (const box of boxes.slice(0, 2)) assert.equal((JSON.parse(await box.next()) as { data: string }).data, 'wake up');

      // The principal came back with its socket, and still counts against the per-principal cap.
      assert.ok(((await auth.stats()) as Full).uptimeSeconds < 5, 'the auth object was rebuilt too');
      assert.equal(await request(alice, 'whoami'), 'alice tester');
      const again = await connect(`${auth.wsUrl}?token=alice`).then(
        () => assert.fail('a second socket for alice must be refused'),
        (error: { status?: number }) => error,
      );
      assert.equal(again.status, 429);

      // Endings after a rebuild are counted as before.
      const done = closed(clients[0]!);
      clients[0]!.close(1000);
      assert.equal((await done).code, 1000);
      clients[1]!.terminate();
      const end = await eventually(pubsub.stats, (s) => s.live === 1);
      assert.deepEqual([end.live, end.released['client-close'], end.released['connection-lost']], [1, 1, 1]);
      clients[2]!.close();
      alice.close();
    } finally {
      await Promise.all([pubsub.stop(), auth.stop()]);
    }
  });
});

runSuite(target);
