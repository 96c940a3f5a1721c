// Idempotency keys of the server API: a publish retried with the same `idempotencyKey` within
// IDEMPOTENCY_TTL is answered with the first one's result and not published again. In this
// process's memory (bounded), or, with the Redis backplane, in Redis (SET NX), so that a retry that
// lands on another node or worker is caught too. Runtime-free.

/** How long a key is remembered. */
export const IDEMPOTENCY_TTL = 5 * 60_000;
/** Keys remembered in memory at most; the oldest are forgotten first. */
const MEMORY_KEYS = 100_000;

export type Claim<T> = { state: 'new' } | { state: 'pending' } | { state: 'done'; result: T };

export interface IdempotencyStore {
  /** Takes the key if nobody has; otherwise says whether its first use is under way or done (with its result). */
  claim(key: string): Promise<Claim<unknown>>;
  /** The first use succeeded: later claims get `result`. */
  complete(key: string, result: unknown): Promise<void>;
  /** The first use failed: the key is free again (a retry may publish). */
  release(key: string): Promise<void>;
}

export class MemoryIdempotency implements IdempotencyStore {
  // Insertion order = age: the first entries are the oldest.
  readonly #keys = new Map<string, { at: number; result?: unknown; done: boolean }>();

  async claim(key: string): Promise<Claim<unknown>> {
    const now = Date.now();
    const seen = this.#keys.get(key);
    if (seen && now - seen.at < IDEMPOTENCY_TTL) return seen.done ? { state: 'done', result: seen.result } : { state: 'pending' };
    this.#keys.delete(key);
    this.#keys.set(key, { at: now, done: false });
    for (const [k, v] of this.#keys) {
      if (this.#keys.size <= MEMORY_KEYS && now - v.at < IDEMPOTENCY_TTL) break;
      this.#keys.delete(k);
    }
    return { state: 'new' };
  }

  async complete(key: string, result: unknown): Promise<void> {
    const seen = this.#keys.get(key);
    if (seen) Object.assign(seen, { result, done: true });
  }

  async release(key: string): Promise<void> {
    this.#keys.delete(key);
  }
}

/** The part of an ioredis client the Redis store uses. */
export interface IdempotencyRedis {
  set(key: string, value: string, ...args: (string | number)[]): Promise<unknown>;
  get(key: string): Promise<string | null>;
  del(key: string): Promise<unknown>;
}

const PENDING = '"\u0000pending"';

export class RedisIdempotency implements IdempotencyStore {
  constructor(
    private readonly redis: IdempotencyRedis,
    private readonly prefix: string,
  ) {}

  #key(key: string): string {
    return `${this.prefix}idem:${key}`;
  }

  async claim(key: string): Promise<Claim<unknown>> {
    if ((await this.redis.set(this.#key(key), PENDING, 'PX', IDEMPOTENCY_TTL, 'NX')) === 'OK') return { state: 'new' };
    const value = await this.redis.get(this.#key(key));
    if (value === null) return this.claim(key); // expired between the two
    return value === PENDING ? { state: 'pending' } : { state: 'done', result: JSON.parse(value) as unknown };
  }

  async complete(key: string, result: unknown): Promise<void> {
    await this.redis.set(this.#key(key), JSON.stringify(result), 'PX', IDEMPOTENCY_TTL, 'XX');
  }

  async release(key: string): Promise<void> {
    await this.redis.del(this.#key(key));
  }
}
