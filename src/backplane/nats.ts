// NATS backplane (@nats-io/transport-node), and the positions and history every node shares, kept
// in JetStream (@nats-io/jetstream). One stream holds every topic's publications, one subject per
// topic (`<prefix>s.<topic>`): its last `historySize` (at least the last one: it holds the offset),
// each for `historyTtl`. A publication's offset is its topic's last one + 1, published with the
// expectation that the topic's last message is still the one that offset came from: a node that
// lost the race to another reads the last message again and retries (optimistic concurrency), so
// offsets are consecutive per topic across nodes. The stream republishes what it stored, in order,
// on `<prefix>r.<topic>`, and that is what every node (this one too) delivers from, with the offset
// the stream kept: a core subscriber of the stored subject would also hear the publishes the stream
// refused. Presence events are core messages on `<prefix><topic>`; `noEcho` keeps our own from
// coming back (republished messages come from the server: they do come back). Outage policy:
// while degraded, publishes are refused (unavailable) and presence events dropped and counted.
import type { MessageData, StreamPosition } from '../contracts.ts';
import { newEpoch, type Publication, type SharedStreams, type StreamRead } from '../delivery/streams.ts';
import { sleep, withDeadline } from '../timers.ts';
import { BrokerBackplane, type BrokerBackplaneOptions } from './broker.ts';
import type { BackplaneSink } from './contract.ts';
import { channelOf, decodeEnvelope, envelopeTail, topicToken } from './envelope.ts';

interface HeadersLike {
  get(key: string): string;
  set(key: string, value: string): void;
}
interface MsgLike {
  readonly data: Uint8Array;
  readonly reply?: string;
  readonly headers?: HeadersLike;
  string(): string;
}
interface SubscriptionLike {
  unsubscribe(): void;
}
interface NatsLike {
  publish(subject: string, payload: string): void;
  subscribe(subject: string, options: { callback: (error: Error | null, msg: MsgLike) => void }): SubscriptionLike;
  flush(): Promise<void>;
  status(): AsyncIterable<{ type: string }>;
  isClosed(): boolean;
  close(): Promise<void>;
}
/** What the JetStream client and manager of @nats-io/jetstream give this backplane (structural: the core does not import them). */
interface JetStreamLike {
  publish(subject: string, payload: string, options: { expect: { lastSubjectSequence: number }; headers: HeadersLike }): Promise<{ seq: number }>;
}
interface StoredLike {
  readonly seq: number;
  readonly header: HeadersLike;
}
interface ManagerLike {
  streams: {
    add(config: object): Promise<unknown>;
    update(name: string, config: object): Promise<unknown>;
  };
  consumers: {
    add(stream: string, config: object): Promise<{ name: string; num_pending: number }>;
    delete(stream: string, name: string): Promise<unknown>;
  };
  direct: { getMessage(stream: string, query: { last_by_subj: string }): Promise<StoredLike | null> };
}
interface Libraries {
  connect(options: object): Promise<NatsLike>;
  headers(): HeadersLike;
  createInbox(): string;
  jetstream(nc: NatsLike, options: object): JetStreamLike;
  jetstreamManager(nc: NatsLike, options: object): Promise<ManagerLike>;
}

/** A stored message's position, in its headers: the last one is read without its body. */
const OFFSET_HEADER = 'Hubbub-Offset';
const EPOCH_HEADER = 'Hubbub-Epoch';
/** JetStream's error codes this backplane tells apart. */
const WRONG_LAST_SEQUENCE = 10071;
const STREAM_NAME_IN_USE = 10058;
/** Tries of one append (or epoch marker) that loses the race to other nodes, before it fails. */
const MAX_TRIES = 64;
/** Topics whose last stored message this node remembers (the ones it published on or heard last). */
const MAX_REMEMBERED = 10_000;
/** How long a history read waits for the stream's messages. */
const READ_TIMEOUT_MS = 5000;

/** A topic's last stored message: its stream sequence and the position it holds (offset 0: an epoch marker). */
interface Last {
  readonly seq: number;
  readonly offset: number;
  readonly epoch: string;
}

export interface NatsBackplaneOptions extends BrokerBackplaneOptions {
  /** Publications kept per topic in JetStream; 0 = none (the last one is still kept: it holds the offset). @default 0 */
  historySize?: number;
  /** How long (ms) JetStream keeps each publication (the stream's max_age): a topic whose last one is older starts again under a new epoch. @default 300000 */
  historyTtl?: number;
  /** The JetStream stream. @default 'HUBBUB_' + the prefix as a token */
  stream?: string;
}

export class NatsBackplane extends BrokerBackplane implements SharedStreams {
  readonly kind = 'nats';
  readonly streams = this;
  readonly #options: Required<NatsBackplaneOptions>;
  #lib: Libraries | undefined;
  #nc: NatsLike | undefined;
  #js: JetStreamLike | undefined;
  #jsm: ManagerLike | undefined;
  /** Whether the stream was created (or found) since the last (re)connection: a new server may not have it. */
  #streamReady = false;
  readonly #subscriptions = new Map<string, SubscriptionLike[]>();
  /** Each listened topic's subscriptions, flushed to the server or on their way. */
  readonly #listening = new Map<string, Promise<void>>();
  /** The last stored message of topics this node published on or heard (least recent first): an append does not read it first. */
  readonly #last = new Map<string, Last>();
  /** Each topic's append in progress: one at a time per topic, or they would all expect the same last message. */
  readonly #appending = new Map<string, Promise<unknown>>();
  #connecting: Promise<void> | undefined;
  /** Set when the server has no JetStream: positions cannot be shared, the node must not start. */
  #noJetStream: Error | undefined;
  /** start() has returned: from now on a server without JetStream is reported and retried, not thrown. */
  #started = false;

  constructor(options: NatsBackplaneOptions) {
    super();
    const prefix = options.prefix ?? 'hubbub.';
    this.#options = { prefix, probeInterval: 1000, historySize: 0, historyTtl: 300_000, stream: `HUBBUB_${topicToken(prefix)}`, ...options };
  }

  async start(sink: BackplaneSink): Promise<void> {
    this.sink = sink;
    // The first connection is retried in the background: a node starts serving its local clients
    // even while the broker is away, and joins the backplane when it comes. A broker that answers
    // without JetStream is a startup error: offsets could not be shared.
    this.#connecting = this.#connect();
    await withDeadline(this.#connecting, 2000, undefined);
    this.#started = true;
    if (this.#noJetStream) {
      await this.close();
      throw this.#noJetStream;
    }
    this.probeEvery(this.#options.probeInterval, () => this.#check());
  }

  async #connect(): Promise<void> {
    const [core, js] = (await Promise.all([import('@nats-io/transport-node'), import('@nats-io/jetstream')])) as unknown as [Libraries, Libraries];
    this.#lib = { connect: core.connect, headers: core.headers, createInbox: core.createInbox, jetstream: js.jetstream, jetstreamManager: js.jetstreamManager };
    while (!this.closed) {
      let nc: NatsLike | undefined;
      try {
        nc = await this.#lib.connect({
          servers: this.#options.url,
          noEcho: true,
          reconnect: true,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 250,
          pingInterval: 1000,
          maxPingOut: 2,
          timeout: 2000,
        });
      } catch (error) {
        this.sink?.failed('nats.connect', error);
        await sleep(500);
        continue;
      }
      try {
        this.#jsm = await this.#lib.jetstreamManager(nc, { timeout: 2000 });
      } catch (error) {
        await nc.close().catch(() => undefined);
        if (isNoJetStream(error)) {
          this.#noJetStream = new Error(`the NATS server at ${this.#options.url} has no JetStream: the NATS backplane keeps positions and history there (start nats-server with -js)`, { cause: error });
          // During start, start() refuses to go on (the serving entry logs it and exits). A server
          // first reached later stays degraded, reported, until it runs JetStream.
          if (!this.#started) return;
          this.sink?.failed('nats.jetstream', this.#noJetStream);
          await sleep(2000);
          continue;
        }
        this.sink?.failed('nats.jetstream', error);
        await sleep(500);
        continue;
      }
      this.#js = this.#lib.jetstream(nc, { timeout: 2000 });
      this.#nc = nc;
      for (const topic of this.topics) this.listen(topic);
      void this.#watch(nc);
      await this.#check();
      return;
    }
  }

  async #watch(nc: NatsLike): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect' || status.type === 'staleConnection' || status.type === 'reconnecting') this.setState('degraded', status.type);
      else if (status.type === 'reconnect') {
        // Perhaps another server, or one that lost its streams: make sure of the stream again.
        this.#streamReady = false;
        this.#last.clear();
        void this.#check();
      }
    }
  }

  /** Connected = the connection answers a flush in time and the stream is there. */
  async #check(): Promise<void> {
    const nc = this.#nc;
    if (!nc || this.closed) return;
    const ok = await this.answersWithin(() => nc.flush(), this.#options.probeInterval);
    if (ok && !this.#streamReady) await this.#ensureStream().catch((error: unknown) => this.sink?.failed('nats.stream', error));
    const connected = ok && !nc.isClosed() && this.#streamReady;
    if (!this.closed) this.setState(connected ? 'connected' : 'degraded', connected ? undefined : !ok ? 'no flush reply' : nc.isClosed() ? 'connection closed' : 'no JetStream stream');
  }

  /** Creates the stream, or sets its limits to this node's (the last node started decides them). */
  async #ensureStream(): Promise<void> {
    const { stream, prefix, historySize, historyTtl } = this.#options;
    const maxAge = historyTtl * 1_000_000;
    const config = {
      name: stream,
      subjects: [`${prefix}s.>`],
      // The last message holds the offset: one is kept even with history off.
      max_msgs_per_subject: Math.max(historySize, 1),
      max_age: maxAge,
      // No message ids are sent; the server's default window (2 min) must not exceed max_age.
      duplicate_window: Math.min(maxAge, 120_000_000_000),
      allow_direct: true,
      republish: { src: `${prefix}s.>`, dest: `${prefix}r.>` },
    };
    try {
      await this.#jsm!.streams.add(config);
    } catch (error) {
      if (jetStreamCode(error) !== STREAM_NAME_IN_USE) throw error;
      await this.#jsm!.streams.update(stream, config);
    }
    this.#streamReady = true;
  }

  #subject(topic: string): string {
    return channelOf(this.#options.prefix, topic);
  }

  #stored(topic: string): string {
    return channelOf(`${this.#options.prefix}s.`, topic);
  }

  protected send(topic: string, payload: string): void {
    this.#nc!.publish(this.#subject(topic), payload);
  }

  protected listen(topic: string): void {
    const nc = this.#nc;
    if (!nc || this.#subscriptions.has(topic)) return;
    const events = nc.subscribe(this.#subject(topic), {
      callback: (error, msg) => {
        if (error) this.sink?.failed('nats.subscription', error);
        else this.received(msg.string());
      },
    });
    const stored = nc.subscribe(channelOf(`${this.#options.prefix}r.`, topic), {
      callback: (error, msg) => {
        if (error) return this.sink?.failed('nats.subscription', error);
        this.#heard(topic, msg);
        // An epoch marker has no body: nothing to deliver.
        if (msg.data.length > 0) this.received(msg.string());
      },
    });
    this.#subscriptions.set(topic, [events, stored]);
    this.#listening.set(
      topic,
      nc.flush().catch((error: unknown) => this.sink?.failed('nats.subscribe', error)),
    );
  }

  protected unlisten(topic: string): void {
    for (const subscription of this.#subscriptions.get(topic) ?? []) subscription.unsubscribe();
    this.#subscriptions.delete(topic);
    this.#listening.delete(topic);
  }

  /** A republished message tells its topic's last stored message: the next append from here need not conflict. */
  #heard(topic: string, msg: MsgLike): void {
    const seq = Number(msg.headers?.get('Nats-Sequence'));
    const position = msg.headers && positionOf(msg.headers);
    if (!position || !Number.isSafeInteger(seq)) return;
    const known = this.#last.get(topic);
    if (!known || known.seq < seq) this.#remember(topic, { seq, ...position });
  }

  #remember(topic: string, last: Last): void {
    this.#last.delete(topic);
    this.#last.set(topic, last);
    if (this.#last.size > MAX_REMEMBERED) this.#last.delete(this.#last.keys().next().value!);
  }

  // ---- SharedStreams ----

  append(topic: string, data: MessageData, except?: string): Promise<StreamPosition> {
    if (this.state !== 'connected') {
      this.counts.droppedWhileDegraded++;
      return Promise.reject(new Error('the NATS backplane is degraded: publication not stored or sent'));
    }
    const tail = envelopeTail(this.nodeId, topic, data, except);
    // In order, one at a time per topic: a publisher's publications keep its order.
    const previous = this.#appending.get(topic);
    const appended = previous ? previous.then(() => this.#append(topic, tail)) : this.#append(topic, tail);
    const settled = appended.catch(() => undefined);
    this.#appending.set(topic, settled);
    void settled.then(() => {
      if (this.#appending.get(topic) === settled) this.#appending.delete(topic);
    });
    return appended;
  }

  async #append(topic: string, tail: string): Promise<StreamPosition> {
    const subject = this.#stored(topic);
    for (let tries = 1; ; tries++) {
      const last = this.#last.get(topic) ?? (await this.#readLast(topic));
      // A topic never published on (or forgotten: its messages expired, the stream was lost) starts a new epoch.
      const { seq, offset, epoch } = last.epoch === '' ? { seq: last.seq, offset: 0, epoch: newEpoch() } : last;
      const next = offset + 1;
      try {
        const ack = await this.#js!.publish(subject, `{"v":1,"o":${next},"e":"${epoch}",${tail}`, { expect: { lastSubjectSequence: seq }, headers: this.#headers(next, epoch) });
        this.#remember(topic, { seq: ack.seq, offset: next, epoch });
        this.counts.published++;
        return { offset: next, epoch };
      } catch (error) {
        this.#last.delete(topic);
        if (tries < MAX_TRIES && (await this.#retryable(error))) continue;
        throw error;
      }
    }
  }

  /** Whether a refused publish may be tried again: another node's came first (read again), or the stream is gone (made again). */
  async #retryable(error: unknown): Promise<boolean> {
    if (jetStreamCode(error) === WRONG_LAST_SEQUENCE) return true;
    if (isNoJetStream(error)) {
      this.#streamReady = false;
      await this.#ensureStream();
      return true;
    }
    return false;
  }

  #headers(offset: number, epoch: string): HeadersLike {
    const headers = this.#lib!.headers();
    headers.set(OFFSET_HEADER, String(offset));
    headers.set(EPOCH_HEADER, epoch);
    return headers;
  }

  /** The topic's last stored message (epoch '' when there is none, or it is not one of ours). */
  async #readLast(topic: string): Promise<Last> {
    const stored = await this.#jsm!.direct.getMessage(this.#options.stream, { last_by_subj: this.#stored(topic) });
    if (!stored) return { seq: 0, offset: 0, epoch: '' };
    const position = positionOf(stored.header);
    if (!position) {
      this.counts.malformed++;
      return { seq: stored.seq, offset: 0, epoch: '' };
    }
    return { seq: stored.seq, ...position };
  }

  /**
   * The topic's last stored message, read now. A topic with none gets an epoch marker (a message
   * with no body, at offset 0): the position answered now is the one its first publication
   * continues, whichever node makes it.
   */
  async #position(topic: string): Promise<Last> {
    for (let tries = 1; ; tries++) {
      const last = await this.#readLast(topic);
      if (last.epoch !== '') {
        const known = this.#last.get(topic);
        if (!known || known.seq < last.seq) this.#remember(topic, last);
        return last;
      }
      const epoch = newEpoch();
      try {
        const ack = await this.#js!.publish(this.#stored(topic), '', { expect: { lastSubjectSequence: last.seq }, headers: this.#headers(0, epoch) });
        const marker = { seq: ack.seq, offset: 0, epoch };
        this.#remember(topic, marker);
        return marker;
      } catch (error) {
        if (tries < MAX_TRIES && (await this.#retryable(error))) continue;
        throw error;
      }
    }
  }

  // The same answers as the Redis READ script.
  async read(topic: string, query: { after?: number; epoch?: string; limit: number; recover?: boolean }): Promise<StreamRead> {
    // Not connected yet (the first connection is still being tried): answered unavailable.
    if (!this.#jsm) throw new Error('the NATS backplane is not connected: positions cannot be read');
    const last = await this.#position(topic);
    const position = { offset: last.offset, epoch: last.epoch };
    const { limit } = query;
    let after = query.after ?? Math.max(0, last.offset - limit);
    if ((query.epoch !== undefined && query.epoch !== last.epoch) || after > last.offset) return { position, publications: [], complete: false };
    if (after === last.offset) return { position, publications: [], complete: true };
    // At most historySize are history (the stream keeps at least one, for the offset).
    const oldest = last.offset - this.#options.historySize;
    let complete = true;
    if (after < oldest) {
      complete = false;
      after = oldest;
    }
    let count = last.offset - after;
    if (count > limit) {
      complete = false;
      count = limit;
    }
    if (query.recover && !complete) return { position, publications: [], complete: false };
    if (count === 0) return { position, publications: [], complete };
    const publications = await this.#range(topic, after, count, last);
    if (!publications) return { position, publications: [], complete: false };
    return { position, publications, complete };
  }

  /**
   * The topic's publications after offset `after`, `count` of them (up to `last`), from an ephemeral
   * consumer of its subject; undefined if the stream no longer holds the first of them.
   */
  #range(topic: string, after: number, count: number, last: Last): Promise<Publication[] | undefined> {
    const { stream } = this.#options;
    const jsm = this.#jsm!;
    const inbox = this.#lib!.createInbox();
    const out: Publication[] = [];
    return new Promise<Publication[] | undefined>((resolve, reject) => {
      let done = false;
      let consumer: string | undefined;
      const finish = (result: Publication[] | undefined | Error) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        subscription.unsubscribe();
        if (consumer) jsm.consumers.delete(stream, consumer).catch(() => undefined);
        if (result instanceof Error) reject(result);
        else resolve(result);
      };
      const timer = setTimeout(() => finish(new Error(`JetStream did not send the history of ${JSON.stringify(topic)} within ${READ_TIMEOUT_MS} ms`)), READ_TIMEOUT_MS);
      const subscription = this.#nc!.subscribe(inbox, {
        callback: (error, msg) => {
          if (error) return finish(error);
          const position = msg.headers && positionOf(msg.headers);
          // An older stream's, a marker, or one already had: not asked for.
          if (position && position.epoch === last.epoch && position.offset > after) {
            if (position.offset !== after + out.length + 1) return finish(undefined);
            const decoded = decodeEnvelope(msg.string());
            if (!decoded || decoded.offset !== position.offset) {
              this.counts.malformed++;
              return finish(undefined);
            }
            out.push({ offset: position.offset, data: decoded.data });
            if (out.length === count) return finish(out);
          }
          // The reply subject ends with the messages still to come: none, and not all were had.
          if (msg.reply !== undefined && pendingOf(msg.reply) === 0) finish(undefined);
        },
      });
      jsm.consumers
        .add(stream, {
          deliver_subject: inbox,
          filter_subject: this.#stored(topic),
          deliver_policy: 'all',
          ack_policy: 'none',
          mem_storage: true,
          num_replicas: 1,
          inactive_threshold: 10_000_000_000,
        })
        .then(
          (info) => {
            consumer = info.name;
            if (done) jsm.consumers.delete(stream, info.name).catch(() => undefined);
            else if (info.num_pending === 0) finish(undefined);
          },
          (error: unknown) => finish(error instanceof Error ? error : new Error(String(error))),
        );
    });
  }

  listening(topic: string): Promise<void> {
    return this.#listening.get(topic) ?? Promise.resolve();
  }

  async close(): Promise<void> {
    this.setState('closed');
    this.stopProbing();
    if (this.#nc && !this.#nc.isClosed()) await withDeadline(this.#nc.close().catch(() => undefined), 500, undefined);
  }
}

/** The position a stored message's headers hold, if they hold a valid one. */
function positionOf(headers: HeadersLike): { offset: number; epoch: string } | undefined {
  const offset = Number(headers.get(OFFSET_HEADER));
  const epoch = headers.get(EPOCH_HEADER);
  // The epoch goes into JSON unescaped: only what newEpoch makes.
  if (!Number.isSafeInteger(offset) || offset < 0 || !/^[0-9a-z]{1,32}$/.test(epoch)) return undefined;
  return { offset, epoch };
}

/** The pending count in a push consumer's reply subject ($JS.ACK.[domain.account.]stream.consumer.delivered.sseq.cseq.ts.pending[.token]). */
function pendingOf(reply: string): number {
  const tokens = reply.split('.');
  return Number(tokens.length === 9 ? tokens[8] : tokens[10]);
}

function jetStreamCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** No JetStream answered (not enabled, or no stream for the subject: the same "no responders"). */
function isNoJetStream(error: unknown): boolean {
  return (error as { name?: unknown } | null)?.name === 'JetStreamNotEnabled';
}
