// Serving a hub on Node: @hono/node-server for HTTP, the upgrade adapter for /ws, the frame-once
// fan-out, and the process figures /stats shows.
import { serve } from '@hono/node-server';
import type { Hono } from 'hono';
import type { Server, ServerOptions } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import { createAdminApp, createApp, type RuntimeAdapter } from '../../app.ts';
import type { ServedHub } from '../../cli.ts';
import type { Hub } from '../../hub.ts';
import { renderMetrics } from '../../metrics.ts';
import { clientAddress, collectExposedGarbage, urlHost } from '../common.ts';
import { readTls, type TlsFiles } from '../tls.ts';
import type { WorkerLink } from './cluster/worker.ts';
import { createNodeFanOut } from './fanout.ts';
import { boundSockets, type SocketBounds } from './sockets.ts';
import { createNodeWebSocket, type NodeEnv } from './websocket.ts';
import { memoryFigures } from './memory.ts';

export interface NodeServer extends ServedHub {
  /** The public listener: an https.Server with `tlsCert`/`tlsKey` (it has http.Server's surface). */
  readonly server: Server;
  readonly port: number;
  readonly app: Hono;
}

export interface ServeNodeOptions {
  /** Cluster mode: this worker's link to the primary (its /stats, /healthz and /metrics are then the whole cluster's). */
  cluster?: WorkerLink | undefined;
}

/** Starts a hub (`hub.start()`) and serves it on Node at `hub.options.host:port`. Resolves once listening. */
export async function serveNode(hub: Hub, options: ServeNodeOptions = {}): Promise<NodeServer> {
  // Before anything starts: a bad certificate file must not leave a started hub behind.
  const tls = readTls(hub.options);
  await hub.start();
  const { maxPayload, perMessageDeflate, headersTimeout, closeTimeout } = hub.options;
  const { upgradeWebSocket, injectWebSocket } = createNodeWebSocket({ maxPayload, perMessageDeflate, closeTimeout });
  let serverRef: Server | undefined;
  let bounds: SocketBounds | undefined;
  const processStats = () => {
    const internals = process as unknown as { _getActiveHandles?: () => unknown[] };
    return {
      ...memoryFigures(),
      activeHandles: internals._getActiveHandles?.().length ?? -1,
      upgradeListeners: serverRef?.listenerCount('upgrade') ?? 0,
      processListeners: process.listenerCount('SIGINT') + process.listenerCount('SIGTERM'),
      // Connections still sending their request head, and what bounds the server's sockets.
      pendingConnections: bounds?.pending() ?? 0,
      pendingConnectionsCap: bounds?.pendingCap ?? 0,
      socketBudget: bounds?.budget ?? -1,
    };
  };
  const link = options.cluster;
  link?.serve(hub, (labels) => renderMetrics(hub, 'node', processStats(), labels), processStats);
  const fanOut = createNodeFanOut(hub.log);
  const adapter: RuntimeAdapter = {
    ...(link ? { clusterStats: link.clusterStats, clusterMetrics: link.clusterMetrics, clusterAdmission: link.clusterAdmission } : {}),
    ...(fanOut ? { fanOut } : {}),
    runtime: 'node',
    upgradeWebSocket,
    remoteAddress: (c) => clientAddress(peerAddress((c.env as NodeEnv | undefined)?.incoming?.socket)),
    processStats,
    collectGarbage: collectExposedGarbage,
  };
  const app = createApp(hub, adapter);
  const { adminPort, adminHost } = hub.options;
  const admin = adminPort >= 0 ? await listen(hub, createAdminApp(hub, adapter).fetch, adminPort, adminHost, tls) : undefined;
  // The operator's listener needs a handful of connections; a bound keeps a crowd that finds it from
  // holding fds there (Node drops a connection over it at once).
  if (admin) admin.server.maxConnections = ADMIN_MAX_CONNECTIONS;
  const { server, port, url } = await listen(hub, app.fetch, hub.options.port, hub.options.host, tls, {
    // A client trickling its headers is dropped; it never reaches admission, so it holds no slot.
    headersTimeout,
    requestTimeout: Math.max(headersTimeout, 30_000),
    // Node checks those timeouts on this interval (30 s by default).
    connectionsCheckingInterval: Math.min(1000, headersTimeout),
    // Over TLS the request head's clock starts after the handshake, which has its own (120 s by
    // default): a client stalling there is dropped as soon as one stalling its headers.
    ...(tls ? { handshakeTimeout: headersTimeout } : {}),
  });
  serverRef = server;
  bounds = boundSockets(server, hub.options, hub.counters, hub.log, () => hub.eventLoopLagMs);
  injectWebSocket(server, app);
  return {
    server,
    port,
    app,
    url,
    adminUrl: admin?.url,
    close: async () => {
      await Promise.all([closeServer(server), admin && closeServer(admin.server)]);
    },
  };
}

const ADMIN_MAX_CONNECTIONS = 64;

type PeerHandle = { getpeername?: (out: { address?: string }) => number };

/**
 * The peer's address, asked of the socket's handle: `socket.remoteAddress` keeps an object with
 * address, family and port on the socket for its whole life (56 bytes of every idle connection),
 * and nothing else reads it. TLS sockets (no such handle) ask the socket.
 */
function peerAddress(socket: Socket | undefined): string | undefined {
  const handle = (socket as (Socket & { _handle?: PeerHandle | null }) | undefined)?._handle;
  if (handle?.getpeername) {
    const out: { address?: string } = {};
    if (handle.getpeername(out) === 0) return out.address;
  }
  return socket?.remoteAddress;
}

/** Options of node:http's server, and of node:https's where they differ. */
type ListenOptions = ServerOptions & { handshakeTimeout?: number };

/** An HTTP(S) listener (the public one, or the admin routes'); errors after it listens are logged. */
function listen(hub: Hub, fetch: Hono['fetch'], port: number, hostname: string, tls: TlsFiles | undefined, serverOptions: ListenOptions = {}): Promise<{ server: Server; port: number; url: string }> {
  return new Promise((resolve, reject) => {
    // node:https's server is node:http's over TLS (same requests, 'upgrade' events and timeouts):
    // typed as http.Server here, as everything that uses it only needs that surface.
    const server = (
      tls
        ? serve({ fetch, port, hostname, createServer: createHttpsServer, serverOptions: { ...serverOptions, cert: tls.cert, key: tls.key } })
        : serve({ fetch, port, hostname, serverOptions })
    ) as Server;
    server.once('error', reject);
    server.once('listening', () => {
      server.removeListener('error', reject);
      server.on('error', (error) => hub.log.error('server.error', { error }));
      const bound = (server.address() as AddressInfo).port;
      resolve({ server, port: bound, url: `${tls ? 'https' : 'http'}://${urlHost(hostname)}:${bound}` });
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise<void>((done) => {
    server.close(() => done());
    server.closeAllConnections();
  });
}
