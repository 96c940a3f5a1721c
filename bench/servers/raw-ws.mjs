// Floor reference: a bare `ws` WebSocketServer on its own http server, echoing
// `Server received: <msg>` (text stays text, binary stays binary). No Hono, no registry.
// ws defaults: clientTracking on, perMessageDeflate off (server side).
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

const server = createServer((req, res) => {
  res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
});
const wss = new WebSocketServer({ server, path: '/ws' });

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    ws.send(isBinary ? Buffer.concat([Buffer.from('Server received: '), data]) : `Server received: ${data}`);
  });
  ws.on('error', () => {});
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({ event: 'listening', url: `http://127.0.0.1:${port}`, server: 'raw-ws' })}\n`);
});
