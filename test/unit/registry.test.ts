// Unit tests of the registry: admission, reservation expiry, release exactly once, reason typing.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConnectionState, type SocketLike } from '../../src/connection.ts';
import { ConnectionClosed, closeReason } from '../../src/errors.ts';
import type { Handler } from '../../src/handler.ts';
import { createHub } from '../../src/hub.ts';
import { createLogger } from '../../src/log.ts';
import { Registry, type RegistryLimits } from '../../src/registry.ts';
import { Connection } from '../../src/connection.ts';
import { resolveOptions } from '../../src/options.ts';

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
  const registry = new Registry({ ...resolveOptions({ maxConnections: limit, handshakeTimeout: 1000 }), ...limits }, { now });
  registry.attach({ registry, handler, log });
  return { registry, lines };
}

/** Admits, asserting that a Connection (not a Refusal) came back. */
function reserve(registry: Registry, address = 'x', principal?: { id: string }): Connection {
  const result = registry.admit(address, principal);
  assert.ok(result instanceof Connection, `expected admission, got ${JSON.stringify(result)}`);
  return result;
}

describe('registry', () => {
  it('admits up to the limit, counting reservations, and refuses beyond with reason capacity', () => {
    const { registry } = setup(2);
    const a = reserve(registry, '1.1.1.1');
    const b = reserve(registry, '1.1.1.1');
    assert.deepEqual(registry.admit('1.1.1.1'), { reason: 'capacity', retryAfter: 1 });
    assert.deepEqual(registry.screen('1.1.1.1'), { reason: 'capacity', retryAfter: 1 });
    assert.equal(registry.refused.capacity, 2);
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
    assert.equal(registry.released['client-close'], 1);
    assert.equal(registry.released.error, 0);
    assert.equal(registry.released['connection-lost'], 0);
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
    assert.equal(registry.released['handshake-timeout'], 1);
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
    assert.equal(registry.released.kicked, 1);
    assert.equal(registry.released['client-close'], 0);
  });

  it('drain refuses new upgrades with reason draining and ends everything with shutdown (1001)', () => {
    const { registry } = setup(5);
    const open = reserve(registry, 'x');
    const { socket, calls } = fakeSocket();
    registry.open(open, socket);
    const pending = reserve(registry, 'x');
    registry.drain();
    assert.equal((registry.admit('x') as { reason: string }).reason, 'draining');
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

describe('hub', () => {
  it('createHub validates options and names the bad field', () => {
    assert.throws(() => createHub({ maxConnections: -3 }), /option maxConnections must be an integer from 1 to/);
    assert.throws(() => createHub({ maxConections: 5 } as never), /unknown option "maxConections"/);
    assert.throws(() => createHub({ handler: 'nope' }), /option handler must be one of echo/);
  });

  it('hub.shutdown waits for sockets to close, up to the deadline', async () => {
    const hub = createHub({ logLevel: 'silent', shutdownTimeout: 100 });
    const conn = reserve(hub.registry);
    const { socket, calls } = fakeSocket();
    conn.onOpen(undefined, socket);
    const result = await hub.shutdown();
    assert.equal(calls.close[0]?.[0], 1001);
    assert.equal(result.forced, 1);
    assert.equal(hub.stats().state, 'closed');
    assert.equal(hub.shutdown(), hub.shutdown(), 'shutdown is idempotent');
  });
});
