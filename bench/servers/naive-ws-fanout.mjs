// Naive fan-out baseline for bench/fanout.mjs (issue 4): a bare `ws` WebSocketServer on /ws that,
// on a text message `fanout <payload>`, sends <payload> to every connected client with
// `for (const ws of wss.clients) ws.send(payload)`, so ws encodes and frames it once per socket.
// Anything else is ignored. Every connection receives fan-outs (as with hubbub's bench handler,
// where every connection subscribes on open). ws defaults: clientTracking on, perMessageDeflate off.
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

const PREFIX = 'fanout ';

const server = createServer((req, res) => {
  res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
});
const wss = new WebSocketServer({ server, path: '/ws' });

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    if (!text.startsWith(PREFIX)) return;
    const payload = text.slice(PREFIX.length);
    for (const client of wss.clients) client.send(payload);
  });
  ws.on('error', () => {});
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({ event: 'listening', url: `http://127.0.0.1:${port}`, server: 'naive-ws-fanout' })}\n`);
});

// Exit promptly on SIGTERM (the benchmark stops servers that way).
process.on('SIGTERM', () => process.exit(0));
