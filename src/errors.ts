// The close-kind table, the refusal table and hubbub's error types. It imports nothing: every other
// layer may use it. Every close code the server sends is derived from these tables.

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
  /** The connection's token expired and no fresh one came (`{"type":"refresh"}`). */
  TOKEN_EXPIRED: 4001,
} as const;

/**
 * How an ending of a kind is carried out:
 *  - `peer`: the peer (or the network) ended it; the server sends nothing;
 *  - `close`: the server sends a close frame with `code` and waits for the closing handshake;
 *  - `terminate`: the peer is presumed gone; the socket is dropped without a closing handshake.
 */
export type Ending = 'peer' | 'close' | 'terminate';

interface CloseKindSpec {
  readonly ending: Ending;
  /**
   * For `close` endings: whether the peer gets `closeTimeout` to answer the close frame. Protocol
   * violations, oversized messages, rate and slow-consumer closes get none: the socket is dropped at
   * the next sweep (within a second) whether or not the peer answered.
   */
  readonly courtesy: boolean;
  /** The code of the close frame the server sends; for `peer` and `terminate`, the code recorded when none arrived (1006). */
  readonly code: number;
  readonly doc: string;
}

/**
 * Why a connection ended: the one table. Every ending goes through the registry's one release
 * function with one of these kinds; the kind becomes `ctx.signal.reason.kind`, the `/stats` and
 * `/metrics` counter `released[kind]`, and a log field.
 */
const closeKindTable = {
  'client-close': { ending: 'peer', courtesy: true, code: CloseCode.ABNORMAL, doc: 'The client sent a close frame.' },
  'connection-lost': { ending: 'peer', courtesy: true, code: CloseCode.ABNORMAL, doc: 'The socket went away without a close frame (TCP reset, process killed, network gone).' },
  error: { ending: 'close', courtesy: false, code: CloseCode.PROTOCOL_ERROR, doc: 'The WebSocket layer reported an error (bad frame, write failure).' },
  'handler-error': { ending: 'close', courtesy: true, code: CloseCode.INTERNAL_ERROR, doc: "The handler's onOpen/onMessage threw or rejected." },
  'server-close': { ending: 'close', courtesy: true, code: CloseCode.NORMAL, doc: 'The handler closed the socket itself with `ctx.close()`.' },
  kicked: { ending: 'close', courtesy: true, code: CloseCode.KICKED, doc: 'The application kicked the connection with `hub.close(id)`.' },
  'token-expired': { ending: 'close', courtesy: true, code: CloseCode.TOKEN_EXPIRED, doc: "The connection's token (JWT) reached its `exp` and no fresh one was sent (`refresh`)." },
  shutdown: { ending: 'close', courtesy: true, code: CloseCode.GOING_AWAY, doc: 'The server is shutting down.' },
  'handshake-failed': { ending: 'peer', courtesy: true, code: CloseCode.ABNORMAL, doc: 'The upgrade was admitted but the WebSocket handshake failed (bad key or version, client gone).' },
  'handshake-timeout': { ending: 'close', courtesy: false, code: CloseCode.TRY_AGAIN_LATER, doc: 'The upgrade was admitted but no socket opened within `handshakeTimeout`.' },
  idle: { ending: 'terminate', courtesy: false, code: CloseCode.ABNORMAL, doc: 'The peer stayed silent (no pong, no message) for two heartbeat intervals; dropped without a close frame.' },
  'message-too-big': { ending: 'close', courtesy: false, code: CloseCode.MESSAGE_TOO_BIG, doc: 'A message exceeded `maxPayload` (decompressed size included).' },
  'rate-limited': { ending: 'close', courtesy: false, code: CloseCode.POLICY_VIOLATION, doc: 'The connection sent more than `messageRate` messages in a second.' },
  'slow-consumer': { ending: 'close', courtesy: false, code: CloseCode.TRY_AGAIN_LATER, doc: "The socket's send queue went over `maxBackpressure` with the `close` policy." },
} as const satisfies Record<string, CloseKindSpec>;

/** Why a connection ended (see the table above for each kind). */
export type CloseKind = keyof typeof closeKindTable;
export const closeKinds = Object.keys(closeKindTable) as CloseKind[];

/** Whether this ending is the server's decision, so the server must end the socket. */
export function isServerInitiated(kind: CloseKind): boolean {
  return closeKindTable[kind].ending !== 'peer';
}

/** Endings where the peer is presumed gone: the socket is dropped, no closing handshake. */
export function isTerminated(kind: CloseKind): boolean {
  return closeKindTable[kind].ending === 'terminate';
}

/** Whether the peer of a server-initiated close gets `closeTimeout` to complete the closing handshake. */
export function hasCourtesy(kind: CloseKind): boolean {
  return closeKindTable[kind].courtesy;
}

/** Why an upgrade was refused before it happened, with the HTTP status and text that answer it. */
const refusalTable = {
  capacity: { status: 503, text: 'server is full, retry later', doc: 'The server holds `maxConnections` sockets.' },
  draining: { status: 503, text: 'server is shutting down, retry later', doc: 'The server is shutting down.' },
  'rate-limited': { status: 429, text: 'too many connection attempts, retry later', doc: 'Over `upgradeRate` or `upgradeRatePerIp`.' },
  'ip-limit': { status: 429, text: 'too many connections from your address', doc: 'The client address holds `maxConnectionsPerIp` sockets.' },
  'principal-limit': { status: 429, text: 'too many connections for this user', doc: 'The principal holds `maxConnectionsPerPrincipal` sockets.' },
  origin: { status: 403, text: 'origin not allowed', doc: 'The Origin is not in `allowedOrigins`.' },
  unauthorized: { status: 401, text: 'unauthorized', doc: 'The token was missing or invalid (JWT auth), or the authenticate hook refused (its own 401/403 answer) or failed.' },
} as const satisfies Record<string, { status: number; text: string; doc: string }>;

export type RefusalReason = keyof typeof refusalTable;
export const refusalReasons = Object.keys(refusalTable) as RefusalReason[];

export function refusalStatus(reason: RefusalReason): number {
  return refusalTable[reason].status;
}

export function refusalText(reason: RefusalReason): string {
  return refusalTable[reason].text;
}

export type HubErrorCode = 'ERR_INVALID_OPTION' | 'ERR_CONNECTION_CLOSED' | 'ERR_BAD_TOKEN' | 'ERR_INVALID_TOPIC';

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
  return new ConnectionClosed(kind, code ?? closeKindTable[kind].code, detail, cause === undefined ? undefined : { cause });
}

/** Close codes an endpoint may put in a close frame it sends (RFC 6455 §7.4). */
export function isSendableCloseCode(code: number): boolean {
  return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1014) || (code >= 3000 && code <= 4999);
}

/** Close codes a peer may send (RFC 6455 §7.4), as ws checks them: the sendable ones. */
export const isValidPeerCloseCode = isSendableCloseCode;
