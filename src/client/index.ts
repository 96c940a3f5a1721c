// The hubbub client (`hubbub/client`): one WebSocket to a hubbub server speaking the pubsub protocol
// (src/handlers/pubsub.ts), that comes back by itself and picks up where it left off. Plain ESM, no
// dependency, no Node API: the same file runs in browsers, Node (pass `WebSocket` from `ws` on Node
// 20), Deno and Bun.
//
// - Reconnect: full-jitter exponential backoff (a uniform wait in [0, min(max, min·2^attempt)]),
//   reset once a connection stayed up `stableAfter` ms. The close code decides whether to come back
//   (see `reconnects`). A handshake that fails before opening asks `/admission`; a 503 with
//   `Retry-After` makes the next try wait at least that long (plus jitter).
// - Liveness: an application ping every `pingInterval`; no frame at all within `pingTimeout` after
//   it and the socket counts as dead (a half-open TCP connection is otherwise invisible).
// - Resubscribe and recover: after each reconnect every subscription subscribes again with its last
//   `{offset, epoch}`; what it missed arrives in order, duplicates are dropped by offset, and when
//   the server cannot replay (`recovered: false`, or `reset`) the subscription says so.
// - Publish resolves on the server's `published` with the position; rejects on timeout, abort, an
//   error answer, or the loss of the connection it went out on (it may or may not have been
//   published: at most once, never resent). While disconnected it is queued (bounded) or refused.
// - Tokens: `getToken()` before every connect (`?token=`); when the server says the token expires
//   soon (`expiring`), a fresh one from `getToken()` goes out as `refresh`. A close with 4001
//   (token expired) reconnects with a fresh token when there is a `getToken`, else it stops.

/** The part of the WHATWG WebSocket this client uses (browsers, Deno, Bun, `ws`). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: unknown) => void) | null;
  onmessage: ((event: { data: unknown }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type ClientState = 'connecting' | 'connected' | 'disconnected' | 'closed';

export interface Position {
  offset: number;
  epoch: string;
}

export interface MessageMeta {
  topic: string;
  offset: number;
  epoch: string;
  /** The publishing connection's id. */
  from?: string;
  /** True when this message came after a gap (the server dropped some for a slow consumer). */
  gap?: boolean;
}

/** How a (re)subscribe went. */
export interface SubscribedInfo {
  topic: string;
  position: Position;
  /** Present when the subscribe carried a position: true = every missed message follows, in order. */
  recovered?: boolean;
  /** The topic's stream was lost on the server (its history and counter): reload your state. */
  reset?: boolean;
}

export type ClientErrorCode =
  | 'timeout'
  | 'aborted'
  | 'disconnected'
  | 'connection-lost'
  | 'queue-full'
  | 'closed'
  | 'bad-json'
  | 'bad-message'
  | 'unknown-type'
  | 'bad-topic'
  | 'forbidden'
  | 'binary-unsupported'
  | 'subscription-limit'
  | 'topic-limit'
  | 'unavailable'
  | 'bad-token';

export class ClientError extends Error {
  readonly code: ClientErrorCode;
  constructor(code: ClientErrorCode, message: string) {
    super(message);
    this.name = 'ClientError';
    this.code = code;
  }
}

export interface ClientOptions {
  /** The WebSocket constructor. @default globalThis.WebSocket */
  WebSocket?: WebSocketConstructor;
  /**
   * Called before every connect (its token goes in the URL as `?<tokenParam>=`) and when the server
   * says the token expires soon (it is sent as `{"type":"refresh"}`); with it, a close for an
   * expired token (4001) reconnects.
   */
  getToken?: () => string | undefined | Promise<string | undefined>;
  /** @default 'token' */
  tokenParam?: string;
  /** Backoff bounds (ms): the first retry waits up to `min`, each next one up to twice as long, capped at `max`. @default { min: 500, max: 20000 } */
  backoff?: { min?: number; max?: number };
  /** A connection up this long (ms) resets the backoff. @default 10000 */
  stableAfter?: number;
  /** Ms between application pings (0 = none). @default 10000 */
  pingInterval?: number;
  /** Ms without any frame after a ping before the socket counts as dead. @default 5000 */
  pingTimeout?: number;
  /** Ms a connection attempt may take to open before it is abandoned and retried. @default 10000 */
  connectTimeout?: number;
  /** Ms a publish waits for its answer. @default 10000 */
  publishTimeout?: number;
  /** While disconnected, publishes wait in a queue of this many (0 = refused at once). @default 100 */
  maxQueuedPublishes?: number;
  /** Messages a subscription's `for await` may hold unread before it ends with an error. @default 10000 */
  maxBuffered?: number;
  /** Where to ask why a handshake failed. @default the server's /admission, beside the WebSocket path */
  admissionUrl?: string | null;
  /** For `/admission` (Node ≥ 18, Deno, Bun and browsers have one). @default globalThis.fetch */
  fetch?: (url: string, init?: { signal?: AbortSignal }) => Promise<{ status: number; headers: { get(name: string): string | null }; json?(): Promise<unknown> }>;
  /** @default Math.random (tests pass their own) */
  random?: () => number;
}

/** Ms the /admission question after a refused handshake may take before the retry goes on without it. */
const ADMISSION_TIMEOUT = 3000;

/** The server's close code for a connection whose token expired without a fresh one. */
export const TOKEN_EXPIRED = 4001;

/**
 * Whether a close code means "come back later" (true) or "stop" (false). `canRefreshToken`: the
 * client can get a fresh token (it has a `getToken`), so a close for an expired token (4001) comes back.
 */
export function reconnects(code: number, canRefreshToken = false): boolean {
  // 1001 going away / shutdown, 1005 no status, 1006 abnormal (network, killed node, failed
  // handshake), 1011 server error, 1012 restart, 1013 try again later (slow consumer, busy), 1014
  // bad gateway; 3000–3999 an application's "try again"; 4001 token expired, with a way to a fresh
  // one. Everything else — 1000 (the server closed on purpose), 1002/1003/1007/1009 (this client
  // sent something the server will never take), 1008 (policy: rate limit, auth), 4000–4999
  // (4000: kicked; 4001 without getToken) — stops.
  if (code === TOKEN_EXPIRED) return canRefreshToken;
  return code === 1001 || code === 1005 || code === 1006 || code === 1011 || code === 1012 || code === 1013 || code === 1014 || (code >= 3000 && code < 4000);
}

/** Full jitter: a uniform wait in [0, min(max, min·2^attempt)] ms. */
export function backoffDelay(attempt: number, min: number, max: number, random: () => number = Math.random): number {
  return Math.floor(random() * Math.min(max, min * 2 ** Math.min(attempt, 30)));
}

type Listener<T> = (value: T) => void;
interface ClientEvents {
  state: ClientState;
  /** The server closed for good (a code `reconnects` says to stop on), or `close()` was called. */
  closed: { code: number; reason: string };
  /** Something the application may want to log: an error answer with no publish to reject, a throwing callback. */
  error: Error;
  /** The next attempt is scheduled: after a close (`code`), or after a refused handshake (`refused`, when /admission said why). */
  reconnecting: { attempt: number; delay: number; code?: number; refused?: Refusal };
}

/** Why the server refused a handshake, as its /admission answered (503 full or draining, 429). */
export interface Refusal {
  status: number;
  /** Ms the server asked to wait (its Retry-After). */
  retryAfter?: number;
  /** /admission's JSON: `{ admit, reason: 'capacity' | 'draining' | …, live, limit }`. */
  body?: { reason?: string; live?: number; limit?: number; [key: string]: unknown };
}

export interface Subscription extends AsyncIterable<{ data: unknown; meta: MessageMeta }> {
  readonly topic: string;
  /** The last position seen (undefined before the first answer). */
  readonly position: Position | undefined;
  /** Every (re)subscribe answer: `recovered`, `reset`. */
  on(event: 'subscribed', listener: Listener<SubscribedInfo>): () => void;
  /** The server refused this subscription for good (forbidden, a cap): it is over. */
  on(event: 'error', listener: Listener<ClientError>): () => void;
  unsubscribe(): void;
}

interface PendingPublish {
  id: number;
  topic: string;
  data: unknown;
  resolve(value: { offset: number; epoch: string; delivered: number }): void;
  reject(error: ClientError): void;
  timer: ReturnType<typeof setTimeout>;
  sent: boolean;
  cleanup(): void;
}

const OPEN = 1;

class Sub implements Subscription {
  readonly topic: string;
  position: Position | undefined;
  active = true;
  /** Subscribed on the current connection (its answer came). */
  confirmed = false;
  readonly #client: HubbubClient;
  readonly #onMessage: ((data: unknown, meta: MessageMeta) => void) | undefined;
  readonly #listeners = { subscribed: new Set<Listener<SubscribedInfo>>(), error: new Set<Listener<ClientError>>() };
  readonly #buffer: { data: unknown; meta: MessageMeta }[] = [];
  #waiting: ((result: IteratorResult<{ data: unknown; meta: MessageMeta }>) => void) | undefined;
  #failure: Error | undefined;
  #iterated = false;
  readonly #maxBuffered: number;

  constructor(client: HubbubClient, topic: string, onMessage: ((data: unknown, meta: MessageMeta) => void) | undefined, maxBuffered: number) {
    this.#client = client;
    this.topic = topic;
    this.#onMessage = onMessage;
    this.#maxBuffered = maxBuffered;
  }

  on(event: 'subscribed' | 'error', listener: Listener<never>): () => void {
    const set = this.#listeners[event] as Set<Listener<never>>;
    set.add(listener);
    return () => set.delete(listener);
  }

  emit<E extends 'subscribed' | 'error'>(event: E, value: E extends 'subscribed' ? SubscribedInfo : ClientError): void {
    for (const listener of this.#listeners[event] as Set<Listener<typeof value>>) this.#client.safely(() => listener(value));
  }

  deliver(data: unknown, meta: MessageMeta): void {
    if (this.#onMessage) this.#client.safely(() => this.#onMessage!(data, meta));
    if (!this.#iterated) return;
    const item = { data, meta };
    if (this.#waiting) {
      const wake = this.#waiting;
      this.#waiting = undefined;
      wake({ value: item, done: false });
    } else if (this.#buffer.length >= this.#maxBuffered) {
      this.end(new ClientError('queue-full', `subscription ${this.topic}: more than ${this.#maxBuffered} messages unread`));
    } else this.#buffer.push(item);
  }

  /** Ends the iteration (with an error to throw, or done). */
  end(failure?: Error): void {
    if (failure && this.active) this.#client.drop(this);
    this.active = false;
    this.#failure ??= failure;
    if (this.#waiting) {
      const wake = this.#waiting;
      this.#waiting = undefined;
      wake({ value: undefined, done: true });
    }
  }

  unsubscribe(): void {
    if (!this.active) return;
    this.#client.drop(this);
    this.end();
  }

  [Symbol.asyncIterator](): AsyncIterator<{ data: unknown; meta: MessageMeta }> {
    this.#iterated = true;
    return {
      next: () => {
        const item = this.#buffer.shift();
        if (item) return Promise.resolve({ value: item, done: false });
        if (this.#failure) return Promise.reject(this.#failure);
        if (!this.active) return Promise.resolve({ value: undefined, done: true });
        return new Promise((resolve) => (this.#waiting = resolve)).then((result) => {
          const r = result as IteratorResult<{ data: unknown; meta: MessageMeta }>;
          if (r.done && this.#failure) throw this.#failure;
          return r;
        });
      },
      return: () => {
        this.unsubscribe();
        return Promise.resolve({ value: undefined, done: true });
      },
    };
  }
}

export class HubbubClient {
  readonly #urls: readonly string[];
  readonly #options: Required<Omit<ClientOptions, 'getToken' | 'backoff' | 'admissionUrl' | 'fetch'>> & Pick<ClientOptions, 'getToken' | 'fetch'> & { min: number; max: number; admissionUrl: string | null | undefined };
  #state: ClientState = 'disconnected';
  #ws: WebSocketLike | undefined;
  #attempt = 0;
  #urlIndex = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #pingTimer: ReturnType<typeof setInterval> | undefined;
  #deadTimer: ReturnType<typeof setTimeout> | undefined;
  #stableTimer: ReturnType<typeof setTimeout> | undefined;
  #nextId = 1;
  readonly #subs = new Map<string, Sub>();
  readonly #pending = new Map<number, PendingPublish>();
  readonly #queue: PendingPublish[] = [];
  readonly #listeners: { [E in keyof ClientEvents]: Set<Listener<ClientEvents[E]>> } = { state: new Set(), closed: new Set(), error: new Set(), reconnecting: new Set() };
  /** Counters, for tests and dashboards. */
  readonly stats = { connects: 0, reconnects: 0, duplicatesDropped: 0, gaps: 0, pingTimeouts: 0, tokenRefreshes: 0 };

  constructor(url: string | readonly string[], options: ClientOptions = {}) {
    this.#urls = typeof url === 'string' ? [url] : [...url];
    if (this.#urls.length === 0) throw new TypeError('createClient: give at least one URL');
    const WebSocketCtor = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WebSocketCtor) throw new TypeError('createClient: no WebSocket here (on Node 20, pass { WebSocket } from the ws package)');
    const positive = (name: string, value: number | undefined, fallback: number) => {
      const v = value ?? fallback;
      if (!Number.isFinite(v) || v < 0) throw new RangeError(`createClient: ${name} must be a number ≥ 0 (got ${String(value)})`);
      return v;
    };
    const min = positive('backoff.min', options.backoff?.min, 500);
    const max = positive('backoff.max', options.backoff?.max, 20_000);
    if (max < min) throw new RangeError(`createClient: backoff.max (${max}) is below backoff.min (${min})`);
    this.#options = {
      WebSocket: WebSocketCtor,
      getToken: options.getToken,
      tokenParam: options.tokenParam ?? 'token',
      min,
      max,
      stableAfter: positive('stableAfter', options.stableAfter, 10_000),
      pingInterval: positive('pingInterval', options.pingInterval, 10_000),
      pingTimeout: positive('pingTimeout', options.pingTimeout, 5_000),
      connectTimeout: positive('connectTimeout', options.connectTimeout, 10_000),
      publishTimeout: positive('publishTimeout', options.publishTimeout, 10_000),
      maxQueuedPublishes: positive('maxQueuedPublishes', options.maxQueuedPublishes, 100),
      maxBuffered: positive('maxBuffered', options.maxBuffered, 10_000),
      admissionUrl: options.admissionUrl,
      fetch: options.fetch ?? (globalThis as { fetch?: ClientOptions['fetch'] }).fetch?.bind(globalThis),
      random: options.random ?? Math.random,
    };
    this.#connect();
  }

  get state(): ClientState {
    return this.#state;
  }

  on<E extends keyof ClientEvents>(event: E, listener: Listener<ClientEvents[E]>): () => void {
    const set = this.#listeners[event] as Set<Listener<ClientEvents[E]>>;
    set.add(listener);
    return () => set.delete(listener);
  }

  #emit<E extends keyof ClientEvents>(event: E, value: ClientEvents[E]): void {
    for (const listener of this.#listeners[event] as Set<Listener<ClientEvents[E]>>) {
      try {
        listener(value);
      } catch (error) {
        if (event !== 'error') this.#emit('error', error as Error);
      }
    }
  }

  /** Runs an application callback; a throw is reported as an `error` event, never breaks the client. */
  safely(callback: () => void): void {
    try {
      callback();
    } catch (error) {
      this.#emit('error', error instanceof Error ? error : new Error(String(error)));
    }
  }

  #setState(state: ClientState): void {
    if (state === this.#state) return;
    this.#state = state;
    this.#emit('state', state);
  }

  /** Subscribes (again after every reconnect, from the last position seen). */
  subscribe(topic: string, onMessage?: (data: unknown, meta: MessageMeta) => void, options: { signal?: AbortSignal; since?: Position } = {}): Subscription {
    if (this.#state === 'closed') throw new ClientError('closed', 'the client is closed');
    if (this.#subs.has(topic)) throw new Error(`already subscribed to ${topic}: unsubscribe first, or add a listener to that subscription`);
    const sub = new Sub(this, topic, onMessage, this.#options.maxBuffered);
    sub.position = options.since;
    this.#subs.set(topic, sub);
    if (options.signal) {
      if (options.signal.aborted) sub.unsubscribe();
      else options.signal.addEventListener('abort', () => sub.unsubscribe(), { once: true });
    }
    if (sub.active) this.#sendSubscribe(sub);
    return sub;
  }

  /** Called by a subscription that ends. */
  drop(sub: Sub): void {
    if (this.#subs.get(sub.topic) !== sub) return;
    this.#subs.delete(sub.topic);
    if (sub.confirmed) this.#send({ type: 'unsubscribe', topic: sub.topic });
  }

  #sendSubscribe(sub: Sub): void {
    sub.confirmed = false;
    this.#send({ type: 'subscribe', topic: sub.topic, ...(sub.position ? { since: sub.position } : {}) });
  }

  publish(topic: string, data: unknown, options: { signal?: AbortSignal; timeout?: number } = {}): Promise<{ offset: number; epoch: string; delivered: number }> {
    if (this.#state === 'closed') return Promise.reject(new ClientError('closed', 'the client is closed'));
    if (options.signal?.aborted) return Promise.reject(new ClientError('aborted', 'publish aborted'));
    const connected = this.#state === 'connected';
    if (!connected && this.#queue.length >= this.#options.maxQueuedPublishes) {
      return Promise.reject(new ClientError(this.#options.maxQueuedPublishes === 0 ? 'disconnected' : 'queue-full', this.#options.maxQueuedPublishes === 0 ? 'not connected' : `not connected, and ${this.#queue.length} publishes already wait`));
    }
    return new Promise((resolve, reject) => {
      const id = this.#nextId++;
      const onAbort = () => fail(new ClientError('aborted', 'publish aborted'));
      const entry: PendingPublish = {
        id,
        topic,
        data,
        resolve: (value) => {
          entry.cleanup();
          resolve(value);
        },
        reject: (error) => {
          entry.cleanup();
          reject(error);
        },
        timer: setTimeout(() => fail(new ClientError('timeout', `no answer to the publish on ${topic} within ${timeout} ms`)), (options.timeout ?? this.#options.publishTimeout)),
        sent: false,
        cleanup: () => {
          clearTimeout(entry.timer);
          options.signal?.removeEventListener('abort', onAbort);
          this.#pending.delete(id);
          const queued = this.#queue.indexOf(entry);
          if (queued >= 0) this.#queue.splice(queued, 1);
        },
      };
      const timeout = options.timeout ?? this.#options.publishTimeout;
      const fail = (error: ClientError) => entry.reject(error);
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (connected) this.#sendPublish(entry);
      else this.#queue.push(entry);
    });
  }

  #sendPublish(entry: PendingPublish): void {
    entry.sent = true;
    this.#pending.set(entry.id, entry);
    this.#send({ type: 'publish', topic: entry.topic, data: entry.data, id: entry.id });
  }

  /** Closes for good: subscriptions end, publishes waiting are rejected. */
  close(): void {
    if (this.#state === 'closed') return;
    this.#teardown(new ClientError('closed', 'the client was closed'));
    this.#ws?.close(1000, 'client closed');
    this.#ws = undefined;
    this.#finish(1000, 'client closed');
  }

  #finish(code: number, reason: string): void {
    clearTimeout(this.#retryTimer);
    for (const sub of [...this.#subs.values()]) sub.end();
    this.#subs.clear();
    for (const entry of [...this.#queue]) entry.reject(new ClientError('closed', 'the client closed'));
    this.#setState('closed');
    this.#emit('closed', { code, reason });
  }

  #send(message: object): void {
    const ws = this.#ws;
    if (ws && ws.readyState === OPEN && this.#state === 'connected') ws.send(JSON.stringify(message));
  }

  async #url(): Promise<string> {
    const base = this.#urls[this.#urlIndex % this.#urls.length]!;
    const token = await this.#options.getToken?.();
    if (token === undefined) return base;
    const url = new URL(base);
    url.searchParams.set(this.#options.tokenParam, token);
    return url.toString();
  }

  #connect(): void {
    this.#setState('connecting');
    this.#url().then(
      (url) => this.#open(url),
      (error: unknown) => {
        this.#emit('error', error instanceof Error ? error : new Error(String(error)));
        this.#retry(false, undefined);
      },
    );
  }

  #open(url: string): void {
    if (this.#state === 'closed') return;
    let opened = false;
    let ws: WebSocketLike;
    try {
      ws = new this.#options.WebSocket(url);
    } catch (error) {
      this.#emit('error', error instanceof Error ? error : new Error(String(error)));
      this.#retry(false, undefined);
      return;
    }
    this.#ws = ws;
    // A handshake that never finishes (a frozen server, a black hole) is abandoned and retried.
    const abandon = setTimeout(() => {
      if (this.#ws !== ws || opened) return;
      ws.onclose = null;
      try {
        ws.close();
      } catch {}
      this.#lost(1006, 'connect timeout', false);
    }, this.#options.connectTimeout);
    ws.onopen = () => {
      clearTimeout(abandon);
      if (this.#ws !== ws) return;
      opened = true;
      this.stats.connects++;
      if (this.stats.connects > 1) this.stats.reconnects++;
      this.#setState('connected');
      this.#stableTimer = setTimeout(() => (this.#attempt = 0), this.#options.stableAfter);
      this.#startPing(ws);
      for (const sub of this.#subs.values()) this.#sendSubscribe(sub);
      for (const entry of this.#queue.splice(0)) this.#sendPublish(entry);
    };
    ws.onmessage = (event) => {
      if (this.#ws !== ws) return;
      this.#alive();
      if (typeof event.data === 'string') this.#received(event.data);
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      clearTimeout(abandon);
      if (this.#ws !== ws) return;
      this.#lost(event.code, event.reason, opened);
    };
  }

  /** The socket went away (closed, or declared dead): reconnect, or stop if the code says so. */
  #lost(code: number, reason: string, opened: boolean): void {
    this.#ws = undefined;
    this.#teardown(new ClientError('connection-lost', `the connection closed (${code}) before the answer came; the publish may or may not have happened`));
    if (this.#state === 'closed') return;
    if (opened && !reconnects(code, this.#options.getToken !== undefined)) return this.#finish(code, reason);
    this.#setState('disconnected');
    this.#retry(!opened, code);
  }

  /** What a connection held that ends with it: timers, answers awaited. */
  #teardown(error: ClientError): void {
    clearInterval(this.#pingTimer);
    clearTimeout(this.#deadTimer);
    clearTimeout(this.#stableTimer);
    this.#deadTimer = undefined;
    for (const sub of this.#subs.values()) sub.confirmed = false;
    for (const entry of [...this.#pending.values()]) entry.reject(error);
  }

  #retry(handshakeFailed: boolean, code: number | undefined): void {
    const attempt = this.#attempt++;
    const delay = backoffDelay(attempt, this.#options.min, this.#options.max, this.#options.random);
    this.#urlIndex++;
    const go = (wait: number, refused?: Refusal) => {
      if (this.#state === 'closed') return;
      this.#emit('reconnecting', { attempt: attempt + 1, delay: wait, ...(handshakeFailed ? {} : { code }), ...(refused ? { refused } : {}) });
      this.#retryTimer = setTimeout(() => this.#connect(), wait);
    };
    if (!handshakeFailed) return go(delay);
    // A browser cannot read why a handshake was refused: ask /admission, and honour Retry-After.
    this.#admissionWait().then(
      (refused) => go(refused?.retryAfter === undefined ? delay : refused.retryAfter + delay, refused),
      () => go(delay),
    );
  }

  /** After a refused handshake: what /admission says (a 503 or 429 with its Retry-After and body), or undefined. */
  async #admissionWait(): Promise<Refusal | undefined> {
    const fetcher = this.#options.fetch;
    if (!fetcher || this.#options.admissionUrl === null) return undefined;
    const base = this.#urls[(this.#urlIndex - 1 + this.#urls.length) % this.#urls.length]!;
    const url = this.#options.admissionUrl ?? admissionUrlOf(base);
    // Bounded: a server too busy to answer must not hold the retry forever (it then goes on its backoff).
    const abort = typeof AbortController === 'function' ? new AbortController() : undefined;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => {
        abort?.abort();
        resolve(undefined);
      }, ADMISSION_TIMEOUT);
    });
    try {
      const response = await Promise.race([fetcher(url, abort ? { signal: abort.signal } : undefined), timeout]);
      if (!response || (response.status !== 503 && response.status !== 429)) return undefined;
      const seconds = Number(response.headers.get('retry-after'));
      const body = (await Promise.race([response.json?.().catch(() => undefined), timeout])) as Refusal['body'];
      return {
        status: response.status,
        ...(Number.isFinite(seconds) && seconds > 0 ? { retryAfter: Math.min(seconds, 3600) * 1000 } : {}),
        ...(body && typeof body === 'object' ? { body } : {}),
      };
    } finally {
      clearTimeout(timer);
    }
  }

  #startPing(ws: WebSocketLike): void {
    const { pingInterval, pingTimeout } = this.#options;
    if (pingInterval === 0) return;
    this.#pingTimer = setInterval(() => {
      if (this.#ws !== ws || ws.readyState !== OPEN) return;
      ws.send('{"type":"ping"}');
      this.#deadTimer ??= setTimeout(() => {
        if (this.#ws !== ws) return;
        this.stats.pingTimeouts++;
        // Half-open: do not wait for a close handshake that will never come.
        ws.onclose = null;
        try {
          ws.close(4000, 'no pong');
        } catch {}
        this.#lost(1006, 'no answer to ping', true);
      }, pingTimeout);
    }, pingInterval);
  }

  /** The server said the token expires soon: a fresh one from getToken goes out as `refresh` (on the same socket). */
  #refreshToken(): void {
    const getToken = this.#options.getToken;
    const ws = this.#ws;
    if (!getToken || !ws) return;
    Promise.resolve()
      .then(getToken)
      .then(
        (token) => {
          if (token !== undefined && this.#ws === ws) this.#send({ type: 'refresh', token });
        },
        (error: unknown) => this.#emit('error', error instanceof Error ? error : new Error(String(error))),
      );
  }

  #alive(): void {
    clearTimeout(this.#deadTimer);
    this.#deadTimer = undefined;
  }

  #received(text: string): void {
    let msg: Record<string, unknown>;
    try {
      msg = JSON.parse(text) as Record<string, unknown>;
    } catch {
      return this.#emit('error', new Error(`the server sent something that is not JSON: ${text.slice(0, 80)}`));
    }
    const topic = typeof msg.topic === 'string' ? msg.topic : undefined;
    const sub = topic === undefined ? undefined : this.#subs.get(topic);
    switch (msg.type) {
      case 'message': {
        if (!sub || !sub.active) return;
        const offset = msg.offset as number;
        const position = sub.position;
        if (position && offset <= position.offset) {
          this.stats.duplicatesDropped++;
          return;
        }
        const gap = position !== undefined && offset > position.offset + 1;
        if (gap) this.stats.gaps++;
        const epoch = position?.epoch ?? '';
        sub.position = { offset, epoch };
        const meta: MessageMeta = { topic: topic!, offset, epoch, ...(typeof msg.from === 'string' ? { from: msg.from } : {}), ...(gap ? { gap } : {}) };
        return sub.deliver(msg.data, meta);
      }
      case 'subscribed': {
        if (!sub) return;
        sub.confirmed = true;
        const position = { offset: msg.offset as number, epoch: msg.epoch as string };
        const recovered = msg.recovered as boolean | undefined;
        // Recovered: the missed messages follow and move the position; otherwise start from now.
        if (recovered !== true || !sub.position) sub.position = position;
        const info: SubscribedInfo = { topic: sub.topic, position, ...(recovered !== undefined ? { recovered } : {}), ...(msg.reset ? { reset: true } : {}) };
        return sub.emit('subscribed', info);
      }
      case 'expiring':
        return this.#refreshToken();
      case 'refreshed':
        this.stats.tokenRefreshes++;
        return;
      case 'published': {
        const entry = this.#pending.get(msg.id as number);
        if (entry) entry.resolve({ offset: msg.offset as number, epoch: msg.epoch as string, delivered: msg.delivered as number });
        return;
      }
      case 'error': {
        const code = msg.code as ClientErrorCode;
        const error = new ClientError(code, String(msg.message ?? code));
        const entry = typeof msg.id === 'number' ? this.#pending.get(msg.id) : undefined;
        if (entry) return entry.reject(error);
        if (sub && !sub.confirmed) {
          // The store is away for a moment: subscribe again after a backoff; anything else ends it.
          if (code === 'unavailable') {
            setTimeout(() => sub.active && this.#subs.get(sub.topic) === sub && this.#sendSubscribe(sub), backoffDelay(1, this.#options.min, this.#options.max, this.#options.random));
            return;
          }
          sub.emit('error', error);
          return sub.end(error);
        }
        return this.#emit('error', error);
      }
      default:
        return; // pong, unsubscribed, presence, join/leave
    }
  }
}

/** `ws://host/ws` → `http://host/admission`. */
export function admissionUrlOf(wsUrl: string): string {
  const url = new URL(wsUrl);
  url.protocol = url.protocol === 'wss:' ? 'https:' : 'http:';
  url.pathname = url.pathname.replace(/\/[^/]*$/, '/admission');
  url.search = '';
  return url.toString();
}

export function createClient(url: string | readonly string[], options?: ClientOptions): HubbubClient {
  return new HubbubClient(url, options);
}
