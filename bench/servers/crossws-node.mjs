// Peer: crossws (unjs) through its Node adapter (crossws/adapters/node, which carries its own
// bundled copy of ws), wired as its docs show: `crossws({ hooks })` and `ws.handleUpgrade(req,
// socket, head)` on a node:http server's upgrade event. Echoes `Server received: <msg>` on /ws (text
// stays text, binary stays binary). crossws's defaults otherwise (perMessageDeflate off, a 30 s
// idle sweep that pings every socket). The only departures: listen on 127.0.0.1 port 0, refuse
// upgrades on other paths, and print a JSON "listening" line with the url.
// With `--fanout` (bench/run.mjs fan-out phase) it keeps a Set of the open peers and answers a text
// message `fanout <payload>` by sending <payload> to each in a loop (crossws's own peer.publish
// skips the sender, which the fan-out client counts as a receiver).
import { createServer } from 'node:http';
import crossws from 'crossws/adapters/node';

const PREFIX = 'Server received: ';
const PREFIX_BYTES = Buffer.from(PREFIX);
const FANOUT = 'fanout ';
const fanout = process.argv.includes('--fanout');
const peers = new Set();

const ws = crossws({
  hooks: {
    ...(fanout
      ? {
          open: (peer) => void peers.add(peer),
          close: (peer) => void peers.delete(peer),
        }
      : {}),
    message(peer, message) {
      const data = message.rawData;
      if (typeof data === 'string') {
        if (fanout && data.startsWith(FANOUT)) {
          const payload = data.slice(FANOUT.length);
          for (const p of peers) p.send(payload);
          return;
        }
        peer.send(PREFIX + data);
        return;
      }
      peer.send(Buffer.concat([PREFIX_BYTES, message.uint8Array()]));
    },
    error() {},
  },
});

const server = createServer((req, res) => {
  res.writeHead(404, { 'Content-Type': 'text/plain' }).end('not found\n');
});
server.on('upgrade', (req, socket, head) => {
  if (req.url === '/ws' || req.url?.startsWith('/ws?')) return ws.handleUpgrade(req, socket, head);
  socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
});

server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  process.stdout.write(`${JSON.stringify({ event: 'listening', url: `http://127.0.0.1:${port}`, server: 'crossws', fanout })}\n`);
});
