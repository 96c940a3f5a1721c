// What the Node server holds before a request exists: every accepted TCP connection counts against
// a budget below the process's file-descriptor limit (Node's `server.maxConnections`, which also
// counts upgraded and closing sockets), and connections still sending their request head have a
// cap of their own. Over either, a new connection is dropped at once: counted, logged (rate-limited).
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

export function boundSockets(server: Server, options: { maxConnections: number; maxPendingConnections: number }, counters: Counters, log: Logger): SocketBounds {
  const limit = openFileLimit();
  const budget = limit === undefined ? undefined : Math.max(1, limit - FD_RESERVE);
  const cap = pendingCap(options.maxPendingConnections, options.maxConnections);
  const warn = rateLimitedFailures(log, 'connection.dropped');
  // A Set, not a mark on the socket, and one shared close listener removed once the request has
  // come: an idle WebSocket keeps nothing of this (no property, no closure, no listener).
  const pending = new Set<Socket>();
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
    if (pending.delete(socket)) socket.removeListener('close', onPendingClose);
  };
  server.on('connection', (socket: Socket) => {
    if (pending.size >= cap) {
      counters.connectionsDropped['pending-limit']++;
      warn('pending-limit', `${cap} connections still sending their request head; new ones dropped`);
      socket.destroy();
      return;
    }
    pending.add(socket);
    socket.on('close', onPendingClose);
  });
  server.on('request', (request: { socket: Socket }) => settle(request.socket));
  // Prepended: an upgrading socket leaves `pending` before the upgrade is handled.
  server.prependListener('upgrade', (_request: unknown, socket: Socket) => settle(socket));
  return { budget, pendingCap: cap, pending: () => pending.size };
}
