// Floor reference on Bun: a bare Bun.serve WebSocket server, echoing `Server received: <msg>` (text
// stays text, binary stays binary). No Hono, no registry. Bun's defaults otherwise
// (perMessageDeflate off, idleTimeout 120 s with pings). Run: `bun run bench/servers/raw-bun.ts`.
// With `--fanout` (bench/run.mjs fan-out phase) it also keeps a Set of open sockets and answers a
// text message `fanout <payload>` by sending <payload> to each in a loop (the naive fan-out; Bun's
// own topic publish is not used, so that every runtime's baseline does the same work). With
// `--fanout --publish` it uses Bun's native topics instead: every socket subscribes to `bench` on
// open and a fan-out is one `server.publish` (the floor hubbub-bun's fan-out is measured against).
const PREFIX = 'Server received: ';
const PREFIX_BYTES = new TextEncoder().encode(PREFIX);
const FANOUT = 'fanout ';
const fanout = process.argv.includes('--fanout');
const publish = fanout && process.argv.includes('--publish');
const TOPIC = 'bench';
type Socket = { send(data: string | Uint8Array): number; subscribe(topic: string): void };
const clients = new Set<Socket>();

const server = Bun.serve({
  port: 0,
  hostname: '127.0.0.1',
  fetch(request, server) {
    if (new URL(request.url).pathname === '/ws' && server.upgrade(request)) return undefined;
    return new Response('not found\n', { status: 404, headers: { 'Content-Type': 'text/plain' } });
  },
  websocket: {
    ...(publish
      ? { open: (ws: Socket) => void ws.subscribe(TOPIC) }
      : fanout
      ? {
          open: (ws: Socket) => void clients.add(ws),
          close: (ws: Socket) => void clients.delete(ws),
        }
      : {}),
    message(ws, message) {
      if (typeof message === 'string') {
        if (fanout && message.startsWith(FANOUT)) {
          const payload = message.slice(FANOUT.length);
          if (publish) {
            server.publish(TOPIC, payload);
            return;
          }
          for (const client of clients) client.send(payload);
          return;
        }
        ws.send(PREFIX + message);
        return;
      }
      const reply = new Uint8Array(PREFIX_BYTES.length + message.byteLength);
      reply.set(PREFIX_BYTES, 0);
      reply.set(message, PREFIX_BYTES.length);
      ws.send(reply);
    },
  },
});

process.stdout.write(`${JSON.stringify({ event: 'listening', url: `http://127.0.0.1:${server.port}`, server: publish ? 'raw-bun-publish' : 'raw-bun', fanout })}\n`);
