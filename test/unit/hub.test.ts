// The hub's runtime hooks: a manual sweeper (workerd), connection id prefixes (cluster workers,
// Durable Object instances) and the per-connection subscription hook.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Connection } from '../../src/connection.ts';
import type { SocketLike } from '../../src/contracts.ts';
import { createPubSubHandler } from '../../src/handlers/pubsub.ts';
import { createHub } from '../../src/hub.ts';

const socket = (): SocketLike => ({ readyState: 1, bufferedAmount: 0, send: () => {}, close: () => {}, ping: () => {} }) as unknown as SocketLike;

describe('hub runtime hooks', () => {
  it("sweeper 'manual': nothing expires by itself; hub.sweep() expires reservations and runs the heartbeat", async () => {
    const hub = createHub({ logLevel: 'silent', handshakeTimeout: 100, heartbeatInterval: 100 }, undefined, { sweeper: 'manual' });
    const reserved = hub.registry.reserve('127.0.0.1');
    assert.ok(reserved instanceof Connection);
    const open = hub.registry.reserve('127.0.0.1');
    assert.ok(open instanceof Connection);
    open.onOpen(undefined, socket());
    await new Promise((resolve) => setTimeout(resolve, 300)); // a timer-driven hub would have expired it by now
    assert.equal(hub.registry.reservations.size, 1, 'no timer ran');
    hub.sweep();
    assert.equal(hub.registry.reservations.size, 0, 'sweep() expired the reservation');
    assert.equal(hub.counters.released['handshake-timeout'], 1);
    // Beats without a pong (heard before the first one) drop the silent peer on the third.
    const later = Date.now() + 1000;
    for (let i = 0; i < 3; i++) hub.sweep(later + i * 200);
    assert.equal(hub.registry.heartbeats, 4, 'one beat per due sweep (the first came with the expiry sweep)');
    assert.equal(hub.registry.liveConnections.size, 0, 'the heartbeat dropped the silent peer');
    assert.equal(hub.counters.released.idle, 1);
  });

  it('with a backplane, ids carry a random part per process, so two nodes never hand out the same id', () => {
    const ids = [0, 1].map(() => (createHub({ logLevel: 'silent', backplane: 'redis://127.0.0.1:6379' }, undefined, { sweeper: 'manual', idPrefix: '2-' }).registry.reserve('127.0.0.1') as Connection).id);
    for (const id of ids) assert.match(id, /^[0-9a-z]{8}-2-0$/);
    assert.notEqual(ids[0], ids[1]);
    assert.equal((createHub({ logLevel: 'silent' }, undefined, { sweeper: 'manual' }).registry.reserve('127.0.0.1') as Connection).id, '0', 'without a backplane ids stay short');
  });

  it('idPrefix goes before every connection id', () => {
    const hub = createHub({ logLevel: 'silent' }, undefined, { sweeper: 'manual', idPrefix: '3-' });
    const ids = [0, 1, 2].map(() => (hub.registry.reserve('127.0.0.1') as Connection).id);
    assert.deepEqual(ids, ['3-0', '3-1', '3-2']);
  });

  it('topics.subscriptionsChanged hears each change of a connection’s own subscriptions, not no-ops', () => {
    const hub = createHub({ logLevel: 'silent' }, undefined, { sweeper: 'manual' });
    const conn = hub.registry.reserve('127.0.0.1') as Connection;
    conn.onOpen(undefined, socket());
    const heard: string[][] = [];
    hub.topics.subscriptionsChanged = (c) => heard.push([...(c.topics ?? [])]);
    conn.subscribe('a');
    conn.subscribe('a'); // already subscribed: no change
    conn.subscribe('b');
    conn.unsubscribe('a');
    conn.unsubscribe('nope'); // not subscribed: no change
    assert.deepEqual(heard, [['a'], ['a', 'b'], ['b']]);
  });

  it('a handler key that is not a Handler key is an error with the closest name; a non-function is too', () => {
    assert.throws(() => createHub({ logLevel: 'silent', handler: { onMesage: () => {} } as never }), /option handler: unknown key "onMesage" \(did you mean "onMessage"\?\)/);
    assert.throws(() => createHub({ logLevel: 'silent', handler: () => ({ onClsoe: () => {} }) as never }), /unknown key "onClsoe" \(did you mean "onClose"\?\)/);
    assert.throws(() => createHub({ logLevel: 'silent', handler: { onMessage: 'echo' } as never }), /option handler: onMessage must be a function \(got string\)/);
  });

  it('every hook of Handler is accepted, the built-in pubsub handler from a factory included', () => {
    const hook = () => undefined;
    createHub({ logLevel: 'silent', handler: { authenticate: hook, selectProtocol: hook, onOpen: hook, onMessage: hook, formatPublish: (_t, _o, d) => d, formatPresence: () => '', onClose: hook } });
    const hub = createHub({ logLevel: 'silent', handler: (h) => createPubSubHandler(h) });
    assert.equal(typeof hub.handler.formatPresence, 'function');
  });

  it('ctx.data is a usable object from the start (ctx.data.n = 0 in onOpen works), and can be replaced', () => {
    let seen: unknown;
    const hub = createHub({
      logLevel: 'silent',
      handler: {
        onOpen: (ctx) => {
          ctx.data.n = 0;
        },
        onMessage: (ctx) => {
          ctx.data.n++;
          seen = ctx.data;
        },
      },
    });
    const conn = hub.registry.reserve('127.0.0.1') as Connection;
    conn.onOpen(undefined, socket());
    conn.onMessage({ data: 'x' }, socket());
    assert.deepEqual(seen, { n: 1 });
    assert.equal(conn.releaseReason, undefined, 'no handler error');
    conn.data = 'replaced';
    assert.equal(conn.data, 'replaced');
  });
});
