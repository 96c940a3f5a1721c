// The Hono apps every runtime serves. Routes only. The public app: /ws (admission, then the runtime's
// upgrade), /admission, /healthz and the demo page (`--demo`), plus the operator's routes (/stats,
// /metrics) unless they have a listener of their own (`--admin-port`: `createAdminApp`).
// `--admin-token` guards the operator's routes wherever they are; without one, on the public
// listener they answer local clients only. Runtime-free: the runtime's parts come in through
// a RuntimeAdapter.
import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { bearerAuth } from 'hono/bearer-auth';
import { refusalResponse, type Refusal } from './admission/admission.ts';
import { authenticate } from './admission/authenticate.ts';
import { TOKEN_REQUIRED, tokenRefusal } from './admission/token.ts';
import { apiRoutes } from './api/routes.ts';
import { Connection } from './connection.ts';
import type { FanOut, Handler, Principal, TokenInfo } from './contracts.ts';
import type { Logger } from './log.ts';
import { clientModule } from './client/served.ts';
import { demoPage } from './demo.ts';
import { closeReason } from './errors.ts';
import { offeredProtocols, upgradeRequired, wantsWebSocket, type HubUpgrade } from './handshake.ts';
import type { Hub } from './hub.ts';
import { METRICS_CONTENT_TYPE, renderMetrics } from './metrics.ts';
import type { HubStats } from './stats.ts';

/** What a cluster tells of the whole server (its primary holds the one limit); runtimes add more. */
export interface ClusterFigures {
  readonly live: number;
  readonly slotsUsed: number;
  readonly limit: number;
  /** The whole server's /stats figures (every worker's added up), where the runtime collects them. */
  readonly totals?: { readonly hub: HubStats; readonly process: Record<string, number> };
}

/** What a runtime provides: its upgrade helper (Hono's contract) and the client's address. */
export interface RuntimeAdapter {
  /** Runtime name shown in /stats: 'node', 'deno', 'bun', 'workerd'. */
  readonly runtime: string;
  /**
   * Hono's `upgradeWebSocket(c, events)`. Contract with the core: a Response with status >= 400 means
   * no socket will open; otherwise the adapter calls `events.onOpen` when the socket opens, or
   * `events.onClose` if the handshake fails after this point. A reservation that hears neither expires.
   */
  upgradeWebSocket: HubUpgrade;
  /** The client's IP address. */
  remoteAddress(c: Context): string;
  /** Process figures for /stats (memory, handles), where the runtime has them. */
  processStats?(): Record<string, number>;
  /** Cluster mode: the whole server's figures (and every worker's), for /stats, /healthz and /admission. */
  clusterStats?(): Promise<ClusterFigures | undefined>;
  /** Cluster mode: what /admission needs of the whole server (the primary's slots and limit), cheaply. */
  clusterAdmission?(): Promise<{ readonly slotsUsed: number; readonly limit: number; readonly stopping: boolean } | undefined>;
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
  const { admission } = registry;
  hub.useFanOut(adapter.fanOut);

  // Synchronous from the request to the runtime's upgrade unless a step has to wait (a token to
  // verify, the authenticate hook, a cluster slot): no promise per upgrade otherwise.
  app.get(hub.options.path, (c) => {
    if (!wantsWebSocket(c.req.header('upgrade'))) return upgradeRequired();
    const remoteAddress = adapter.remoteAddress(c);
    const screened = admission.screen(remoteAddress, c.req.header('origin'));
    if (screened) return refusalResponse(screened);
    if (hub.tokens || handler.authenticate) return authenticated(c, remoteAddress);
    return reserve(c, remoteAddress, undefined, undefined);
  });

  // JWT first (its sub is the principal), then the handler's hook, which sees that principal.
  async function authenticated(c: Context, remoteAddress: string): Promise<Response> {
    let principal: Principal | undefined;
    let token: TokenInfo | undefined;
    const tokens = hub.tokens;
    if (tokens) {
      const text = tokens.tokenOf(c.req.raw);
      const verdict = text === undefined ? { reason: TOKEN_REQUIRED, status: 401 as const } : await tokens.verify(text);
      if (!('subject' in verdict)) {
        admission.refuse('unauthorized');
        return tokenRefusal(verdict, admission.retryAfter);
      }
      token = verdict;
      principal = { id: token.subject, claims: token.claims };
    }
    if (handler.authenticate) {
      const verdict = await authenticate(handler.authenticate, c.req.raw, remoteAddress, admission, log, principal);
      if (verdict instanceof Response) return verdict;
      principal = verdict;
    }
    return reserve(c, remoteAddress, principal, token);
  }

  function reserve(c: Context, remoteAddress: string, principal: Principal | undefined, token: TokenInfo | undefined): Response | Promise<Response> {
    const admitted = registry.admit(remoteAddress, principal, token);
    return admitted instanceof Promise ? admitted.then((slot) => upgrade(c, slot)) : upgrade(c, admitted);
  }

  function upgrade(c: Context, admitted: Connection | Refusal): Response | Promise<Response> {
    if (!(admitted instanceof Connection)) return refusalResponse(admitted);
    let response: Response | Promise<Response>;
    try {
      const protocol = handler.selectProtocol ? selectProtocol(handler.selectProtocol, c.req.raw, admitted.id, log) : undefined;
      response = adapter.upgradeWebSocket(c, admitted, { protocol });
    } catch (error) {
      return upgradeFailed(admitted, error);
    }
    if (response instanceof Promise) return response.then((answer) => upgraded(admitted, answer), (error) => upgradeFailed(admitted, error));
    return upgraded(admitted, response);
  }

  function upgraded(admitted: Connection, response: Response): Response {
    if (response.status >= 400) registry.release(admitted, closeReason('handshake-failed', undefined, `answered ${response.status}`));
    return response;
  }

  function upgradeFailed(admitted: Connection, error: unknown): Response {
    registry.release(admitted, closeReason('handshake-failed', undefined, 'upgrade threw', error));
    log.error('upgrade.error', { id: admitted.id, error });
    return new Response('upgrade failed\n', { status: 500 });
  }

  // Would an upgrade be admitted right now? Browsers cannot read the status of a refused WebSocket
  // handshake, so a page whose socket failed asks here why (503 full / draining). Takes no token.
  // In a Node cluster the answer is the whole server's (the primary holds the one limit).
  // In a cluster it is the primary's figures (`live` counts slots, handshakes under way included),
  // asked cheaply: after a restart every refused client asks here at once.
  app.get('/admission', async (c) => {
    const cluster = adapter.clusterAdmission ? await adapter.clusterAdmission() : undefined;
    let reason = admission.probe();
    if (!reason && cluster?.stopping) reason = 'draining';
    if (!reason && cluster && cluster.slotsUsed >= cluster.limit) reason = 'capacity';
    const figures = { live: cluster?.slotsUsed ?? registry.liveConnections.size, limit: cluster?.limit ?? admission.limit };
    if (!reason) return c.json({ admit: true, ...figures });
    return c.json({ admit: false, reason, ...figures }, 503, { 'Retry-After': String(admission.retryAfter) });
  });

  const { demo, handler: handlerOption, serveClient } = hub.options;
  const demoOn = demo === 'on' || (demo === 'auto' && handlerOption === 'pubsub');
  if (demoOn) {
    const page = demoPage(handlerOption === 'pubsub' ? 'pubsub' : 'echo', hub.options.path, serveClient);
    app.get('/', (c) => c.html(page));
  }
  if (serveClient) {
    // Short-lived caching: a deploy with a new client reaches browsers within minutes.
    app.get('/client.js', (c) => c.body(clientModule, 200, { 'Content-Type': 'text/javascript; charset=utf-8', 'Cache-Control': 'public, max-age=300', 'X-Content-Type-Options': 'nosniff' }));
  }

  healthRoute(app, hub, adapter);
  if (hub.options.adminPort < 0) {
    adminRoutes(app, hub, adapter, 'public');
    if (hub.options.apiKeys.length > 0) apiRoutes(app, hub, adapter);
  }

  return app;
}

/** The operator's own listener (`--admin-port`): /healthz, /stats and /metrics. */
export function createAdminApp(hub: Hub, adapter: RuntimeAdapter): Hono {
  const app = new Hono();
  healthRoute(app, hub, adapter);
  adminRoutes(app, hub, adapter, 'admin');
  if (hub.options.apiKeys.length > 0) apiRoutes(app, hub, adapter);
  return app;
}

function healthRoute(app: Hono, hub: Hub, adapter: RuntimeAdapter): void {
  const { registry } = hub;
  // 200 while running (with `degraded` when the backplane is away: local clients are still served,
  // so a load balancer should keep this node), 503 while draining.
  app.get('/healthz', async (c) => {
    const state = registry.state;
    const backplane = hub.backplaneStats();
    const limit = hub.clusterLimitStats();
    const degraded = (backplane && backplane.state !== 'connected') || (limit && limit.state !== 'connected');
    const body: Record<string, unknown> = { status: state !== 'running' ? state : degraded ? 'degraded' : 'ok' };
    if (backplane) body.backplane = backplane.state;
    // Without Redis the node admits up to its own share of the limit, and says so.
    if (limit) body.clusterLimit = limit.state === 'connected' ? 'shared' : `local share of ${limit.fallbackShare}`;
    if (adapter.clusterStats) body.cluster = clusterSection(await adapter.clusterStats());
    return c.json(body, state === 'running' ? 200 : 503);
  });
}

/**
 * /stats and /metrics, behind `--admin-token` when one is set. Without a token, on the public
 * listener they answer only clients on this machine that did not come through a proxy (a loopback
 * peer and no Forwarded / X-Forwarded-For header): a server on 0.0.0.0 does not show its topics,
 * pids and memory to the world by default, and a newcomer's localhost still sees them. The admin
 * listener (`--admin-port`, 127.0.0.1 by default) is the operator's own choice of who can reach it.
 */
function adminRoutes(app: Hono, hub: Hub, adapter: RuntimeAdapter, listener: 'public' | 'admin'): void {
  const token = hub.options.adminToken;
  const guard: MiddlewareHandler | undefined = token
    ? bearerAuth({ token })
    : listener === 'public'
      ? async (c, next) => {
          if (isLocal(adapter.remoteAddress(c), c.req.header('forwarded') ?? c.req.header('x-forwarded-for'))) return next();
          return c.text('the operator routes answer local clients only; set --admin-token (then Authorization: Bearer <token>) or --admin-port\n', 403);
        }
      : undefined;
  if (guard) {
    app.use('/stats', guard);
    app.use('/metrics', guard);
  }
  app.get('/metrics', async () => {
    const text = adapter.clusterMetrics ? await adapter.clusterMetrics() : renderMetrics(hub, adapter.runtime, adapter.processStats?.());
    return new Response(text, { headers: { 'Content-Type': METRICS_CONTENT_TYPE } });
  });

  // `?gc=1` collects garbage first, only where the operator enabled it (node --expose-gc): soak tests
  // compare heaps before and after; it is a no-op otherwise (in a cluster, only the answering worker collects).
  // In a cluster the figures are the whole server's, and `cluster` lists each worker; if the primary
  // does not answer, they are this worker's alone and `cluster` is null.
  app.get('/stats', async (c) => {
    if (c.req.query('gc') === '1') adapter.collectGarbage?.();
    if (!adapter.clusterStats) return c.json({ runtime: adapter.runtime, ...hub.stats(), process: adapter.processStats?.() ?? {} });
    const figures = await adapter.clusterStats();
    const whole = figures?.totals ?? { hub: hub.stats(), process: adapter.processStats?.() ?? {} };
    return c.json({ runtime: adapter.runtime, ...whole.hub, process: whole.process, cluster: clusterSection(figures) });
  });
}

/** A cluster's figures as /stats and /healthz show them (the totals are /stats' top level); null when the primary did not answer. */
function clusterSection(figures: ClusterFigures | undefined): Omit<ClusterFigures, 'totals'> | null {
  if (!figures) return null;
  const { totals: _totals, ...section } = figures;
  return section;
}

/** The handler's choice among the offered subprotocols; anything else (or a throw) is none, logged. */
function selectProtocol(hook: NonNullable<Handler['selectProtocol']>, request: Request, id: string, log: Logger): string | undefined {
  const offered = offeredProtocols(request.headers.get('sec-websocket-protocol'));
  const chosen = hook(offered, request);
  if (chosen === undefined || offered.includes(chosen)) return chosen;
  log.error('handler.error', { id, stage: 'selectProtocol', error: `chose ${JSON.stringify(chosen)}, which the client did not offer (${offered.join(', ') || 'none'}); answering none` });
  return undefined;
}

/** A peer on this machine (IPv4 127/8 or ::1), reached directly rather than through a proxy. */
function isLocal(address: string, forwardedFor: string | undefined): boolean {
  if (forwardedFor !== undefined) return false;
  return address === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(address) || /^::ffff:127\./i.test(address);
}
