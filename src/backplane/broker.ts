// What the broker-backed backplanes (Redis, NATS) share: counting, the envelope on both ways, our
// own echoes dropped, the health probe and the state. Runtime-free.
import type { MessageData, PresenceMember } from '../contracts.ts';
import { parseMember } from '../delivery/presence.ts';
import { unrefInterval, withDeadline } from '../timers.ts';
import type { Backplane, BackplaneSink, BackplaneState, BackplaneStats } from './contract.ts';
import { decodeEnvelope, encodeEnvelope, encodePresenceEvent } from './envelope.ts';

/** The options every broker-backed backplane takes. */
export interface BrokerBackplaneOptions {
  /** The broker: redis://host:port[/db], nats://host:port. */
  url: string;
  /** Prefix of the channel (Redis) or subject (NATS) of each topic. @default 'hubbub:' (Redis), 'hubbub.' (NATS) */
  prefix?: string;
  /** Milliseconds between health probes (a PING or flush round trip, with a timeout of the same length). @default 1000 */
  probeInterval?: number;
}

/** Shared bookkeeping of the broker-backed backplanes. */
export abstract class BrokerBackplane implements Backplane {
  abstract readonly kind: string;
  readonly nodeId = crypto.randomUUID();
  protected sink: BackplaneSink | undefined;
  protected state: BackplaneState = 'degraded';
  protected readonly topics = new Set<string>();
  protected counts = { published: 0, received: 0, droppedWhileDegraded: 0, malformed: 0, ownEchoes: 0 };
  #probe: ReturnType<typeof setInterval> | undefined;

  abstract start(sink: BackplaneSink): Promise<void>;
  protected abstract send(topic: string, payload: string): void;
  protected abstract listen(topic: string): void;
  protected abstract unlisten(topic: string): void;
  abstract close(): Promise<void>;

  publish(topic: string, data: MessageData): void {
    this.#sendOrDrop(topic, () => encodeEnvelope(this.nodeId, topic, data));
  }

  announce(topic: string, event: 'join' | 'leave', member: PresenceMember): void {
    this.#sendOrDrop(topic, () => encodePresenceEvent(this.nodeId, topic, event, member));
  }

  #sendOrDrop(topic: string, encode: () => string): void {
    if (this.state !== 'connected') {
      this.counts.droppedWhileDegraded++;
      return;
    }
    try {
      this.send(topic, encode());
      this.counts.published++;
    } catch (error) {
      this.sink?.failed(`${this.kind}.publish`, error);
    }
  }

  subscribe(topic: string): void {
    if (this.topics.has(topic)) return;
    this.topics.add(topic);
    this.listen(topic);
  }

  unsubscribe(topic: string): void {
    if (!this.topics.delete(topic)) return;
    this.unlisten(topic);
  }

  /** A raw message from the broker: validate, drop our own, deliver the rest. */
  protected received(raw: string): void {
    const message = decodeEnvelope(raw);
    if (!message) {
      this.counts.malformed++;
      this.sink?.failed(`${this.kind}.receive`, new Error(`malformed backplane message (${raw.length} bytes): ${raw.slice(0, 80)}`));
      return;
    }
    // A publication the store numbered reaches every node through the broker, this one too (in
    // offset order with everyone else's); any other is delivered locally when published.
    const positioned = message.offset !== undefined;
    if (!positioned && message.node === this.nodeId) {
      this.counts.ownEchoes++;
      return;
    }
    if (!this.topics.has(message.topic)) return;
    this.counts.received++;
    if (message.event) {
      const member = parseMember(message.data as string);
      if (member) this.sink?.announced(message.topic, message.event, member);
      else this.counts.malformed++;
      return;
    }
    this.sink?.deliver(message.topic, message.data, positioned ? { offset: message.offset!, epoch: message.epoch! } : undefined, message.except);
  }

  /** Runs the broker's health check every `intervalMs` until `stopProbing` (a timer that does not hold the process open). */
  protected probeEvery(intervalMs: number, check: () => Promise<void>): void {
    this.#probe = unrefInterval(() => void check(), intervalMs);
  }

  protected stopProbing(): void {
    clearInterval(this.#probe);
  }

  /** Whether `roundTrip` (a PING, a flush) answers within `timeoutMs`: the health probe of a broker. */
  protected answersWithin(roundTrip: () => Promise<unknown>, timeoutMs: number): Promise<boolean> {
    return withDeadline(
      roundTrip().then(
        () => true,
        () => false,
      ),
      timeoutMs,
      false,
    );
  }

  protected get closed(): boolean {
    return this.state === 'closed';
  }

  protected setState(state: BackplaneState, detail?: string): void {
    if (state === this.state) return;
    this.state = state;
    this.sink?.stateChanged(state, detail);
  }

  stats(): BackplaneStats {
    return { state: this.state, ...this.counts, topics: this.topics.size };
  }
}
