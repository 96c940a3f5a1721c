// Serving a hub on Bun: Bun.serve for HTTP and WebSockets, and the process figures /stats shows.
import { createAdminApp, createApp, type RuntimeAdapter } from '../../app.ts';
import type { ServedHub } from '../../cli.ts';
import type { HubEvents } from '../../contracts.ts';
import { upgradedAnswer } from '../../handshake.ts';
import type { Hub } from '../../hub.ts';
import { clientAddress, urlHost } from '../common.ts';
import { FD_RESERVE, openFileLimit } from '../fd-limit.ts';
import { readTls } from '../tls.ts';
import type { BunGlobal, BunServer } from './api.ts';
import { createBunFanOut } from './fanout.ts';
import { createBunWebSocket } from './websocket.ts';

declare const Bun: BunGlobal;

export interface BunServed extends ServedHub {
  readonly port: number;
  readonly server: BunServer;
}

/** Starts a hub (`hub.start()`) and serves it on Bun at `hub.options.host:port`. Resolves once listening. */
const forBun = (answer: Response): Response | undefined => (answer === upgradedAnswer() ? undefined : answer);

export async function serveBun(hub: Hub): Promise<BunServed> {
  // Before anything starts: a bad certificate file must not leave a started hub behind.
  const tls = readTls(hub.options);
  await hub.start();
  const { maxPayload, perMessageDeflate, maxBackpressure, headersTimeout, maxConnections } = hub.options;
  // A socket its client closed lingers up to 5 s in uWebSockets without a slot (websocket.ts): a
  // churning crowd of them may use what the file-descriptor limit leaves beside the limit's own.
  const fds = openFileLimit();
  hub.registry.admission.boundLingering(fds === undefined ? 4 * maxConnections : Math.max(maxConnections, fds - FD_RESERVE - maxConnections));
  const { upgradeWebSocket, websocket } = createBunWebSocket({ maxPayload, perMessageDeflate, maxBackpressure });
  // The native publish needs the server, which Bun.serve returns once the app it serves exists.
  let native: BunServer | undefined;
  const adapter: RuntimeAdapter = {
    runtime: 'bun',
    upgradeWebSocket,
    fanOut: createBunFanOut(() => native),
    remoteAddress: (c) => clientAddress((c.env as BunServer | undefined)?.requestIP(c.req.raw)?.address),
    processStats: () => {
      const m = process.memoryUsage();
      return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external };
    },
    collectGarbage: () => {
      Bun.gc(true); // synchronous full collection; always available
      return true;
    },
  };
  const app = createApp(hub, adapter);
  const { adminPort, adminHost } = hub.options;
  const admin = adminPort >= 0 ? Bun.serve({ port: adminPort, hostname: adminHost, ...(tls ? { tls } : {}), fetch: createAdminApp(hub, adapter).fetch }) : undefined;
  const server = Bun.serve<HubEvents>({
    port: hub.options.port,
    hostname: hub.options.host,
    ...(tls ? { tls } : {}),
    // Bun's request heads must arrive within its own fixed ~10 s (uWebSockets), whatever
    // headersTimeout says. Its idleTimeout also cuts a response still pending (a slow authenticate
    // hook), so it gets what Node's requestTimeout gets: headersTimeout, and at least 30 s.
    idleTimeout: Math.min(255, Math.ceil(Math.max(headersTimeout, 30_000) / 1000)),
    // An upgraded request is answered by the upgrade itself: Bun's documented answer for it is
    // undefined (the core's shared placeholder Response is for the core only).
    fetch: (request, server) => {
      const answer = app.fetch(request, server);
      return answer instanceof Promise ? answer.then(forBun) : forBun(answer);
    },
    error: (error) => {
      hub.log.error('request.error', { error });
      return new Response('Internal Server Error\n', { status: 500 });
    },
    websocket,
  });
  native = server;
  const scheme = tls ? 'https' : 'http';
  return {
    server,
    port: server.port,
    url: `${scheme}://${urlHost(server.hostname)}:${server.port}`,
    adminUrl: admin && `${scheme}://${urlHost(admin.hostname)}:${admin.port}`,
    close: async () => {
      await Promise.all([server.stop(true), admin?.stop(true)]);
    },
  };
}
