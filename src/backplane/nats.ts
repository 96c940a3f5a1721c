// NATS backplane (@nats-io/transport-node). One subject per topic with local subscribers; the
// client resubscribes by itself after a reconnect. `noEcho` keeps our own publishes from coming
// back (and the node id in the envelope catches any that do). Outage policy: drop and count.
import { sleep, withDeadline } from '../timers.ts';
import { BrokerBackplane, type BrokerBackplaneOptions } from './broker.ts';
import type { BackplaneSink } from './contract.ts';
import { channelOf } from './envelope.ts';

interface SubscriptionLike {
  unsubscribe(): void;
}
interface NatsLike {
  publish(subject: string, payload: string): void;
  subscribe(subject: string, options: { callback: (error: Error | null, msg: { string(): string }) => void }): SubscriptionLike;
  flush(): Promise<void>;
  status(): AsyncIterable<{ type: string }>;
  isClosed(): boolean;
  close(): Promise<void>;
}

export type NatsBackplaneOptions = BrokerBackplaneOptions;

export class NatsBackplane extends BrokerBackplane {
  readonly kind = 'nats';
  readonly #options: Required<NatsBackplaneOptions>;
  #nc: NatsLike | undefined;
  readonly #subscriptions = new Map<string, SubscriptionLike>();
  #connecting: Promise<void> | undefined;

  constructor(options: NatsBackplaneOptions) {
    super();
    this.#options = { prefix: 'hubbub.', probeInterval: 1000, ...options };
  }

  async start(sink: BackplaneSink): Promise<void> {
    this.sink = sink;
    // The first connection is retried in the background: a node starts serving its local clients
    // even while the broker is away, and joins the backplane when it comes.
    this.#connecting = this.#connect();
    await withDeadline(this.#connecting, 2000, undefined);
    this.probeEvery(this.#options.probeInterval, () => this.#check());
  }

  async #connect(): Promise<void> {
    const { connect } = (await import('@nats-io/transport-node')) as unknown as { connect(options: object): Promise<NatsLike> };
    while (!this.closed) {
      try {
        const nc = await connect({
          servers: this.#options.url,
          noEcho: true,
          reconnect: true,
          maxReconnectAttempts: -1,
          reconnectTimeWait: 250,
          pingInterval: 1000,
          maxPingOut: 2,
          timeout: 2000,
        });
        this.#nc = nc;
        for (const topic of this.topics) this.listen(topic);
        void this.#watch(nc);
        await this.#check();
        return;
      } catch (error) {
        this.sink?.failed('nats.connect', error);
        await sleep(500);
      }
    }
  }

  async #watch(nc: NatsLike): Promise<void> {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect' || status.type === 'staleConnection' || status.type === 'reconnecting') this.setState('degraded', status.type);
      else if (status.type === 'reconnect') void this.#check();
    }
  }

  async #check(): Promise<void> {
    const nc = this.#nc;
    if (!nc || this.closed) return;
    const ok = await this.answersWithin(() => nc.flush(), this.#options.probeInterval);
    const connected = ok && !nc.isClosed();
    if (!this.closed) this.setState(connected ? 'connected' : 'degraded', connected ? undefined : ok ? 'connection closed' : 'no flush reply');
  }

  #subject(topic: string): string {
    return channelOf(this.#options.prefix, topic);
  }

  protected send(topic: string, payload: string): void {
    this.#nc!.publish(this.#subject(topic), payload);
  }

  protected listen(topic: string): void {
    const nc = this.#nc;
    if (!nc || this.#subscriptions.has(topic)) return;
    this.#subscriptions.set(
      topic,
      nc.subscribe(this.#subject(topic), {
        callback: (error, msg) => {
          if (error) this.sink?.failed('nats.subscription', error);
          else this.received(msg.string());
        },
      }),
    );
  }

  protected unlisten(topic: string): void {
    this.#subscriptions.get(topic)?.unsubscribe();
    this.#subscriptions.delete(topic);
  }

  async close(): Promise<void> {
    this.setState('closed');
    this.stopProbing();
    if (this.#nc && !this.#nc.isClosed()) await withDeadline(this.#nc.close().catch(() => undefined), 500, undefined);
  }
}
