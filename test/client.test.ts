// The hubbub client (src/client/index.ts) against the real server over real sockets: publish and
// subscribe, errors, the close-code table, Retry-After from /admission, liveness against a frozen
// server (SIGSTOP), a bounded queue while down, and recovery across a restart of the node it is on
// (two nodes on the real Redis: every publication from the other node arrives once, in order).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sign } from 'hono/utils/jwt/jwt';
import WebSocket from 'ws';
import { backoffDelay, ClientError, createClient, reconnects, type ClientState, type HubbubClient, type MessageMeta, type SubscribedInfo, type WebSocketConstructor } from '../src/client/index.ts';
import { connect, eventually, nodeServer, serviceSkip, sleep, startServer, withTimeout, type ServerProcess } from './helpers.ts';

const handler = ['--handler', '.test-build/test/fixtures/client-handler.js'];
const WS = WebSocket as unknown as WebSocketConstructor;

/** A WebSocket constructor that records when each connection attempt was made. */
function counting() {
  const attempts: number[] = [];
  class Counting extends WebSocket {
    constructor(url: string) {
      attempts.push(performance.now());
      super(url);
    }
  }
  return { attempts, WebSocket: Counting as unknown as WebSocketConstructor };
}

const stateOf = (client: HubbubClient, state: ClientState, ms = 10_000) => eventually(async () => client.state, (s) => s === state, ms);
function subscribed(sub: { on(event: 'subscribed', l: (i: SubscribedInfo) => void): () => void }): Promise<SubscribedInfo> {
  return new Promise((resolve) => {
    const off = sub.on('subscribed', (info) => {
      off();
      resolve(info);
    });
  });
}

describe('client: backoff and the close-code table', () => {
  it('full jitter: every wait within [0, min(max, min·2^attempt)), spread like a uniform draw', () => {
    for (const attempt of [0, 1, 3, 10, 40]) {
      const cap = Math.min(20_000, 500 * 2 ** attempt);
      const draws = Array.from({ length: 4000 }, () => backoffDelay(attempt, 500, 20_000));
      assert.ok(draws.every((d) => d >= 0 && d < cap), `attempt ${attempt}: a wait out of [0, ${cap})`);
      const mean = draws.reduce((a, b) => a + b, 0) / draws.length;
      const sd = Math.sqrt(draws.reduce((a, b) => a + (b - mean) ** 2, 0) / draws.length);
      // A uniform draw on [0, cap): mean cap/2, standard deviation cap/√12 (±10%: 4,000 draws).
      assert.ok(Math.abs(mean - cap / 2) < cap * 0.05, `attempt ${attempt}: mean ${mean} for cap ${cap}`);
      assert.ok(Math.abs(sd - cap / Math.sqrt(12)) < (cap / Math.sqrt(12)) * 0.1, `attempt ${attempt}: sd ${sd}`);
    }
  });

  it('reconnects on going-away, abnormal, server error, restart, try-again-later and 3xxx; stops on normal, policy, protocol, too big and 4xxx', () => {
    for (const code of [1001, 1005, 1006, 1011, 1012, 1013, 1014, 3000, 3999]) assert.equal(reconnects(code), true, String(code));
    for (const code of [1000, 1002, 1003, 1007, 1008, 1009, 1010, 4000, 4001, 4999]) assert.equal(reconnects(code), false, String(code));
  });

  it('4001 (token expired) reconnects only for a client that can get a fresh token (getToken); other 4xxx stop either way', () => {
    assert.equal(reconnects(4001, true), true);
    assert.equal(reconnects(4001, false), false);
    for (const code of [1000, 1008, 4000, 4002, 4999]) assert.equal(reconnects(code, true), false, String(code));
    for (const code of [1001, 1006, 3000]) assert.equal(reconnects(code, true), true, String(code));
  });

  it('a wrong option is an error naming it', () => {
    assert.throws(() => createClient('ws://127.0.0.1:1/ws', { WebSocket: WS, backoff: { min: -1 } }), /backoff\.min/);
    assert.throws(() => createClient('ws://127.0.0.1:1/ws', { WebSocket: WS, backoff: { min: 5000, max: 100 } }), /backoff\.max/);
    assert.throws(() => createClient('ws://127.0.0.1:1/ws', { WebSocket: WS, pingTimeout: Number.NaN }), /pingTimeout/);
    assert.throws(() => createClient([], { WebSocket: WS }), /at least one URL/);
  });
});

describe('client against the real server (node)', { timeout: 120_000 }, () => {
  let server: ServerProcess;
  const clients: HubbubClient[] = [];
  const make = (options: Parameters<typeof createClient>[1] = {}, url = server.wsUrl) => {
    const client = createClient(url, { WebSocket: WS, backoff: { min: 50, max: 200 }, ...options });
    clients.push(client);
    return client;
  };
  before(async () => {
    server = await startServer(nodeServer, [...handler, '--history-size', '100']);
  });
  after(async () => {
    for (const c of clients) c.close();
    await server?.stop();
  });

  it('subscribe, publish (resolves with the position), the callback and for-await both get every message in order', async () => {
    const a = make();
    const b = make();
    const got: [unknown, MessageMeta][] = [];
    const sub = a.subscribe('room', (data, meta) => got.push([data, meta]));
    const first = await subscribed(sub);
    assert.equal(first.position.offset, 0);
    const iterated: number[] = [];
    const bsub = b.subscribe('room');
    await subscribed(bsub);
    const reading = (async () => {
      for await (const { meta } of bsub) {
        iterated.push(meta.offset);
        if (iterated.length === 3) break; // ends the subscription
      }
    })();
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push(await a.publish('room', { text: `hi ${i}` }));
    assert.deepEqual(answers.map((x) => x.offset), [1, 2, 3]);
    assert.equal(answers[0]!.delivered, 2);
    await withTimeout(reading, 5000, 'for-await');
    assert.deepEqual(iterated, [1, 2, 3]);
    await eventually(async () => got.length, (n) => n === 3);
    assert.deepEqual(got.map(([data]) => data), [{ text: 'hi 0' }, { text: 'hi 1' }, { text: 'hi 2' }]);
    assert.deepEqual(got.map(([, m]) => m.offset), [1, 2, 3]);
    assert.equal(got[0]![1].epoch, first.position.epoch);
    assert.equal(typeof got[0]![1].from, 'string');
    // b's iteration ended with break: it unsubscribed, so a fourth publication reaches a only.
    assert.equal((await a.publish('room', 'four')).delivered, 1);
  });

  it('errors: a forbidden publish rejects with its code, an aborted one with aborted, a throwing callback is reported and the client goes on', async () => {
    const a = make();
    await stateOf(a, 'connected');
    await assert.rejects(a.publish('$reserved', 1), (e: unknown) => e instanceof ClientError && e.code === 'forbidden');
    const controller = new AbortController();
    const aborted = a.publish('room2', 1, { signal: controller.signal });
    controller.abort();
    await assert.rejects(aborted, (e: unknown) => e instanceof ClientError && e.code === 'aborted');
    const errors: Error[] = [];
    a.on('error', (e) => errors.push(e));
    const seen: number[] = [];
    const sub = a.subscribe('room3', (_d, meta) => {
      seen.push(meta.offset);
      throw new Error('app bug');
    });
    await subscribed(sub);
    await a.publish('room3', 1);
    await a.publish('room3', 2);
    await eventually(async () => seen.length, (n) => n === 2);
    assert.equal(errors.filter((e) => e.message === 'app bug').length, 2);
    assert.equal(a.state, 'connected');
  });

  it('the close-code table on real closes: 1001, 1011, 1012, 1013 and 3000 reconnect and resubscribe; 1000, 1008 and 4000 stop with the code', async () => {
    for (const code of [1001, 1011, 1012, 1013, 3000]) {
      const c = make();
      const sub = c.subscribe('table');
      await subscribed(sub);
      const again = subscribed(sub);
      await c.publish('close-me', code).catch(() => {});
      const info = await withTimeout(again, 5000, `resubscribe after ${code}`);
      assert.equal(info.recovered, true, `after ${code}: resubscribed from its position`);
      assert.equal(c.stats.reconnects, 1, String(code));
      assert.equal(c.state, 'connected');
    }
    for (const code of [1000, 1008, 4000]) {
      const c = make();
      await stateOf(c, 'connected');
      const closed = new Promise<{ code: number }>((resolve) => c.on('closed', resolve));
      await c.publish('close-me', code).catch(() => {});
      assert.equal((await withTimeout(closed, 5000, `closed after ${code}`)).code, code);
      assert.equal(c.state, 'closed');
      await sleep(300);
      assert.equal(c.stats.connects, 1, `${code}: no reconnect`);
    }
  });
});

describe('client: refused handshakes, Retry-After, liveness, the queue while down', { timeout: 120_000 }, () => {
  it('a refused handshake asks /admission and waits its Retry-After (2 s) before trying again, then gets in', async () => {
    const server = await startServer(nodeServer, [...handler, '--max-connections', '1', '--retry-after', '2']);
    try {
      const holder = await connect(server.wsUrl);
      const { attempts, WebSocket: Counting } = counting();
      const client = createClient(server.wsUrl, { WebSocket: Counting, backoff: { min: 50, max: 100 } });
      await eventually(async () => attempts.length, (n) => n >= 2, 10_000);
      const gap = attempts[1]! - attempts[0]!;
      assert.ok(gap >= 2000 && gap < 2200, `second attempt ${gap} ms after the first: Retry-After 2 s plus ≤ 100 ms of jitter`);
      holder.close();
      await stateOf(client, 'connected', 10_000);
      client.close();
    } finally {
      await server.stop();
    }
  });

  it('an /admission that never answers does not hold the retry: the next attempt goes out within 3 s plus the backoff, and the reconnecting event has no refusal', async () => {
    const server = await startServer(nodeServer, [...handler, '--max-connections', '1']);
    try {
      const holder = await connect(server.wsUrl);
      const { attempts, WebSocket: Counting } = counting();
      const asked: string[] = [];
      const client = createClient(server.wsUrl, { WebSocket: Counting, backoff: { min: 50, max: 100 }, fetch: (url) => (asked.push(url), new Promise(() => {})) });
      const events: { refused?: unknown }[] = [];
      client.on('reconnecting', (e) => events.push(e));
      await eventually(async () => attempts.length, (n) => n >= 2, 10_000);
      const gap = attempts[1]! - attempts[0]!;
      assert.ok(gap >= 3000 && gap < 3300, `second attempt ${gap} ms after the first: the 3 s bound on /admission plus ≤ 100 ms of jitter`);
      assert.equal(asked[0], `${server.url}/admission`);
      assert.equal(events[0]!.refused, undefined);
      holder.close();
      await stateOf(client, 'connected', 10_000);
      client.close();
    } finally {
      await server.stop();
    }
  });

  it('a frozen server (SIGSTOP) is noticed by the ping within pingInterval + pingTimeout; after SIGCONT the client is back', async () => {
    const server = await startServer(nodeServer, handler);
    try {
      const client = createClient(server.wsUrl, { WebSocket: WS, pingInterval: 300, pingTimeout: 300, backoff: { min: 50, max: 200 } });
      await stateOf(client, 'connected');
      await sleep(700); // pings answered: still connected
      assert.equal(client.state, 'connected');
      assert.equal(client.stats.pingTimeouts, 0);
      server.child.kill('SIGSTOP');
      const frozenAt = performance.now();
      await stateOf(client, 'connecting', 3000).catch(() => stateOf(client, 'disconnected', 100));
      const noticed = performance.now() - frozenAt;
      assert.ok(noticed <= 300 + 300 + 300, `noticed after ${noticed} ms (≤ interval + timeout + one interval of phase)`);
      assert.equal(client.stats.pingTimeouts, 1);
      server.child.kill('SIGCONT');
      await stateOf(client, 'connected', 10_000);
      client.close();
    } finally {
      server.child.kill('SIGCONT');
      await server.stop();
    }
  });

  it('while the server is down, publishes wait in a bounded queue (the next is refused queue-full) and go out on reconnect', async () => {
    let server = await startServer(nodeServer, handler);
    const port = new URL(server.url).port;
    const client = createClient(server.wsUrl, { WebSocket: WS, maxQueuedPublishes: 2, backoff: { min: 50, max: 200 } });
    try {
      await stateOf(client, 'connected');
      await server.stop();
      await stateOf(client, 'connecting', 5000).catch(() => stateOf(client, 'disconnected', 100));
      const queued = [client.publish('q', 1), client.publish('q', 2)];
      await assert.rejects(client.publish('q', 3), (e: unknown) => e instanceof ClientError && e.code === 'queue-full');
      server = await startServer(nodeServer, [...handler, '--port', port]);
      const answers = await withTimeout(Promise.all(queued), 10_000, 'queued publishes');
      assert.deepEqual(answers.map((a) => a.offset), [1, 2]);
    } finally {
      client.close();
      await server.stop();
    }
  });
});

describe('client: getToken against a real server with --jwt-secret (token refresh end to end)', { timeout: 60_000 }, () => {
  const SECRET = 'client-test-secret-0123456789abcdef';
  const nowS = () => Math.floor(Date.now() / 1000);
  let server: ServerProcess;
  const clients: HubbubClient[] = [];
  before(async () => {
    server = await startServer(nodeServer, ['--handler', 'pubsub', '--jwt-secret', SECRET]);
  });
  after(async () => {
    for (const c of clients) c.close();
    await server?.stop();
  });
  /** A client whose getToken answers with `tokens[i]` on its i-th call (the last one from then on); every URL it connects to is recorded. */
  function withTokens(tokens: (() => Promise<string | undefined>)[]) {
    const calls: (string | undefined)[] = [];
    const urls: string[] = [];
    class Recording extends WebSocket {
      constructor(url: string) {
        urls.push(url);
        super(url);
      }
    }
    const client = createClient(server.wsUrl, {
      WebSocket: Recording as unknown as WebSocketConstructor,
      backoff: { min: 50, max: 200 },
      getToken: async () => {
        const token = await tokens[Math.min(calls.length, tokens.length - 1)]!();
        calls.push(token);
        return token;
      },
    });
    clients.push(client);
    return { client, calls, urls };
  }
  const short = () => sign({ sub: 'tina', exp: nowS() + 2 }, SECRET);
  const long = () => sign({ sub: 'tina', exp: nowS() + 3600 }, SECRET);
  const tokenOf = (url: string) => new URL(url).searchParams.get('token');

  it('a short-lived token: the server says expiring, getToken goes out as refresh, and the connection outlives the first exp', async () => {
    const { client, calls, urls } = withTokens([short, long]);
    const sub = client.subscribe('tok-room');
    await subscribed(sub);
    const firstExp = JSON.parse(Buffer.from(tokenOf(urls[0]!)!.split('.')[1]!, 'base64url').toString()).exp as number;
    // The warning comes at once (under 30 s left); the client answers with the second token.
    await eventually(async () => client.stats.tokenRefreshes, (n) => n === 1, 5000);
    assert.equal(calls.length, 2);
    // Past the first token's exp (the server closes at exp unless refreshed): still the same connection.
    await eventually(async () => nowS(), (t) => t > firstExp + 1, 5000);
    assert.equal(client.state, 'connected');
    assert.deepEqual([client.stats.connects, client.stats.reconnects, urls.length], [1, 0, 1]);
    const answer = await client.publish('tok-room', 'after exp', { timeout: 5000 });
    assert.equal(answer.delivered, 1);
    const stats = await server.stats();
    assert.equal(stats.released['token-expired'] ?? 0, 0);
  });

  it('after a 4001 (token expired: no fresh token was sent) the client reconnects with a fresh token from getToken and resubscribes', async () => {
    // Call 1: the connect's short token; call 2 (on expiring): nothing, so no refresh goes out; call 3: the reconnect's.
    const { client, calls, urls } = withTokens([short, async () => undefined, long]);
    const reconnecting: { code?: number }[] = [];
    client.on('reconnecting', (e) => reconnecting.push(e));
    const sub = client.subscribe('tok-room-2');
    await subscribed(sub);
    const again = subscribed(sub);
    await eventually(async () => client.stats.connects, (n) => n === 2, 10_000);
    await withTimeout(again, 5000, 'the resubscribe');
    assert.deepEqual(reconnecting.map((e) => e.code), [4001]);
    assert.equal(calls.length, 3);
    assert.equal(urls.length, 2);
    assert.equal(tokenOf(urls[1]!), calls[2], 'the reconnect carries the token getToken gave last');
    assert.notEqual(tokenOf(urls[1]!), tokenOf(urls[0]!));
    assert.equal(client.state, 'connected');
    assert.equal((await client.publish('tok-room-2', 'back', { timeout: 5000 })).delivered, 1);
    const stats = await eventually(server.stats, (s) => (s.released['token-expired'] ?? 0) >= 1);
    assert.equal(stats.released['token-expired'], 1);
  });
});

const skip = await serviceSkip('redis', 6379);

describe('client: a restart of the node it is on (two nodes on the real Redis, history on)', { skip, timeout: 120_000 }, () => {
  it('every one of a steady stream of publications from the other node arrives exactly once, in order; the resubscribe says recovered', async () => {
    const { Redis } = (await import('ioredis')) as unknown as { Redis: new (url: string) => { flushdb(): Promise<unknown>; quit(): Promise<unknown> } };
    const redis = new Redis('redis://127.0.0.1:6379/11');
    await redis.flushdb();
    await redis.quit();
    const args = [...handler, '--backplane', 'redis://127.0.0.1:6379/11', '--history-size', '1000'];
    let a = await startServer(nodeServer, args);
    const b = await startServer(nodeServer, args);
    const port = new URL(a.url).port;
    const client = createClient(a.wsUrl, { WebSocket: WS, backoff: { min: 100, max: 500 } });
    const publisher = createClient(b.wsUrl, { WebSocket: WS });
    try {
      const offsets: number[] = [];
      const infos: SubscribedInfo[] = [];
      const sub = client.subscribe('feed', (_d, meta) => offsets.push(meta.offset));
      sub.on('subscribed', (info) => infos.push(info));
      await subscribed(sub);
      await stateOf(publisher, 'connected');
      const total = 300;
      const publishing = (async () => {
        for (let i = 0; i < total; i++) {
          await publisher.publish('feed', i);
          await sleep(10);
        }
      })();
      await eventually(async () => offsets.length, (n) => n >= 50, 10_000);
      a.child.kill('SIGTERM');
      await a.exited;
      assert.notEqual(client.state, 'connected');
      a = await startServer(nodeServer, [...args, '--port', port]);
      await withTimeout(publishing, 30_000, 'publisher');
      await eventually(async () => offsets.length, (n) => n >= total, 20_000);
      await sleep(300);
      assert.deepEqual(offsets, Array.from({ length: total }, (_, i) => i + 1));
      assert.ok(client.stats.reconnects >= 1);
      assert.equal(infos.at(-1)!.recovered, true, JSON.stringify(infos));
    } finally {
      client.close();
      publisher.close();
      await a.stop();
      await b.stop();
    }
  });
});
