// createApp: the Hono app every runtime serves. /ws (admission, then the runtime's upgrade),
// /healthz and /stats. Runtime-free: the runtime's parts come in through a RuntimeAdapter.
import { Hono, type Context } from 'hono';
import type { WSEvents } from 'hono/ws';
import { Connection, type FanOut } from './connection.ts';
import { closeReason, refusalStatus, type RefusalReason } from './errors.ts';
import type { Principal } from './handler.ts';
import { upgradeRequired, wantsWebSocket } from './handshake.ts';
import type { Hub } from './hub.ts';
import type { Refusal } from './registry.ts';
import { demoPage } from './demo.ts';
import { METRICS_CONTENT_TYPE, renderMetrics } from './metrics.ts';

/** What a runtime provides: its upgrade helper (Hono's contract) and the client's address. */
export interface RuntimeAdapter {
  /** Runtime name shown in /stats: 'node', 'deno', 'bun', 'workerd'. */
  readonly runtime: string;
  /**
   * Hono's `upgradeWebSocket(c, events)`. Contract with the core: a Response with status >= 400 means
   * no socket will open; otherwise the adapter calls `events.onOpen` when the socket opens, or
   * `events.onClose` if the handshake fails after this point. A reservation that hears neither expires.
   */
  upgradeWebSocket(c: Context, events: WSEvents<unknown>): Promise<Response>;
  /** The client's IP address. */
  remoteAddress(c: Context): string;
  /** Process figures for /stats (memory, handles), where the runtime has them. */
  processStats?(): Record<string, number>;
  /** Cluster mode: every worker's figures, for /stats and /healthz. */
  clusterStats?(): Promise<unknown>;
  /** Cluster mode: the whole server's /metrics (every worker's, labelled `worker`, and the primary's). */
  clusterMetrics?(): Promise<string>;
  /** The runtime's fan-out fast path for hub.publish (Node: frame once, write to every socket). */
  fanOut?: FanOut;
  /** Runs a full garbage collection if the runtime exposes one (Node with --expose-gc); for soak tests. */
  collectGarbage?(): boolean;
}

export function createApp(hub: Hub, adapter: RuntimeAdapter): Hono {
  const app = new Hono();
  const { registry, handler, log } = hub;
  const originAllowed = originMatcher(hub.options.allowedOrigins);
  hub.useFanOut(adapter.fanOut);

  app.get(hub.options.path, async (c) => {
    if (!wantsWebSocket(c.req.header('upgrade'))) return upgradeRequired();
    const remoteAddress = adapter.remoteAddress(c);
    if (!originAllowed(c.req.header('origin'))) return refuse(registry.refuse('origin'));
    const screened = registry.screen(remoteAddress);
    if (screened) return refuse(screened);
    let principal: Principal | undefined;
    if (handler.authenticate) {
      const verdict = await authenticate(hub, c.req.raw, remoteAddress);
      if (verdict instanceof Response) return verdict;
      principal = verdict;
    }
    // The limit of the whole cluster, where there is one: one slot per connection, asked for last.
    const pool = registry.slots;
    if (pool && !(await pool.acquire())) return refuse(registry.refuse('capacity'));
    const admission = registry.admit(remoteAddress, principal);
    if (!(admission instanceof Connection)) {
      pool?.release();
      return refuse(admission);
    }
    admission.pooled = pool !== undefined;
    let response: Response;
    try {
      response = await adapter.upgradeWebSocket(c, admission as unknown as WSEvents<unknown>);
    } catch (error) {
      registry.release(admission, closeReason('handshake-failed', undefined, 'upgrade threw', error));
      log.error('upgrade.error', { id: admission.id, error });
      return new Response('upgrade failed\n', { status: 500 });
    }
    if (response.status >= 400) registry.release(admission, closeReason('handshake-failed', undefined, `answered ${response.status}`));
    return response;
  });

  // Would an upgrade be admitted right now? Browsers cannot read the status of a refused WebSocket
  // handshake, so a page whose socket failed asks here why (503 full / draining). Takes no token.
  app.get('/admission', (c) => {
    const r = registry;
    const reason: RefusalReason | undefined = r.state !== 'running' ? 'draining' : r.size >= r.limits.maxConnections ? 'capacity' : undefined;
    if (!reason) return c.json({ admit: true, live: r.liveConnections.size, limit: r.limits.maxConnections });
    return c.json({ admit: false, reason, live: r.liveConnections.size, limit: r.limits.maxConnections }, 503, { 'Retry-After': String(hub.options.retryAfter) });
  });

  app.get('/', (c) => c.html(demoPage));

  app.get('/metrics', async () => {
    const text = adapter.clusterMetrics ? await adapter.clusterMetrics() : renderMetrics(hub, adapter.runtime, adapter.processStats?.());
    return new Response(text, { headers: { 'Content-Type': METRICS_CONTENT_TYPE } });
  });

  // 200 while running (with `degraded` when the backplane is away: local clients are still served,
  // so a load balancer should keep this node), 503 while draining.
  app.get('/healthz', async (c) => {
    const state = registry.state;
    const backplane = hub.backplaneStats();
    const limit = hub.slotPoolStats();
    const degraded = (backplane && backplane.state !== 'connected') || (limit && limit.state !== 'connected');
    const body: Record<string, unknown> = { status: state !== 'running' ? state : degraded ? 'degraded' : 'ok' };
    if (backplane) body.backplane = backplane.state;
    // Without Redis the node admits up to its own share of the limit, and says so.
    if (limit) body.clusterLimit = limit.state === 'connected' ? 'shared' : `local share of ${limit.fallbackShare}`;
    if (adapter.clusterStats) body.cluster = await adapter.clusterStats();
    return c.json(body, state === 'running' ? 200 : 503);
  });

  // `?gc=1` collects garbage first, only where the operator enabled it (node --expose-gc): soak tests
  // compare heaps before and after; it is a no-op otherwise.
  app.get('/stats', async (c) => {
    if (c.req.query('gc') === '1') adapter.collectGarbage?.();
    const stats: Record<string, unknown> = { runtime: adapter.runtime, ...hub.stats(), process: adapter.processStats?.() ?? {} };
    if (adapter.clusterStats) stats.cluster = await adapter.clusterStats();
    return c.json(stats);
  });

  return app;
}

const refusalText: Record<RefusalReason, string> = {
  capacity: 'server is full, retry later',
  draining: 'server is shutting down, retry later',
  'rate-limited': 'too many connection attempts, retry later',
  'ip-limit': 'too many connections from your address',
  'principal-limit': 'too many connections for this user',
  origin: 'origin not allowed',
  unauthorized: 'unauthorized',
};

/** A refusal as a complete HTTP answer. Connection: close — a refused client keeps no socket (fd) open. */
function refuse({ reason, retryAfter }: Refusal): Response {
  const status = refusalStatus[reason];
  const headers: Record<string, string> = { 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close' };
  if (status === 503 || status === 429) headers['Retry-After'] = String(retryAfter);
  return new Response(`${refusalText[reason]}\n`, { status, headers });
}

/** Runs the handler's authenticate hook: a Principal admits, a Response (or anything else) refuses. */
async function authenticate(hub: Hub, request: Request, remoteAddress: string): Promise<Principal | Response> {
  let verdict: unknown;
  try {
    verdict = await hub.handler.authenticate!(request, { remoteAddress });
  } catch (error) {
    hub.log.error('handler.error', { stage: 'authenticate', remoteAddress, error });
    hub.registry.refuse('unauthorized');
    return new Response('authentication failed\n', { status: 500, headers: { Connection: 'close' } });
  }
  if (verdict instanceof Response) {
    hub.registry.refuse('unauthorized');
    if (verdict.status < 400) {
      hub.log.error('handler.error', { stage: 'authenticate', remoteAddress, error: `refusal answer must be 4xx/5xx, got ${verdict.status}` });
      return new Response('authentication failed\n', { status: 500, headers: { Connection: 'close' } });
    }
    return verdict;
  }
  if (verdict && typeof verdict === 'object' && typeof (verdict as Principal).id === 'string') return verdict as Principal;
  return refuse(hub.registry.refuse('unauthorized'));
}

/** Origin allow-list: exact origins, or `scheme://*.domain` for any subdomain. Empty list: any origin. */
export function originMatcher(allowed: readonly string[]): (origin: string | undefined) => boolean {
  if (allowed.length === 0) return () => true;
  const exact = new Set<string>();
  const suffixes: [scheme: string, suffix: string][] = [];
  for (const entry of allowed) {
    const lower = entry.toLowerCase();
    const star = lower.indexOf('://*.');
    if (star < 0) exact.add(lower);
    else suffixes.push([lower.slice(0, star + 3), lower.slice(star + 4)]);
  }
  return (origin) => {
    if (origin === undefined) return true; // not a browser: Origin is a browser's promise, not a credential
    const lower = origin.toLowerCase();
    if (exact.has(lower)) return true;
    return suffixes.some(([scheme, suffix]) => lower.startsWith(scheme) && lower.endsWith(suffix) && lower.length > scheme.length + suffix.length);
  };
}
