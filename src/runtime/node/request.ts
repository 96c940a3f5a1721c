// The web Request the Hono app sees for an upgrade on Node, without building one. A fetch Request
// and its Headers cost more than the rest of admission together (undici validates every header
// again, and each Request makes its own AbortController): measured with callgrind, over a third of
// the instructions hubbub spent on a handshake above raw `ws`. What admission reads of it — the URL,
// the method and a few headers — is answered from Node's IncomingMessage directly; anything else a
// hook asks for (the body, `signal`, `clone()`…) builds the real Request once, from the same data.
// `instanceof Request` holds.
import type { IncomingMessage } from 'node:http';

const INCOMING = Symbol('hubbub.incoming');
const URL_ = Symbol('hubbub.url');
const HEADERS = Symbol('hubbub.headers');
const REAL = Symbol('hubbub.request');

type Upgrade = Request & { [INCOMING]: IncomingMessage; [URL_]: string; [HEADERS]: Headers; [REAL]: Request | undefined };

/**
 * The headers whose repeats Node's `IncomingMessage.headers` keeps apart (set-cookie), joins with
 * "; " (cookie) or drops (the rest: node:_http_incoming's matchKnownFields).
 */
const NODE_JOINS_OTHERWISE = new Set([
  'set-cookie', 'cookie', 'content-type', 'content-length', 'user-agent', 'referer', 'host', 'authorization', 'proxy-authorization',
  'if-modified-since', 'if-unmodified-since', 'from', 'location', 'max-forwards', 'retry-after', 'etag', 'last-modified', 'server', 'age', 'expires',
]);

/**
 * Request headers read from `rawHeaders` (names compared without case, repeated headers joined
 * with ", " as fetch's Headers does). Read-only, as a server's incoming request headers are.
 */
class IncomingHeaders implements Headers {
  readonly #incoming: IncomingMessage;
  constructor(incoming: IncomingMessage) {
    this.#incoming = incoming;
  }
  get(name: string): string | null {
    const wanted = name.toLowerCase();
    // Node's own header object (which ws reads too) joins repeats with ", " as fetch does, except
    // for the names below; those are read from the raw headers.
    if (!NODE_JOINS_OTHERWISE.has(wanted)) {
      const value = this.#incoming.headers[wanted];
      return typeof value === 'string' ? value : value === undefined ? null : value.join(', ');
    }
    const raw = this.#incoming.rawHeaders;
    let value: string | null = null;
    for (let i = 0; i < raw.length; i += 2) {
      const key = raw[i]!;
      if (key.length === wanted.length && key.toLowerCase() === wanted) value = value === null ? raw[i + 1]! : `${value}, ${raw[i + 1]!}`;
    }
    return value;
  }
  has(name: string): boolean {
    return this.get(name) !== null;
  }
  getSetCookie(): string[] {
    const raw = this.#incoming.rawHeaders;
    const cookies: string[] = [];
    for (let i = 0; i < raw.length; i += 2) if (raw[i]!.toLowerCase() === 'set-cookie') cookies.push(raw[i + 1]!);
    return cookies;
  }
  forEach(callback: (value: string, key: string, parent: Headers) => void, thisArg?: unknown): void {
    for (const [key, value] of this.entries()) callback.call(thisArg, value, key, this);
  }
  /** In fetch's order: names lowercased and sorted, repeated ones joined (set-cookie kept apart). */
  *entries(): HeadersIterator<[string, string]> {
    const names = [...new Set(this.#lowerNames())].sort();
    for (const name of names) {
      if (name === 'set-cookie') for (const cookie of this.getSetCookie()) yield [name, cookie];
      else yield [name, this.get(name)!];
    }
  }
  *keys(): HeadersIterator<string> {
    for (const [key] of this.entries()) yield key;
  }
  *values(): HeadersIterator<string> {
    for (const [, value] of this.entries()) yield value;
  }
  [Symbol.iterator](): HeadersIterator<[string, string]> {
    return this.entries();
  }
  append(): void {
    throw new TypeError('the headers of an incoming request are read-only');
  }
  set(): void {
    throw new TypeError('the headers of an incoming request are read-only');
  }
  delete(): void {
    throw new TypeError('the headers of an incoming request are read-only');
  }
  #lowerNames(): string[] {
    const names: string[] = [];
    const raw = this.#incoming.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) names.push(raw[i]!.toLowerCase());
    return names;
  }
}
Object.setPrototypeOf(IncomingHeaders.prototype, Headers.prototype);

/** The real Request, built on first need from the incoming message (a GET: no body). */
function real(request: Upgrade): Request {
  if (request[REAL]) return request[REAL];
  const headers = new Headers();
  const raw = request[INCOMING].rawHeaders;
  for (let i = 0; i < raw.length; i += 2) headers.append(raw[i]!, raw[i + 1]!);
  return (request[REAL] = new Request(request.url, { method: request.method, headers }));
}

/**
 * A prototype over the global Request's, whose other members build the real Request. Made on the
 * first upgrade: @hono/node-server puts its own Request subclass in the global scope when it
 * starts serving, and `instanceof Request` must hold for that one.
 */
function upgradePrototype(base: typeof Request): object {
  const prototype: object = Object.create(base.prototype);
  for (let proto = base.prototype; proto && proto !== Object.prototype; proto = Object.getPrototypeOf(proto)) {
    for (const key of Object.getOwnPropertyNames(proto)) {
      if (key === 'constructor' || key === 'url' || key === 'method' || key === 'headers' || Object.hasOwn(prototype, key)) continue;
      const descriptor = Object.getOwnPropertyDescriptor(proto, key)!;
      if (typeof descriptor.value === 'function') {
        Object.defineProperty(prototype, key, { value(this: Upgrade, ...args: unknown[]) { return (real(this) as any)[key](...args); } });
      } else if (descriptor.get) {
        Object.defineProperty(prototype, key, { get(this: Upgrade) { return (real(this) as any)[key]; } });
      }
    }
  }
  Object.defineProperty(prototype, 'method', { get(this: Upgrade) { return this[INCOMING].method ?? 'GET'; } });
  Object.defineProperty(prototype, 'url', { get(this: Upgrade) { return this[URL_]; } });
  Object.defineProperty(prototype, 'headers', { get(this: Upgrade) { return this[HEADERS]; } });
  return prototype;
}
let prototype: { base: typeof Request; prototype: object } | undefined;

/** A host the URL can carry: a name, IPv4 or [IPv6], and a port (RFC 3986 reg-name characters only). */
const HOST = /^(?:[A-Za-z0-9._~!$&'()*+,;=-]*|\[[0-9A-Fa-f:.]+\])(?::\d*)?$/;

/** The upgrade request as the Hono app sees it; undefined if its Host header cannot make a URL. */
export function upgradeRequest(incoming: IncomingMessage): Request | undefined {
  const host = incoming.headers.host ?? 'localhost';
  const path = incoming.url ?? '/';
  if (!HOST.test(host) || path[0] !== '/') return undefined;
  const scheme = (incoming.socket as { encrypted?: boolean } | null)?.encrypted ? 'https' : 'http';
  if (prototype?.base !== globalThis.Request) prototype = { base: globalThis.Request, prototype: upgradePrototype(globalThis.Request) };
  const request = Object.create(prototype.prototype) as Upgrade;
  request[INCOMING] = incoming;
  request[URL_] = `${scheme}://${host}${path}`;
  request[HEADERS] = new IncomingHeaders(incoming);
  request[REAL] = undefined;
  return request;
}
