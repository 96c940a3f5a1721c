// Peer: Fastify with @fastify/websocket (which uses the project's ws, 8.23.0 by the override),
// wired as its README shows: `register(websocket)`, then a route with `{ websocket: true }` whose
// handler gets the ws socket. Echoes `Server received: <msg>` on /ws (text stays text, binary stays
// binary). Fastify's defaults otherwise (no logger); ws's (perMessageDeflate off). The only
// departures: listen on 127.0.0.1 port 0 and print a JSON "listening" line with the url.
// With `--fanout` (bench/run.mjs fan-out phase) it keeps a Set of the open sockets and answers a
// text message `fanout <payload>` by sending <payload> to each in a loop (the naive fan-out).
import websocket from '@fastify/websocket';
import Fastify from 'fastify';

const PREFIX = 'Server received: ';
const PREFIX_BYTES = Buffer.from(PREFIX);
const FANOUT = 'fanout ';
const fanout = process.argv.includes('--fanout');
const clients = new Set();

const app = Fastify();
await app.register(websocket);

app.get('/ws', { websocket: true }, (socket) => {
  if (fanout) {
    clients.add(socket);
    socket.on('close', () => clients.delete(socket));
  }
  socket.on('message', (data, isBinary) => {
    if (isBinary) return void socket.send(Buffer.concat([PREFIX_BYTES, data]));
    const text = data.toString();
    if (fanout && text.startsWith(FANOUT)) {
      const payload = text.slice(FANOUT.length);
      for (const client of clients) client.send(payload);
      return;
    }
    socket.send(PREFIX + text);
  });
  socket.on('error', () => {});
});

await app.listen({ port: 0, host: '127.0.0.1' });
const { port } = app.server.address();
process.stdout.write(`${JSON.stringify({ event: 'listening', url: `http://127.0.0.1:${port}`, server: 'fastify-ws', fanout })}\n`);
