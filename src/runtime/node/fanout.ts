// Fan-out on Node: frame a message once, then write the same bytes to every socket, instead of
// `ws.send` encoding and framing it again for each one. The only file that touches `ws` internals
// (its Sender and each socket's `_sender` and `_socket`); they are checked against the installed
// `ws` at startup and on the first socket, and without them every send goes through `ws.send`.
import { createRequire } from 'node:module';
import * as wsExports from 'ws';
import type { WebSocket } from 'ws';
import type { FanOut, MessageData, SocketLike } from '../../contracts.ts';
import type { Logger } from '../../log.ts';

/** The `ws` majors whose internals this file was written against. */
const SUPPORTED_WS_MAJOR = 8;

interface PreparedFrame {
  readonly data: MessageData;
  /** One complete unmasked WebSocket frame, shared by every socket it is written to. */
  readonly frame: Buffer;
}

// ws exports its Sender (the framer) but @types/ws does not declare it.
type FrameFn = (data: Buffer, options: object) => Buffer[];
const { Sender } = wsExports as unknown as { Sender?: { frame?: FrameFn } };

interface WsInternals {
  _sender: { _state: number; _queue: unknown[] };
  _socket: { write(data: Buffer): boolean };
}

function hasInternals(ws: unknown): ws is WsInternals {
  const w = ws as Partial<WsInternals> | undefined;
  return typeof w?._sender?._state === 'number' && Array.isArray(w._sender._queue) && typeof w._socket?.write === 'function';
}

/**
 * The fast path, or undefined (and a warning) if the installed `ws` is not one it knows: the hub
 * then sends with `ws.send` to every socket.
 */
export function createNodeFanOut(log: Logger): FanOut<PreparedFrame> | undefined {
  const version = (createRequire(import.meta.url)('ws/package.json') as { version: string }).version;
  const frame = Sender?.frame;
  if (Number(version.split('.')[0]) !== SUPPORTED_WS_MAJOR || typeof frame !== 'function') {
    log.warn('fanout.unsupported', { ws: version, note: `frame-once fan-out needs ws ${SUPPORTED_WS_MAJOR}.x; sending with ws.send` });
    return undefined;
  }
  // Checked on the first socket; a socket without the expected internals turns the fast path off.
  let verified: boolean | undefined;
  return {
    prepare(data) {
      const text = typeof data === 'string';
      const bytes = text ? Buffer.from(data) : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      const parts = frame(bytes, { fin: true, opcode: text ? 1 : 2, mask: false, readOnly: false, rsv1: false });
      return { data, frame: parts.length === 1 ? parts[0]! : Buffer.concat(parts) };
    },
    // Falls back to `ws.send` for a socket whose sender is busy (compressing, or holding queued
    // frames), so that order is kept.
    sendPrepared(socket: SocketLike, prepared) {
      const ws = socket as unknown as WebSocket & WsInternals;
      if (verified === undefined) {
        verified = hasInternals(ws);
        if (!verified) log.warn('fanout.unsupported', { ws: version, note: 'ws sockets lack the expected internals; sending with ws.send' });
      }
      if (verified && ws.readyState === 1 && ws._sender._state === 0 && ws._sender._queue.length === 0) ws._socket.write(prepared.frame);
      else ws.send(prepared.data);
    },
    // A replay is hundreds of frames to one socket: corked, Node writes them with one writev
    // instead of one write (and one syscall) each. Frames ws queues (compression) go out after, in order.
    corked(socket: SocketLike, send: () => void) {
      const raw = (socket as unknown as { _socket?: { cork?(): void; uncork?(): void } })._socket;
      if (typeof raw?.cork !== 'function' || typeof raw.uncork !== 'function') return send();
      raw.cork();
      try {
        send();
      } finally {
        raw.uncork();
      }
    },
  };
}
