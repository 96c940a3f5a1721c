// Presence in Redis, shared by every node. Each topic has a hash of its members across the cluster
// (field `<session> <connection id>`, value the member as JSON), in the same hash slot as the topic's
// stream. Each node writes its own members under a session it renews on every health probe in one
// sorted set (session → expiry, Redis's clock). A reader counts only the entries of live sessions and
// deletes the rest: the members of a node killed with SIGKILL leave presence once its session
// expires (`ttlMs`), without any other node having to notice the death.
//
// A node whose session expired under it (a long stall) or whose writes failed (Redis away) starts a
// new session and writes all its members again (`rejoin`): the old session's entries, stale leaves
// included, die with it.
import type { Presence, PresenceMember } from '../contracts.ts';
import { parseMember, type SharedPresence } from '../delivery/presence.ts';
import { topicToken } from './envelope.ts';

/** The commands this store uses (ioredis, with the scripts below defined on it). */
export interface PresenceRedis {
  hgetall(key: string): Promise<Record<string, string>>;
  hdel(key: string, ...fields: string[]): Promise<unknown>;
  pexpire(key: string, ms: number): Promise<unknown>;
  zrem(key: string, member: string): Promise<unknown>;
  defineCommand(name: string, definition: { numberOfKeys: number; lua: string }): void;
}
type Scripts = {
  hubbubJoin(hash: string, ttlMs: number, ...fieldsAndValues: string[]): Promise<unknown>;
  hubbubRenew(sessions: string, session: string, ttlMs: number, replaced: string): Promise<number>;
  hubbubLive(sessions: string, ...names: string[]): Promise<number[]>;
};

const NOW = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
`;

// KEYS: a topic's presence hash. ARGV: the hash's ttl (ms), then field, value pairs.
const JOIN = `
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
`;

// KEYS: the sessions. ARGV: session, ttl (ms), a session it replaces ('' for none). Returns 1 if the
// session was still alive before this renewal.
const RENEW = `${NOW}
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
local alive = score and tonumber(score) > now
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] ~= '' then redis.call('ZREM', KEYS[1], ARGV[3]) end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
if alive then return 1 end
return 0
`;

// KEYS: the sessions. ARGV: session names. Returns 1 (alive) or 0 for each.
const LIVE = `${NOW}
local out = {}
for i, name in ipairs(ARGV) do
  local score = redis.call('ZSCORE', KEYS[1], name)
  out[i] = (score and tonumber(score) > now) and 1 or 0
end
return out
`;

/** How long a topic's presence hash outlives the last write or renewal of it (its dead entries are bounded by this). */
const HASH_TTL_MS = 600_000;
/** Renewals between two refreshes of the hashes of the topics this node has members in. */
const HASH_REFRESH_EVERY = 60;
/** Members written per command when a node writes all of them again. */
const REJOIN_BATCH = 500;

export interface RedisPresenceOptions {
  prefix: string;
  ttlMs: number;
  /** This node's members, topic by topic (the topic index): written again under a new session. */
  members(): Iterable<[topic: string, members: Iterable<PresenceMember>]>;
  /** The topics this node has members in, whose hashes it keeps from expiring. */
  topics(): Iterable<string>;
  failed(stage: string, error: unknown): void;
}

export class RedisPresence implements SharedPresence {
  readonly ttlMs: number;
  readonly #redis: PresenceRedis & Scripts;
  readonly #options: RedisPresenceOptions;
  readonly #sessionsKey: string;
  #session = newSession();
  /** A write failed, or nothing was written under a live session yet: the next renewal starts a new session and rejoins. */
  #dirty = true;
  #renewals = 0;

  constructor(redis: PresenceRedis, options: RedisPresenceOptions) {
    redis.defineCommand('hubbubJoin', { numberOfKeys: 1, lua: JOIN });
    redis.defineCommand('hubbubRenew', { numberOfKeys: 1, lua: RENEW });
    redis.defineCommand('hubbubLive', { numberOfKeys: 1, lua: LIVE });
    this.#redis = redis as PresenceRedis & Scripts;
    this.#options = options;
    this.ttlMs = options.ttlMs;
    this.#sessionsKey = `${options.prefix}presence-sessions`;
  }

  #hash(topic: string): string {
    return `${this.#options.prefix}{${topicToken(topic)}}:p`;
  }

  #field(member: PresenceMember): string {
    return `${this.#session} ${member.id}`;
  }

  #failed = (error: unknown): void => {
    this.#dirty = true;
    this.#options.failed('redis.presence', error);
  };

  join(topic: string, member: PresenceMember): void {
    this.#redis.hubbubJoin(this.#hash(topic), HASH_TTL_MS, this.#field(member), JSON.stringify(member)).catch(this.#failed);
  }

  leave(topic: string, member: PresenceMember): void {
    this.#redis.hdel(this.#hash(topic), this.#field(member)).catch(this.#failed);
  }

  /** Keeps this node's session alive (every health probe that Redis answered); starts a new one and rejoins when needed. */
  async renew(): Promise<void> {
    const alive = await this.#redis.hubbubRenew(this.#sessionsKey, this.#session, this.ttlMs, '');
    if (alive !== 1 || this.#dirty) {
      const replaced = this.#session;
      this.#session = newSession();
      this.#dirty = false;
      await this.#redis.hubbubRenew(this.#sessionsKey, this.#session, this.ttlMs, replaced);
      this.#rejoin();
    } else if (++this.#renewals % HASH_REFRESH_EVERY === 0) {
      for (const topic of this.#options.topics()) this.#redis.pexpire(this.#hash(topic), HASH_TTL_MS).catch(this.#failed);
    }
  }

  #rejoin(): void {
    for (const [topic, members] of this.#options.members()) {
      let batch: string[] = [];
      for (const member of members) {
        batch.push(this.#field(member), JSON.stringify(member));
        if (batch.length === REJOIN_BATCH * 2) {
          this.#redis.hubbubJoin(this.#hash(topic), HASH_TTL_MS, ...batch).catch(this.#failed);
          batch = [];
        }
      }
      if (batch.length > 0) this.#redis.hubbubJoin(this.#hash(topic), HASH_TTL_MS, ...batch).catch(this.#failed);
    }
  }

  async read(topic: string, limit: number): Promise<Presence> {
    const hash = this.#hash(topic);
    const entries = await this.#redis.hgetall(hash);
    const bySession = new Map<string, string[]>();
    for (const field of Object.keys(entries)) {
      const session = field.slice(0, field.indexOf(' '));
      const fields = bySession.get(session);
      if (fields) fields.push(field);
      else bySession.set(session, [field]);
    }
    if (bySession.size === 0) return { topic, count: 0, members: [] };
    const sessions = [...bySession.keys()];
    const live = await this.#redis.hubbubLive(this.#sessionsKey, ...sessions);
    const members: PresenceMember[] = [];
    const dead: string[] = [];
    let count = 0;
    sessions.forEach((session, i) => {
      const fields = bySession.get(session)!;
      if (live[i] !== 1) {
        dead.push(...fields);
        return;
      }
      for (const field of fields) {
        const member = parseMember(entries[field]!);
        if (!member) continue;
        count++;
        if (members.length < limit) members.push(member);
      }
    });
    // The entries of sessions that ended (a dead node, a replaced session) are deleted by whoever reads them.
    if (dead.length > 0) this.#redis.hdel(hash, ...dead).catch(this.#failed);
    return { topic, count, members };
  }

  /** A node that shuts down takes its members out of presence at once. */
  async end(): Promise<void> {
    await this.#redis.zrem(this.#sessionsKey, this.#session).catch(() => undefined);
  }
}

function newSession(): string {
  return crypto.randomUUID();
}
