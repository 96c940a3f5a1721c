// Who is subscribed to a topic across every node of a cluster: the store of presence a backplane
// may keep (Redis). Without one, presence is what this node's topic index holds. Runtime-free.
import type { Presence, PresenceMember } from '../contracts.ts';

/**
 * Presence entries kept outside the process: each node writes its own subscribers, under a session
 * of its own that lives only while the node keeps renewing it. A node that dies (`kill -9`) stops
 * renewing, and every one of its entries leaves presence with its session, within `ttlMs`.
 */
export interface SharedPresence {
  /** How long (ms) the entries of a node that stopped renewing its session still count. */
  readonly ttlMs: number;
  /** A local connection subscribed to `topic`. Fire-and-forget: a failure makes the next renewal write everything again. */
  join(topic: string, member: PresenceMember): void;
  /** A local connection left `topic` (unsubscribed or ended). */
  leave(topic: string, member: PresenceMember): void;
  /** The topic's members on every live node: the count, and at most `limit` of them. Rejects while the store is away. */
  read(topic: string, limit: number): Promise<Presence>;
}

/** The presence of a topic from the subscribers this node holds. */
export function localPresence<S>(topic: string, subscribers: ReadonlySet<S> | undefined, limit: number, memberOf: (s: S) => PresenceMember): Presence {
  if (!subscribers) return { topic, count: 0, members: [] };
  const members: PresenceMember[] = [];
  for (const s of subscribers) {
    if (members.length >= limit) break;
    members.push(memberOf(s));
  }
  return { topic, count: subscribers.size, members };
}

/** A member as a store or another node wrote it (JSON), or undefined if it is not one. */
export function parseMember(text: string): PresenceMember | undefined {
  try {
    const m = JSON.parse(text) as { id?: unknown; principal?: unknown } | null;
    if (typeof m !== 'object' || m === null || typeof m.id !== 'string') return undefined;
    return typeof m.principal === 'string' ? { id: m.id, principal: m.principal } : { id: m.id };
  } catch {
    return undefined;
  }
}
