// Rate and count bookkeeping for admission: token buckets (global and per address) and tallies. Runtime-free.

/** A token bucket: `rate` tokens per second, holding at most `burst`. */
export class TokenBucket {
  tokens: number;
  last: number;
  constructor(
    readonly rate: number,
    readonly burst: number,
    now: number,
  ) {
    this.tokens = burst;
    this.last = now;
  }

  #refill(now: number): void {
    if (now > this.last) {
      this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
      this.last = now;
    }
  }

  /** Takes one token if there is one. */
  take(now: number): boolean {
    this.#refill(now);
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Whole seconds until a token is available (at least 1), for Retry-After. */
  retryAfterSeconds(now: number): number {
    this.#refill(now);
    return Math.max(1, Math.ceil((1 - this.tokens) / this.rate));
  }

  /** Whether the bucket is full, i.e. carries no state worth keeping. */
  isFull(now: number): boolean {
    this.#refill(now);
    return this.tokens >= this.burst;
  }
}

/** One bucket per key (client address), created on demand; full buckets are dropped by `prune`. */
export class KeyedBuckets {
  readonly #buckets = new Map<string, TokenBucket>();
  constructor(
    readonly rate: number,
    readonly burst: number,
  ) {}

  take(key: string, now: number): boolean {
    let bucket = this.#buckets.get(key);
    if (!bucket) {
      bucket = new TokenBucket(this.rate, this.burst, now);
      this.#buckets.set(key, bucket);
    }
    return bucket.take(now);
  }

  retryAfterSeconds(key: string, now: number): number {
    return this.#buckets.get(key)?.retryAfterSeconds(now) ?? 1;
  }

  /** Forgets buckets that have refilled, so memory follows the clients that are busy right now. */
  prune(now: number): void {
    for (const [key, bucket] of this.#buckets) if (bucket.isFull(now)) this.#buckets.delete(key);
  }

  get size(): number {
    return this.#buckets.size;
  }
}

/** Counts per key (connections per address, per principal); a key at zero is forgotten. */
export class Tally {
  readonly #counts = new Map<string, number>();
  get(key: string): number {
    return this.#counts.get(key) ?? 0;
  }
  add(key: string): void {
    this.#counts.set(key, this.get(key) + 1);
  }
  remove(key: string): void {
    const n = this.get(key) - 1;
    if (n > 0) this.#counts.set(key, n);
    else this.#counts.delete(key);
  }
  get size(): number {
    return this.#counts.size;
  }
}
