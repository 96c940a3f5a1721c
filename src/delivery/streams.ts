// Positions and history of topics: every publication on a topic gets the next `offset` of that
// topic's stream, and the stream keeps its last publications for subscribers that come back
// (`since`). A stream has an `epoch`: a new one whenever its counter or history was lost, so a
// position from before cannot be mistaken for one after. Runtime-free.
import type { MessageData, StreamPosition } from '../contracts.ts';

export type { StreamPosition };

/** A publication kept in history: its offset and the body that was published. */
export interface Publication {
  readonly offset: number;
  readonly data: MessageData;
}

/** What a `since` asked of a stream got. */
export interface Recovery {
  /** True when every publication after `since` is in `publications` (same epoch, history reaches back, within the replay bound). */
  readonly recovered: boolean;
  /** The stream's position now: after the last of `publications` when recovered. */
  readonly position: StreamPosition;
  /** The publications after `since`, in order (empty unless recovered). */
  readonly publications: readonly Publication[];
}

/** The store of positions and history (memory on one node; the shared store in a cluster). */
export interface Streams {
  /** Gives a publication the next offset of its topic and keeps it in history: one step. */
  append(topic: string, data: MessageData): StreamPosition;
  /** The topic's position now (offset 0 and a fresh epoch for a topic never published on). */
  position(topic: string): StreamPosition;
  /** Every publication after `since`, at most `limit` of them, or `recovered: false` if that cannot be had. */
  recover(topic: string, since: StreamPosition, limit: number): Recovery;
  /** Up to `limit` publications after offset `since` (the newest ones when `since` is absent). */
  history(topic: string, options: { since?: number; limit: number }): { position: StreamPosition; publications: readonly Publication[] };
  /** A topic got its first local subscriber: its stream stays (its offsets never restart under subscribers). */
  hold(topic: string): void;
  /** A topic lost its last local subscriber: its stream may be forgotten once idle. */
  release(topic: string): void;
  stats(): StreamsStats;
}

/** What a read of a shared store gives: the position, and the publications asked for. */
export interface StreamRead {
  readonly position: StreamPosition;
  /** The publications after `after`, in order: all of them up to `limit`, or fewer if history no longer holds them (`complete` false). */
  readonly publications: readonly Publication[];
  /** Every publication after `after` is in `publications` (and the epoch matched, when one was given). */
  readonly complete: boolean;
}

/**
 * Positions and history kept outside the process and shared by every node (Redis, NATS JetStream): a publication's
 * offset, its place in history and its delivery to every node (this one included) are one atomic
 * step in the store, so every node sees every topic's publications in offset order.
 */
export interface SharedStreams {
  /** Gives the publication the next offset of its topic, keeps it, and sends it to every node (`except`: a connection id that does not get it). */
  append(topic: string, data: MessageData, except?: string): Promise<StreamPosition>;
  /**
   * The topic's position, and the publications after `after` (the newest `limit` when absent), at
   * most `limit`. With `epoch`, nothing is read unless the stream's epoch is that one; with
   * `recover`, nothing unless all of them fit within `limit` and history still holds them.
   */
  read(topic: string, query: { readonly after?: number; readonly epoch?: string; readonly limit: number; readonly recover?: boolean }): Promise<StreamRead>;
  /** Resolves once this node hears every publication made on `topic` from now on (its broker subscription is in place). */
  listening(topic: string): Promise<void>;
}

export interface StreamsStats {
  /** Topics with a stream (a position and, with history on, publications). */
  streams: number;
  /** Publications kept in history, in all. */
  publications: number;
  /** Bytes of the publications kept. */
  bytes: number;
  /** Streams forgotten to stay within `historyMaxBytes` or the stream cap (their epoch changes). */
  evicted: number;
}

export interface MemoryStreamsOptions {
  /** Publications kept per topic; 0 = history off (positions still counted). */
  readonly historySize: number;
  /** How long (ms) a topic's history outlives its last publication. */
  readonly historyTtl: number;
  /** Bytes of history kept in all; over it, the streams published on longest ago are forgotten. */
  readonly historyMaxBytes: number;
  /** Streams kept at most (a publish flood on fresh topics cannot grow the map without bound). */
  readonly maxStreams: number;
}

interface Stream {
  readonly epoch: string;
  offset: number;
  /** A ring of the last `historySize` publications: `ring[(offset - 1) % size]` holds `offset`. */
  readonly ring: (Publication | undefined)[];
  /** Publications in the ring, and their bytes. */
  kept: number;
  bytes: number;
  /** When the last publication came (ms); the history expires historyTtl after it. */
  lastAt: number;
  /** Local subscribers hold a stream: its position must not restart under them. */
  held: boolean;
}

/** A stream's epoch: random, short, different for every stream this process makes. */
export function newEpoch(): string {
  const bytes = new Uint8Array(6);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(36).padStart(2, '0')).join('');
}

const byteSize = (data: MessageData) => (typeof data === 'string' ? data.length * 2 : data.byteLength) + 64;

/**
 * Streams in this process's memory. A process that restarts has new epochs, so a client's old
 * position reads as not recoverable. Bounded three ways: `historySize` per topic, `historyTtl`
 * after a topic's last publication, and `historyMaxBytes` / `maxStreams` in all (the streams
 * published on longest ago go first, their subscribers' positions with them: new epoch).
 */
export class MemoryStreams implements Streams {
  readonly #options: MemoryStreamsOptions;
  readonly #now: () => number;
  /** In order of last publication (a Map keeps insertion order: a publication moves its stream to the end). */
  readonly #streams = new Map<string, Stream>();
  #publications = 0;
  #bytes = 0;
  #evicted = 0;

  constructor(options: MemoryStreamsOptions, now: () => number = Date.now) {
    this.#options = options;
    this.#now = now;
  }

  append(topic: string, data: MessageData): StreamPosition {
    const now = this.#now();
    const stream = this.#stream(topic, now);
    stream.offset++;
    stream.lastAt = now;
    // Last published, last in the map: eviction takes from the front.
    this.#streams.delete(topic);
    this.#streams.set(topic, stream);
    const size = this.#options.historySize;
    if (size > 0) {
      const slot = (stream.offset - 1) % size;
      const old = stream.ring[slot];
      if (old) this.#forget(stream, old);
      const publication = { offset: stream.offset, data };
      stream.ring[slot] = publication;
      stream.kept++;
      const bytes = byteSize(data);
      stream.bytes += bytes;
      this.#bytes += bytes;
      this.#publications++;
      this.#bound(topic);
    }
    return { offset: stream.offset, epoch: stream.epoch };
  }

  position(topic: string): StreamPosition {
    const stream = this.#stream(topic, this.#now());
    return { offset: stream.offset, epoch: stream.epoch };
  }

  recover(topic: string, since: StreamPosition, limit: number): Recovery {
    const stream = this.#stream(topic, this.#now());
    const position = { offset: stream.offset, epoch: stream.epoch };
    const missed = stream.offset - since.offset;
    if (since.epoch !== stream.epoch || missed < 0 || missed > limit) return { recovered: false, position, publications: [] };
    const publications = this.#range(stream, since.offset, missed);
    if (publications === undefined) return { recovered: false, position, publications: [] };
    return { recovered: true, position, publications };
  }

  history(topic: string, { since, limit }: { since?: number; limit: number }): { position: StreamPosition; publications: readonly Publication[] } {
    const stream = this.#streams.get(topic);
    if (!stream) return { position: this.position(topic), publications: [] };
    this.#expire(stream, this.#now());
    const oldest = stream.offset - stream.kept;
    const from = Math.max(since ?? stream.offset - limit, oldest);
    const count = Math.min(limit, stream.offset - from);
    return { position: { offset: stream.offset, epoch: stream.epoch }, publications: this.#range(stream, from, count) ?? [] };
  }

  hold(topic: string): void {
    this.#stream(topic, this.#now()).held = true;
  }

  release(topic: string): void {
    const stream = this.#streams.get(topic);
    if (!stream) return;
    stream.held = false;
    // Nothing to keep: no history, or it expired. (With history, the sweep forgets it after historyTtl.)
    if (stream.kept === 0 && this.#options.historySize === 0) this.#streams.delete(topic);
  }

  /** Forgets histories older than historyTtl, and streams nobody holds with nothing left in them. */
  sweep(now: number = this.#now()): void {
    for (const [topic, stream] of this.#streams) {
      // In last-publication order: the first one published on within the TTL ends the walk.
      if (now - stream.lastAt < this.#options.historyTtl) break;
      this.#expire(stream, now);
      if (!stream.held) this.#streams.delete(topic);
    }
  }

  stats(): StreamsStats {
    return { streams: this.#streams.size, publications: this.#publications, bytes: this.#bytes, evicted: this.#evicted };
  }

  #stream(topic: string, now: number): Stream {
    let stream = this.#streams.get(topic);
    if (stream) {
      this.#expire(stream, now);
      return stream;
    }
    stream = { epoch: newEpoch(), offset: 0, ring: [], kept: 0, bytes: 0, lastAt: now, held: false };
    this.#streams.set(topic, stream);
    this.#bound(topic);
    return stream;
  }

  /** `count` publications after offset `after`, or undefined if history no longer holds them all. */
  #range(stream: Stream, after: number, count: number): Publication[] | undefined {
    if (count === 0) return [];
    const size = this.#options.historySize;
    if (size === 0 || count > stream.kept) return undefined;
    const out: Publication[] = [];
    for (let offset = after + 1; offset <= after + count; offset++) {
      const publication = stream.ring[(offset - 1) % size];
      if (!publication || publication.offset !== offset) return undefined;
      out.push(publication);
    }
    return out;
  }

  #expire(stream: Stream, now: number): void {
    if (stream.kept === 0 || now - stream.lastAt < this.#options.historyTtl) return;
    for (const publication of stream.ring) if (publication) this.#forget(stream, publication);
    stream.ring.length = 0;
  }

  #forget(stream: Stream, publication: Publication): void {
    const bytes = byteSize(publication.data);
    stream.kept--;
    stream.bytes -= bytes;
    this.#bytes -= bytes;
    this.#publications--;
  }

  /**
   * Over the byte or stream cap, forgets the history of the streams published on longest ago (never
   * `keep`'s), and the streams themselves unless local subscribers hold them: a subscribed topic's
   * offsets never restart under its subscribers (its position is a few bytes; its history is what weighs).
   */
  #bound(keep: string): void {
    const { historyMaxBytes, maxStreams } = this.#options;
    if (this.#bytes <= historyMaxBytes && this.#streams.size <= maxStreams) return;
    for (const [topic, stream] of this.#streams) {
      if (this.#bytes <= historyMaxBytes && this.#streams.size <= maxStreams) break;
      if (topic === keep) continue;
      if (stream.kept === 0 && stream.held) continue;
      for (const publication of stream.ring) if (publication) this.#forget(stream, publication);
      stream.ring.length = 0;
      if (!stream.held) this.#streams.delete(topic);
      this.#evicted++;
    }
  }
}
