// The one error type of hubbub, and the close-code table. Every close code the server sends is
// chosen here and only here, so the table in the README and the behaviour cannot drift apart.

/** WebSocket close codes (RFC 6455 §7.4.1) and hubbub's own 4xxx application codes. */
export const CloseCode = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  UNSUPPORTED_DATA: 1003,
  NO_STATUS: 1005,
  ABNORMAL: 1006,
  INVALID_PAYLOAD: 1007,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
  /** The connection was closed by the application (`hub.close(id)`). */
  KICKED: 4000,
} as const;

/**
 * Why a connection ended. Every ending goes through the registry's one release function with one
 * of these; it becomes `ctx.signal.reason.kind`, a `/stats` counter and a log field.
 */
export type CloseKind =
  /** The client sent a close frame. */
  | 'client-close'
  /** The socket went away without a close frame (TCP reset, process killed, network gone). */
  | 'connection-lost'
  /** The WebSocket layer reported an error (bad frame, write failure). */
  | 'error'
  /** The handler's onOpen/onMessage threw or rejected. */
  | 'handler-error'
  /** The handler closed the socket itself with `ctx.close()`. */
  | 'server-close'
  /** The application kicked the connection with `hub.close(id)`. */
  | 'kicked'
  /** The server is shutting down. */
  | 'shutdown'
  /** The upgrade was admitted but the WebSocket handshake failed (bad key or version, client gone). */
  | 'handshake-failed'
  /** The upgrade was admitted but no socket opened within `handshakeTimeout`. */
  | 'handshake-timeout'
  /** The peer stayed silent (no pong, no message) for two heartbeat intervals; dropped without a close frame. */
  | 'idle'
  /** A message exceeded `maxPayload` (decompressed size included). */
  | 'message-too-big'
  /** The connection sent more than `messageRate` messages in a second. */
  | 'rate-limited'
  /** The socket's send queue went over `maxBackpressure` with the `close` policy. */
  | 'slow-consumer';

export const closeKinds: readonly CloseKind[] = [
  'client-close',
  'connection-lost',
  'error',
  'handler-error',
  'server-close',
  'kicked',
  'shutdown',
  'handshake-failed',
  'handshake-timeout',
  'idle',
  'message-too-big',
  'rate-limited',
  'slow-consumer',
];

/** The close code the server sends for endings it initiates; `null` where the peer already closed. */
const serverCloseCode: Record<CloseKind, number | null> = {
  'client-close': null,
  'connection-lost': null,
  error: CloseCode.PROTOCOL_ERROR,
  'handler-error': CloseCode.INTERNAL_ERROR,
  'server-close': CloseCode.NORMAL,
  kicked: CloseCode.KICKED,
  shutdown: CloseCode.GOING_AWAY,
  'handshake-failed': null,
  'handshake-timeout': CloseCode.TRY_AGAIN_LATER,
  idle: CloseCode.ABNORMAL,
  'message-too-big': CloseCode.MESSAGE_TOO_BIG,
  'rate-limited': CloseCode.POLICY_VIOLATION,
  'slow-consumer': CloseCode.TRY_AGAIN_LATER,
};

/** Whether this ending is the server's decision, so the server must end the socket. */
export function isServerInitiated(kind: CloseKind): boolean {
  return serverCloseCode[kind] !== null;
}

/** Endings where the peer is presumed gone: the socket is dropped, no closing handshake. */
export function isTerminated(kind: CloseKind): boolean {
  return kind === 'idle';
}

/** Why an upgrade was refused before it happened, with the HTTP status that answers it. */
export type RefusalReason =
  /** The server holds `maxConnections` sockets. */
  | 'capacity'
  /** The server is shutting down. */
  | 'draining'
  /** Over `upgradeRate` or `upgradeRatePerIp`. */
  | 'rate-limited'
  /** The client address holds `maxConnectionsPerIp` sockets. */
  | 'ip-limit'
  /** The principal holds `maxConnectionsPerPrincipal` sockets. */
  | 'principal-limit'
  /** The Origin is not in `allowedOrigins`. */
  | 'origin'
  /** The authenticate hook refused (its own 401/403 answer) or failed. */
  | 'unauthorized';
export const refusalStatus: Record<RefusalReason, number> = {
  capacity: 503,
  draining: 503,
  'rate-limited': 429,
  'ip-limit': 429,
  'principal-limit': 429,
  origin: 403,
  unauthorized: 401,
};
export const refusalReasons = Object.keys(refusalStatus) as RefusalReason[];

export type HubErrorCode =
  | 'ERR_INVALID_OPTION'
  | 'ERR_CONNECTION_CLOSED'
  | 'ERR_HANDLER'
  | 'ERR_NOT_RUNNING';

/** The one error type: a stable `code`, and the close code that belongs to it where there is one. */
export class HubError extends Error {
  override name = 'HubError';
  readonly code: HubErrorCode;
  readonly closeCode: number | undefined;
  constructor(code: HubErrorCode, message: string, closeCode?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.closeCode = closeCode;
  }
}

/**
 * The reason a connection's `signal` is aborted with. It is an Error (so `fetch` and streams that
 * reject with it give a useful stack and message) carrying the typed fields `kind` and `closeCode`.
 */
export class ConnectionClosed extends HubError {
  override name = 'ConnectionClosed';
  readonly kind: CloseKind;
  declare readonly closeCode: number;
  /** Short human text: the peer's close reason, or what the server says in its close frame. */
  readonly detail: string | undefined;
  constructor(kind: CloseKind, closeCode: number, detail?: string, options?: { cause?: unknown }) {
    super('ERR_CONNECTION_CLOSED', detail ? `connection closed: ${kind} (${closeCode}): ${detail}` : `connection closed: ${kind} (${closeCode})`, closeCode, options);
    this.kind = kind;
    this.detail = detail;
  }
}

/**
 * The reason for an ending of this kind. `code` is the code the peer sent (peer-initiated kinds)
 * or overrides the kind's default code (server-initiated kinds, e.g. `ctx.close(4001)`).
 */
export function closeReason(kind: CloseKind, code?: number, detail?: string, cause?: unknown): ConnectionClosed {
  return new ConnectionClosed(kind, code ?? serverCloseCode[kind] ?? CloseCode.ABNORMAL, detail, cause === undefined ? undefined : { cause });
}

/** Close codes an endpoint may put in a close frame (RFC 6455 §7.4). */
export function isSendableCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}
