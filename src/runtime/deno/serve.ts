// Serving a hub on Deno: Deno.serve for HTTP and WebSockets, and the process figures /stats shows.
import { createAdminApp, createApp, type RuntimeAdapter } from '../../app.ts';
import type { ServedHub } from '../../cli.ts';
import type { Hub } from '../../hub.ts';
import { CLOSE_AFTER_BODY, closingAfterAnswer, collectExposedGarbage, urlHost } from '../common.ts';
import { readTls, type TlsFiles } from '../tls.ts';
import { createDenoWebSocket } from './websocket.ts';

export interface DenoServer extends ServedHub {
  readonly port: number;
}

/** Starts a hub (`hub.start()`) and serves it on Deno at `hub.options.host:port`. Resolves once listening. */
export async function serveDeno(hub: Hub): Promise<DenoServer> {
  // Before anything starts: a bad certificate file must not leave a started hub behind.
  const tls = readTls(hub.options);
  await hub.start();
  const adapter: RuntimeAdapter = {
    runtime: 'deno',
    upgradeWebSocket: createDenoWebSocket(hub.options, hub.log),
    remoteAddress: (c) => ((c.env as Deno.ServeHandlerInfo<Deno.NetAddr> | undefined)?.remoteAddr?.hostname ?? 'unknown'),
    processStats: () => {
      const m = Deno.memoryUsage();
      return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external };
    },
    // Deno exposes gc() when started with --v8-flags=--expose-gc.
    collectGarbage: collectExposedGarbage,
  };
  const { adminPort, adminHost } = hub.options;
  const admin = adminPort >= 0 ? await listen(hub, createAdminApp(hub, adapter).fetch, adminPort, adminHost, tls) : undefined;
  const main = await listen(hub, createApp(hub, adapter).fetch, hub.options.port, hub.options.host, tls);
  return {
    port: main.port,
    url: main.url,
    adminUrl: admin?.url,
    close: async () => {
      await Promise.all([main.shutdown(), admin?.shutdown()]);
    },
  };
}

type DenoFetch = (request: Request, info: Deno.ServeHandlerInfo<Deno.NetAddr>) => Response | Promise<Response>;

function listen(hub: Hub, app: DenoFetch, port: number, hostname: string, tls: TlsFiles | undefined): Promise<{ port: number; url: string; shutdown(): Promise<void> }> {
  // Deno sends a response's `Connection: close` but keeps the connection open for the next request
  // (checked on Deno 2.9): a refused client could hold its socket as long as it likes.
  const fetch: DenoFetch = (request, info) => {
    const response = app(request, info);
    return response instanceof Response ? closingAfterAnswer(response) : response.then(closingAfterAnswer);
  };
  return new Promise((resolve, reject) => {
    try {
      const server: Deno.HttpServer<Deno.NetAddr> = Deno.serve(
        {
          port,
          hostname,
          ...(tls ? { cert: tls.cert, key: tls.key } : {}),
          // (`server` is read only later: onListen may run before Deno.serve returns.)
          onListen: (addr) => resolve({ port: addr.port, url: `${tls ? 'https' : 'http'}://${urlHost(addr.hostname)}:${addr.port}`, shutdown: () => server.shutdown() }),
          onError: (error) => {
            if (error !== CLOSE_AFTER_BODY) hub.log.error('request.error', { error });
            return new Response('Internal Server Error\n', { status: 500 });
          },
        },
        fetch,
      );
    } catch (error) {
      reject(error);
    }
  });
}
