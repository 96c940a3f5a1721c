// `hubbub loadtest`, black box: the real load client (two forked client processes) against the
// real Node server with the pubsub handler, all four phases, small and bounded. Also what it
// refuses: targets outside loopback, bad flags, and a phase that hangs past --timeout.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { runLoadtest, type LoadtestSummary } from '../src/loadtest/index.ts';
import { parseLoadtestArgs } from '../src/loadtest/options.ts';
import { eventually, serviceSkip, startServer, tcpProxy, type ServerProcess } from './helpers.ts';

const node = { name: 'node', command: [process.execPath, 'dist/node.js'], testHandler: '.test-build/test/fixtures/handler.js' };

/** Runs the loadtest with captured output (not a terminal: no progress bars). */
async function loadtest(args: string[]) {
  let stdout = '';
  let stderr = '';
  const started = performance.now();
  const code = await runLoadtest(args, { stdout: (t) => void (stdout += t), stderr: (t) => void (stderr += t), isTTY: false });
  return { code, stdout, stderr, ms: performance.now() - started };
}

describe('loadtest', { timeout: 120_000 }, () => {
  let server: ServerProcess;
  before(async () => {
    server = await startServer(node, ['--handler', 'pubsub', '--max-connections', '1000']);
  });
  after(() => server.stop());

  it('200 connections over 2 client processes and 2 source addresses: connect, hold, echo, fan-out, all delivered', async () => {
    const { code, stdout, stderr } = await loadtest([
      '--url', server.wsUrl,
      '--connections', '200',
      '--procs', '2',
      '--source', '127.0.0.1,127.0.0.2',
      '--protocol', 'pubsub',
      '--phases', 'connect,hold,echo,fanout',
      '--hold', '300ms',
      '--echo-messages', '5',
      '--fanout', '5',
      '--timeout', '60s',
      '--json',
    ]);
    assert.equal(code, 0, stderr || stdout);
    assert.equal(stderr, '', 'no progress output with --json');
    const s = JSON.parse(stdout) as LoadtestSummary;
    assert.equal(s.ok, true);
    assert.deepEqual(s.perProcess, [100, 100]);
    assert.deepEqual(s.failures, { total: 0, connect: 0, dropped: 0, echoMissing: 0, subscribe: 0, fanoutMissing: 0 });
    assert.equal(s.connect?.opened, 200);
    assert.equal(s.connect?.handshakeMs.count, 200);
    assert.ok(s.connect!.handshakeMs.p50! <= s.connect!.handshakeMs.p99! && s.connect!.handshakeMs.p99! <= s.connect!.handshakeMs.max!);
    assert.ok(s.connect!.connectsPerSecond > 0);
    // hold: the server's memory came from /stats, which also saw all 200 sockets
    assert.equal(s.hold?.open, 200);
    const memory = s.hold!.memory;
    assert.ok(!('error' in memory), JSON.stringify(memory));
    if (!('error' in memory)) {
      assert.equal(memory.serverLive, 200);
      // Never a negative cost: when RSS fell across the run, there is no figure (null), and the delta says so.
      if (memory.bytesPerConnection === null) assert.ok(memory.deltaBytes < 0, JSON.stringify(memory));
      else assert.ok(memory.bytesPerConnection >= 0, JSON.stringify(memory));
    }
    // echo (pubsub: ping/pong), closed loop: every round trip came back
    assert.equal(s.echo?.connections, 200);
    assert.equal(s.echo?.sent, 1000);
    assert.equal(s.echo?.received, 1000);
    assert.equal(s.echo?.missing, 0);
    assert.equal(s.echo?.latencyMs.count, 1000);
    // fan-out: every subscriber (the publisher included) got every message
    assert.equal(s.fanout?.subscribers, 200);
    assert.equal(s.fanout?.messages, 5);
    assert.equal(s.fanout?.expected, 1000);
    assert.equal(s.fanout?.delivered, 1000);
    assert.equal(s.fanout?.missing, 0);
    assert.equal(s.fanout?.timeToAllMs.count, 5);
    assert.equal(s.fanout?.duplicates, 0);
    assert.deepEqual(s.close, { closedCleanly: 200, terminated: 0 });
    assert.equal(s.dropped.total, 0);
    // and the server has every slot back
    const stats = await eventually(() => server.stats(), (st) => st.live === 0 && st.reserved === 0);
    assert.equal(stats.live, 0);
    assert.ok(stats.accepted >= 200);
  });

  it('a cluster (--workers 2): memory is the whole server, from /stats and from the primary pid with its workers', async () => {
    const cluster = await startServer(node, ['--workers', '2', '--max-connections', '100']);
    try {
      const whole = async () => ((await (await fetch(`${cluster.url}/stats`)).json()) as { cluster?: { workers: number; rssBytes: number; perWorker: { rssBytes?: number }[] } }).cluster;
      const c = await eventually(whole, (x) => x?.workers === 2 && x.perWorker.every((w) => typeof w.rssBytes === 'number'));
      const workersRss = c!.perWorker.reduce((a, w) => a + (w.rssBytes ?? 0), 0);
      assert.ok(c!.perWorker.every((w) => w.rssBytes! > 10 * 1024 * 1024), JSON.stringify(c!.perWorker));
      assert.ok(c!.rssBytes > workersRss, `cluster.rssBytes ${c!.rssBytes} adds the primary to the workers' ${workersRss}`);
      for (const extra of [[], ['--server-pid', String(cluster.child.pid)]]) {
        const { code, stdout, stderr } = await loadtest(['--url', cluster.wsUrl, '--connections', '20', '--phases', 'connect,hold', '--hold', '100ms', '--timeout', '30s', '--json', ...extra]);
        assert.equal(code, 0, stderr || stdout);
        const memory = (JSON.parse(stdout) as LoadtestSummary).hold!.memory;
        assert.ok(!('error' in memory), JSON.stringify(memory));
        if ('error' in memory) continue;
        // Three Node processes: far more than any one of them holds.
        assert.ok(memory.loadedBytes > workersRss, `${extra.join(' ') || '/stats'}: ${memory.loadedBytes} B is the whole server (workers alone: ${workersRss} B)`);
        if (extra.length === 0) assert.equal(memory.serverLive, 20, 'live counts every worker');
      }
    } finally {
      await cluster.stop();
    }
  });

  it('prints an aligned summary table without --json', async () => {
    const { code, stdout, stderr } = await loadtest(['--url', server.wsUrl, '--connections', '20', '--protocol', 'pubsub', '--hold', '0', '--echo-messages', '2', '--fanout', '2']);
    assert.equal(code, 0, stderr);
    const lines = stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^hubbub loadtest ws:\/\/127\.0\.0\.1:\d+\/ws: 20 connections/);
    const header = lines.find((l) => l.startsWith('phase'))!;
    const valueColumn = header.indexOf('value');
    for (const line of lines.slice(lines.indexOf(header) + 2)) assert.equal(line[valueColumn - 1], ' ', `aligned: ${line}`);
    assert.match(stdout, /connect\s+opened\s+20 of 20/);
    assert.match(stdout, /fanout\s+missing\s+0/);
    assert.match(stdout, /failures\s+0 \(--max-failures 0\): ok/);
    assert.match(stderr, /^connect: 20 open/m, 'a line per phase on stderr when it is not a terminal');
  });

  it('refuses a target outside loopback (exit 2) and says why', async () => {
    for (const url of ['ws://example.com/ws', 'ws://10.1.2.3:8080/ws', 'wss://[2001:db8::1]/ws']) {
      const { code, stdout, stderr } = await loadtest(['--url', url, '--connections', '1']);
      assert.equal(code, 2, url);
      assert.equal(stdout, '');
      assert.match(stderr, /^hubbub loadtest: refusing to load /);
      assert.match(stderr, /127\.0\.0\.0\/8, ::1, localhost/);
      assert.match(stderr, /--allow-remote/);
      assert.match(stderr, /denial-of-service/);
    }
    const source = await loadtest(['--url', server.wsUrl, '--source', '10.0.0.1']);
    assert.equal(source.code, 2);
    assert.match(source.stderr, /--source 10\.0\.0\.1 is not a loopback address/);
  });

  it('bad flags exit 2 with a message naming the flag', async () => {
    const bad = await loadtest(['--url', server.wsUrl, '--connections', 'x']);
    assert.equal(bad.code, 2);
    assert.equal(bad.stderr, 'hubbub loadtest: --connections must be an integer from 1 to 1000000 (got "x")\n');
    assert.equal((await loadtest(['--connections', '5'])).code, 2, '--url is required');
    // The URL may come alone, as `hubbub loadtest ws://…`; twice is an error.
    const bare = parseLoadtestArgs([server.wsUrl, '--connections', '5']);
    assert.equal(bare.kind === 'run' && bare.options.url.href, new URL(server.wsUrl).href);
    assert.throws(() => parseLoadtestArgs(['--url', server.wsUrl, server.wsUrl]), /the target is given twice/);
    assert.match((await loadtest(['--url', server.wsUrl, '--nope'])).stderr, /unknown flag "--nope"/);
    assert.match((await loadtest(['--url', server.wsUrl, '--phases', 'fanout'])).stderr, /--phases fanout needs --protocol pubsub/);
    const tooMany = await loadtest(['--url', server.wsUrl, '--connections', '25000']);
    assert.equal(tooMany.code, 2);
    assert.match(tooMany.stderr, /25000 sockets in one client process; at most \d+ fit .*use --procs 2 or more/);
    const help = await loadtest(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: hubbub loadtest --url/);
  });

  it('failures over --max-failures exit 1: HTTP 503 from a full server, grouped by status', async () => {
    const small = await startServer(node, ['--max-connections', '5']);
    try {
      const args = ['--url', small.wsUrl, '--connections', '8', '--concurrency', '8', '--phases', 'connect', '--json'];
      const over = await loadtest(args);
      assert.equal(over.code, 1);
      const s = JSON.parse(over.stdout) as LoadtestSummary;
      assert.equal(s.connect?.opened, 5);
      assert.deepEqual(s.connect?.failures, { 'HTTP 503': 3 });
      assert.equal(s.ok, false);
      assert.equal((await loadtest([...args, '--max-failures', '3'])).code, 0);
    } finally {
      await small.stop();
    }
  });

  it('--timeout ends a phase that hangs: exit 1, the summary names the phase', async () => {
    // Accepts TCP connections and never answers the handshake.
    const sockets = new Set<net.Socket>();
    const silent = net.createServer((socket) => {
      sockets.add(socket);
      socket.on('error', () => {});
    });
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = silent.address() as net.AddressInfo;
      const { code, stdout, ms } = await loadtest([
        '--url', `ws://127.0.0.1:${port}/ws`,
        '--connections', '20',
        '--procs', '2',
        '--phases', 'connect,echo',
        '--handshake-timeout', '60s',
        '--timeout', '6s', // room for forking the client processes on a busy machine; the handshakes hang for 60 s
        '--json',
      ]);
      assert.equal(code, 1);
      assert.ok(ms < 20_000, `stopped after ${ms} ms`);
      const s = JSON.parse(stdout) as LoadtestSummary;
      assert.equal(s.timedOut?.phase, 'connect');
      assert.equal(s.ok, false);
    } finally {
      for (const socket of sockets) socket.destroy();
      silent.close();
    }
  });

  it('a subscribe answered unavailable is sent again, as hubbub\'s client does: all subscribe once Redis comes, the retries counted', async (t) => {
    const skip = await serviceSkip('redis', 6379);
    if (skip) return t.skip(skip);
    // Redis is reached through a proxy that refuses every connection until the test, seeing
    // every first subscribe refused `unavailable` in /stats, lets them through.
    const proxy = await tcpProxy(6379);
    proxy.refuse(true);
    const backed = await startServer(node, ['--handler', 'pubsub', '--backplane', `redis://127.0.0.1:${proxy.port}/7`]);
    try {
      const run = loadtest(['--url', backed.wsUrl, '--connections', '10', '--protocol', 'pubsub', '--phases', 'connect,fanout', '--fanout', '1', '--reply-timeout', '15s', '--timeout', '60s', '--json']);
      const refused = await eventually(async () => (await backed.stats()).subscribesRefused.unavailable, (n) => n >= 10, 30_000);
      assert.ok(refused >= 10, `every first subscribe was refused (${refused})`);
      proxy.refuse(false);
      const { stdout, stderr } = await run;
      // Only the subscribes are asserted: the first publication can still be refused while the
      // node's next probe has not yet called the backplane connected again (the outage policy).
      const s = JSON.parse(stdout) as LoadtestSummary;
      assert.equal(s.failures.subscribe, 0, stderr || stdout);
      assert.equal(s.fanout?.subscribers, 10);
      assert.equal(s.fanout?.subscribeFailed, 0);
      assert.equal(s.fanout?.subscribeRetried, 10, 'every socket needed a retry');
      assert.ok(s.fanout!.subscribeRetries >= 10);
    } finally {
      await backed.stop();
      proxy.close();
    }
  });
});
