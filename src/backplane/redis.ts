// Redis pub/sub backplane (ioredis). One publisher and one subscriber connection; one channel per
// topic with local subscribers. Outage policy: while degraded, publishes are dropped and counted.
import { closeRedisClient, createRedisClient, type RedisClientLike } from '../redis-client.ts';
import { BrokerBackplane, type BrokerBackplaneOptions } from './broker.ts';
import type { BackplaneSink } from './contract.ts';
import { channelOf } from './envelope.ts';

/** The part of an ioredis client this backplane uses (a structural type: the core does not import ioredis). */
interface RedisLike extends RedisClientLike {
  publish(channel: string, message: string): Promise<unknown>;
  subscribe(...channels: string[]): Promise<unknown>;
  unsubscribe(...channels: string[]): Promise<unknown>;
  ping(): Promise<unknown>;
}

export type RedisBackplaneOptions = BrokerBackplaneOptions;

export class RedisBackplane extends BrokerBackplane {
  readonly kind = 'redis';
  readonly #options: Required<RedisBackplaneOptions>;
  #pub: RedisLike | undefined;
  #sub: RedisLike | undefined;

  constructor(options: RedisBackplaneOptions) {
    super();
    this.#options = { prefix: 'hubbub:', probeInterval: 1000, ...options };
  }

  async start(sink: BackplaneSink): Promise<void> {
    this.sink = sink;
    // No unbounded command queue while the broker is away: publishes are dropped and counted instead.
    const [pub, sub] = await Promise.all([
      createRedisClient<RedisLike>(this.#options.url, { maxRetriesPerRequest: 1, enableOfflineQueue: false }),
      createRedisClient<RedisLike>(this.#options.url, { maxRetriesPerRequest: 1, enableOfflineQueue: true, autoResubscribe: true }),
    ]);
    this.#pub = pub;
    this.#sub = sub;
    for (const client of [pub, sub]) {
      client.on('error', (error: Error) => sink.failed('redis.connection', error));
      client.on('close', () => this.setState('degraded', 'connection closed'));
    }
    sub.on('message', (_channel: string, message: string) => this.received(message));
    // After a reconnect, (re)subscribe to every topic, including those that appeared while down.
    sub.on('ready', () => {
      if (this.topics.size > 0) sub.subscribe(...[...this.topics].map((t) => this.#channel(t))).catch((e: unknown) => sink.failed('redis.subscribe', e));
    });
    await Promise.allSettled([pub.connect(), sub.connect()]);
    await this.#check();
    this.probeEvery(this.#options.probeInterval, () => this.#check());
  }

  /** Connected = the publisher answers PING in time and the subscriber is ready. */
  async #check(): Promise<void> {
    const pub = this.#pub;
    if (!pub || this.closed) return;
    const ok = await this.answersWithin(() => pub.ping(), this.#options.probeInterval);
    if (this.closed) return;
    const ready = ok && this.#sub?.status === 'ready';
    this.setState(ready ? 'connected' : 'degraded', ready ? undefined : ok ? 'subscriber not ready' : 'no PING reply');
  }

  #channel(topic: string): string {
    return channelOf(this.#options.prefix, topic);
  }

  protected send(topic: string, payload: string): void {
    this.#pub!.publish(this.#channel(topic), payload).catch((error: unknown) => this.sink?.failed('redis.publish', error));
  }

  protected listen(topic: string): void {
    if (this.#sub?.status === 'ready') this.#sub.subscribe(this.#channel(topic)).catch((e: unknown) => this.sink?.failed('redis.subscribe', e));
  }

  protected unlisten(topic: string): void {
    if (this.#sub?.status === 'ready') this.#sub.unsubscribe(this.#channel(topic)).catch((e: unknown) => this.sink?.failed('redis.unsubscribe', e));
  }

  async close(): Promise<void> {
    this.setState('closed');
    this.stopProbing();
    for (const client of [this.#pub, this.#sub]) {
      if (client) await closeRedisClient(client);
    }
  }
}
