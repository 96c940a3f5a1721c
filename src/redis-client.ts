// The one way hubbub makes a Redis client (ioredis, loaded only when a Redis URL is configured)
// and closes it. The core sees it through structural types, so it imports no ioredis types.
import { withDeadline } from './timers.ts';

/** The part of an ioredis client every user of it needs. */
export interface RedisClientLike {
  readonly status: string;
  on(event: string, listener: (...args: never[]) => void): unknown;
  connect(): Promise<void>;
  quit(): Promise<unknown>;
  disconnect(): void;
}

export interface RedisClientOptions {
  /** Commands sent while disconnected wait in a queue (true) or fail at once (false). */
  enableOfflineQueue: boolean;
  maxRetriesPerRequest: number;
  commandTimeout?: number;
  autoResubscribe?: boolean;
}

/** A client that connects when `connect()` is called and reconnects with a capped backoff (200 ms steps, 2 s at most). */
export async function createRedisClient<R extends RedisClientLike>(url: string, options: RedisClientOptions): Promise<R> {
  const { Redis } = (await import('ioredis')) as unknown as { Redis: new (url: string, options: object) => R };
  return new Redis(url, {
    lazyConnect: true,
    connectTimeout: 2000,
    retryStrategy: (attempt: number) => Math.min(attempt * 200, 2000),
    ...options,
  });
}

/** QUIT, waiting at most half a second for the answer, then drop the connection. */
export async function closeRedisClient(client: RedisClientLike): Promise<void> {
  await withDeadline(client.quit().catch(() => undefined), 500, undefined);
  client.disconnect();
}
