// What every runtime adapter's upgrade shares: the RFC 6455 §4.2.1 checks of the request (so that
// runtimes whose own WebSocket layer is lax, like Deno's, answer like `ws` does) and Hono's upgrade
// helper typed with hubbub's events. Runtime-free: web-standard Request and Response.
import type { Context } from 'hono';
import { defineWebSocketHelper, type UpgradeWebSocket } from 'hono/ws';
import type { HubEvents } from './contracts.ts';

const KEY = /^[+/0-9A-Za-z]{22}==$/;

function hasToken(header: string | null, token: string): boolean {
  if (!header) return false;
  // The usual header is the token alone ("websocket", "Upgrade"): no split for it.
  if (header.length === token.length) return header.toLowerCase() === token;
  return header.split(',').some((part) => part.trim().toLowerCase() === token);
}

/** Whether the request asks for a WebSocket upgrade at all (else: 426). */
export function wantsWebSocket(upgradeHeader: string | null | undefined): boolean {
  return hasToken(upgradeHeader ?? null, 'websocket');
}

/** A plain HTTP answer for a request that cannot be upgraded, or undefined when the handshake is valid. */
export function checkHandshake(method: string, headers: Headers): Response | undefined {
  if (method !== 'GET') return refuse(405, 'WebSocket upgrades must use GET', { Allow: 'GET' });
  if (!wantsWebSocket(headers.get('upgrade'))) return upgradeRequired();
  if (!hasToken(headers.get('connection'), 'upgrade')) return refuse(400, 'Missing or invalid Connection header (must include "Upgrade")');
  const version = headers.get('sec-websocket-version');
  if (version === null) return refuse(400, 'Missing Sec-WebSocket-Version header');
  if (version.trim() !== '13') return refuse(426, 'Unsupported WebSocket version (only 13)', { 'Sec-WebSocket-Version': '13' });
  const key = headers.get('sec-websocket-key');
  if (key === null || !KEY.test(key.trim())) return refuse(400, 'Missing or invalid Sec-WebSocket-Key header');
  return undefined;
}

/** 426 for a plain request to the WebSocket endpoint. */
export function upgradeRequired(): Response {
  return refuse(426, 'Upgrade Required: this endpoint speaks WebSocket', { Upgrade: 'websocket', 'Sec-WebSocket-Version': '13' });
}

function refuse(status: number, message: string, headers: Record<string, string> = {}): Response {
  return new Response(`${message}\n`, { status, headers: { 'Content-Type': 'text/plain; charset=utf-8', Connection: 'close', ...headers } });
}

/** What the core decided for an upgrade that the runtime carries out. */
export interface UpgradeOptions {
  /** The subprotocol to answer (one the client offered), or none. */
  readonly protocol?: string | undefined;
}

/**
 * The answer a runtime's upgrade gives the core when the socket will open: a status below 400 is all
 * the core reads, and no runtime sends it (Node's listener completes the handshake, Bun and Deno
 * answer the upgrade themselves). One for every upgrade, made on first use (on Node,
 * @hono/node-server's Response is the global one by then).
 */
export function upgradedAnswer(): Response {
  return (upgraded ??= new Response(null));
}
let upgraded: Response | undefined;

/** A runtime's upgrade: called with a request that passed `checkHandshake`; returns the answer (< 400: a socket will open). */
export type HubUpgrade = (c: Context, events: HubEvents, options?: UpgradeOptions) => Response | Promise<Response>;

/** The subprotocols a request offers, in its order. */
export function offeredProtocols(header: string | null | undefined): string[] {
  if (!header) return [];
  return header.split(',').map((p) => p.trim()).filter((p) => p.length > 0);
}

/**
 * Hono's `defineWebSocketHelper` for hubbub's adapters: the handshake is checked first (a bad one is
 * answered as ws answers it), and the events are the hub's `HubEvents` (Hono types them as its own
 * `WSEvents`; the core always hands over a Connection, which is a HubEvents). Called as
 * `upgradeWebSocket(c, events, options)` (the core's way) it answers synchronously when the runtime
 * does — Hono's helper always wraps the answer in a promise, a microtask per upgrade; as middleware
 * (`upgradeWebSocket((c) => events)`) it is Hono's helper.
 */
export function defineHubWebSocket(upgrade: HubUpgrade): UpgradeWebSocket<unknown, UpgradeOptions, HubEvents> & HubUpgrade {
  const direct: HubUpgrade = (c, events, options) => checkHandshake(c.req.method, c.req.raw.headers) ?? upgrade(c, events, options);
  const middleware = defineWebSocketHelper<unknown, UpgradeOptions>((c, events, options) => direct(c, events as unknown as HubEvents, options));
  const helper = (first: unknown, ...rest: unknown[]) =>
    typeof first === 'function' ? (middleware as (...args: unknown[]) => unknown)(first, ...rest) : direct(first as Context, rest[0] as HubEvents, rest[1] as UpgradeOptions | undefined);
  return helper as unknown as UpgradeWebSocket<unknown, UpgradeOptions, HubEvents> & HubUpgrade;
}
