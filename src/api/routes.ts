// The server API (`--api-key`): JSON over HTTP for a backend, on the admin surface (the admin
// listener with --admin-port, else the public one). Every route wants `Authorization: Bearer <key>`
// with one of the keys (compared in constant time, each of them); bodies are size-limited and
// validated; every error is `{"error":{"code":…,"message":…}}`. The routes and their shapes are
// described in openapi.ts (served at /api/openapi.json; a test checks the two agree). Runtime-free.
import type { Context, Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { timingSafeEqual } from 'hono/utils/buffer';
import { sha256 } from 'hono/utils/crypto';
import type { Hub } from '../hub.ts';
import { isValidTopic } from '../delivery/topics.ts';
import { VERSION } from '../version.ts';
import { openApiDocument } from './openapi.ts';

/** Request bodies at most this big (a publication itself is bounded by --max-payload). */
const BODY_LIMIT = 1024 * 1024;
/** Topics one broadcast may name. */
const MAX_BROADCAST_TOPICS = 1000;
/** Topics `GET /api/topics` lists at most (the largest first). */
const MAX_TOPICS_LISTED = 10_000;

export type ApiErrorCode = 'unauthorized' | 'bad-request' | 'too-large' | 'not-found' | 'in-progress' | 'unavailable';

const fail = (c: Context, status: 400 | 401 | 404 | 409 | 413 | 503, code: ApiErrorCode, message: string) =>
  c.json({ error: { code, message } }, status, status === 401 ? { 'WWW-Authenticate': 'Bearer' } : {});

/** A since/limit query parameter: undefined when absent, null when not an integer within [min, max]. */
function queryInteger(text: string | undefined, min: number, max: number): number | undefined | null {
  if (text === undefined) return undefined;
  if (!/^\d{1,15}$/.test(text)) return null;
  const n = Number(text);
  return n >= min && n <= max ? n : null;
}

export interface ApiRuntime {
  readonly runtime: string;
  /** Cluster mode: the whole server's figures. */
  clusterStats?(): Promise<{ readonly live: number; readonly limit: number } | undefined>;
}

export function apiRoutes(app: Hono, hub: Hub, runtime: ApiRuntime): void {
  const keys = hub.options.apiKeys;
  const startedAt = Date.now();

  // The keys' SHA-256 digests, taken once: timingSafeEqual(key, presented) would digest both sides
  // on every request (two WebCrypto jobs per key, a fifth of an API request's CPU with one key).
  const keyDigests = Promise.all(keys.map((key) => sha256(key)));
  const digested = (digest: string) => digest;

  app.use('/api/*', async (c, next) => {
    const header = c.req.header('authorization') ?? '';
    const match = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/.exec(header);
    // The presented key is digested once, then its digest compared in constant time with every
    // key's, whether or not an earlier one matched: the time says nothing of which, nor how close.
    let ok = false;
    if (match) {
      const presented = await sha256(match[1]!);
      for (const digest of await keyDigests) ok = (presented !== null && digest !== null && (await timingSafeEqual(presented, digest, digested))) || ok;
    }
    if (!ok) return fail(c, 401, 'unauthorized', header ? 'wrong API key' : 'Authorization: Bearer <api key> required');
    return next();
  });
  const limited = bodyLimit({ maxSize: BODY_LIMIT, onError: (c) => fail(c, 413, 'too-large', `request bodies are limited to ${BODY_LIMIT} bytes`) });

  /** The JSON body as an object, or an error answer. */
  async function body(c: Context): Promise<Record<string, unknown> | Response> {
    if (!/^application\/json\b/i.test(c.req.header('content-type') ?? '')) return fail(c, 400, 'bad-request', 'send Content-Type: application/json');
    let parsed: unknown;
    try {
      parsed = await c.req.json();
    } catch {
      return fail(c, 400, 'bad-request', 'the body is not valid JSON');
    }
    if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return fail(c, 400, 'bad-request', 'the body must be a JSON object');
    return parsed as Record<string, unknown>;
  }

  /** The publication's body as the handler's subscribers read it: the pubsub protocol's `{"data":…}`, or the data itself. */
  function encode(data: unknown): string {
    return hub.handler.formatPublish ? JSON.stringify({ data }) : typeof data === 'string' ? data : JSON.stringify(data);
  }

  async function publishOne(topic: string, data: string) {
    const result = await hub.publish(topic, data);
    return { topic, offset: result.offset, epoch: result.epoch, ...(result.delivered !== undefined ? { delivered: result.delivered } : {}) };
  }

  const badData = (data: unknown, encoded: string) =>
    data === undefined ? 'data is required' : new TextEncoder().encode(encoded).length > hub.options.maxPayload ? `data is over --max-payload (${hub.options.maxPayload} bytes)` : undefined;

  app.post('/api/publish', limited, async (c) => {
    const b = await body(c);
    if (b instanceof Response) return b;
    const { topic, data, idempotencyKey } = b;
    if (!isValidTopic(topic)) return fail(c, 400, 'bad-request', 'topic must be a string of 1 to 256 characters without control characters');
    const encoded = data === undefined ? '' : encode(data);
    const bad = badData(data, encoded);
    if (bad) return fail(c, 400, 'bad-request', bad);
    if (idempotencyKey !== undefined && (typeof idempotencyKey !== 'string' || idempotencyKey.length < 1 || idempotencyKey.length > 256)) {
      return fail(c, 400, 'bad-request', 'idempotencyKey must be a string of 1 to 256 characters');
    }
    const store = idempotencyKey === undefined ? undefined : hub.idempotency;
    const key = `${topic.length}:${topic}:${idempotencyKey as string}`;
    try {
      if (store) {
        const claim = await store.claim(key);
        if (claim.state === 'done') return c.json({ ...(claim.result as object), duplicate: true });
        if (claim.state === 'pending') return fail(c, 409, 'in-progress', 'a publish with this idempotencyKey is under way; retry shortly');
      }
      let result;
      try {
        result = await publishOne(topic, encoded);
      } catch (error) {
        await store?.release(key).catch(() => {});
        throw error;
      }
      await store?.complete(key, result);
      return c.json(result);
    } catch (error) {
      return fail(c, 503, 'unavailable', `not published: ${error instanceof Error ? error.message : String(error)}`);
    }
  });

  app.post('/api/broadcast', limited, async (c) => {
    const b = await body(c);
    if (b instanceof Response) return b;
    const { topics, data } = b;
    if (!Array.isArray(topics) || topics.length === 0 || topics.length > MAX_BROADCAST_TOPICS || !topics.every(isValidTopic)) {
      return fail(c, 400, 'bad-request', `topics must be a list of 1 to ${MAX_BROADCAST_TOPICS} topic names`);
    }
    if (new Set(topics).size !== topics.length) return fail(c, 400, 'bad-request', 'topics must not repeat');
    const encoded = data === undefined ? '' : encode(data);
    const bad = badData(data, encoded);
    if (bad) return fail(c, 400, 'bad-request', bad);
    const results = await Promise.all(
      (topics as string[]).map((topic) =>
        publishOne(topic, encoded).catch((error: unknown) => ({ topic, error: { code: 'unavailable', message: error instanceof Error ? error.message : String(error) } })),
      ),
    );
    return c.json({ results });
  });

  app.post('/api/disconnect', limited, async (c) => {
    const b = await body(c);
    if (b instanceof Response) return b;
    const { id, principal, code, reason } = b;
    const valid = (v: unknown) => v === undefined || (typeof v === 'string' && v.length > 0 && v.length <= 256);
    if ((id === undefined) === (principal === undefined) || !valid(id) || !valid(principal)) return fail(c, 400, 'bad-request', 'give exactly one of id and principal (strings)');
    if (code !== undefined && !(Number.isInteger(code) && (code as number) >= 4000 && (code as number) <= 4999)) return fail(c, 400, 'bad-request', 'code must be an integer from 4000 to 4999');
    if (reason !== undefined && (typeof reason !== 'string' || new TextEncoder().encode(reason).length > 120)) return fail(c, 400, 'bad-request', 'reason must be a string of at most 120 bytes');
    const target = id !== undefined ? { id: id as string } : { principal: principal as string };
    const closed = hub.disconnect(target, { ...(code !== undefined ? { code: code as number } : {}), ...(reason !== undefined ? { reason: reason as string } : {}) });
    return c.json({ closedHere: closed, cluster: hub.backplaneStats() !== undefined });
  });

  app.get('/api/topics', (c) => {
    const limit = queryInteger(c.req.query('limit'), 1, MAX_TOPICS_LISTED);
    if (limit === null) return fail(c, 400, 'bad-request', `limit must be an integer from 1 to ${MAX_TOPICS_LISTED}`);
    return c.json({ count: hub.topics.size, topics: hub.topics.largest(limit ?? 1000) });
  });

  app.get('/api/presence', async (c) => {
    const topic = c.req.query('topic');
    if (!isValidTopic(topic)) return fail(c, 400, 'bad-request', 'topic is required');
    try {
      return c.json(await hub.presence(topic));
    } catch (error) {
      return fail(c, 503, 'unavailable', error instanceof Error ? error.message : String(error));
    }
  });

  app.get('/api/history', async (c) => {
    const topic = c.req.query('topic');
    if (!isValidTopic(topic)) return fail(c, 400, 'bad-request', 'topic is required');
    const since = queryInteger(c.req.query('since'), 0, Number.MAX_SAFE_INTEGER);
    const limit = queryInteger(c.req.query('limit'), 1, 10_000);
    if (since === null) return fail(c, 400, 'bad-request', 'since must be an offset (an integer ≥ 0)');
    if (limit === null) return fail(c, 400, 'bad-request', 'limit must be an integer from 1 to 10000');
    try {
      const { position, publications } = await hub.history(topic, { ...(since !== undefined ? { since } : {}), limit: limit ?? Math.max(1, hub.options.historySize) });
      return c.json({ topic, offset: position.offset, epoch: position.epoch, publications: publications.map((p) => ({ offset: p.offset, data: decoded(p.data, Boolean(hub.handler.formatPublish)) })) });
    } catch (error) {
      return fail(c, 503, 'unavailable', error instanceof Error ? error.message : String(error));
    }
  });

  app.get('/api/info', async (c) => {
    const stats = hub.stats();
    const cluster = await runtime.clusterStats?.();
    const backplane = hub.backplaneStats();
    return c.json({
      version: VERSION,
      runtime: runtime.runtime,
      uptimeSeconds: Math.floor((Date.now() - startedAt) / 1000),
      state: stats.state,
      live: cluster?.live ?? stats.live,
      limit: cluster?.limit ?? stats.limit,
      topics: hub.topics.size,
      backplane: backplane ? { state: backplane.state, node: hub.nodeId } : null,
    });
  });

  app.get('/api/openapi.json', (c) => c.json(openApiDocument));
  app.all('/api/*', (c) => fail(c, 404, 'not-found', `no ${c.req.method} ${new URL(c.req.url).pathname}; see /api/openapi.json`));
}

/** A publication's data as the API answers it: the pubsub protocol's `{"data":…}` unwrapped, else as JSON if it is JSON. */
function decoded(data: unknown, pubsub: boolean): unknown {
  if (typeof data !== 'string') return null; // binary publications have no JSON form
  try {
    const parsed = JSON.parse(data) as { data?: unknown };
    return pubsub && typeof parsed === 'object' && parsed !== null ? parsed.data : parsed;
  } catch {
    return data;
  }
}
