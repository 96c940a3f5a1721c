// Suite group: clients that try to get around the limit, and what the server process really holds (its fds).
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import net, { type Socket } from 'node:net';
import { describe, it } from 'node:test';
import { connect, eventually, hostOf, PREFIX, rawRequest, request, rssKiB, sleep, startServer, withTimeout, type RuntimeTarget } from '../helpers.ts';
import { buildFrame, closeFrame, Opcode, textFrame, upgradeHeaders } from '../frames.ts';

/** File descriptors the server process holds right now. */
function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** Samples the server's fd count every 20 ms from `from` on; `stop()` ends it and gives the highest seen. */
function fdPeak(pid: number, from: number) {
  let peak = from;
  const timer = setInterval(() => (peak = Math.max(peak, fdCount(pid))), 20);
  return {
    stop(): number {
      clearInterval(timer);
      return peak;
    },
  };
}

/** The target under a lower open-file limit (sh's ulimit, then exec: the pid stays the server's). */
function withFdLimit(target: RuntimeTarget, limit: number): RuntimeTarget {
  return { ...target, command: ['sh', '-c', `ulimit -n ${limit} && exec "$0" "$@"`, ...target.command] };
}

/**
 * The server's fd count once it stops moving (a runtime opens a few more just after listening):
 * two reads 100 ms apart that agree, within 3 s.
 */
async function settledFdCount(pid: number): Promise<number> {
  let last = fdCount(pid);
  const [, now] = await eventually(
    async () => {
      await sleep(100);
      const pair = [last, fdCount(pid)] as const;
      last = pair[1];
      return pair;
    },
    ([before, now]) => before === now,
    3000,
  );
  return now;
}

/** `count` connections that send the start of a request head and then nothing; they stay open. */
export async function trickle(url: string, count: number, into: Socket[]): Promise<void> {
  const { hostname, port } = new URL(url);
  await Promise.all(
    Array.from({ length: count }, async () => {
      const socket = net.connect(Number(port), hostname);
      socket.on('error', () => {});
      into.push(socket);
      await new Promise<void>((resolve) => {
        socket.once('connect', () => {
          socket.write('GET /ws HTTP/1.1\r\nHost: x\r\n');
          resolve();
        });
        socket.once('close', () => resolve());
      });
    }),
  );
}

export function runAttacks(target: RuntimeTarget): void {
  // The runner's child is the server itself on Node, Deno and Bun; on workerd it is a launcher in
  // front of workerd, whose fds are not the launcher's.
  const skip = target.name === 'workerd' ? 'the server process is workerd behind the launcher: its fds are not the child’s' : false;

  describe(`${target.name}: attacks on the limit`, { timeout: 120_000, skip }, () => {
    it('lingering closes: clients that never answer the close frame hold at most the limit, not a socket each', async (t) => {
      const LIMIT = 20;
      const ATTACKERS = 200;
      const WAVE = 20;
      // The oversized message makes the server close; a long --close-timeout shows that such a close
      // does not wait for the peer (no courtesy for protocol abuse).
      const server = await startServer(target, ['--max-connections', String(LIMIT), '--max-payload', '1KiB', '--close-timeout', '60s']);
      const pid = server.child.pid!;
      const held: Socket[] = [];
      try {
        const baseline = await settledFdCount(pid);
        const sampler = fdPeak(pid, baseline);
        let upgraded = 0;
        let refused = 0;
        // The header of a 100 KB binary frame (over --max-payload), masked, and nothing after it.
        const header = buildFrame({ opcode: Opcode.BINARY, payload: Buffer.alloc(100 * 1024), mask: Buffer.from([1, 2, 3, 4]) }).subarray(0, 14);
        for (let sent = 0; sent < ATTACKERS; sent += WAVE) {
          await Promise.all(
            Array.from({ length: WAVE }, async () => {
              const response = await rawRequest(server.url, upgradeHeaders(hostOf(server.url)));
              held.push(response.socket);
              response.socket.on('error', () => {});
              if (response.status === 101) {
                upgraded++;
                // Then never read again (so not even the server's FIN is seen), never answer the close frame, never close.
                response.socket.pause();
                response.socket.write(header);
              } else {
                assert.equal(response.status, 503);
                refused++;
                // A runtime that keeps a refused connection open (documented) would hold it for the attacker.
                if (target.differences?.has('refused-connection-kept-open')) response.socket.destroy();
              }
            }),
          );
          // Meanwhile a well-behaved client is answered at once: 101 or 503, never a hang.
          const started = Date.now();
          const answer = await connect(server.wsUrl).then(
            (ws) => {
              ws.terminate();
              return 101;
            },
            (error: { status?: number }) => error.status,
          );
          assert.ok(answer === 101 || answer === 503, `a normal client got ${answer}`);
          assert.ok(Date.now() - started < 1000, `a normal client waited ${Date.now() - started} ms during the attack`);
          assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
        }
        const peak = sampler.stop();
        const stats = await server.stats();
        t.diagnostic(`${ATTACKERS} attackers, limit ${LIMIT}: ${upgraded} upgraded, ${refused} refused; server fds ${baseline} before, ${peak} at the peak`);
        assert.ok(stats.live + stats.reserved + stats.closing + stats.lingering <= LIMIT, JSON.stringify(stats));
        // Every admitted attacker's socket counts until it is gone, so most of them were refused…
        assert.ok(refused > ATTACKERS / 2, `only ${refused} of ${ATTACKERS} attackers were refused (${upgraded} upgraded)`);
        // …and what the server holds stays near the limit, not one socket per attacker.
        const bound = baseline + LIMIT + WAVE + 10;
        assert.ok(peak <= bound, `the server held ${peak} fds (baseline ${baseline}, bound ${bound}) against ${ATTACKERS} attackers`);
        // The sockets it closed without courtesy are dropped by the server itself, long before --close-timeout.
        // (A runtime without a size limit while reading, Deno, still waits for the rest of the frame:
        // those sockets stay open, and hold their slot.)
        // (Bun counts a socket it reported closed as lingering for 5 s: uWebSockets may still hold it.)
        const settled = await eventually(server.stats, (s) => s.closing === 0 && s.lingering === 0, 8000);
        assert.deepEqual([settled.closing, settled.lingering], [0, 0]);
        const after = await eventually(async () => fdCount(pid), (n) => n <= baseline + settled.live + 5, 5000);
        assert.ok(after <= baseline + settled.live + 5, `fds after the attack: ${after}, baseline ${baseline}, live ${settled.live}`);
      } finally {
        for (const socket of held) socket.destroy();
        await server.stop();
      }
    });

    it('half-closed peers: clients that send their close frame and then never end TCP cannot use up the fds', async (t) => {
      const FD_LIMIT = 300;
      const LIMIT = 50;
      const ATTACKERS = 400;
      const WAVE = 50;
      const limited = withFdLimit(target, FD_LIMIT);
      const server = await startServer(limited, ['--max-connections', String(LIMIT), '--admin-port', '0']);
      const pid = server.child.pid!;
      const held: Socket[] = [];
      try {
        const baseline = await settledFdCount(pid);
        const sampler = fdPeak(pid, baseline);
        let upgraded = 0;
        const bye = closeFrame(1000, '', { mask: Buffer.from([1, 2, 3, 4]) });
        for (let sent = 0; sent < ATTACKERS; sent += WAVE) {
          await Promise.all(
            Array.from({ length: WAVE }, async () => {
              const response = await rawRequest(server.url, upgradeHeaders(hostOf(server.url)));
              held.push(response.socket);
              response.socket.on('error', () => {});
              if (response.status !== 101) return response.socket.destroy();
              upgraded++;
              // The client's close, then silence: its TCP connection stays open, nothing more is read.
              response.socket.write(bye);
              response.socket.pause();
            }),
          );
          const answer = await connect(server.wsUrl).then(
            (ws) => (ws.terminate(), 101),
            (error: { status?: number }) => error.status,
          );
          assert.ok(answer === 101 || answer === 503, `a normal client got ${answer}`);
        }
        const peak = sampler.stop();
        t.diagnostic(`${ATTACKERS} half-closed attackers, limit ${LIMIT}, ${FD_LIMIT} fds: ${upgraded} upgraded; server fds ${baseline} before, ${peak} at the peak`);
        assert.ok(peak < FD_LIMIT - 20, `the server held ${peak} of its ${FD_LIMIT} fds`);
        assert.equal((await fetch(`${server.adminUrl}/healthz`)).status, 200);
        // And they all go: what the server held comes back to its baseline.
        // (Node: within --close-timeout, 5 s; Bun: the 5 s it counts them as lingering.)
        const after = await eventually(async () => fdCount(pid), (n) => n <= baseline + 5, 10_000);
        assert.ok(after <= baseline + 5, `the server still holds ${after} fds (baseline ${baseline})`);
        const settled = await eventually(server.stats, (s) => s.live + s.closing + s.lingering === 0, 5000);
        assert.deepEqual([settled.live, settled.closing, settled.lingering], [0, 0, 0]);
        const ws = await connect(server.wsUrl);
        ws.close();
      } finally {
        for (const socket of held) socket.destroy();
        await server.stop();
      }
    });

    it('rate closes: clients closed for their message rate that never answer or send again stay within the limit, wave after wave', async (t) => {
      const LIMIT = 20;
      const WAVES = 5;
      // The heartbeat is what drops a peer that answers nothing where the runtime cannot drop a
      // socket itself (Deno); until then it counts against the limit.
      const server = await startServer(target, ['--max-connections', String(LIMIT), '--message-rate', '1', '--heartbeat-interval', '2s']);
      const pid = server.child.pid!;
      const held: Socket[] = [];
      try {
        const baseline = await eventually(async () => fdCount(pid), () => true);
        const sampler = fdPeak(pid, baseline);
        let upgraded = 0;
        const frame = textFrame('x', { mask: Buffer.from([1, 2, 3, 4]) });
        for (let wave = 0; wave < WAVES; wave++) {
          await Promise.all(
            Array.from({ length: LIMIT }, async () => {
              const response = await rawRequest(server.url, upgradeHeaders(hostOf(server.url)));
              held.push(response.socket);
              response.socket.on('error', () => {});
              response.socket.pause();
              if (response.status !== 101) return;
              upgraded++;
              // Three messages at once (over the rate of 1), then silence: no answer to the close, no FIN.
              response.socket.write(Buffer.concat([frame, frame, frame]));
            }),
          );
          // Long enough for the sweeper to pass: a runtime that freed the slot early would admit the next wave.
          await sleep(1200);
          const stats = await server.stats();
          assert.ok(stats.live + stats.reserved + stats.closing + stats.lingering <= LIMIT, JSON.stringify(stats));
        }
        const peak = sampler.stop();
        t.diagnostic(`${WAVES} waves of ${LIMIT} rate-closed clients that never answer, limit ${LIMIT}: ${upgraded} upgraded; server fds ${baseline} before, ${peak} at the peak`);
        assert.ok(peak <= baseline + 2 * LIMIT + 10, `the server held ${peak} fds (baseline ${baseline})`);
        const after = await eventually(async () => fdCount(pid), (n) => n <= baseline + 5, 10_000);
        assert.ok(after <= baseline + 5, `the server still holds ${after} fds (baseline ${baseline})`);
        const settled = await eventually(server.stats, (s) => s.closing === 0 && s.lingering === 0, 8000);
        assert.deepEqual([settled.closing, settled.lingering], [0, 0]);
      } finally {
        for (const socket of held) socket.destroy();
        await server.stop();
      }
    });

    it('refused connections that never close: the server ends each one after its 503', async (t) => {
      const LIMIT = 5;
      const ATTACKERS = 300;
      const WAVE = 50;
      const server = await startServer(target, ['--max-connections', String(LIMIT)]);
      const pid = server.child.pid!;
      const held: Socket[] = [];
      const full = await Promise.all(Array.from({ length: LIMIT }, () => connect(server.wsUrl)));
      try {
        await sleep(300);
        const baseline = fdCount(pid);
        const sampler = fdPeak(pid, baseline);
        for (let sent = 0; sent < ATTACKERS; sent += WAVE) {
          await Promise.all(
            Array.from({ length: WAVE }, async () => {
              const response = await rawRequest(server.url, upgradeHeaders(hostOf(server.url)));
              assert.equal(response.status, 503);
              // Keep the socket and never read from it again: only the server can end it.
              response.socket.on('error', () => {});
              response.socket.pause();
              held.push(response.socket);
            }),
          );
        }
        const after = await eventually(async () => fdCount(pid), (n) => n <= baseline + 5, 5000);
        const peak = sampler.stop();
        t.diagnostic(`${ATTACKERS} refused clients that never close, limit ${LIMIT}: server fds ${baseline} before, ${peak} at the peak, ${after} after`);
        assert.ok(peak <= baseline + WAVE + 10, `the server held ${peak} fds (baseline ${baseline}) for ${ATTACKERS} refused clients`);
        assert.ok(after <= baseline + 5, `the server still holds ${after} fds (baseline ${baseline}) after refusing them`);
        const stats = await server.stats();
        assert.ok((stats.refused.capacity ?? 0) >= ATTACKERS, JSON.stringify(stats.refused));
        assert.equal(stats.live, LIMIT);
      } finally {
        for (const socket of held) socket.destroy();
        for (const ws of full) ws.terminate();
        await server.stop();
      }
    });

    it('subscription flood: one connection asking for 20,000 topics holds --max-subscriptions of them', async (t) => {
      const server = await startServer(target, ['--handler', 'pubsub']); // default cap: 128
      const pid = server.child.pid!;
      try {
        const ws = await connect(server.wsUrl);
        await eventually(server.stats, (s) => s.live === 1);
        const rssBefore = rssKiB(pid);
        const COUNT = 20_000;
        let refused = 0;
        let answered = 0;
        const done = new Promise<void>((resolve) =>
          ws.on('message', (data) => {
            if ((JSON.parse(String(data)) as { code?: string }).code === 'subscription-limit') refused++;
            if (++answered === COUNT) resolve();
          }),
        );
        for (let i = 0; i < COUNT; i++) ws.send(`{"type":"subscribe","topic":"flood-${i}"}`);
        await withTimeout(done, 60_000, 'the answers to the flood');
        const stats = await server.stats();
        assert.equal(stats.topics.count, 128);
        assert.equal(stats.topics.subscriptions, 128);
        assert.equal(refused, COUNT - 128);
        assert.equal(stats.subscribesRefused['subscription-limit'], COUNT - 128);
        const grew = rssKiB(pid) - rssBefore;
        t.diagnostic(`${COUNT} subscribes: ${stats.topics.count} topics held, ${refused} refused, server RSS +${grew} KiB`);
        assert.ok(grew < 64 * 1024, `server RSS grew by ${grew} KiB for 128 topics`);
        ws.close();
      } finally {
        await server.stop();
      }
    });

    const noPendingCap = target.differences?.has('no-pending-connection-cap') ? 'the runtime gives the adapter no hook on accepted connections (documented)' : false;

    it('slowloris: connections trickling their request head are capped by --max-pending-connections (a burst up to 4× while they are fresh); a newcomer still gets in, in place of the oldest; the admin listener answers', { skip: noPendingCap }, async (t) => {
      const CAP = 50;
      const BURST = 4; // src/runtime/node/sockets.ts
      const server = await startServer(target, ['--max-pending-connections', String(CAP), '--headers-timeout', '60s', '--admin-port', '0']);
      const pid = server.child.pid!;
      const held: Socket[] = [];
      try {
        const baseline = await settledFdCount(pid);
        await trickle(server.url, 300, held);
        // Until the server has taken in all 300: at most BURST × CAP pending, the rest dropped.
        const stats = await eventually(server.stats, (s) => s.process.pendingConnections! + s.connectionsDropped['pending-limit'] >= 300 - 5, 5000);
        const fds = fdCount(pid);
        t.diagnostic(`300 trickling heads, cap ${CAP}: server fds ${baseline} → ${fds}, dropped ${stats.connectionsDropped['pending-limit']}, pending ${stats.process.pendingConnections}`);
        assert.ok(fds <= baseline + BURST * CAP + 15, `the server holds ${fds} fds (baseline ${baseline})`);
        assert.ok(stats.process.pendingConnections! >= CAP && stats.process.pendingConnections! <= BURST * CAP, `pending ${stats.process.pendingConnections}`);
        assert.ok(stats.connectionsDropped['pending-limit'] >= 300 - BURST * CAP - 5, JSON.stringify(stats.connectionsDropped));
        const started = Date.now();
        assert.equal((await fetch(`${server.adminUrl}/healthz`)).status, 200);
        assert.ok(Date.now() - started < 1000, 'the admin listener answers at once');
        // The trickles are over a second old now: a real client is not locked out by them (the oldest goes).
        await sleep(1100);
        for (let i = 0; i < 3; i++) {
          const newcomer = await connect(server.wsUrl);
          assert.equal(await request(newcomer, `in ${i}`), `${PREFIX}in ${i}`);
          newcomer.close();
        }
        assert.ok(fdCount(pid) <= baseline + BURST * CAP + 15, 'still within the bound');
        for (const socket of held) socket.destroy();
        // Once they are gone, a client is served as usual.
        const after = await eventually(server.stats, (s) => s.process.pendingConnections === 0, 5000);
        assert.equal(after.process.pendingConnections, 0);
        const ws = await connect(server.wsUrl);
        ws.close();
      } finally {
        for (const socket of held) socket.destroy();
        await server.stop();
      }
    });

    it('near the fd limit: new connections are dropped early and counted, the admin listener answers, nothing crashes', { skip: noPendingCap }, async (t) => {
      const FD_LIMIT = 200;
      const limited = withFdLimit(target, FD_LIMIT);
      const server = await startServer(limited, ['--max-pending-connections', '1000', '--max-connections', '1000', '--headers-timeout', '60s', '--admin-port', '0']);
      const pid = server.child.pid!;
      const held: Socket[] = [];
      try {
        await trickle(server.url, 300, held);
        // Until the server has taken in all 300: the budget's worth pending, the rest dropped.
        const stats = await eventually(server.stats, (s) => s.process.pendingConnections! + s.connectionsDropped['fd-limit'] + s.connectionsDropped['pending-limit'] >= 300 - 5, 5000);
        t.diagnostic(`300 connections against ${FD_LIMIT} fds: server fds ${fdCount(pid)}, budget ${stats.process.socketBudget}, dropped ${stats.connectionsDropped['fd-limit']}`);
        assert.equal(stats.process.socketBudget, FD_LIMIT - 64);
        assert.ok(stats.connectionsDropped['fd-limit'] >= 300 - (FD_LIMIT - 64) - 5, JSON.stringify(stats.connectionsDropped));
        assert.ok(fdCount(pid) < FD_LIMIT - 20, 'fds are left for the admin listener and the rest');
        assert.equal((await fetch(`${server.adminUrl}/healthz`)).status, 200);
        assert.ok(server.lines.some((line) => line.includes('"connection.dropped"')), 'the drops are logged');
        for (const socket of held) socket.destroy();
        await eventually(server.stats, (s) => s.process.pendingConnections === 0, 5000);
        const ws = await connect(server.wsUrl);
        ws.close();
        assert.equal(server.child.exitCode, null, 'the server is still running');
      } finally {
        for (const socket of held) socket.destroy();
        await server.stop();
      }
    });
  });
}
