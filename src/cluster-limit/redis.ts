// The cluster limit kept in Redis (`--cluster-limit redis://…`): one connection limit for every node.
//
// Each node holds slots in blocks, recorded in one Redis hash (node → slots held) with a lease per
// node in a sorted set (node → expiry, in Redis's own clock). A connect takes a slot from the
// node's block with no round trip; only an exhausted block asks Redis for more, atomically (Lua):
// expired leases are dropped first, so the slots of a node that died (kill -9) come back within the
// lease time. Leases are renewed at a third of their time; spare blocks are given back.
//
// Redis unreachable: the node keeps what it holds and admits up to its fallback share, the limit
// divided by the nodes it saw last (`degraded` in /healthz). The shared bound can then be exceeded
// by at most what the nodes admit on their own shares; it converges as connections end.
import { closeRedisClient, createRedisClient, type RedisClientLike } from '../redis-client.ts';
import { unrefInterval } from '../timers.ts';
import type { ClusterLimit, ClusterLimitStats } from './contract.ts';

interface RedisLike extends RedisClientLike {
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
}

export interface RedisClusterLimitOptions {
  url: string;
  /** The limit shared by every node. */
  limit: number;
  /** Key namespace; nodes with the same name share the limit. @default 'hubbub' */
  name?: string;
  /** Slots asked for at a time. @default 16 */
  block?: number;
  /** Milliseconds a node's slots survive without a renewal. @default 10000 */
  leaseTime?: number;
  onStateChange?(state: 'connected' | 'degraded', detail?: string): void;
  onError?(stage: string, error: unknown): void;
}

const NOW = `local t = redis.call('TIME') local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)`;
const EXPIRE = `for _, n in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)) do redis.call('HDEL', KEYS[1], n) redis.call('ZREM', KEYS[2], n) end`;
const TOTAL = `local total = 0 for _, v in ipairs(redis.call('HVALS', KEYS[1])) do total = total + tonumber(v) end`;

/** ARGV: node, wanted, limit, leaseMs → { held by node, nodes } */
const GROW = `${NOW} ${EXPIRE} ${TOTAL}
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[3]) - total)
if grant < 0 then grant = 0 end
local mine = redis.call('HINCRBY', KEYS[1], ARGV[1], grant)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), ARGV[1])
return { mine, redis.call('HLEN', KEYS[1]) }`;

/** ARGV: node, held, leaseMs → { held, nodes }. Sets what this node holds (also after an outage). */
const RENEW = `${NOW} ${EXPIRE}
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[1])
return { tonumber(ARGV[2]), redis.call('HLEN', KEYS[1]) }`;

export class RedisClusterLimit implements ClusterLimit {
  readonly node = crypto.randomUUID();
  readonly #o: Required<Omit<RedisClusterLimitOptions, 'onStateChange' | 'onError'>> & Pick<RedisClusterLimitOptions, 'onStateChange' | 'onError'>;
  readonly #keys: [string, string];
  #redis: RedisLike | undefined;
  #state: 'connected' | 'degraded' = 'degraded';
  #held = 0;
  #used = 0;
  #nodes = 1;
  #growing: Promise<void> | undefined;
  #renewTimer: ReturnType<typeof setInterval> | undefined;

  constructor(options: RedisClusterLimitOptions) {
    this.#o = { name: 'hubbub', block: 16, leaseTime: 10_000, ...options };
    this.#keys = [`${this.#o.name}:slots:held`, `${this.#o.name}:slots:leases`];
  }

  async start(): Promise<void> {
    const redis = await createRedisClient<RedisLike>(this.#o.url, {
      maxRetriesPerRequest: 0,
      enableOfflineQueue: false,
      commandTimeout: Math.max(500, Math.floor(this.#o.leaseTime / 4)),
    });
    this.#redis = redis;
    redis.on('error', (error: Error) => this.#o.onError?.('cluster-limit.connection', error));
    await redis.connect().catch(() => undefined);
    await this.#renew();
    this.#renewTimer = unrefInterval(() => void this.#renew(), Math.max(100, Math.floor(this.#o.leaseTime / 3)));
  }

  get fallbackShare(): number {
    return Math.max(1, Math.floor(this.#o.limit / Math.max(1, this.#nodes)));
  }

  acquire(): boolean | Promise<boolean> {
    if (this.#used < this.#held) return this.#take();
    if (this.#state === 'degraded') return this.#used < Math.max(this.#held, this.fallbackShare) ? this.#take() : false;
    return this.#grow().then(() => (this.#used < this.#held ? this.#take() : false));
  }

  #take(): true {
    this.#used++;
    return true;
  }

  release(): void {
    if (this.#used > 0) this.#used--;
    // Keep at most one spare block; the rest goes back at the next renewal (no round trip here).
  }

  /** One request for a block at a time; concurrent acquires wait for the same answer. */
  #grow(): Promise<void> {
    this.#growing ??= this.#call(GROW, this.node, this.#o.block, this.#o.limit, this.#o.leaseTime).finally(() => (this.#growing = undefined));
    return this.#growing;
  }

  async #renew(): Promise<void> {
    const spare = this.#held - this.#used;
    const keep = spare > this.#o.block ? this.#used + this.#o.block : this.#held;
    // While degraded, what we use may exceed what we held: register what we really use.
    await this.#call(RENEW, this.node, Math.max(keep, this.#used), this.#o.leaseTime);
  }

  async #call(script: string, ...args: (string | number)[]): Promise<void> {
    const redis = this.#redis;
    if (!redis) return;
    try {
      const [held, nodes] = (await redis.eval(script, 2, ...this.#keys, ...args)) as [number, number];
      this.#held = Number(held);
      this.#nodes = Math.max(1, Number(nodes));
      this.#setState('connected');
    } catch (error) {
      this.#setState('degraded', error instanceof Error ? error.message : String(error));
    }
  }

  #setState(state: 'connected' | 'degraded', detail?: string): void {
    if (state === this.#state) return;
    this.#state = state;
    this.#o.onStateChange?.(state, detail);
  }

  stats(): ClusterLimitStats {
    return { kind: 'redis', state: this.#state, limit: this.#o.limit, held: this.#held, used: this.#used, nodes: this.#nodes, fallbackShare: this.fallbackShare };
  }

  /** Gives every slot back (graceful shutdown) so the other nodes can use them at once. */
  async close(): Promise<void> {
    clearInterval(this.#renewTimer);
    const redis = this.#redis;
    if (!redis) return;
    await redis.eval(`redis.call('HDEL', KEYS[1], ARGV[1]) redis.call('ZREM', KEYS[2], ARGV[1]) return 1`, 2, ...this.#keys, this.node).catch(() => undefined);
    await closeRedisClient(redis);
  }
}
