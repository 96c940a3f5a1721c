// Redis pub/sub backplane (ioredis), and the positions and history every node shares. One publisher
// and one subscriber connection; one channel per topic with local subscribers. With history (or
// positions) on, a publication's offset, its place in history and its PUBLISH are one Lua script:
// every node, this one included, hears each topic's publications in offset order. Outage policy:
// while degraded, publishes are dropped and counted.
import type { MessageData, StreamPosition } from '../contracts.ts';
import { newEpoch, type Publication, type SharedStreams, type StreamRead } from '../delivery/streams.ts';
import { RedisIdempotency, type IdempotencyRedis } from '../delivery/idempotency.ts';
import { closeRedisClient, createRedisClient, type RedisClientLike } from '../redis-client.ts';
import { BrokerBackplane, type BrokerBackplaneOptions } from './broker.ts';
import type { BackplaneSink } from './contract.ts';
import { channelOf, decodeEnvelope, envelopeTail, topicToken } from './envelope.ts';
import { RedisPresence, type PresenceRedis } from './redis-presence.ts';

/** Unanswered PING probes in a row after which a connection is torn down and made again. */
const SILENT_PROBES = 3;

/** The part of an ioredis client this backplane uses (a structural type: the core does not import ioredis). */
interface RedisLike extends RedisClientLike, PresenceRedis, IdempotencyRedis {
  publish(channel: string, message: string): Promise<unknown>;
  subscribe(...channels: string[]): Promise<unknown>;
  unsubscribe(...channels: string[]): Promise<unknown>;
  ping(): Promise<unknown>;
  /** The connection's socket (ioredis's own property); undefined before the first connect. */
  readonly stream?: { destroy(error?: Error): void };
  defineCommand(name: string, definition: { numberOfKeys: number; lua: string }): void;
}
type Scripts = {
  hubbubAppend(meta: string, history: string, channel: string, tail: string, size: number, ttlMs: number, epoch: string): Promise<[number, string]>;
  hubbubRead(meta: string, history: string, after: number, limit: number, epoch: string, candidate: string, ttlMs: number, recover: number): Promise<[number, string, number, string[]]>;
};

// KEYS: the topic's meta hash (e = epoch, o = offset) and its history list. A stream whose meta is
// gone (expired, flushed, a new Redis) starts again at offset 0 under a new epoch, its history emptied.
const STREAM_OF = `
local epoch = redis.call('HGET', KEYS[1], 'e')
if not epoch then
  epoch = ARGV_CANDIDATE
  redis.call('HSET', KEYS[1], 'e', epoch, 'o', 0)
  redis.call('DEL', KEYS[2])
end
redis.call('PEXPIRE', KEYS[1], ARGV_TTL)
`;

// ARGV: channel, envelope tail, history size, ttl (ms), epoch candidate. Returns { offset, epoch }.
const APPEND = `${STREAM_OF.replace('ARGV_CANDIDATE', 'ARGV[5]').replace('ARGV_TTL', 'ARGV[4]')}
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local envelope = '{"v":1,"o":' .. offset .. ',"e":"' .. epoch .. '",' .. ARGV[2]
local size = tonumber(ARGV[3])
if size > 0 then
  redis.call('RPUSH', KEYS[2], envelope)
  redis.call('LTRIM', KEYS[2], -size, -1)
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
redis.call('PUBLISH', ARGV[1], envelope)
return { offset, epoch }
`;

// ARGV: after (-1: the newest), limit, epoch wanted ('' = any), epoch candidate, ttl (ms), recover (1/0).
// Returns { offset, epoch, complete (1/0), envelopes }.
const READ = `${STREAM_OF.replace('ARGV_CANDIDATE', 'ARGV[4]').replace('ARGV_TTL', 'ARGV[5]')}
local offset = tonumber(redis.call('HGET', KEYS[1], 'o'))
local limit = tonumber(ARGV[2])
local after = tonumber(ARGV[1])
if after < 0 then after = math.max(0, offset - limit) end
if (ARGV[3] ~= '' and ARGV[3] ~= epoch) or after > offset then return { offset, epoch, 0, {} } end
if after == offset then return { offset, epoch, 1, {} } end
local kept = redis.call('LLEN', KEYS[2])
local oldest = offset - kept
local complete = 1
if after < oldest then complete = 0; after = oldest end
local count = offset - after
if count > limit then complete = 0; count = limit end
if ARGV[6] == '1' and complete == 0 then return { offset, epoch, 0, {} } end
if count == 0 then return { offset, epoch, complete, {} } end
local first = kept - (offset - after)
return { offset, epoch, complete, redis.call('LRANGE', KEYS[2], first, first + count - 1) }
`;

export interface RedisBackplaneOptions extends BrokerBackplaneOptions {
  /** Publications kept per topic in Redis; 0 = none (offsets are still kept in Redis). @default 0 */
  historySize?: number;
  /** How long (ms) a topic's offset and history outlive its last use. @default 300000 */
  historyTtl?: number;
  /** How long (ms) the presence entries of a node that stopped renewing them (killed) still count. Renewed on every probe. @default 10000 */
  presenceTtl?: number;
}

export class RedisBackplane extends BrokerBackplane implements SharedStreams {
  readonly kind = 'redis';
  readonly streams = this;
  readonly #options: Required<RedisBackplaneOptions>;
  #pub: (RedisLike & Scripts) | undefined;
  #sub: RedisLike | undefined;
  #silent = new Map<RedisLike, number>();
  /** Each listened topic's SUBSCRIBE, answered or on its way (a new one after every reconnect). */
  readonly #listening = new Map<string, Promise<void>>();
  /** Presence shared by every node (set up in start). */
  presence: RedisPresence | undefined;
  /** The server API's idempotency keys, shared by every node (set up in start). */
  idempotency: RedisIdempotency | undefined;

  constructor(options: RedisBackplaneOptions) {
    super();
    this.#options = { prefix: 'hubbub:', probeInterval: 1000, historySize: 0, historyTtl: 300_000, presenceTtl: 10_000, ...options };
  }

  async start(sink: BackplaneSink): Promise<void> {
    this.sink = sink;
    // No unbounded command queue while the broker is away: publishes are dropped and counted instead.
    const [pub, sub] = await Promise.all([
      createRedisClient<RedisLike & Scripts>(this.#options.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false }),
      createRedisClient<RedisLike>(this.#options.url, { maxRetriesPerRequest: 1, enableOfflineQueue: true, autoResubscribe: false }),
    ]);
    pub.defineCommand('hubbubAppend', { numberOfKeys: 2, lua: APPEND });
    pub.defineCommand('hubbubRead', { numberOfKeys: 2, lua: READ });
    this.#pub = pub;
    this.#sub = sub;
    this.idempotency = new RedisIdempotency(pub, this.#options.prefix);
    this.presence = new RedisPresence(pub, {
      prefix: this.#options.prefix,
      ttlMs: this.#options.presenceTtl,
      members: () => sink.members(),
      topics: () => this.topics,
      failed: (stage, error) => sink.failed(stage, error),
    });
    for (const client of [pub, sub]) {
      client.on('error', (error: Error) => sink.failed('redis.connection', error));
      client.on('close', () => this.setState('degraded', 'connection closed'));
    }
    sub.on('message', (_channel: string, message: string) => this.received(message));
    // After a reconnect, (re)subscribe to every topic, including those that appeared while down.
    sub.on('ready', () => {
      for (const topic of this.topics) this.#subscribe(topic);
    });
    await Promise.allSettled([pub.connect(), sub.connect()]);
    await this.#check();
    this.probeEvery(this.#options.probeInterval, () => this.#check());
  }

  /**
   * Connected = both connections answer PING within the probe interval. The subscriber's own
   * answer counts: a subscriber connection that is `ready` may be half dead (it sends nothing of its
   * own, so a partition, or a far side that dropped it, goes unnoticed while the publisher's is fine).
   */
  async #check(): Promise<void> {
    const pub = this.#pub;
    const sub = this.#sub;
    if (!pub || !sub || this.closed) return;
    // Not while the subscriber reconnects: a PING would only wait in its offline queue.
    const subReady = sub.status === 'ready';
    const pubReady = pub.status === 'ready';
    const [pubOk, subOk] = await Promise.all([
      this.answersWithin(() => pub.ping(), this.#options.probeInterval),
      subReady ? this.answersWithin(() => sub.ping(), this.#options.probeInterval) : false,
    ]);
    if (this.closed) return;
    if (pubReady) this.#answered(pub, pubOk);
    if (subReady) this.#answered(sub, subOk);
    const ok = pubOk && subOk;
    this.setState(ok ? 'connected' : 'degraded', ok ? undefined : !pubOk ? 'no PING reply' : subReady ? 'no PING reply on the subscriber connection' : 'subscriber not ready');
    if (pubOk) await this.presence?.renew().catch((error: unknown) => this.sink?.failed('redis.presence', error));
  }

  /**
   * A connection whose PING went unanswered for SILENT_PROBES probes in a row is torn down (its
   * socket destroyed; ioredis then connects again): after a silent partition TCP would wait out its
   * retransmission backoff (seconds, more the longer the cut), or forever on a connection the far
   * side has let go. Not `end()`: the FIN would wait in that same backoff, and so would the
   * reconnect. Not ioredis's `socketTimeout`: its timer fires after an event-loop stall before the
   * reply that came meanwhile is read (a CPU-starved worker then loses a healthy connection); each
   * probe's deadline here looks at the socket first (withDeadline), and a stall sends no probes.
   */
  #answered(client: RedisLike, ok: boolean): void {
    const silent = ok ? 0 : (this.#silent.get(client) ?? 0) + 1;
    this.#silent.set(client, silent >= SILENT_PROBES ? 0 : silent);
    if (silent >= SILENT_PROBES) client.stream?.destroy(new Error(`no PING reply for ${SILENT_PROBES} probes in a row`));
  }

  #channel(topic: string): string {
    return channelOf(this.#options.prefix, topic);
  }

  /** The topic's meta hash and history list, in one hash slot (a Redis Cluster runs the scripts). */
  #keys(topic: string): [string, string] {
    const base = `${this.#options.prefix}{${topicToken(topic)}}`;
    return [`${base}:m`, `${base}:h`];
  }

  protected send(topic: string, payload: string): void {
    this.#pub!.publish(this.#channel(topic), payload).catch((error: unknown) => this.sink?.failed('redis.publish', error));
  }

  protected listen(topic: string): void {
    if (this.#sub?.status === 'ready') this.#subscribe(topic);
  }

  #subscribe(topic: string): void {
    const done = this.#sub!.subscribe(this.#channel(topic)).then(
      () => undefined,
      (error: unknown) => this.sink?.failed('redis.subscribe', error),
    );
    this.#listening.set(topic, done);
  }

  protected unlisten(topic: string): void {
    this.#listening.delete(topic);
    if (this.#sub?.status === 'ready') this.#sub.unsubscribe(this.#channel(topic)).catch((e: unknown) => this.sink?.failed('redis.unsubscribe', e));
  }

  // ---- SharedStreams ----

  async append(topic: string, data: MessageData, except?: string): Promise<StreamPosition> {
    if (this.state !== 'connected') {
      this.counts.droppedWhileDegraded++;
      throw new Error('the Redis backplane is degraded: publication not stored or sent');
    }
    const [meta, history] = this.#keys(topic);
    const { historySize, historyTtl } = this.#options;
    const [offset, epoch] = await this.#pub!.hubbubAppend(meta, history, this.#channel(topic), envelopeTail(this.nodeId, topic, data, except), historySize, historyTtl, newEpoch());
    this.counts.published++;
    return { offset: Number(offset), epoch };
  }

  async read(topic: string, query: { after?: number; epoch?: string; limit: number; recover?: boolean }): Promise<StreamRead> {
    const [meta, history] = this.#keys(topic);
    const [offset, epoch, complete, envelopes] = await this.#pub!.hubbubRead(meta, history, query.after ?? -1, query.limit, query.epoch ?? '', newEpoch(), this.#options.historyTtl, query.recover ? 1 : 0);
    const publications: Publication[] = [];
    for (const raw of envelopes) {
      const decoded = decodeEnvelope(raw);
      if (!decoded || decoded.offset === undefined) {
        this.counts.malformed++;
        return { position: { offset: Number(offset), epoch }, publications: [], complete: false };
      }
      publications.push({ offset: decoded.offset, data: decoded.data });
    }
    return { position: { offset: Number(offset), epoch }, publications, complete: complete === 1 };
  }

  listening(topic: string): Promise<void> {
    return this.#listening.get(topic) ?? Promise.resolve();
  }

  async close(): Promise<void> {
    this.setState('closed');
    this.stopProbing();
    await this.presence?.end();
    for (const client of [this.#pub, this.#sub]) {
      if (client) await closeRedisClient(client);
    }
  }
}
