// Suite group: the server API (--api-key) on this runtime's real server: every route with a good
// key, a wrong key and no key; publish reaching a subscriber (and its position), idempotency,
// broadcast, history, presence, topics, info, disconnect by id and by principal (a JWT `sub`),
// validation and size limits. Across nodes (Redis): test/api.test.ts.
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, describe, it } from 'node:test';
import { sign } from 'hono/utils/jwt/jwt';
import type WebSocket from 'ws';
import { apiCall, closed, connect, eventually, inbox, runToExit, startServer, type RuntimeTarget, type ServerProcess } from '../helpers.ts';

export const API_KEY = 'test-api-key-0123456789';
export const OLD_KEY = 'test-api-key-rotated-away';
/** The --jwt-secret of the servers `subscriber` connects to (its principals are JWT `sub`s). */
export const SECRET = 'api-suite-secret-0123456789abcdef-xyz';

/** One API call: status and JSON body (a fresh connection per call: see fetchFresh). */
export function api(server: ServerProcess, method: string, path: string, body?: unknown, key: string | null = API_KEY) {
  return apiCall(server.url, key, method, path, body);
}

let anonymous = 0;
/** A pubsub subscriber of `topic` as a JWT principal (`sub`, or a fresh one); `box` holds what it got after the answer. */
export async function subscriber(server: ServerProcess, topic: string, sub = `anon-${++anonymous}`) {
  const token = await sign({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }, SECRET);
  const ws: WebSocket = await connect(`${server.wsUrl}?token=${token}`);
  const box = inbox(ws);
  ws.send(JSON.stringify({ type: 'subscribe', topic }));
  const answer = JSON.parse(await box.next(5000)) as { type: string; offset: number; epoch: string };
  assert.equal(answer.type, 'subscribed');
  return { ws, box, answer };
}

/** A POST whose answer may come before its body is all sent: the status and body, whatever happens to the upload after. */
function earlyAnswer(url: string, body: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8').on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode!, body: text }));
      res.on('error', () => resolve({ status: res.statusCode!, body: text }));
    });
    req.on('error', (error) => setTimeout(() => reject(error), 1000)); // EPIPE after the answer is fine
    req.end(body);
  });
}

export function runApi(target: RuntimeTarget): void {
  describe(`${target.name}: the server API`, { timeout: 90_000 }, () => {
    let server: ServerProcess;
    before(async () => {
      server = await startServer(target, ['--handler', 'pubsub', '--api-key', `${API_KEY},${OLD_KEY}`, '--jwt-secret', SECRET]);
    });
    after(() => server.stop());

    const routes: [string, string, unknown?][] = [
      ['POST', '/api/publish', { topic: 'k', data: 1 }],
      ['POST', '/api/broadcast', { topics: ['k'], data: 1 }],
      ['POST', '/api/disconnect', { id: 'nobody' }],
      ['GET', '/api/topics'],
      ['GET', '/api/presence?topic=k'],
      ['GET', '/api/history?topic=k'],
      ['GET', '/api/info'],
      ['GET', '/api/openapi.json'],
    ];

    it('every route: 200 with either key (rotation), 401 JSON with a wrong key or none', async () => {
      for (const [method, path, body] of routes) {
        for (const key of [API_KEY, OLD_KEY]) assert.equal((await api(server, method, path, body, key)).status, 200, `${method} ${path}`);
        for (const key of ['wrong-key-0123456789abc', null, `${API_KEY}x`]) {
          const r = await api(server, method, path, body, key);
          assert.equal(r.status, 401, `${method} ${path} with ${key}`);
          assert.equal(r.body.error.code, 'unauthorized');
        }
      }
      const unknown = await api(server, 'GET', '/api/nothing-here');
      assert.deepEqual([unknown.status, unknown.body.error.code], [404, 'not-found']);
    });

    it('publish reaches the subscribers with its position; history, topics and presence show it', async () => {
      const s = await subscriber(server, 'api-room');
      try {
        const r = await api(server, 'POST', '/api/publish', { topic: 'api-room', data: { text: 'from the backend' } });
        assert.equal(r.status, 200, JSON.stringify(r.body));
        assert.equal(r.body.offset, s.answer.offset + 1);
        assert.equal(r.body.epoch, s.answer.epoch);
        assert.equal(r.body.delivered, 1);
        const got = JSON.parse(await s.box.next(5000));
        assert.deepEqual(got, { type: 'message', topic: 'api-room', offset: r.body.offset, data: { text: 'from the backend' } });
        const h = await api(server, 'GET', `/api/history?topic=api-room&since=${s.answer.offset}`);
        assert.deepEqual(h.body.publications, [{ offset: r.body.offset, data: { text: 'from the backend' } }]);
        assert.equal(h.body.epoch, s.answer.epoch);
        const topics = await api(server, 'GET', '/api/topics');
        assert.ok(topics.body.topics.some((t: { topic: string; subscribers: number }) => t.topic === 'api-room' && t.subscribers === 1), JSON.stringify(topics.body));
        const presence = await api(server, 'GET', '/api/presence?topic=api-room');
        assert.equal(presence.body.count, 1);
        const info = await api(server, 'GET', '/api/info');
        assert.equal(info.body.runtime, target.name);
        assert.ok(info.body.live >= 1);
      } finally {
        s.ws.close();
      }
    });

    it('an idempotencyKey seen before is answered with the first result and not published again', async () => {
      const s = await subscriber(server, 'api-idem');
      try {
        const first = await api(server, 'POST', '/api/publish', { topic: 'api-idem', data: 'once', idempotencyKey: 'order-42' });
        const again = await api(server, 'POST', '/api/publish', { topic: 'api-idem', data: 'once', idempotencyKey: 'order-42' });
        assert.equal(again.status, 200);
        assert.equal(again.body.duplicate, true);
        assert.equal(again.body.offset, first.body.offset);
        const other = await api(server, 'POST', '/api/publish', { topic: 'api-idem', data: 'twice', idempotencyKey: 'order-43' });
        assert.equal(other.body.offset, first.body.offset + 1);
        const got = [JSON.parse(await s.box.next(5000)).data, JSON.parse(await s.box.next(5000)).data];
        assert.deepEqual(got, ['once', 'twice'], 'order-42 delivered once');
      } finally {
        s.ws.close();
      }
    });

    it('broadcast publishes to each topic; disconnect closes by id and by principal (4000, or the code given)', async () => {
      const a = await subscriber(server, 'api-b1', 'carol');
      const b = await subscriber(server, 'api-b2', 'carol');
      const c = await subscriber(server, 'api-b2', 'dave');
      try {
        const r = await api(server, 'POST', '/api/broadcast', { topics: ['api-b1', 'api-b2'], data: 'all' });
        assert.deepEqual(r.body.results.map((x: { topic: string }) => x.topic), ['api-b1', 'api-b2']);
        for (const s of [a, b, c]) assert.equal(JSON.parse(await s.box.next(5000)).data, 'all');
        const closes = [closed(a.ws), closed(b.ws)];
        const byPrincipal = await api(server, 'POST', '/api/disconnect', { principal: 'carol', code: 4009, reason: 'account closed' });
        assert.equal(byPrincipal.body.closedHere, 2);
        for (const cl of await Promise.all(closes)) assert.deepEqual([cl.code, cl.reason.includes('account closed')], [4009, true]);
        assert.equal(c.ws.readyState, c.ws.OPEN, "dave's connection stays");
        const stats = await eventually(server.stats, (s) => s.live === 1);
        assert.equal(stats.live, 1);
      } finally {
        for (const s of [a, b, c]) s.ws.close();
      }
    });

    it('bad bodies are 400 with a code, big ones 413, and nothing is published', async () => {
      const bad: [string, unknown][] = [
        ['/api/publish', '{not json'],
        ['/api/publish', []],
        ['/api/publish', { topic: '', data: 1 }],
        ['/api/publish', { topic: 'x' }],
        ['/api/publish', { topic: 'x', data: 1, idempotencyKey: 7 }],
        ['/api/broadcast', { topics: [], data: 1 }],
        ['/api/broadcast', { topics: ['a', 'a'], data: 1 }],
        ['/api/disconnect', {}],
        ['/api/disconnect', { id: 'a', principal: 'b' }],
        ['/api/disconnect', { id: 'a', code: 1000 }],
      ];
      for (const [path, body] of bad) {
        const r = await api(server, 'POST', path, body);
        assert.deepEqual([r.status, r.body.error?.code], [400, 'bad-request'], `${path} ${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
      }
      // The answer comes before the 2 MiB are sent (Node then closes the socket): read it as it comes.
      const huge = await earlyAnswer(`${server.url}/api/publish`, JSON.stringify({ topic: 'x', data: 'y'.repeat(2 * 1024 * 1024) }));
      assert.deepEqual([huge.status, JSON.parse(huge.body).error?.code], [413, 'too-large']);
      const overPayload = await api(server, 'POST', '/api/publish', { topic: 'x', data: 'y'.repeat(100 * 1024) });
      assert.deepEqual([overPayload.status, overPayload.body.error?.code], [400, 'bad-request'], 'over --max-payload (64 KiB)');
      const h = await api(server, 'GET', '/api/history?topic=x');
      assert.deepEqual(h.body.publications, []);
      for (const q of ['/api/history', '/api/history?topic=x&since=-1', '/api/history?topic=x&limit=0', '/api/topics?limit=abc', '/api/presence']) {
        assert.equal((await api(server, 'GET', q)).status, 400, q);
      }
    });

    it('--api-key: a bad key is a startup error naming the option; without one there is no /api', async () => {
      for (const bad of ['short', `${API_KEY},${API_KEY}`, 'has space in it 0123456789']) {
        const r = await runToExit(target, ['--port', '0', '--api-key', bad]);
        assert.equal(r.code, 2, `--api-key ${bad}: ${r.stderr}`);
        assert.match(r.stderr, /--api-key/);
      }
      const plain = await startServer(target, ['--handler', 'pubsub']);
      try {
        assert.equal((await api(plain, 'GET', '/api/info')).status, 404);
      } finally {
        await plain.stop();
      }
    });
  });
}
