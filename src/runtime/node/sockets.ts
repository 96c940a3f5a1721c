// What the Node server holds before a request exists: every accepted TCP connection counts against
// a budget below the process's file-descriptor limit (Node's `server.maxConnections`, which also
// counts upgraded and closing sockets; over it a new connection is dropped at once), and
// connections still sending their request head have a cap of their own. Over that cap the *oldest*
// of them goes if it has been at it for PATIENCE_MS and is slow by its own doing — we have read
// part of its head (a trickling client: slowloris), or the event loop is keeping up, so nothing it
// sent is waiting on us (a silent one) — and a crowd of such connections can never keep a newcomer
// out. Otherwise it is a burst the event loop has not read yet (a reconnect storm: measured, 20,000
// clients coming back into a 2-worker cluster kept over 1,024 connections waiting more than a
// second on a busy loop, and evicting them cost 72,000 drops and 90 s to get everyone back), and
// the newcomer waits with them, up to BURST times the cap; beyond that it is dropped. Every drop is
// counted and logged (rate-limited).
// Over TLS (an https server) the same holds: a connection still in its TLS handshake is pending too.
import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import type { Counters } from '../../counters.ts';
import { rateLimitedFailures, type Logger } from '../../log.ts';
import { FD_RESERVE, openFileLimit } from '../fd-limit.ts';

/** The cap on connections still sending their request head: the option, or the limit within 64–1024. */
export function pendingCap(maxPendingConnections: number, maxConnections: number): number {
  return maxPendingConnections > 0 ? maxPendingConnections : Math.min(1024, Math.max(64, maxConnections));
}

export interface SocketBounds {
  /** Every TCP connection the server may hold at once (undefined: no fd limit known, no bound). */
  readonly budget: number | undefined;
  /** Connections still sending their request head. */
  readonly pendingCap: number;
  /** Connections in that state now. */
  pending(): number;
}

/** A request head not in after this long marks its sender as slow: the first to go when the cap is reached. */
const PATIENCE_MS = 1000;
/** How far over the cap fresh connections may wait during a burst. */
export const BURST = 4;
/** An event loop this late (ms) is behind: a connection's silence may be ours. */
const BEHIND_MS = 100;

export function boundSockets(
  server: Server,
  options: { maxConnections: number; maxPendingConnections: number },
  counters: Counters,
  log: Logger,
  /** How late the event loop runs now (ms): the hub's sweeper measures it. */
  loopLag: () => number = () => 0,
): SocketBounds {
  const limit = openFileLimit();
  const budget = limit === undefined ? undefined : Math.max(1, limit - FD_RESERVE);
  const cap = pendingCap(options.maxPendingConnections, options.maxConnections);
  const warn = rateLimitedFailures(log, 'connection.dropped');
  // A Map (socket → when accepted, oldest first), not a mark on the socket, and one shared close
  // listener removed once the request has come: an idle WebSocket keeps nothing of this.
  const pending = new Map<Socket, number>();
  if (budget !== undefined) server.maxConnections = budget;
  // Node closes a connection over maxConnections before anyone sees it, and says so with 'drop'.
  server.on('drop', () => {
    counters.connectionsDropped['fd-limit']++;
    warn('fd-limit', `${budget} connections held (file-descriptor limit ${limit} less ${FD_RESERVE} kept free); new ones dropped`);
  });
  function onPendingClose(this: Socket): void {
    pending.delete(this);
  }
  const settle = (socket: Socket) => {
    const tcp = tcpSocket(socket);
    if (pending.delete(tcp)) tcp.removeListener('close', onPendingClose);
  };
  const drop = (socket: Socket, why: string) => {
    counters.connectionsDropped['pending-limit']++;
    warn('pending-limit', why);
    socket.destroy();
  };
  server.on('connection', (socket: Socket) => {
    const now = performance.now();
    if (pending.size >= cap) {
      const [oldest, since] = pending.entries().next().value as [Socket, number];
      if (now - since >= PATIENCE_MS && (oldest.bytesRead > 0 || loopLag() < BEHIND_MS)) {
        settle(oldest);
        drop(oldest, `${cap} connections still sending their request head; the oldest (over ${PATIENCE_MS} ms) dropped for a new one`);
      } else if (pending.size >= cap * BURST) {
        return drop(socket, `${pending.size} fresh connections still sending their request head (${BURST}× the cap of ${cap}); new ones dropped`);
      }
    }
    pending.set(socket, now);
    socket.on('close', onPendingClose);
  });
  server.on('request', (request: { socket: Socket }) => settle(request.socket));
  // Prepended: an upgrading socket leaves `pending` before the upgrade is handled.
  server.prependListener('upgrade', (_request: unknown, socket: Socket) => settle(socket));
  // A failed TLS handshake (a client that does not trust the certificate, plain HTTP on the https
  // port, a stalled handshake): Node has destroyed the socket, and its TCP socket's 'close' leaves
  // `pending`. Only noted, at debug: on a public port it is what scanners do all day.
  server.on('tlsClientError', (error: NodeJS.ErrnoException) => log.debug('tls.client-error', { code: error.code ?? 'unknown' }));
  return { budget, pendingCap: cap, pending: () => pending.size };
}

/**
 * The TCP socket 'connection' saw. Over TLS, requests and upgrades carry the TLSSocket wrapping it,
 * which Node links to it as `_parent` (there is no public accessor); over plain HTTP it is the socket itself.
 */
function tcpSocket(socket: Socket): Socket {
  return (socket as Socket & { _parent?: Socket | null })._parent ?? socket;
}
