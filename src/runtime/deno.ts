// Deno runtime: Deno.serve serves the app; upgrades go through Deno.upgradeWebSocket behind Hono's
// `upgradeWebSocket` contract. Deno's own WebSocket layer is lax (it upgrades a bad key or version),
// so the handshake is checked here with the same rules as on Node before upgrading.
// What cannot be fixed from outside the runtime is listed in the README ("Runtime differences").
import { defineWebSocketHelper, type WSEvents } from 'hono/ws';
import { createApp } from '../app.ts';
import { runCli, type ServedHub } from '../cli.ts';
import { checkHandshake } from '../handshake.ts';
import type { Hub } from '../hub.ts';

const EVENTS = Symbol('hubbub.events');
type Events = WSEvents<unknown>;
type Tagged = WebSocket & { [EVENTS]?: Events };

/**
 * Hono's upgradeWebSocket for Deno. `heartbeatInterval` (ms) becomes Deno's `idleTimeout`: Deno
 * pings a silent peer and closes it (1001) when no pong comes; the adapter reports that as `idle`.
 */
export function createDenoWebSocket(options: { heartbeatInterval: number }) {
  const idleTimeout = options.heartbeatInterval > 0 ? Math.max(1, Math.round(options.heartbeatInterval / 1000)) : 0;
  return defineWebSocketHelper<unknown>((c, events) => {
    const refusal = checkHandshake(c.req.method, c.req.raw.headers);
    if (refusal) return refusal;
    const protocol = c.req.header('sec-websocket-protocol')?.split(',')[0]?.trim();
    const { response, socket } = Deno.upgradeWebSocket(c.req.raw, protocol ? { protocol, idleTimeout } : { idleTimeout });
    const tagged = socket as Tagged;
    tagged.binaryType = 'arraybuffer';
    tagged[EVENTS] = events;
    // Shared listeners: `this` is the socket. No closure per connection.
    tagged.onopen = onOpen;
    tagged.onmessage = onMessage;
    tagged.onclose = onClose;
    // No onerror: Deno fires `error` (without a close code) before `close` on a reset or a bad frame,
    // and `close` always follows; the ending is classified there, from its code, as on Node.
    return response;
  });
}

/** The reason Deno gives when its idle timeout closes a socket whose peer did not answer a ping. */
const IDLE_REASON = 'No response from ping frame.';

function onOpen(this: Tagged, event: Event): void {
  this[EVENTS]!.onOpen?.(event, this as never);
}
function onMessage(this: Tagged, event: MessageEvent): void {
  this[EVENTS]!.onMessage?.(event, this as never);
}
function onClose(this: Tagged, event: CloseEvent): void {
  const events = this[EVENTS]!;
  if (event.code === 1001 && event.reason === IDLE_REASON) (events as { onIdleTimeout?: () => void }).onIdleTimeout?.();
  events.onClose?.(event, this as never);
}

export interface DenoServer extends ServedHub {
  readonly port: number;
}

/** Serves a hub on Deno at `hub.options.host:port`. Resolves once listening. */
export function serveDeno(hub: Hub): Promise<DenoServer> {
  const app = createApp(hub, {
    runtime: 'deno',
    upgradeWebSocket: createDenoWebSocket(hub.options) as never,
    remoteAddress: (c) => ((c.env as Deno.ServeHandlerInfo<Deno.NetAddr> | undefined)?.remoteAddr?.hostname ?? 'unknown'),
    processStats: () => {
      const m = Deno.memoryUsage();
      return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external };
    },
    collectGarbage: () => {
      // Deno exposes gc() when started with --v8-flags=--expose-gc.
      const gc = (globalThis as { gc?: () => void }).gc;
      gc?.();
      return gc !== undefined;
    },
  });
  return new Promise((resolve, reject) => {
    try {
      const server = Deno.serve(
        {
          port: hub.options.port,
          hostname: hub.options.host,
          onListen: (addr) => {
            const shownHost = addr.hostname.includes(':') ? `[${addr.hostname}]` : addr.hostname;
            resolve({ port: addr.port, url: `http://${shownHost}:${addr.port}`, close: () => server.shutdown() });
          },
          onError: (error) => {
            hub.log.error('request.error', { error });
            return new Response('Internal Server Error\n', { status: 500 });
          },
        },
        app.fetch,
      );
    } catch (error) {
      reject(error);
    }
  });
}

/** `hubbub` on Deno: `deno run -A main.ts [flags]`. */
export function main(): Promise<void> {
  return runCli({
    runtime: 'deno',
    argv: Deno.args,
    env: Deno.env.toObject(),
    cwd: () => Deno.cwd(),
    serve: serveDeno,
    onSignal: (signals, listener) => {
      for (const signal of signals) Deno.addSignalListener(signal, () => listener(signal));
    },
    exit: (code) => Deno.exit(code),
    stdout: (text) => void Deno.stdout.writeSync(new TextEncoder().encode(text)),
    stderr: (text) => void Deno.stderr.writeSync(new TextEncoder().encode(text)),
  });
}
