// The Backplane contract: how hubs on several processes or machines share publishes. Runtime-free.
// Implementations: memory (one process, the default: no backplane at all), redis, nats.
import type { MessageData } from '../handler.ts';

export type BackplaneState =
  /** Connected to the broker and subscribed. */
  | 'connected'
  /** Not connected (broker down, unreachable or frozen). Local clients are still served; remote publishes are dropped and counted. */
  | 'degraded'
  | 'closed';

/** What a backplane hands back to the hub. */
export interface BackplaneSink {
  /** A message another node published on a topic this node has subscribers for. */
  deliver(topic: string, data: MessageData): void;
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
  /** The first local subscriber of a topic appeared: listen for it on the broker. */
  subscribe(topic: string): void;
  /** The last local subscriber left. */
  unsubscribe(topic: string): void;
  stats(): BackplaneStats;
  close(): Promise<void>;
}

/**
 * The envelope on the wire, versioned: `{"v":1,"n":nodeId,"t":topic,"d":text}` or with `"b":base64`
 * for binary data. A message that does not parse into this is malformed.
 */
interface Envelope {
  v: 1;
  n: string;
  t: string;
  d?: string;
  b?: string;
}

export function encodeEnvelope(nodeId: string, topic: string, data: MessageData): string {
  const env: Envelope = typeof data === 'string' ? { v: 1, n: nodeId, t: topic, d: data } : { v: 1, n: nodeId, t: topic, b: toBase64(data) };
  return JSON.stringify(env);
}

export function decodeEnvelope(raw: string): { node: string; topic: string; data: MessageData } | undefined {
  let env: Partial<Envelope>;
  try {
    env = JSON.parse(raw) as Partial<Envelope>;
  } catch {
    return undefined;
  }
  if (typeof env !== 'object' || env === null || env.v !== 1 || typeof env.n !== 'string' || typeof env.t !== 'string') return undefined;
  if (typeof env.d === 'string') return { node: env.n, topic: env.t, data: env.d };
  if (typeof env.b === 'string') {
    const bytes = fromBase64(env.b);
    return bytes ? { node: env.n, topic: env.t, data: bytes } : undefined;
  }
  return undefined;
}

function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array | undefined {
  try {
    const binary = atob(text);
    const out = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
    return out;
  } catch {
    return undefined;
  }
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
    if (this.state !== 'connected') {
      this.counts.droppedWhileDegraded++;
      return;
    }
    try {
      this.send(topic, encodeEnvelope(this.nodeId, topic, data));
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
    if (message.node === this.nodeId) {
      this.counts.ownEchoes++;
      return;
    }
    if (!this.topics.has(message.topic)) return;
    this.counts.received++;
    this.sink?.deliver(message.topic, message.data);
  }

  /** Runs the broker's health check every `intervalMs` until `stopProbing` (a timer that does not hold the process open). */
  protected probeEvery(intervalMs: number, check: () => Promise<void>): void {
    this.#probe = setInterval(() => void check(), intervalMs);
    (this.#probe as { unref?: () => void }).unref?.();
  }

  protected stopProbing(): void {
    clearInterval(this.#probe);
  }

  /** Whether `roundTrip` (a PING, a flush) answers within `timeoutMs`: the health probe of a broker. */
  protected async answersWithin(roundTrip: () => Promise<unknown>, timeoutMs: number): Promise<boolean> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const ok = await Promise.race([
      roundTrip().then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((resolve) => (timer = setTimeout(resolve, timeoutMs, false))),
    ]);
    clearTimeout(timer);
    return ok;
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

/** Broker channel / subject of a topic. Topic names may hold any character; brokers get a safe token. */
export function channelOf(prefix: string, topic: string): string {
  return `${prefix}${btoa(String.fromCharCode(...new TextEncoder().encode(topic))).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '')}`;
}
