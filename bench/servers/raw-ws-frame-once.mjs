// Fan-out floor on Node (issue 15): a bare `ws` WebSocketServer on /ws that, on a text message
// `fanout <payload>`, frames <payload> once with ws's own Sender.frame (text, FIN, unmasked, no
// RSV1) and writes those same bytes to every open client's TCP socket (`ws._socket.write`), instead
// of `ws.send` encoding and framing it again for each one (bench/servers/naive-ws-fanout.mjs). It is
// what hubbub's Node fan-out (src/runtime/node/fanout.ts) does, without its checks (a busy sender
// falls back to ws.send there; with perMessageDeflate off, ws's default, a sender never queues).
// Any other text is echoed as `Server received: <msg>` (binary stays binary). Every connection
// receives fan-outs. `--fanout` is accepted and changes nothing (it always fans out).
import { createServer } from 'node:http';
import { Sender, WebSocketServer } from 'ws';

const PREFIX = 'fanout ';
const OPEN = 1;

const server = createServer((req, res) => {
  res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
});
const wss = new WebSocketServer({ server, path: '/ws' });

/** One complete unmasked text frame for `text` (header and payload in one buffer). */
function frameOnce(text) {
  const parts = Sender.frame(Buffer.from(text), { fin: true, opcode: 1, mask: false, readOnly: true, rsv1: false });
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (isBinary) return void ws.send(Buffer.concat([Buffer.from('Server received: '), data]));
    const text = data.toString();
    if (!text.startsWith(PREFIX)) return void ws.send(`Server received: ${text}`);
    const frame = frameOnce(text.slice(PREFIX.length));
    for (const client of wss.clients) if (client.readyState === OPEN) client._socket.write(frame);
  });
  ws.on('error', () => {});
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({ event: 'listening', url: `http://127.0.0.1:${port}`, server: 'raw-ws-frame-once' })}\n`);
});

// Exit promptly on SIGTERM (the benchmark stops servers that way).
process.on('SIGTERM', () => process.exit(0));
