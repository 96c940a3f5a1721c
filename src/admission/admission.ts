// Admission: may this upgrade happen? The whole decision: the Origin, the server's state, the
// connection limit, the per-address and per-principal caps, the upgrade rates, and the cluster
// limit shared with other processes. It reads how many slots are held through `Occupancy` (the registry)
// and keeps the tallies it frees again when the registry releases a connection. Runtime-free.
import type { Principal } from '../contracts.ts';
import type { Counters } from '../counters.ts';
import { refusalStatus, refusalText, type RefusalReason } from '../errors.ts';
import type { HubOptions } from '../options.ts';
import type { ClusterLimit } from '../cluster-limit/contract.ts';
import { KeyedBuckets, Tally, TokenBucket } from './buckets.ts';
import { originMatcher } from './origin.ts';

/** `running` admits; `draining` (shutdown under way) and `closed` refuse with `draining`. */
export type HubState = 'running' | 'draining' | 'closed';

/** The options admission enforces (see HubOptions for each one's meaning and default). */
export type AdmissionLimits = Readonly<
  Pick<HubOptions, 'maxConnections' | 'maxConnectionsPerIp' | 'maxConnectionsPerPrincipal' | 'upgradeRate' | 'upgradeRatePerIp' | 'retryAfter' | 'allowedOrigins'>
>;

/** An upgrade refused before it happened: why, and the seconds for Retry-After. */
export interface Refusal {
  readonly reason: RefusalReason;
  readonly retryAfter: number;
}

/** A refusal as a complete HTTP answer. Connection: close — a refused client keeps no socket (fd) open. */
export function refusalResponse({ reason, retryAfter }: Refusal): Response {
  const status = refusalStatus(reason);
  const headers: Record<string, string> = { 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' };
  if (status === 503 || status === 429) headers['Retry-After'] = String(retryAfter);
  return new Response(`${refusalText(reason)}\n`, { status, headers });
}

/** What admission reads of the registry. */
export interface Occupancy {
  /** Sockets held against the limit: reservations, open sockets, and sockets the server is closing. */
  readonly held: number;
  /** Sockets their clients closed that the runtime may still hold (Bun); bounded on their own (`boundLingering`). */
  readonly lingeringFree: number;
  readonly state: HubState;
}

export class Admission {
  readonly #limits: AdmissionLimits;
  readonly #counters: Counters;
  readonly #occupancy: Occupancy;
  readonly #now: () => number;
  readonly #originAllowed: (origin: string | undefined) => boolean;
  // Only what is configured is allocated.
  readonly #upgradeBucket: TokenBucket | undefined;
  readonly #upgradeBucketsPerIp: KeyedBuckets | undefined;
  readonly #perIp: Tally | undefined;
  readonly #perPrincipal: Tally | undefined;
  #clusterLimit: ClusterLimit | undefined;

  constructor(limits: AdmissionLimits, counters: Counters, occupancy: Occupancy, now: () => number = Date.now) {
    this.#limits = limits;
    this.#counters = counters;
    this.#occupancy = occupancy;
    this.#now = now;
    this.#originAllowed = originMatcher(limits.allowedOrigins);
    if (limits.upgradeRate > 0) this.#upgradeBucket = new TokenBucket(limits.upgradeRate, limits.upgradeRate, now());
    if (limits.upgradeRatePerIp > 0) this.#upgradeBucketsPerIp = new KeyedBuckets(limits.upgradeRatePerIp, limits.upgradeRatePerIp);
    if (limits.maxConnectionsPerIp > 0) this.#perIp = new Tally();
    if (limits.maxConnectionsPerPrincipal > 0) this.#perPrincipal = new Tally();
  }

  get limit(): number {
    return this.#limits.maxConnections;
  }

  get retryAfter(): number {
    return this.#limits.retryAfter;
  }

  /** From now on each admitted connection also holds a slot of `limit` (Node cluster: the primary's; `--cluster-limit`: Redis). */
  useClusterLimit(limit: ClusterLimit): void {
    this.#clusterLimit = limit;
  }

  get hasClusterLimit(): boolean {
    return this.#clusterLimit !== undefined;
  }

  /** Counts a refusal (also those decided outside: authentication). */
  refuse(reason: RefusalReason, retryAfter: number = this.#limits.retryAfter): Refusal {
    this.#counters.refused[reason]++;
    return { reason, retryAfter };
  }

  /**
   * The cheap checks, before anything is awaited (e.g. authentication): the Origin, the state,
   * capacity, the per-address cap, then the upgrade rates (which take a token). Undefined = go on.
   */
  screen(remoteAddress: string, origin?: string): Refusal | undefined {
    if (!this.#originAllowed(origin)) return this.refuse('origin');
    const held = this.#heldRefusal(remoteAddress);
    if (held) return this.refuse(held);
    const now = this.#now();
    if (this.#upgradeBucket && !this.#upgradeBucket.take(now)) return this.refuse('rate-limited', this.#upgradeBucket.retryAfterSeconds(now));
    const perIp = this.#upgradeBucketsPerIp;
    if (perIp && !perIp.take(remoteAddress, now)) return this.refuse('rate-limited', perIp.retryAfterSeconds(remoteAddress, now));
    return undefined;
  }

  /**
   * Would an upgrade be admitted right now, as far as the server's state and its limit go? For
   * `/admission`: takes no token and counts nothing.
   */
  probe(): RefusalReason | undefined {
    const { state } = this.#occupancy;
    return state !== 'running' ? 'draining' : this.#full() ? 'capacity' : undefined;
  }

  /** One slot of the cluster limit, if there is one (asked for last, after authentication). */
  acquireClusterSlot(): boolean | Promise<boolean> {
    return this.#clusterLimit ? this.#clusterLimit.acquire() : true;
  }

  /**
   * The final check, right before a reservation is made (re-checking what an await may have
   * changed, and the per-principal cap). On success the tallies count the new connection and it is
   * counted as accepted; on refusal a cluster slot taken for it is given back.
   */
  take(remoteAddress: string, principal: Principal | undefined, clusterSlot: boolean): Refusal | undefined {
    let reason = this.#heldRefusal(remoteAddress);
    if (!reason && principal && this.#perPrincipal && this.#perPrincipal.get(principal.id) >= this.#limits.maxConnectionsPerPrincipal) reason = 'principal-limit';
    if (reason) {
      if (clusterSlot) this.#clusterLimit?.release();
      return this.refuse(reason);
    }
    this.#perIp?.add(remoteAddress);
    if (principal) this.#perPrincipal?.add(principal.id);
    this.#counters.accepted++;
    return undefined;
  }

  /** A connection admitted by `take` ended (called once, from the registry's release). */
  free(remoteAddress: string, principal: Principal | undefined, clusterSlot: boolean): void {
    this.#perIp?.remove(remoteAddress);
    if (principal) this.#perPrincipal?.remove(principal.id);
    if (clusterSlot) this.#clusterLimit?.release();
  }

  /** Gives back a cluster slot that `free` kept (its socket was still closing). */
  freeClusterSlot(): void {
    this.#clusterLimit?.release();
  }

  /** Forgets per-address buckets that have refilled (the sweeper, once a second). */
  prune(now: number = this.#now()): void {
    this.#upgradeBucketsPerIp?.prune(now);
  }

  #full(): boolean {
    const { held, lingeringFree } = this.#occupancy;
    return held >= this.#limits.maxConnections || lingeringFree >= this.#lingeringCap;
  }

  /**
   * Bounds the sockets their clients closed that the runtime may still hold (Bun): over `cap`, new
   * upgrades get 503 until some are surely gone. The runtime sets it from its file-descriptor budget.
   */
  boundLingering(cap: number): void {
    this.#lingeringCap = cap;
  }

  #lingeringCap = Infinity;

  #heldRefusal(remoteAddress: string): RefusalReason | undefined {
    if (this.#occupancy.state !== 'running') return 'draining';
    if (this.#full()) return 'capacity';
    if (this.#perIp && this.#perIp.get(remoteAddress) >= this.#limits.maxConnectionsPerIp) return 'ip-limit';
    return undefined;
  }
}
