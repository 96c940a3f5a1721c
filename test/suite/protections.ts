// Black-box tests of every protection, run on each runtime as part of the suite.
import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, describe, it } from 'node:test';
import { deflateRawSync } from 'node:zlib';
import WebSocket from 'ws';
import { closed, connect, eventually, PREFIX, request, rssKiB, sleep, startServer, type RuntimeTarget, type ServerProcess } from '../helpers.ts';
import { upgradeHeaders } from '../frames.ts';

type Refused = { status?: number; headers?: Record<string, string> };
const refusedWith = (url: string, options: WebSocket.ClientOptions = {}) =>
  connect(url, options).then(
    (ws) => {
      ws.terminate();
      return assert.fail('expected a refusal');
    },
    (error: Refused) => error,
  );

export function runProtections(target: RuntimeTarget): void {
  const is = (difference: Parameters<NonNullable<RuntimeTarget['differences']>['has']>[0]) => target.differences?.has(difference) ?? false;

  describe(`${target.name}: heartbeat`, { timeout: 60_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target, ['--heartbeat-interval', '500ms']);
    });
    after(() => server.stop());

    it(is('no-heartbeat') ? 'has no heartbeat on this runtime: a silent peer stays connected (documented)' : 'drops a peer that never answers pings (reason idle) and keeps one that does', async () => {
      const silent = await connect(server.wsUrl, { autoPong: false });
      if (is('no-heartbeat')) {
        // workerd: the application cannot ping, so nothing detects the silent peer; it stays until it goes.
        const dropped = await closed(silent, 3000).then(() => true, () => false);
        assert.equal(dropped, false, 'the silent peer was not dropped');
        assert.equal((await server.stats()).released.idle, 0);
        assert.equal(await request(silent, 'still here'), `${PREFIX}still here`);
        silent.close();
        return;
      }
      const healthy = await connect(server.wsUrl);
      let healthyClosed = false;
      healthy.once('close', () => (healthyClosed = true));
      const started = Date.now();
      const { code } = await closed(silent, 8000);
      const elapsed = Date.now() - started;
      // Node: ws pings every 500 ms, drops after two silent intervals, without a close frame (1006).
      // Deno: its idleTimeout (rounded up to 1 s) pings and closes with 1001.
      assert.equal(code, is('idle-close-1001') ? 1001 : 1006);
      assert.ok(elapsed >= 900 && elapsed < 6000, `dropped after ${elapsed} ms`);
      const stats = await eventually(server.stats, (s) => s.released.idle === 1);
      assert.equal(stats.released.idle, 1);
      // The healthy client, idle too but answering pings, outlives several more intervals. A wait
      // on purpose (nothing to poll for: the point is that nothing happens), three intervals long.
      await sleep(1500);
      assert.equal(healthyClosed, false);
      assert.equal(await request(healthy, 'alive'), `${PREFIX}alive`);
      healthy.close();
    });
  });

  describe(`${target.name}: message size limit`, { timeout: 60_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target, ['--max-payload', '1KiB']);
    });
    after(() => server.stop());

    it('accepts a message of exactly --max-payload bytes', async () => {
      const ws = await connect(server.wsUrl);
      const text = 'a'.repeat(1024);
      assert.equal(await request(ws, text), PREFIX + text);
      ws.close();
    });

    for (const [name, payload] of [
      ['text', 'a'.repeat(1025)],
      ['binary', Buffer.alloc(1025, 7)],
      ['multi-byte text (400 × ☃ = 1200 bytes)', '☃'.repeat(400)],
      ['a large message (1 MiB)', Buffer.alloc(1024 * 1024, 1)],
    ] as const) {
      it(`closes with 1009 on a bigger ${name} message`, async () => {
        const before = await server.stats();
        const ws = await connect(server.wsUrl);
        const done = closed(ws);
        ws.send(payload);
        assert.equal((await done).code, 1009);
        const stats = await eventually(server.stats, (s) => s.released['message-too-big'] === before.released['message-too-big']! + 1);
        assert.equal(stats.released['message-too-big'], before.released['message-too-big']! + 1);
      });
    }

    it('the default limit is 64 KiB', async () => {
      const other = await startServer(target);
      try {
        const ws = await connect(other.wsUrl);
        const ok = 'b'.repeat(64 * 1024);
        assert.equal(await request(ws, ok), PREFIX + ok);
        const done = closed(ws);
        ws.send('b'.repeat(64 * 1024 + 1));
        assert.equal((await done).code, 1009);
      } finally {
        await other.stop();
      }
    });
  });

  describe(`${target.name}: per-address cap and upgrade rates`, { timeout: 60_000 }, () => {
    it('--max-connections-per-ip: over it 429 + Retry-After; other addresses are not affected', async () => {
      const server = await startServer(target, ['--max-connections-per-ip', '2']);
      try {
        const a = await connect(server.wsUrl, { localAddress: '127.0.0.1' });
        const b = await connect(server.wsUrl, { localAddress: '127.0.0.1' });
        const refused = await refusedWith(server.wsUrl, { localAddress: '127.0.0.1' });
        assert.equal(refused.status, 429);
        assert.ok(Number(refused.headers?.['retry-after']) >= 1);
        const other = await connect(server.wsUrl, { localAddress: '127.0.0.2' });
        a.close();
        await eventually(server.stats, (s) => s.live === 2);
        const again = await connect(server.wsUrl, { localAddress: '127.0.0.1' });
        const stats = await server.stats();
        assert.equal(stats.refused['ip-limit'], 1);
        for (const ws of [b, other, again]) ws.close();
      } finally {
        await server.stop();
      }
    });

    it('--upgrade-rate: a burst beyond the rate gets 429 with Retry-After', async () => {
      const server = await startServer(target, ['--upgrade-rate', '5']);
      try {
        const results = await Promise.all(Array.from({ length: 12 }, () => connect(server.wsUrl).then((ws) => ws, (e: Refused) => e)));
        const opened = results.filter((r): r is WebSocket => r instanceof WebSocket);
        const refused = results.filter((r): r is Refused => !(r instanceof WebSocket));
        assert.ok(opened.length >= 5 && opened.length <= 7, `opened ${opened.length}`);
        assert.ok(refused.every((r) => r.status === 429 && Number(r.headers?.['retry-after']) >= 1));
        assert.equal((await server.stats()).refused['rate-limited'], refused.length);
        for (const ws of opened) ws.close();
        // Time must pass for the bucket to refill (5 tokens a second): a second, then one connect must pass.
        await sleep(1100);
        (await connect(server.wsUrl)).close();
      } finally {
        await server.stop();
      }
    });

    it('--upgrade-rate-per-ip: one address is limited, another is not', async () => {
      const server = await startServer(target, ['--upgrade-rate-per-ip', '3']);
      try {
        const mine = await Promise.all(Array.from({ length: 6 }, () => connect(server.wsUrl, { localAddress: '127.0.0.1' }).then((ws) => ws, (e: Refused) => e)));
        const opened = mine.filter((r): r is WebSocket => r instanceof WebSocket);
        assert.ok(opened.length >= 3 && opened.length <= 4, `opened ${opened.length}`);
        assert.ok(mine.some((r) => !(r instanceof WebSocket) && r.status === 429));
        const other = await connect(server.wsUrl, { localAddress: '127.0.0.3' });
        for (const ws of [...opened, other]) ws.close();
      } finally {
        await server.stop();
      }
    });
  });

  describe(`${target.name}: per-connection message rate`, { timeout: 60_000 }, () => {
    it('--message-rate: a flood is closed with 1008; a client within the rate is not', async () => {
      const server = await startServer(target, ['--message-rate', '20']);
      try {
        const calm = await connect(server.wsUrl);
        const flood = await connect(server.wsUrl);
        const done = closed(flood);
        for (let i = 0; i < 100; i++) flood.send(`m${i}`);
        const { code } = await done;
        assert.equal(code, 1008);
        for (let i = 0; i < 10; i++) {
          assert.equal(await request(calm, `c${i}`), `${PREFIX}c${i}`);
          await sleep(60); // pacing: ~16 messages a second, within --message-rate 20
        }
        const stats = await server.stats();
        assert.equal(stats.released['rate-limited'], 1);
        calm.close();
      } finally {
        await server.stop();
      }
    });
  });

  describe(`${target.name}: origin allow-list`, { timeout: 60_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target, ['--allowed-origins', 'https://good.example,https://*.corp.example']);
    });
    after(() => server.stop());

    it('403 before the upgrade for another origin; listed and wildcard origins, and no Origin, pass', async () => {
      for (const origin of ['https://evil.example', 'https://corp.example.evil.test', 'http://good.example']) {
        const refused = await refusedWith(server.wsUrl, { origin });
        assert.equal(refused.status, 403, origin);
      }
      for (const origin of ['https://good.example', 'https://app.corp.example', undefined]) {
        const ws = await connect(server.wsUrl, origin ? { origin } : {});
        assert.equal(await request(ws, 'o'), `${PREFIX}o`);
        ws.close();
      }
      assert.equal((await server.stats()).refused.origin, 3);
    });
  });

  describe(`${target.name}: authenticate hook`, { timeout: 60_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      const handler = target.testHandler.replace(/handler\.(ts|js)$/, 'auth-handler.$1');
      server = await startServer(target, ['--handler', handler, '--max-connections-per-principal', '1']);
    });
    after(() => server.stop());

    it('refuses before the upgrade with the hook answer (401/403), 401 for no principal, 500 when it throws', async () => {
      for (const [query, status] of [['', 401], ['?token=forbidden', 403], ['?token=nothing', 401], ['?token=throw', 500]] as const) {
        const refused = await refusedWith(server.wsUrl + query);
        assert.equal(refused.status, status, `token ${query}`);
      }
      assert.equal((await server.stats()).live, 0);
      // The log line may arrive after the answer (workerd writes it through its own stdout).
      const logged = await eventually(async () => server.lines.some((l) => l.includes('"stage":"authenticate"') && l.includes('auth backend down')), (found) => found);
      assert.ok(logged);
    });

    it('the principal is on the handler context; the per-principal cap answers 429', async () => {
      const alice = await connect(`${server.wsUrl}?token=alice`);
      assert.equal(await request(alice, 'whoami'), 'alice tester');
      const again = await refusedWith(`${server.wsUrl}?token=alice`);
      assert.equal(again.status, 429);
      const bob = await connect(`${server.wsUrl}?token=bob`);
      alice.close();
      await eventually(server.stats, (s) => s.live === 1);
      const alice2 = await connect(`${server.wsUrl}?token=alice`);
      assert.equal((await server.stats()).refused['principal-limit'], 1);
      bob.close();
      alice2.close();
    });
  });

  describe(`${target.name}: permessage-deflate`, { timeout: 60_000 }, () => {
    it('is off by default: not negotiated', async () => {
      const server = await startServer(target);
      try {
        const ws = await connect(server.wsUrl, { perMessageDeflate: true });
        assert.equal(ws.extensions, '');
        ws.close();
      } finally {
        await server.stop();
      }
    });

    it(is('no-permessage-deflate') ? 'is never negotiated by this runtime (documented)' : 'when on, a deflate bomb closes with 1009 and memory stays flat', async () => {
      const server = await startServer(target, ['--per-message-deflate', 'true', '--max-payload', '64KiB']);
      try {
        const ws = await connect(server.wsUrl, { perMessageDeflate: true });
        if (is('no-permessage-deflate')) {
          assert.equal(ws.extensions, '');
          ws.close();
          return;
        }
        assert.match(ws.extensions, /permessage-deflate/);
        assert.equal(await request(ws, 'small'), `${PREFIX}small`);
        const rssBefore = rssKiB(server.child.pid!);
        // 64 MiB of zeros deflates to ~64 KiB: hand-made frames, one bomb per socket, several sockets.
        const bomb = deflateRawSync(Buffer.alloc(64 * 1024 * 1024));
        for (let i = 0; i < 4; i++) {
          const bomber = i === 0 ? ws : await connect(server.wsUrl, { perMessageDeflate: true });
          const done = closed(bomber);
          sendCompressedFrame(bomber, bomb);
          assert.equal((await done).code, 1009);
        }
        const grew = rssKiB(server.child.pid!) - rssBefore;
        assert.ok(grew < 32 * 1024, `server RSS grew by ${grew} KiB for 256 MiB of inflated bombs`);
        assert.equal((await server.stats()).released['message-too-big'], 4);
        assert.equal(server.child.exitCode, null);
      } finally {
        await server.stop();
      }
    });
  });

  describe(`${target.name}: slow and malformed HTTP`, { timeout: 60_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target, ['--headers-timeout', '1s']);
    });
    after(() => server.stop());

    it(is('no-headers-timeout') ? 'a client trickling headers holds no slot (the runtime has no headers timeout: documented)' : is('fixed-headers-timeout') ? 'a client trickling headers is dropped by the runtime\'s own fixed head timeout and never holds a slot (documented)' : 'a client trickling headers is dropped by the headers timeout and never holds a slot', async () => {
      const { hostname, port } = new URL(server.url);
      const socket = net.connect(Number(port), hostname);
      socket.on('error', () => {});
      await new Promise((resolve) => socket.once('connect', resolve));
      socket.write(`GET /ws HTTP/1.1\r\nHost: ${hostname}\r\nUpgrade: websocket\r\n`);
      const timer = setInterval(() => socket.writable && socket.write('X'), 200);
      const started = Date.now();
      const gone = new Promise<number>((resolve) => socket.once('close', () => resolve(Date.now() - started)));
      // While the head trickles in, the server is asked what it holds: never a slot for this client.
      const baseline = await server.stats();
      let held = 0;
      let sampling = true;
      const sampler = (async () => {
        while (sampling) {
          const s = await server.stats();
          held = Math.max(held, s.reserved + s.live);
          await sleep(250);
        }
      })();
      try {
        if (is('no-headers-timeout')) {
          const stillOpen = await Promise.race([gone.then(() => false), sleep(3000).then(() => true)]);
          assert.equal(stillOpen, true, 'documented: this runtime does not time out slow headers');
        } else if (is('fixed-headers-timeout')) {
          // Bun: uWebSockets gives a request head about 10 s (checked every 4 s), whatever --headers-timeout says.
          const elapsed = await Promise.race([gone, sleep(16_000).then(() => -1)]);
          assert.ok(elapsed > 0 && elapsed < 15_000, `dropped after ${elapsed} ms`);
        } else {
          const elapsed = await Promise.race([gone, sleep(5000).then(() => -1)]);
          assert.ok(elapsed > 0 && elapsed < 4000, `dropped after ${elapsed} ms`);
        }
        sampling = false;
        await sampler;
        assert.equal(held, 0, 'no reservation or open socket while the head trickled in');
        assert.equal((await server.stats()).accepted, baseline.accepted, 'never admitted');
      } finally {
        sampling = false;
        clearInterval(timer);
        socket.destroy();
      }
    });

    it('thousands of headers, or one huge header, get 431 or 400 (or a closed connection), are never admitted, and the server serves on', async () => {
      const host = new URL(server.url).host;
      const many: Record<string, string> = upgradeHeaders(host);
      for (let i = 0; i < 5000; i++) many[`X-Filler-${i}`] = `value-${i}`;
      const baseline = await server.stats();
      for (const [what, headers] of [
        ['5000 headers', many],
        ['one 200 kB header', { ...upgradeHeaders(host), 'X-Huge': 'h'.repeat(200_000) }],
      ] as const) {
        const answer = await oversizedHead(server.url, headers);
        // Every runtime answers (Node, Bun, workerd 431; Deno 400) and closes. The close may reach the
        // client as a reset while the rest of its head is unsent; if that reset beats the answer, a
        // closed connection with nothing read is what the client sees. A hang (no close) fails.
        if (answer.status !== undefined) assert.ok([400, 431].includes(answer.status), `${what}: ${answer.statusLine}`);
        else assert.equal(answer.bytes, 0, `${what}: an answer without a status line: ${JSON.stringify(answer.statusLine)}`);
        assert.notEqual(answer.ending, 'timeout', `${what}: the connection was still open after 5 s (${answer.status ?? 'no answer'})`);
      }
      assert.equal(server.child.exitCode, null, `the server exited: ${server.stderr()}`);
      const ws = await connect(server.wsUrl);
      assert.equal(await request(ws, 'alive'), `${PREFIX}alive`);
      ws.close();
      const stats = await server.stats();
      assert.equal(stats.accepted, baseline.accepted + 1, 'only the last client was admitted');
      assert.equal(stats.reserved, 0);
    });
  });
}

/**
 * Writes one GET /ws head with `headers` and reads whatever comes back until the server closes the
 * connection (FIN or reset) or `timeoutMs` passes, so a test can tell an answer, a close and a hang apart.
 */
function oversizedHead(url: string, headers: Record<string, string>, timeoutMs = 5000) {
  const { hostname, port } = new URL(url);
  return new Promise<{ status: number | undefined; statusLine: string; bytes: number; ending: 'end' | 'reset' | 'timeout' }>((resolve) => {
    const socket = net.connect(Number(port), hostname);
    let received = Buffer.alloc(0);
    let ending: 'end' | 'reset' | undefined;
    const finish = (how: 'end' | 'reset' | 'timeout') => {
      clearTimeout(timer);
      socket.destroy();
      const statusLine = received.toString('latin1').split('\r\n')[0] ?? '';
      const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine);
      resolve({ status: match ? Number(match[1]) : undefined, statusLine, bytes: received.length, ending: how });
    };
    const timer = setTimeout(() => finish('timeout'), timeoutMs);
    socket.on('data', (chunk: Buffer) => (received = Buffer.concat([received, chunk])));
    socket.on('end', () => (ending ??= 'end'));
    socket.on('error', () => (ending ??= 'reset')); // ECONNRESET, or EPIPE on the unsent rest of the head
    socket.on('close', () => finish(ending ?? 'end'));
    socket.once('connect', () => socket.write(`GET /ws HTTP/1.1\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}\r\n`));
  });
}

/** Writes one compressed (RSV1) masked text frame with an already-deflated payload, bypassing ws's sender. */
function sendCompressedFrame(ws: WebSocket, deflated: Buffer): void {
  const socket = (ws as unknown as { _socket: net.Socket })._socket;
  const body = deflated;
  const header: number[] = [0x80 | 0x40 | 0x1];
  const mask = Buffer.from([1, 2, 3, 4]);
  if (body.length < 126) header.push(0x80 | body.length);
  else if (body.length < 65536) header.push(0x80 | 126, body.length >> 8, body.length & 0xff);
  else {
    header.push(0x80 | 127);
    const len = Buffer.alloc(8);
    len.writeBigUInt64BE(BigInt(body.length));
    header.push(...len);
  }
  const masked = Buffer.alloc(body.length);
  for (let i = 0; i < body.length; i++) masked[i] = body[i]! ^ mask[i & 3]!;
  socket.write(Buffer.concat([Buffer.from(header), mask, masked]));
}
