// The local topic index: who is subscribed to what. Runtime-free. (Offsets and history: streams.ts.)
// Each subscriber keeps its own topic set, so a connection's release unsubscribes it in O(its topics).
import type { SubscribeOutcome } from '../contracts.ts';

/** What the index keeps on each subscriber: its own topic set, created on its first subscribe. */
export interface Subscriber {
  topics: Set<string> | undefined;
}

export interface Topic<S extends Subscriber = Subscriber> {
  readonly name: string;
  readonly subscribers: Set<S>;
}

const MAX_TOPIC_LENGTH = 256;

/** Topic names: 1–256 characters, no control characters. */
export function isValidTopic(topic: unknown): topic is string {
  // eslint-disable-next-line no-control-regex
  return typeof topic === 'string' && topic.length > 0 && topic.length <= MAX_TOPIC_LENGTH && !/[\u0000-\u001f\u007f]/.test(topic);
}

/** Told when a topic gets its first local subscriber and loses its last (the backplane listens on the broker only then). */
export interface TopicInterest {
  topicAdded(name: string): void;
  topicRemoved(name: string): void;
}

export interface TopicLimits {
  /** Topics one subscriber may hold; 0 = no cap. */
  readonly maxSubscriptions: number;
  /** Topics with at least one local subscriber, in all; 0 = no cap. */
  readonly maxTopics: number;
}

export class TopicIndex<S extends Subscriber = Subscriber> {
  readonly #topics = new Map<string, Topic<S>>();
  readonly #limits: TopicLimits;
  /** Subscriptions across all topics. */
  subscriptions = 0;
  interest: TopicInterest | undefined = undefined;
  /** Told when a subscriber joins or leaves a topic (its last one too: presence in a shared store, presence events); unset, nothing is told. */
  membership: { joined(conn: S, topic: string): void; left(conn: S, topic: string): void } | undefined = undefined;
  /** Told after a connection's own subscriptions changed (workerd saves them with the socket). */
  subscriptionsChanged: ((conn: S) => void) | undefined = undefined;

  constructor(limits: TopicLimits = { maxSubscriptions: 0, maxTopics: 0 }) {
    this.#limits = limits;
  }

  /** Adds the subscriber to the topic, within the caps. */
  subscribe(conn: S, name: string): SubscribeOutcome {
    let topic = this.#topics.get(name);
    if (topic?.subscribers.has(conn)) return 'already-subscribed';
    const { maxSubscriptions, maxTopics } = this.#limits;
    if (maxSubscriptions > 0 && (conn.topics?.size ?? 0) >= maxSubscriptions) return 'subscription-limit';
    if (!topic) {
      if (maxTopics > 0 && this.#topics.size >= maxTopics) return 'topic-limit';
      topic = { name, subscribers: new Set() };
      this.#topics.set(name, topic);
      this.interest?.topicAdded(name);
    }
    topic.subscribers.add(conn);
    (conn.topics ??= new Set()).add(name);
    this.subscriptions++;
    this.subscriptionsChanged?.(conn);
    this.membership?.joined(conn, name);
    return 'subscribed';
  }

  /** Removes the connection from the topic. False if it was not subscribed. */
  unsubscribe(conn: S, name: string): boolean {
    const topic = this.#topics.get(name);
    if (!topic || !topic.subscribers.delete(conn)) return false;
    conn.topics?.delete(name);
    this.subscriptions--;
    if (topic.subscribers.size === 0) this.#remove(name);
    this.membership?.left(conn, name);
    this.subscriptionsChanged?.(conn);
    return true;
  }

  /** Removes the subscriber from every topic (called from the registry's release). */
  unsubscribeAll(conn: S): void {
    const names = conn.topics;
    if (!names) return;
    for (const name of names) {
      const topic = this.#topics.get(name);
      if (!topic || !topic.subscribers.delete(conn)) continue;
      this.subscriptions--;
      if (topic.subscribers.size === 0) this.#remove(name);
      this.membership?.left(conn, name);
    }
    conn.topics = undefined;
  }

  #remove(name: string): void {
    this.#topics.delete(name);
    this.interest?.topicRemoved(name);
  }

  get(name: string): Topic<S> | undefined {
    return this.#topics.get(name);
  }

  get size(): number {
    return this.#topics.size;
  }

  /** Topics with at least one local subscriber. */
  names(): IterableIterator<string> {
    return this.#topics.keys();
  }

  /** The largest topics by subscribers, for /stats. */
  largest(limit: number): { topic: string; subscribers: number }[] {
    return [...this.#topics.values()]
      .sort((a, b) => b.subscribers.size - a.subscribers.size)
      .slice(0, limit)
      .map((t) => ({ topic: t.name, subscribers: t.subscribers.size }));
  }
}
