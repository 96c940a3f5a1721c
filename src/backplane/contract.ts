// The Backplane contract: how hubs on several processes or machines share publishes. Runtime-free.
// Without one (the default) a hub's topics are its own; implementations: redis.ts, nats.ts.
import type { MessageData, PresenceMember, StreamPosition } from '../contracts.ts';
import type { SharedPresence } from '../delivery/presence.ts';
import type { IdempotencyStore } from '../delivery/idempotency.ts';
import type { SharedStreams } from '../delivery/streams.ts';

export type BackplaneState =
  /** Connected to the broker and subscribed. */
  | 'connected'
  /** Not connected (broker down, unreachable or frozen). Local clients are still served; remote publishes are dropped and counted. */
  | 'degraded'
  | 'closed';

/** What a backplane hands back to the hub. */
export interface BackplaneSink {
  /**
   * A publication on a topic this node has subscribers for: another node's, or with `position`
   * (the store numbered it: Redis, NATS JetStream) any node's, this one's included, in offset order.
   */
  deliver(topic: string, data: MessageData, position?: StreamPosition, except?: string): void;
  /** Another node's subscriber joined or left a topic this node has subscribers for (presence events). */
  announced(topic: string, event: 'join' | 'leave', member: PresenceMember): void;
  /** This node's subscribers, topic by topic: what a presence store writes again after it lost this node's entries. */
  members(): Iterable<[topic: string, members: Iterable<PresenceMember>]>;
  /** A state change, for /healthz and logs. */
  stateChanged(state: BackplaneState, detail?: string): void;
  /** A failure in fire-and-forget work, with the stage that failed. */
  failed(stage: string, error: unknown): void;
}

export interface BackplaneStats {
  state: BackplaneState;
  /** Messages sent to the broker. */
  published: number;
  /** Messages received from other nodes and delivered locally. */
  received: number;
  /** Messages not sent because the backplane was degraded (the documented outage policy: drop and count). */
  droppedWhileDegraded: number;
  /** Messages from the broker that were not valid hubbub envelopes (counted, logged, ignored). */
  malformed: number;
  /** Our own messages heard back from the broker and ignored (exactly-once delivery). */
  ownEchoes: number;
  /** Topics subscribed on the broker. */
  topics: number;
}

export interface Backplane {
  /** 'redis', 'nats'. */
  readonly kind: string;
  /** This node's id: messages carry it, so a node never delivers its own publish twice. */
  readonly nodeId: string;
  start(sink: BackplaneSink): Promise<void>;
  /** Sends a local publish to the other nodes. Never throws: failures are counted and reported. */
  publish(topic: string, data: MessageData): void;
  /** Tells the other nodes that a local subscriber joined or left a topic (presence events). Never throws. */
  announce(topic: string, event: 'join' | 'leave', member: PresenceMember): void;
  /** The first local subscriber of a topic appeared: listen for it on the broker. */
  subscribe(topic: string): void;
  /** The last local subscriber left. */
  unsubscribe(topic: string): void;
  stats(): BackplaneStats;
  close(): Promise<void>;
  /** The shared positions and history this broker keeps (Redis, NATS JetStream), if it keeps any. */
  readonly streams?: SharedStreams | undefined;
  /** The cluster-wide presence this broker keeps (Redis), if it keeps any. */
  readonly presence?: SharedPresence | undefined;
  /** Idempotency keys of the server API shared by every node (Redis), if it keeps them. */
  readonly idempotency?: IdempotencyStore | undefined;
}
