// Unit tests of the registry: admission, reservation expiry, release exactly once, reason typing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Connection, ConnectionState } from '../../src/connection.ts';
import type { Handler, SocketLike } from '../../src/contracts.ts';
import { createCounters } from '../../src/counters.ts';
import { MemoryStreams } from '../../src/delivery/streams.ts';
import { TopicIndex } from '../../src/delivery/topics.ts';
import { ConnectionClosed, closeKinds, closeReason } from '../../src/errors.ts';
import { createHub } from '../../src/hub.ts';
import { createLogger } from '../../src/log.ts';
import { resolveOptions } from '../../src/options.ts';
import { Registry, type RegistryLimits } from '../../src/registry.ts';

function fakeSocket() {
  const calls: { close: [number | undefined, string | undefined][]; sent: unknown[] } = { close: [], sent: [] };
  const socket: SocketLike & { readyState: number } = {
    readyState: 1,
    send: (data) => void calls.sent.push(data),
    close: (code, reason) => {
      calls.close.push([code, reason]);
      socket.readyState = 2;
    },
  };
  return { socket, calls };
}

function setup(limit = 2, handler: Handler = {}, now = () => 0, limits: Partial<RegistryLimits> = {}) {
  const lines: string[] = [];
  const log = createLogger('debug', (l) => lines.push(l));
  const registry = new Registry({
    limits: { ...resolveOptions({ maxConnections: limit, handshakeTimeout: 1000 }), ...limits },
    counters: createCounters(),
    handler,
    log,
    topics: new TopicIndex<Connection>(),
    streams: new MemoryStreams({ historySize: 10, historyTtl: 60_000, historyMaxBytes: 1 << 20, maxStreams: 100 }, now),
    now,
  });
  return { registry, lines };
}

/** Admits, asserting that a Connection (not a Refusal) came back. */
function reserve(registry: Registry, address = 'x', principal?: { id: string }): Connection {
  const result = registry.reserve(address, principal);
  assert.ok(result instanceof Connection, `expected admission, got ${JSON.stringify(result)}`);
  return result;
}

describe('registry', () => {
  it('admits up to the limit, counting reservations, and refuses beyond with reason capacity', () => {
    const { registry } = setup(2);
    const a = reserve(registry, '1.1.1.1');
    const b = reserve(registry, '1.1.1.1');
    assert.deepEqual(registry.reserve('1.1.1.1'), { reason: 'capacity', retryAfter: 1 });
    assert.deepEqual(registry.admission.screen('1.1.1.1'), { reason: 'capacity', retryAfter: 1 });
    assert.equal(registry.counters.refused.capacity, 2);
    assert.equal(registry.reservations.size, 2);
    assert.notEqual(a.id, b.id);
  });

  it('release is exactly once: the slot, the counter, the abort and onClose happen once', () => {
    let onCloseCalls = 0;
    const { registry } = setup(1, { onClose: () => void onCloseCalls++ });
    const conn = reserve(registry, 'x');
    const { socket } = fakeSocket();
    assert.ok(registry.open(conn, socket));
    const signal = conn.signal;
    let aborts = 0;
    signal.addEventListener('abort', () => aborts++);
    assert.equal(registry.release(conn, closeReason('client-close', 1000)), true);
    assert.equal(registry.release(conn, closeReason('error')), false);
    conn.onClose({ code: 1006 }, socket);
    conn.onError({ error: new Error('late') }, socket);
    assert.equal(aborts, 1);
    assert.equal(onCloseCalls, 1);
    assert.equal(registry.counters.released['client-close'], 1);
    assert.equal(registry.counters.released.error, 0);
    assert.equal(registry.counters.released['connection-lost'], 0);
    assert.equal(registry.size, 0);
    assert.equal(conn.state, ConnectionState.Released);
    // The freed slot is usable again.
    reserve(registry);
  });

  it('aborts the signal with a typed ConnectionClosed reason', () => {
    const { registry } = setup();
    const conn = reserve(registry, 'x');
    registry.open(conn, fakeSocket().socket);
    const signal = conn.signal;
    conn.onClose({ code: 1001, reason: 'tab closed' }, undefined);
    assert.ok(signal.aborted);
    const reason = signal.reason as ConnectionClosed;
    assert.ok(reason instanceof ConnectionClosed);
    assert.ok(reason instanceof Error);
    assert.equal(reason.kind, 'client-close');
    assert.equal(reason.closeCode, 1001);
    assert.equal(reason.code, 'ERR_CONNECTION_CLOSED');
    // A signal read after the end is already aborted with the same reason.
    assert.equal(conn.signal.reason, reason);
  });

  it('maps a close without a close frame to connection-lost (1006)', () => {
    const { registry } = setup();
    const conn = reserve(registry, 'x');
    registry.open(conn, fakeSocket().socket);
    conn.onClose({ code: 1006 }, undefined);
    assert.equal(conn.releaseReason?.kind, 'connection-lost');
    assert.equal(conn.releaseReason?.closeCode, 1006);
  });

  it('expires reservations that never open, oldest first, and closes a late socket with 1013', () => {
    let now = 0;
    const { registry } = setup(3, {}, () => now);
    const old = reserve(registry, 'x');
    now = 600;
    const young = reserve(registry, 'x');
    now = 1200;
    assert.equal(registry.expireReservations(now), 1);
    assert.equal(old.state, ConnectionState.Released);
    assert.equal(old.releaseReason?.kind, 'handshake-timeout');
    assert.equal(young.state, ConnectionState.Reserved);
    assert.equal(registry.counters.released['handshake-timeout'], 1);
    const late = fakeSocket();
    assert.equal(registry.open(old, late.socket), false);
    assert.equal(late.calls.close[0]?.[0], 1013);
    now = 1700;
    assert.equal(registry.expireReservations(now), 1);
    assert.equal(registry.size, 0);
  });

  it('a reservation whose handshake fails (onClose before onOpen) is handshake-failed', () => {
    const { registry } = setup();
    const conn = reserve(registry, 'x');
    conn.onClose(undefined, undefined);
    assert.equal(conn.releaseReason?.kind, 'handshake-failed');
    assert.equal(registry.size, 0);
  });

  it('server-initiated endings close the socket with their code and wait in `closing` until it is gone', async () => {
    const { registry } = setup();
    const conn = reserve(registry, 'x');
    const { socket, calls } = fakeSocket();
    registry.open(conn, socket);
    assert.equal(registry.kick(conn.id), true);
    assert.deepEqual(calls.close[0], [4000, 'kicked']);
    assert.equal(registry.closing.size, 1);
    let idle = false;
    const waiting = registry.whenIdle().then(() => (idle = true));
    await Promise.resolve();
    assert.equal(idle, false);
    conn.onClose({ code: 4000 }, socket);
    await waiting;
    assert.equal(registry.closing.size, 0);
    assert.equal(registry.counters.released.kicked, 1);
    assert.equal(registry.counters.released['client-close'], 0);
  });

  it('a socket reported closed that the runtime may still hold (Bun) counts until its linger is over', async () => {
    let now = 0;
    const { registry } = setup(2, {}, () => now);
    // Server-initiated: the runtime reports the close at once, inside close(), and says it lingers.
    const kicked = reserve(registry, 'x');
    const { socket } = fakeSocket();
    socket.close = () => kicked.onClose({ code: 4000, reason: 'kicked', lingers: 5000 }, socket);
    registry.open(kicked, socket);
    registry.kick(kicked.id);
    assert.deepEqual([registry.closing.size, registry.lingering.size, registry.held, registry.lingeringFree], [0, 1, 1, 0]);
    let idle = false;
    void registry.whenIdle().then(() => (idle = true));
    // Client-initiated: no slot is held, so a freed slot lets a new client in at once…
    const left = reserve(registry, 'x');
    const other = fakeSocket().socket;
    registry.open(left, other);
    left.onClose({ code: 1000, lingers: 5000 }, other);
    assert.deepEqual([registry.held, registry.lingeringFree], [1, 1]);
    assert.ok(reserve(registry, 'x') instanceof Connection);
    registry.release(registry.reservations.values().next().value!, closeReason('handshake-failed'));
    // …but such sockets have a bound of their own.
    registry.admission.boundLingering(1);
    assert.equal((registry.reserve('x') as { reason: string }).reason, 'capacity');
    now = 4999;
    registry.expireLingering(now);
    await Promise.resolve();
    assert.deepEqual([registry.lingering.size, idle], [2, false]);
    now = 5000;
    registry.expireLingering(now);
    await Promise.resolve();
    assert.deepEqual([registry.lingering.size, registry.held, idle], [0, 0, true]);
    assert.ok(reserve(registry, 'x') instanceof Connection);
  });

  it('drain refuses new upgrades with reason draining and ends everything with shutdown (1001)', () => {
    const { registry } = setup(5);
    const open = reserve(registry, 'x');
    const { socket, calls } = fakeSocket();
    registry.open(open, socket);
    const pending = reserve(registry, 'x');
    registry.drain();
    assert.equal((registry.reserve('x') as { reason: string }).reason, 'draining');
    assert.equal(open.releaseReason?.kind, 'shutdown');
    assert.equal(pending.releaseReason?.kind, 'shutdown');
    assert.equal(calls.close[0]?.[0], 1001);
    assert.equal(registry.size, 0);
  });

  it('a throwing handler closes that connection with 1011 and logs its id', async () => {
    const { registry, lines } = setup(5, {
      onMessage: () => {
        throw new Error('boom');
      },
    });
    const conn = reserve(registry, 'x');
    const { socket, calls } = fakeSocket();
    conn.onOpen(undefined, socket);
    conn.onMessage({ data: 'hi' }, socket);
    assert.equal(calls.close[0]?.[0], 1011);
    assert.equal(conn.releaseReason?.kind, 'handler-error');
    const logged = lines.map((l) => JSON.parse(l)).find((r) => r.event === 'handler.error');
    assert.equal(logged.id, conn.id);
    assert.equal(logged.error.message, 'boom');
  });
});

describe('registry limits', () => {
  it('per-address and per-principal caps count reservations and open sockets, and free on release', () => {
    const { registry } = setup(10, {}, () => 0, { maxConnectionsPerIp: 2, maxConnectionsPerPrincipal: 1 });
    const a = reserve(registry, '10.0.0.1', { id: 'alice' });
    reserve(registry, '10.0.0.1');
    assert.equal(registry.admission.screen('10.0.0.1')?.reason, 'ip-limit');
    assert.equal((registry.reserve('10.0.0.1') as { reason: string }).reason, 'ip-limit');
    assert.equal((registry.reserve('10.0.0.2', { id: 'alice' }) as { reason: string }).reason, 'principal-limit');
    registry.release(a, closeReason('client-close', 1000));
    reserve(registry, '10.0.0.1', { id: 'alice' });
    assert.equal(registry.counters.refused['ip-limit'], 2);
    assert.equal(registry.counters.refused['principal-limit'], 1);
  });

  it('every ending kind frees the per-address and per-principal tallies: at a cap of 1 the same client can come back', () => {
    for (const kind of closeKinds) {
      const { registry } = setup(10, {}, () => 0, { maxConnectionsPerIp: 1, maxConnectionsPerPrincipal: 1 });
      const conn = reserve(registry, '10.0.0.9', { id: 'bob' });
      if (kind !== 'handshake-failed' && kind !== 'handshake-timeout') registry.open(conn, fakeSocket().socket);
      assert.equal((registry.reserve('10.0.0.9') as { reason: string }).reason, 'ip-limit', `${kind}: the cap holds while open`);
      registry.release(conn, closeReason(kind));
      reserve(registry, '10.0.0.9', { id: 'bob' });
    }
  });

  it('upgrade rate: a token bucket, burst = one second, Retry-After from the refill time', () => {
    let now = 0;
    const { registry } = setup(100, {}, () => now, { upgradeRate: 2, upgradeRatePerIp: 0 });
    assert.equal(registry.admission.screen('a'), undefined);
    assert.equal(registry.admission.screen('a'), undefined);
    assert.deepEqual(registry.admission.screen('a'), { reason: 'rate-limited', retryAfter: 1 });
    now = 500; // one token back
    assert.equal(registry.admission.screen('a'), undefined);
    assert.equal(registry.admission.screen('a')?.reason, 'rate-limited');
  });

  it('per-address upgrade rate keeps a bucket per address and prunes refilled ones', () => {
    let now = 0;
    const { registry } = setup(100, {}, () => now, { upgradeRatePerIp: 1 });
    assert.equal(registry.admission.screen('a'), undefined);
    assert.equal(registry.admission.screen('a')?.reason, 'rate-limited');
    assert.equal(registry.admission.screen('b'), undefined);
    now = 5000;
    registry.nextRateWindow(now);
    assert.equal(registry.admission.screen('a'), undefined);
  });

  it('heartbeat pings live sockets and drops one silent for two intervals with reason idle (terminated, no close frame)', () => {
    const { registry } = setup(5);
    const quiet = reserve(registry);
    const chatty = reserve(registry);
    let pings = 0;
    let terminated = 0;
    const mk = () => {
      const { socket, calls } = fakeSocket();
      socket.ping = () => void pings++;
      socket.terminate = () => void terminated++;
      return { socket, calls };
    };
    const q = mk();
    quiet.onOpen(undefined, q.socket);
    chatty.onOpen(undefined, mk().socket);
    assert.equal(registry.heartbeat(), 0);
    chatty.onPong();
    assert.equal(registry.heartbeat(), 0);
    chatty.onMessage({ data: 'x' }, mk().socket);
    assert.equal(registry.heartbeat(), 1);
    assert.equal(quiet.releaseReason?.kind, 'idle');
    assert.equal(terminated, 1);
    assert.equal(q.calls.close.length, 0);
    assert.equal(chatty.state, ConnectionState.Open);
    assert.equal(pings, 5);
  });

  it('message rate: over the limit in one window closes with 1008; a new window starts afresh', () => {
    let now = 0;
    const { registry } = setup(5, { onMessage: () => {} }, () => now, { messageRate: 3 });
    const conn = reserve(registry);
    const { socket, calls } = fakeSocket();
    conn.onOpen(undefined, socket);
    for (let i = 0; i < 3; i++) conn.onMessage({ data: 'x' }, socket);
    now = 1000;
    registry.nextRateWindow(now);
    for (let i = 0; i < 3; i++) conn.onMessage({ data: 'x' }, socket);
    assert.equal(conn.state, ConnectionState.Open);
    conn.onMessage({ data: 'x' }, socket);
    assert.equal(conn.releaseReason?.kind, 'rate-limited');
    assert.equal(calls.close[0]?.[0], 1008);
  });

  it('max payload is measured in UTF-8 bytes for text', () => {
    const { registry } = setup(5, { onMessage: () => {} }, () => 0, { maxPayload: 6 });
    const conn = reserve(registry);
    const { socket, calls } = fakeSocket();
    conn.onOpen(undefined, socket);
    conn.onMessage({ data: '☃☃' }, socket); // 6 bytes
    assert.equal(conn.state, ConnectionState.Open);
    conn.onMessage({ data: new Uint8Array(6) }, socket);
    assert.equal(conn.state, ConnectionState.Open);
    conn.onMessage({ data: 'ab☃☃' }, socket); // 8 bytes
    assert.equal(conn.releaseReason?.kind, 'message-too-big');
    assert.equal(calls.close[0]?.[0], 1009);
  });
});

describe('origin matcher', () => {
  it('matches exact origins and *. wildcards, case-insensitively; no Origin passes', async () => {
    const { originMatcher } = await import('../../src/admission/origin.ts');
    const allowed = originMatcher(['https://good.example', 'https://*.corp.example']);
    assert.equal(allowed('https://good.example'), true);
    assert.equal(allowed('HTTPS://GOOD.EXAMPLE'), true);
    assert.equal(allowed('https://a.b.corp.example'), true);
    assert.equal(allowed('https://corp.example'), false);
    assert.equal(allowed('https://evilcorp.example'), false);
    assert.equal(allowed('http://good.example'), false);
    assert.equal(allowed(undefined), true);
    assert.equal(originMatcher([])('https://anything'), true);
  });
});

describe('hub', () => {
  it('createHub validates options and names the bad field', () => {
    assert.throws(() => createHub({ maxConnections: -3 }), /option maxConnections must be an integer from 1 to/);
    assert.throws(() => createHub({ maxConections: 5 } as never), /unknown option "maxConections"/);
    assert.throws(() => createHub({ handler: 'nope' }), /option handler must be one of echo/);
  });

  it('hub.shutdown waits for sockets to close, up to the deadline', async () => {
    const hub = createHub({ logLevel: 'silent', shutdownTimeout: 400 });
    const conn = reserve(hub.registry);
    const { socket, calls } = fakeSocket();
    conn.onOpen(undefined, socket);
    const started = Date.now();
    const result = await hub.shutdown();
    const waited = Date.now() - started;
    assert.equal(calls.close[0]?.[0], 1001);
    assert.equal(result.forced, 1);
    // It waited the whole deadline for the socket that never finished closing, and not much longer.
    assert.ok(waited >= 390 && result.durationMs >= 390, `waited ${waited} ms (durationMs ${result.durationMs}) of a 400 ms deadline`);
    assert.ok(waited < 3000, `waited ${waited} ms`);
    assert.equal(hub.stats().state, 'closed');
    assert.equal(hub.shutdown(), hub.shutdown(), 'shutdown is idempotent');
  });
});
