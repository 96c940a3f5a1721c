// Naive baseline on Deno: a plain Hono app with `upgradeWebSocket` from 'hono/deno', wired as Hono's
// WebSocket helper docs show (app.get('/ws', upgradeWebSocket((c) => ({ onMessage … }))), then
// Deno.serve(app.fetch)). No registry, no limits. Echoes `Server received: <msg>`.
// The only departures from the docs: listen on 127.0.0.1 port 0 and print a JSON "listening" line
// with the url, as hubbub does. hono resolves from node_modules (deno.json: nodeModulesDir manual).
// Run: `deno run -A bench/servers/naive-hono-deno.ts`.
// With `--fanout` (bench/run.mjs fan-out phase) it also keeps a Set of the open WSContexts and
// answers a text message `fanout <payload>` by sending <payload> to each in a loop (the naive
// fan-out), instead of echoing it.
import { Hono } from 'hono';
import { upgradeWebSocket } from 'hono/deno';
import type { WSContext } from 'hono/ws';

const FANOUT = 'fanout ';
const fanout = Deno.args.includes('--fanout');
const clients = new Set<WSContext>();

const app = new Hono();

app.get(
  '/ws',
  upgradeWebSocket((c) => ({
    onOpen(_event, ws) {
      if (fanout) clients.add(ws);
    },
    onMessage(event, ws) {
      if (fanout && typeof event.data === 'string' && event.data.startsWith(FANOUT)) {
        const payload = event.data.slice(FANOUT.length);
        for (const client of clients) client.send(payload);
        return;
      }
      ws.send(`Server received: ${event.data}`);
    },
    onClose(_event, ws) {
      if (fanout) clients.delete(ws);
    },
  })),
);

Deno.serve(
  {
    port: 0,
    hostname: '127.0.0.1',
    onListen: ({ port }) => {
      console.log(JSON.stringify({ event: 'listening', url: `http://127.0.0.1:${port}`, server: 'naive-hono-deno', fanout }));
    },
  },
  app.fetch,
);

// Exit promptly on SIGTERM (the benchmark stops servers that way).
Deno.addSignalListener('SIGTERM', () => Deno.exit(0));
