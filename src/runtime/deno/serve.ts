// Serving a hub on Deno: Deno.serve for HTTP and WebSockets, and the process figures /stats shows.
import { createApp } from '../../app.ts';
import type { ServedHub } from '../../cli.ts';
import type { Hub } from '../../hub.ts';
import { collectExposedGarbage, urlHost } from '../common.ts';
import { createDenoWebSocket } from './websocket.ts';

export interface DenoServer extends ServedHub {
  readonly port: number;
}

/** Starts a hub (`hub.start()`) and serves it on Deno at `hub.options.host:port`. Resolves once listening. */
export async function serveDeno(hub: Hub): Promise<DenoServer> {
  await hub.start();
  const app = createApp(hub, {
    runtime: 'deno',
    upgradeWebSocket: createDenoWebSocket(hub.options),
    remoteAddress: (c) => ((c.env as Deno.ServeHandlerInfo<Deno.NetAddr> | undefined)?.remoteAddr?.hostname ?? 'unknown'),
    processStats: () => {
      const m = Deno.memoryUsage();
      return { rssBytes: m.rss, heapUsedBytes: m.heapUsed, externalBytes: m.external };
    },
    // Deno exposes gc() when started with --v8-flags=--expose-gc.
    collectGarbage: collectExposedGarbage,
  });
  return new Promise((resolve, reject) => {
    try {
      const server = Deno.serve(
        {
          port: hub.options.port,
          hostname: hub.options.host,
          onListen: (addr) => {
            resolve({ port: addr.port, url: `http://${urlHost(addr.hostname)}:${addr.port}`, close: () => server.shutdown() });
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
