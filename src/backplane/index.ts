// Picks a backplane from a URL: redis://… or nats://… (the client library is loaded only then).
import { HubError } from '../errors.ts';
import { NatsBackplane } from './nats.ts';
import { RedisBackplane } from './redis.ts';
import type { Backplane } from './contract.ts';

/** `history`: what the shared store (Redis, NATS JetStream) keeps per topic. */
export function backplaneFromUrl(url: string, history: { historySize: number; historyTtl: number } = { historySize: 0, historyTtl: 300_000 }): Backplane {
  if (/^rediss?:\/\//.test(url)) return new RedisBackplane({ url, ...history });
  if (/^nats:\/\//.test(url)) return new NatsBackplane({ url, ...history });
  throw new HubError('ERR_INVALID_OPTION', `option backplane must be a redis:// or nats:// URL (got ${JSON.stringify(url)})`);
}

export type { Backplane, BackplaneState, BackplaneStats } from './contract.ts';
export { NatsBackplane, RedisBackplane };
