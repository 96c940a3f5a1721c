// Naive baseline: a plain Hono app with @hono/node-ws 1.3.1 and @hono/node-server, wired exactly
// as @hono/node-ws's README shows (createNodeWebSocket({ app }) → upgradeWebSocket on /ws,
// serve(...), injectWebSocket(server)). No registry, no limits. Echoes `Server received: <msg>`.
// The only departures from the README: listen on 127.0.0.1 port 0 (the README's serve(app) takes
// port 3000 on all interfaces) and print a JSON "listening" line with the url, as hubbub does.
// With `--fanout` (bench/run.mjs fan-out phase) it also keeps a Set of the open WSContexts and
// answers a text message `fanout <payload>` by sending <payload> to each in a loop (the naive
// fan-out), instead of echoing it.
import { createNodeWebSocket } from '@hono/node-ws';
import { Hono } from 'hono';
import { serve } from '@hono/node-server';

const FANOUT = 'fanout ';
const fanout = process.argv.includes('--fanout');
const clients = new Set();

const app = new Hono();

const { injectWebSocket, upgradeWebSocket } = createNodeWebSocket({ app });

app.get(
  '/ws',
  upgradeWebSocket((c) => ({
    ...(fanout
      ? {
          onOpen: (_event, ws) => clients.add(ws),
          onClose: (_event, ws) => clients.delete(ws),
        }
      : {}),
    onMessage(event, ws) {
      if (fanout && typeof event.data === 'string' && event.data.startsWith(FANOUT)) {
        const payload = event.data.slice(FANOUT.length);
        for (const client of clients) client.send(payload);
        return;
      }
      ws.send(`Server received: ${event.data}`);
    },
  })),
);

const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, (info) => {
  process.stdout.write(`${JSON.stringify({ event: 'listening', url: `http://127.0.0.1:${info.port}`, server: 'naive-hono-node-ws', fanout })}\n`);
});
injectWebSocket(server);
