// Recovery reads of a shared store (Redis, NATS JetStream), shared by the subscribers of a node that come back
// together. A reconnect storm is thousands of subscribers asking for the same publications: the
// same read asked for within one timer turn is made once, and each publication read is kept (for a few seconds, within a
// bound) as one object per topic, epoch and offset, so that it is formatted and framed once for
// every subscriber that recovers it (the registry's frame cache is keyed by the publication), as
// with history in memory. Runtime-free.
import type { MessageData, StreamPosition } from '../contracts.ts';
import type { Publication, SharedStreams, StreamRead } from './streams.ts';

/** How long a topic's publications are kept after the last read that used them. */
const KEEP_MS = 5000;

interface Window {
  epoch: string;
  readonly byOffset: Map<number, Publication>;
  usedAt: number;
}

export class SharedReads implements SharedStreams {
  readonly #store: SharedStreams;
  readonly #maxKept: number;
  /** Reads that wait for the next timer turn before they are sent, by what they ask. */
  readonly #pending = new Map<string, Promise<StreamRead>>();
  /** Topics in the order they were last used (oldest first). */
  readonly #kept = new Map<string, Window>();
  #keptCount = 0;
  #now: () => number;

  /** `maxKept`: publications kept in all, across topics (the oldest topics' go first). */
  constructor(store: SharedStreams, maxKept: number, now: () => number = Date.now) {
    this.#store = store;
    this.#maxKept = maxKept;
    this.#now = now;
  }

  append(topic: string, data: MessageData, except?: string): Promise<StreamPosition> {
    return this.#store.append(topic, data, except);
  }

  listening(topic: string): Promise<void> {
    return this.#store.listening(topic);
  }

  read(topic: string, query: { readonly after?: number; readonly epoch?: string; readonly limit: number; readonly recover?: boolean }): Promise<StreamRead> {
    // Position reads (a fresh subscribe: `limit` 0) are shared the same way: one read not yet sent
    // is as fresh for every subscriber that joins it (a crowd subscribing at once is one read per
    // turn, not one each: measured, 15,000 at once per worker missed the store deadline).
    const key = `${query.after ?? ''}\u0000${query.epoch ?? ''}\u0000${query.limit}\u0000${query.recover ? 1 : 0}\u0000${topic}`;
    // Only a read not yet sent is joined: a subscriber's read must start after its hold did (the
    // seam: what was published before the read started is in it, what comes after is held), and a
    // read already on its way may have started before. So a read waits one timer turn for others
    // to join: in a storm, every subscribe the event loop handled meanwhile.
    const pending = this.#pending.get(key);
    if (pending) return pending;
    const read = new Promise<StreamRead>((resolve, reject) => {
      setTimeout(() => {
        this.#pending.delete(key);
        this.#store.read(topic, query).then((r) => resolve(this.#intern(topic, r)), reject);
      }, 0);
    });
    this.#pending.set(key, read);
    return read;
  }

  /** The read with each publication replaced by the one kept for its offset (kept now if new). */
  #intern(topic: string, read: StreamRead): StreamRead {
    if (read.publications.length === 0 || this.#maxKept === 0) return read;
    const epoch = read.position.epoch;
    let w = this.#kept.get(topic);
    if (w) this.#kept.delete(topic); // re-inserted last: the most recently used
    if (!w || w.epoch !== epoch) {
      if (w) this.#keptCount -= w.byOffset.size;
      w = { epoch, byOffset: new Map(), usedAt: 0 };
    }
    w.usedAt = this.#now();
    this.#kept.set(topic, w);
    const publications = read.publications.map((p) => {
      const had = w.byOffset.get(p.offset);
      if (had) return had;
      w.byOffset.set(p.offset, p);
      this.#keptCount++;
      return p;
    });
    for (const [name, oldest] of this.#kept) {
      if (this.#keptCount <= this.#maxKept || oldest === w) break;
      this.#forget(name, oldest);
    }
    return { ...read, publications };
  }

  #forget(topic: string, w: Window): void {
    this.#kept.delete(topic);
    this.#keptCount -= w.byOffset.size;
  }

  /** Forgets what no read used for KEEP_MS (the hub's sweeper). */
  sweep(now: number = this.#now()): void {
    for (const [topic, w] of this.#kept) {
      if (now - w.usedAt < KEEP_MS) break; // in order of use: the rest are newer
      this.#forget(topic, w);
    }
  }

  /** Publications kept now, across topics. */
  get kept(): number {
    return this.#keptCount;
  }
}
