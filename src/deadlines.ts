// Deadlines by the second, for the hub's once-a-second sweep: no timer per item. Each item has at
// most one deadline; `due(now)` hands over, once, every item whose second has come. Setting,
// moving and deleting a deadline are O(1); a sweep costs the items due plus one step per second
// elapsed. Runtime-free.

export class Deadlines<T> {
  /** Items by the second (ms / 1000, rounded up) of their deadline. */
  readonly #buckets = new Map<number, Set<T>>();
  readonly #secondOf = new Map<T, number>();
  /** Every second up to this one has been handed over. */
  #swept: number;

  constructor(now: number = Date.now()) {
    this.#swept = Math.floor(now / 1000);
  }

  get size(): number {
    return this.#secondOf.size;
  }

  /** Gives `item` the deadline `at` (ms), replacing any it had; one already past is due at the next sweep. */
  set(item: T, at: number): void {
    this.delete(item);
    const second = Math.max(Math.ceil(at / 1000), this.#swept + 1);
    let bucket = this.#buckets.get(second);
    if (!bucket) this.#buckets.set(second, (bucket = new Set()));
    bucket.add(item);
    this.#secondOf.set(item, second);
  }

  delete(item: T): void {
    const second = this.#secondOf.get(item);
    if (second === undefined) return;
    this.#secondOf.delete(item);
    const bucket = this.#buckets.get(second)!;
    bucket.delete(item);
    if (bucket.size === 0) this.#buckets.delete(second);
  }

  /** The items whose deadline second is now or past, each once (their deadlines are gone). */
  due(now: number): T[] {
    const second = Math.floor(now / 1000);
    const out: T[] = [];
    if (this.#secondOf.size === 0) {
      this.#swept = Math.max(this.#swept, second);
      return out;
    }
    for (let s = this.#swept + 1; s <= second; s++) {
      const bucket = this.#buckets.get(s);
      if (!bucket) continue;
      this.#buckets.delete(s);
      for (const item of bucket) {
        this.#secondOf.delete(item);
        out.push(item);
      }
    }
    this.#swept = Math.max(this.#swept, second);
    return out;
  }
}
