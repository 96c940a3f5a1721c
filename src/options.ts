// One options object. Every field is declared once in `optionSpecs` (flag, env names, default,
// range, doc); the CLI, the environment and `createHub({...})` all go through the same validators,
// so a bad value gets the same clear error naming the option, whichever way it came in.
import type { Backplane } from './backplane/contract.ts';
import type { Handler, HandlerFactory } from './contracts.ts';
import { HubError } from './errors.ts';
import { logLevels, type LogLevel } from './log.ts';
import { boolean, bytes, bytesOrOff, commaList, didYouMean, duration, durationOrOff, inRange, integer, matching, oneOf, origins, secretList } from './validators.ts';

/** Every setting of a hub. Defaults are in `optionSpecs` below and in the README table. */
export interface HubOptions {
  /** TCP port to listen on; 0 picks a free one. @default 8080 */
  port: number;
  /** Address to bind. @default '0.0.0.0' */
  host: string;
  /** Path of the WebSocket endpoint. @default '/ws' */
  path: string;
  /** Most sockets served at once (open + admitted-but-not-yet-open). @default 100 */
  maxConnections: number;
  /** Seconds sent in `Retry-After` when an upgrade is refused. @default 1 */
  retryAfter: number;
  /** Milliseconds an admitted upgrade may take to become an open socket before its slot expires. @default 10000 */
  handshakeTimeout: number;
  /** Milliseconds a graceful shutdown waits for sockets to finish closing. @default 10000 */
  shutdownTimeout: number;
  /**
   * Milliseconds a peer has to answer the server's close frame before its socket is dropped. Until
   * then the socket still counts against `maxConnections`. Protocol violations, oversized messages,
   * rate and slow-consumer closes get no such wait. @default 5000
   */
  closeTimeout: number;
  /** Milliseconds between heartbeats; a peer silent for two of them is dropped (reason `idle`). 0 = off. @default 30000 */
  heartbeatInterval: number;
  /** Largest message accepted, in bytes (also bounds a decompressed message); bigger closes with 1009. @default 65536 */
  maxPayload: number;
  /** Most sockets per client address; over it, 429. 0 = no cap. @default 0 */
  maxConnectionsPerIp: number;
  /** Most sockets per authenticated principal (see `Handler.authenticate`); over it, 429. 0 = no cap. @default 0 */
  maxConnectionsPerPrincipal: number;
  /** Upgrades per second for the whole server (token bucket, burst = one second's worth); over it, 429. 0 = off. @default 0 */
  upgradeRate: number;
  /** Upgrades per second per client address; over it, 429. 0 = off. @default 0 */
  upgradeRatePerIp: number;
  /** Messages per second per connection; over it, close with 1008. 0 = off. @default 0 */
  messageRate: number;
  /** Topics one connection may subscribe to at once; over it a subscribe is refused (the socket stays open). 0 = no cap. @default 128 */
  maxSubscriptions: number;
  /** Topics with local subscribers this process holds at once; a subscribe that would add one more is refused. 0 = no cap. @default 100000 */
  maxTopics: number;
  /** Publications kept per topic for recovery (`since`) and `hub.history`; 0 = history off (offsets are still counted). @default 100 */
  historySize: number;
  /** Milliseconds a topic's history outlives its last publication. @default 300000 */
  historyTtl: number;
  /** Bytes of history this process keeps in all; over it, the histories published on longest ago are forgotten. @default 64 MiB */
  historyMaxBytes: number;
  /** Publications one recovering subscribe may replay; a client further behind gets `recovered: false`. @default 300 */
  recoveryMax: number;
  /** Tell a topic's subscribers when another joins or leaves it (the pubsub `join`/`leave` messages): one message to every subscriber per join, so off by default. @default false */
  presenceEvents: boolean;
  /** Origins allowed to open a socket (`https://app.example.com`, `https://*.example.com`); others get 403. Empty = any. Requests without an Origin header (non-browser clients) are allowed. @default [] */
  allowedOrigins: string[];
  /**
   * JWT connection auth with a shared secret: tokens signed HS256, HS384 or HS512 with it (at least
   * 32 characters). '' = off. Not together with `jwksUrl`. @default ''
   */
  jwtSecret: string;
  /**
   * JWT connection auth with public keys: the URL of a JWKS (RS*, PS*, ES*, EdDSA). The keys are
   * cached, fetched again every 10 minutes and when a token names a `kid` the cache lacks (at most
   * once every 5 s). '' = off. Not together with `jwtSecret`. @default ''
   */
  jwksUrl: string;
  /** With JWT auth: the `iss` a token must carry; '' = not checked. @default '' */
  jwtIssuer: string;
  /** With JWT auth: an `aud` a token must carry (one of a comma-separated list); empty = not checked. @default [] */
  jwtAudience: string[];
  /** With JWT auth: a cookie the token may come in (besides `?token=` and `Authorization: Bearer`); '' = none. @default '' */
  jwtCookie: string;
  /** With JWT auth: the claim holding the token's topic grants (`{"subscribe":[…],"publish":[…]}`); a token without it keeps the default rules. @default 'topics' */
  jwtTopicsClaim: string;
  /** Whether clients may publish (pubsub); false makes publishing a backend-only privilege (`hub.publish`). @default true */
  allowClientPublish: boolean;
  /** Negotiate permessage-deflate (Node). Decompressed messages are bounded by `maxPayload`. @default false */
  perMessageDeflate: boolean;
  /** Milliseconds a client may take to send its request headers before the connection is dropped. @default 10000 */
  headersTimeout: number;
  /**
   * Node: TCP connections still sending their request head, at most; a new one over it is dropped
   * at once (counted). 0 = derived: the limit, at least 64 and at most 1024. @default 0
   */
  maxPendingConnections: number;
  /** Bytes a socket may have queued for sending before it counts as a slow consumer. 0 = no limit. @default 1048576 */
  maxBackpressure: number;
  /** What happens to a slow consumer: `close` it (1013) or `drop` messages for it (counted; it sees a gap in sequence numbers). @default 'close' */
  slowConsumer: 'close' | 'drop';
  /** Share publishes, positions and history with other hubbub nodes: `redis://host:port`, `nats://host:port` (a server with JetStream), a Backplane object, or '' for none. @default '' */
  backplane: string | Backplane;
  /** Share `maxConnections` across every node through Redis (`redis://host:port`); '' = this process only. @default '' */
  clusterLimit: string;
  /** Nodes with the same name share one limit (and its Redis keys). @default 'hubbub' */
  clusterName: string;
  /** Milliseconds a node's slots survive in Redis without a renewal: a dead node's slots return within it. @default 10000 */
  leaseTime: number;
  /** Slots a node takes from Redis at a time, so most connects cost no round trip. @default 16 */
  slotBlock: number;
  /** Node only: worker processes sharing the port (node:cluster) and one connection limit; 0 = one per core ('auto'). @default 1 */
  workers: number;
  /** Port of a separate listener for the operator's routes (/stats, /metrics; /healthz too); -1 (`off`) serves them on the public listener. @default -1 */
  adminPort: number;
  /** Address the admin listener binds. @default '127.0.0.1' */
  adminHost: string;
  /**
   * Path of a PEM certificate (chain): with `tlsKey`, the server (and the admin listener) speak
   * https:// and wss://. Read when the server starts. Both or neither. Not on workerd, whose TLS is
   * the platform's. @default ''
   */
  tlsCert: string;
  /** Path of the PEM private key of `tlsCert`. @default '' */
  tlsKey: string;
  /** Bearer token /stats and /metrics require, wherever they are served; '' = none (then, on the public listener, they answer local clients only). @default '' */
  adminToken: string;
  /** Keys of the server API (`/api/*`, on the admin surface): `Authorization: Bearer <key>`; several for rotation; empty = no API. @default [] */
  apiKeys: string[];
  /** The demo page at `/`: 'auto' serves it with the built-in pubsub handler only. @default 'auto' */
  demo: 'auto' | 'on' | 'off';
  /** Serve the hubbub client (`hubbub/client`) as one ES module at `/client.js`. @default true */
  serveClient: boolean;
  /** Lowest level logged. @default 'info' */
  logLevel: LogLevel;
  /** Handler: `'echo'` (the default), `'pubsub'` (the JSON topic protocol), a Handler, or (CLI) a path to a module exporting one. @default 'echo' */
  handler: string | Handler | HandlerFactory;
}

interface OptionSpec<K extends keyof HubOptions> {
  flag: string;
  env: readonly string[];
  default: HubOptions[K];
  /** Human description of what is accepted, used in every error and in `--help`. */
  accepts: string;
  doc: string;
  /** Parses a string from a flag or the environment. Returns undefined when invalid. */
  parse(text: string): HubOptions[K] | undefined;
  /** Checks a value given as an object field. */
  check(value: unknown): value is HubOptions[K];
}

const MAX_CONNECTIONS = 10_000_000;
const ADMIN_TOKEN = /^[A-Za-z0-9._~+/-]{16,512}$/;
const HOST = /^[\w.:-]+$/;

export const optionSpecs: { [K in keyof HubOptions]: OptionSpec<K> } = {
  port: { flag: '--port', env: ['HUBBUB_PORT', 'PORT'], default: 8080, doc: 'TCP port to listen on (0 = any free port)', ...integer(0, 65535) },
  host: { flag: '--host', env: ['HUBBUB_HOST'], default: '0.0.0.0', doc: 'address to bind', ...matching(HOST, 'an IP address or host name') },
  path: {
    flag: '--path', env: ['HUBBUB_PATH'], default: '/ws', doc: 'path of the WebSocket endpoint',
    ...matching(/^\/[\w./-]*$/, 'a path starting with / (letters, digits, -, _, ., /)'),
  },
  maxConnections: {
    flag: '--max-connections', env: ['HUBBUB_MAX_CONNECTIONS'], default: 100,
    doc: 'most sockets served at once; over it upgrades get 503 + Retry-After', ...integer(1, MAX_CONNECTIONS),
  },
  retryAfter: { flag: '--retry-after', env: ['HUBBUB_RETRY_AFTER'], default: 1, doc: 'seconds in the Retry-After header of a refused upgrade', ...integer(1, 3600) },
  handshakeTimeout: {
    flag: '--handshake-timeout', env: ['HUBBUB_HANDSHAKE_TIMEOUT'], default: 10_000,
    doc: 'an admitted upgrade that has not opened by then frees its slot', ...duration(100, 600_000),
  },
  shutdownTimeout: {
    flag: '--shutdown-timeout', env: ['HUBBUB_SHUTDOWN_TIMEOUT'], default: 10_000,
    doc: 'how long a graceful shutdown waits for sockets to close', ...duration(0, 600_000),
  },
  closeTimeout: {
    flag: '--close-timeout', env: ['HUBBUB_CLOSE_TIMEOUT'], default: 5000,
    doc: 'how long a peer has to answer the close frame; its socket counts against the limit until then', ...duration(0, 600_000),
  },
  heartbeatInterval: {
    flag: '--heartbeat-interval', env: ['HUBBUB_HEARTBEAT_INTERVAL'], default: 30_000,
    doc: 'ping interval; a peer silent for two intervals is dropped', ...durationOrOff(100, 3_600_000),
  },
  maxPayload: { flag: '--max-payload', env: ['HUBBUB_MAX_PAYLOAD'], default: 64 * 1024, doc: 'largest message accepted; bigger closes with 1009', ...bytes(1, 256 * 1024 ** 2) },
  maxConnectionsPerIp: {
    flag: '--max-connections-per-ip', env: ['HUBBUB_MAX_CONNECTIONS_PER_IP'], default: 0,
    doc: 'most sockets per client address (0 = no cap); over it 429', ...integer(0, MAX_CONNECTIONS),
  },
  maxConnectionsPerPrincipal: {
    flag: '--max-connections-per-principal', env: ['HUBBUB_MAX_CONNECTIONS_PER_PRINCIPAL'], default: 0,
    doc: 'most sockets per authenticated principal (0 = no cap); over it 429', ...integer(0, MAX_CONNECTIONS),
  },
  upgradeRate: { flag: '--upgrade-rate', env: ['HUBBUB_UPGRADE_RATE'], default: 0, doc: 'upgrades per second, whole server (0 = off); over it 429', ...integer(0, 1_000_000) },
  upgradeRatePerIp: {
    flag: '--upgrade-rate-per-ip', env: ['HUBBUB_UPGRADE_RATE_PER_IP'], default: 0,
    doc: 'upgrades per second per client address (0 = off); over it 429', ...integer(0, 1_000_000),
  },
  messageRate: {
    flag: '--message-rate', env: ['HUBBUB_MESSAGE_RATE'], default: 0,
    doc: 'messages per second per connection (0 = off); over it close 1008', ...integer(0, 1_000_000),
  },
  maxSubscriptions: {
    flag: '--max-subscriptions', env: ['HUBBUB_MAX_SUBSCRIPTIONS'], default: 128,
    doc: 'topics one connection may subscribe to (0 = no cap); over it the subscribe is refused', ...integer(0, 1_000_000),
  },
  maxTopics: {
    flag: '--max-topics', env: ['HUBBUB_MAX_TOPICS'], default: 100_000,
    doc: 'topics with subscribers this process holds (0 = no cap); a subscribe adding one more is refused', ...integer(0, MAX_CONNECTIONS),
  },
  historySize: {
    flag: '--history-size', env: ['HUBBUB_HISTORY_SIZE'], default: 100,
    doc: 'publications kept per topic for recovery (0 = off; offsets are still counted)', ...integer(0, 100_000),
  },
  historyTtl: {
    flag: '--history-ttl', env: ['HUBBUB_HISTORY_TTL'], default: 300_000,
    doc: "how long a topic's history outlives its last publication", ...duration(1000, 7 * 24 * 3600_000),
  },
  historyMaxBytes: {
    flag: '--history-max-bytes', env: ['HUBBUB_HISTORY_MAX_BYTES'], default: 64 * 1024 * 1024,
    doc: 'history kept in memory in all; over it the oldest histories are forgotten', ...bytes(64 * 1024, 64 * 1024 ** 3),
  },
  recoveryMax: {
    flag: '--recovery-max', env: ['HUBBUB_RECOVERY_MAX'], default: 300,
    doc: 'publications one recovering subscribe may replay; further behind is recovered: false', ...integer(0, 100_000),
  },
  presenceEvents: {
    flag: '--presence-events', env: ['HUBBUB_PRESENCE_EVENTS'], default: false,
    doc: "tell a topic's subscribers when another joins or leaves it (one message to each per join)", ...boolean(),
  },
  allowedOrigins: { flag: '--allowed-origins', env: ['HUBBUB_ALLOWED_ORIGINS'], default: [], doc: 'origins allowed to connect (empty = any); others 403', ...origins() },
  jwtSecret: {
    flag: '--jwt-secret', env: ['HUBBUB_JWT_SECRET'], default: '',
    doc: 'verify connection tokens (JWT, HS256/384/512) with this secret; prefer the environment variable (a flag shows in ps)',
    ...matching(/^\S{32,4096}$/, 'a secret of at least 32 characters without spaces', true),
  },
  jwksUrl: {
    flag: '--jwks-url', env: ['HUBBUB_JWKS_URL'], default: '',
    doc: 'verify connection tokens (JWT, RS/PS/ES/EdDSA) with the keys of this JWKS (cached; fetched again on an unknown kid)',
    ...matching(/^https?:\/\/\S+$/, 'an http:// or https:// URL', true),
  },
  jwtIssuer: { flag: '--jwt-issuer', env: ['HUBBUB_JWT_ISSUER'], default: '', doc: 'the iss a connection token must carry', ...matching(/^\S{1,1024}$/, 'an issuer (no spaces)', true) },
  jwtAudience: {
    flag: '--jwt-audience', env: ['HUBBUB_JWT_AUDIENCE'], default: [], doc: 'an aud a connection token must carry (comma-separated: any of them)',
    accepts: 'a comma-separated list of audiences (no spaces)',
    parse: (text) => {
      const list = commaList(text);
      return list.every((a) => /^\S{1,1024}$/.test(a)) ? list : undefined;
    },
    check: (value): value is string[] => Array.isArray(value) && value.every((a) => typeof a === 'string' && /^\S{1,1024}$/.test(a)),
  },
  jwtCookie: {
    flag: '--jwt-cookie', env: ['HUBBUB_JWT_COOKIE'], default: '', doc: 'a cookie the connection token may come in (besides ?token= and Authorization: Bearer)',
    ...matching(/^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$/, 'a cookie name', true),
  },
  jwtTopicsClaim: {
    flag: '--jwt-topics-claim', env: ['HUBBUB_JWT_TOPICS_CLAIM'], default: 'topics',
    doc: 'the token claim with the topics a connection may subscribe to and publish on (pubsub)', ...matching(/^[\w.:-]{1,64}$/, 'a claim name (letters, digits, -, _, ., :)'),
  },
  allowClientPublish: {
    flag: '--allow-client-publish', env: ['HUBBUB_ALLOW_CLIENT_PUBLISH'], default: true,
    doc: 'whether clients may publish (pubsub); false leaves publishing to the backend (hub.publish)', ...boolean(),
  },
  perMessageDeflate: {
    flag: '--per-message-deflate', env: ['HUBBUB_PER_MESSAGE_DEFLATE'], default: false,
    doc: 'negotiate permessage-deflate (Node); bounded by --max-payload', ...boolean(),
  },
  headersTimeout: {
    flag: '--headers-timeout', env: ['HUBBUB_HEADERS_TIMEOUT'], default: 10_000,
    doc: 'a client slower than this to send its request headers is dropped', ...duration(100, 600_000),
  },
  maxPendingConnections: {
    flag: '--max-pending-connections', env: ['HUBBUB_MAX_PENDING_CONNECTIONS'], default: 0,
    doc: 'Node: connections still sending their request head (0 = the limit, from 64 to 1024); over it the oldest (1 s or more) goes for a newcomer, fresh ones may reach 4× in a burst', ...integer(0, MAX_CONNECTIONS),
  },
  maxBackpressure: {
    flag: '--max-backpressure', env: ['HUBBUB_MAX_BACKPRESSURE'], default: 1024 * 1024,
    doc: 'bytes queued for a socket before it is a slow consumer (0 = no limit)', ...bytesOrOff(1024, 1024 ** 3),
  },
  slowConsumer: {
    flag: '--slow-consumer', env: ['HUBBUB_SLOW_CONSUMER'], default: 'close',
    doc: 'slow consumer policy: close (1013) or drop messages (counted)', ...oneOf(['close', 'drop'] as const),
  },
  backplane: {
    flag: '--backplane', env: ['HUBBUB_BACKPLANE'], default: '',
    doc: 'share publishes, positions and history with other nodes through redis://host:port or nats://host:port (JetStream on)',
    accepts: "a redis://, rediss:// or nats:// URL, or '' for none",
    parse: (text) => (text === '' || /^(rediss?|nats):\/\/[^\s]+$/.test(text) ? text : undefined),
    check: (value): value is HubOptions['backplane'] =>
      (typeof value === 'string' && (value === '' || /^(rediss?|nats):\/\/[^\s]+$/.test(value))) ||
      (typeof value === 'object' && value !== null && typeof (value as Backplane).publish === 'function' && typeof (value as Backplane).start === 'function'),
  },
  clusterLimit: {
    flag: '--cluster-limit', env: ['HUBBUB_CLUSTER_LIMIT'], default: '',
    doc: 'share --max-connections across every node through redis://host:port',
    accepts: "a redis:// or rediss:// URL, or '' for none",
    parse: (text) => (text === '' || /^rediss?:\/\/[^\s]+$/.test(text) ? text : undefined),
    check: (value): value is string => typeof value === 'string' && (value === '' || /^rediss?:\/\/[^\s]+$/.test(value)),
  },
  clusterName: {
    flag: '--cluster-name', env: ['HUBBUB_CLUSTER_NAME'], default: 'hubbub', doc: 'nodes with the same name share one limit',
    ...matching(/^[\w.-]{1,64}$/, 'letters, digits, -, _, . (1 to 64)'),
  },
  leaseTime: {
    flag: '--lease-time', env: ['HUBBUB_LEASE_TIME'], default: 10_000,
    doc: "a node's slots survive this long in Redis without renewal", ...duration(300, 600_000),
  },
  slotBlock: { flag: '--slot-block', env: ['HUBBUB_SLOT_BLOCK'], default: 16, doc: 'slots a node takes from Redis at a time', ...integer(1, 10_000) },
  workers: {
    flag: '--workers', env: ['HUBBUB_WORKERS'], default: 1,
    doc: "Node: worker processes on one port with one shared connection limit ('auto' = one per core)",
    accepts: "'auto' or an integer from 1 to 64",
    parse: (text) => (text.trim() === 'auto' ? 0 : integer(1, 64).parse(text)),
    check: (value): value is number => typeof value === 'number' && (value === 0 || inRange(value, 1, 64) !== undefined),
  },
  adminPort: {
    flag: '--admin-port', env: ['HUBBUB_ADMIN_PORT'], default: -1,
    doc: "a separate listener for /stats and /metrics ('off' = on the public listener)",
    accepts: "'off' or an integer from 0 to 65535 (0 = any free port)",
    parse: (text) => (text.trim() === 'off' ? -1 : integer(0, 65535).parse(text)),
    check: (value): value is number => value === -1 || integer(0, 65535).check(value),
  },
  adminHost: { flag: '--admin-host', env: ['HUBBUB_ADMIN_HOST'], default: '127.0.0.1', doc: 'address the admin listener binds', ...matching(HOST, 'an IP address or host name') },
  tlsCert: { flag: '--tls-cert', env: ['HUBBUB_TLS_CERT'], default: '', doc: 'PEM certificate (chain) file: serve https:// and wss:// (with --tls-key)', ...path() },
  tlsKey: { flag: '--tls-key', env: ['HUBBUB_TLS_KEY'], default: '', doc: 'PEM private key file of --tls-cert', ...path() },
  adminToken: {
    flag: '--admin-token', env: ['HUBBUB_ADMIN_TOKEN'], default: '', doc: 'Bearer token that /stats and /metrics require (empty = none: on the public listener they then answer local clients only)',
    ...matching(ADMIN_TOKEN, '16 to 512 characters of A-Z a-z 0-9 . _ ~ + / - (an RFC 6750 token)', true),
  },
  apiKeys: {
    flag: '--api-key', env: ['HUBBUB_API_KEY'], default: [],
    doc: 'keys of the server API at /api/* (comma-separated, for rotation; 16–512 characters of A-Z a-z 0-9 . _ ~ + / -); none = no API',
    ...secretList(ADMIN_TOKEN, '16 to 512 characters of A-Z a-z 0-9 . _ ~ + / - (RFC 6750 tokens), no two alike'),
  },
  demo: {
    flag: '--demo', env: ['HUBBUB_DEMO'], default: 'auto',
    doc: "the demo page at /: on, off, or auto (on with --handler pubsub)", ...oneOf(['auto', 'on', 'off'] as const),
  },
  serveClient: {
    flag: '--serve-client', env: ['HUBBUB_SERVE_CLIENT'], default: true,
    doc: 'serve the hubbub client as one ES module at /client.js (the demo page loads it)', ...boolean(),
  },
  logLevel: { flag: '--log-level', env: ['HUBBUB_LOG_LEVEL'], default: 'info', doc: 'lowest level logged', ...oneOf(logLevels) },
  handler: {
    flag: '--handler', env: ['HUBBUB_HANDLER'], default: 'echo',
    doc: "'echo', 'pubsub', or a path to an ES module whose default export is a handler (or a function (hub) => handler)",
    accepts: "'echo', 'pubsub' or a module path",
    parse: (text) => (text.length > 0 ? text : undefined),
    check: (value): value is HubOptions['handler'] =>
      (typeof value === 'string' && value.length > 0) || typeof value === 'function' || (typeof value === 'object' && value !== null),
  },
};

const optionKeys = Object.keys(optionSpecs) as (keyof HubOptions)[];

/** A file path, or '' for none. */
function path() {
  return {
    accepts: "a file path, or '' for none",
    parse: (text: string) => text,
    check: (value: unknown): value is string => typeof value === 'string',
  };
}

/**
 * A certificate without its key (or a key without its certificate) cannot serve TLS, and serving
 * plain HTTP instead would silently drop what the operator asked for. `name` says how the missing
 * one is called where it came from (a flag, or an option field).
 */
function checkTlsPair(options: Partial<HubOptions>, name: (key: 'tlsCert' | 'tlsKey') => string): void {
  const cert = Boolean(options.tlsCert);
  const key = Boolean(options.tlsKey);
  if (cert === key) return;
  const [given, missing] = cert ? (['tlsCert', 'tlsKey'] as const) : (['tlsKey', 'tlsCert'] as const);
  throw new HubError('ERR_INVALID_OPTION', `${name(missing)} is missing: ${name(given)} needs it (TLS takes a certificate and its key, both or neither)`);
}

const flagAndEnv = (key: 'tlsCert' | 'tlsKey') => `${optionSpecs[key].flag} (${optionSpecs[key].env.join(', ')})`;

function invalid(name: string, accepts: string, got: unknown): HubError {
  const shown = typeof got === 'string' ? JSON.stringify(got) : String(got);
  return new HubError('ERR_INVALID_OPTION', `${name} must be ${accepts} (got ${shown})`);
}

/** Validates options given as an object (library use). Unknown keys are errors: a typo must not pass silently. */
export function resolveOptions(input: Partial<HubOptions> = {}): HubOptions {
  if (typeof input !== 'object' || input === null) throw new HubError('ERR_INVALID_OPTION', 'options must be an object');
  for (const key of Object.keys(input)) {
    if (!(key in optionSpecs)) throw new HubError('ERR_INVALID_OPTION', `unknown option ${JSON.stringify(key)}; known options: ${optionKeys.join(', ')}`);
  }
  const resolved = {} as Record<keyof HubOptions, unknown>;
  for (const key of optionKeys) {
    const spec = optionSpecs[key] as OptionSpec<typeof key>;
    const value = (input as Record<string, unknown>)[key];
    if (value === undefined) resolved[key] = spec.default;
    else if (spec.check(value)) resolved[key] = value;
    else throw invalid(`option ${key}`, spec.accepts, value);
  }
  checkTogether(resolved as HubOptions);
  checkTlsPair(resolved as HubOptions, (key) => `option ${key}`);
  return resolved as HubOptions;
}

/** Options that only make sense together (or apart). */
function checkTogether(options: HubOptions): void {
  const { jwtSecret, jwksUrl } = options;
  if (jwtSecret !== '' && jwksUrl !== '') {
    throw new HubError('ERR_INVALID_OPTION', '--jwt-secret (jwtSecret) and --jwks-url (jwksUrl) are two ways to verify tokens: give one of them');
  }
  if (jwtSecret === '' && jwksUrl === '') {
    for (const [key, flag] of [['jwtCookie', '--jwt-cookie'], ['jwtIssuer', '--jwt-issuer'], ['jwtAudience', '--jwt-audience']] as const) {
      const value = options[key];
      if (value.length > 0) throw new HubError('ERR_INVALID_OPTION', `${flag} (${key}) needs --jwt-secret or --jwks-url: without either no token is verified`);
    }
  }
}

export type CommandLine =
  | { kind: 'serve'; options: Partial<HubOptions> }
  | { kind: 'help'; text: string }
  | { kind: 'version' };

/**
 * Reads flags (`--max-connections 5` or `--max-connections=5`) and the environment
 * (`HUBBUB_MAX_CONNECTIONS=5`, `PORT`). Flags win over the environment. Throws a HubError
 * naming the flag or variable on any bad value or unknown flag.
 */
/**
 * `HUBBUB_*` variables that are not options but are read by hubbub's own parts: a Node cluster
 * worker's mark, workerd's per-room objects, and the workerd dev launcher's bundle cache.
 */
export const nonOptionVariables: readonly string[] = ['HUBBUB_CLUSTER_WORKER', 'HUBBUB_ROOMS', 'HUBBUB_WORKERD_CACHE'];

export function parseCommandLine(argv: readonly string[], env: Readonly<Record<string, string | undefined>>): CommandLine {
  const options: Partial<Record<keyof HubOptions, unknown>> = {};
  // A misspelt variable must not pass silently, as a misspelt flag does not.
  const known = new Set([...optionKeys.flatMap((key) => optionSpecs[key].env), ...nonOptionVariables]);
  for (const name of Object.keys(env)) {
    if (!name.startsWith('HUBBUB_') || known.has(name)) continue;
    throw new HubError('ERR_INVALID_OPTION', `unknown environment variable ${name}${didYouMean(name, [...known])} (see --help)`);
  }
  for (const key of optionKeys) {
    const spec = optionSpecs[key] as OptionSpec<typeof key>;
    for (const name of spec.env) {
      const text = env[name];
      if (text === undefined || text === '') continue;
      const value = spec.parse(text);
      if (value === undefined) throw invalid(`environment variable ${name}`, spec.accepts, text);
      options[key] = value;
      break;
    }
  }
  const byFlag = new Map(optionKeys.map((key) => [optionSpecs[key].flag, key]));
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return { kind: 'help', text: helpText() };
    if (arg === '--version' || arg === '-v') return { kind: 'version' };
    if (i === 0 && arg === 'serve') continue;
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const key = byFlag.get(flag);
    if (!key) throw new HubError('ERR_INVALID_OPTION', `unknown ${flag.startsWith('-') ? 'flag' : 'argument'} ${JSON.stringify(flag)} (see --help)`);
    const spec = optionSpecs[key] as OptionSpec<typeof key>;
    let text: string | undefined;
    if (eq > 0) text = arg.slice(eq + 1);
    else {
      text = argv[i + 1];
      i++;
    }
    if (text === undefined) throw new HubError('ERR_INVALID_OPTION', `${flag} needs a value: ${spec.accepts}`);
    const value = spec.parse(text);
    if (value === undefined) throw invalid(flag, spec.accepts, text);
    options[key] = value;
  }
  checkTlsPair(options as Partial<HubOptions>, flagAndEnv);
  return { kind: 'serve', options: options as Partial<HubOptions> };
}

export function helpText(): string {
  const rows = optionKeys.map((key) => {
    const spec = optionSpecs[key];
    return `  ${`${spec.flag} <value>`.padEnd(28)} ${spec.doc}\n  ${''.padEnd(28)} ${spec.accepts}; default ${JSON.stringify(spec.default)}; env ${spec.env.join(', ')}`;
  });
  return [
    'Usage: hubbub [serve] [flags]',
    '',
    'Serves a WebSocket hub on Hono. Every flag can also be set by its environment variable.',
    '',
    ...rows,
    '  --help                       show this text',
    '  --version                    print the version',
    '',
  ].join('\n');
}
