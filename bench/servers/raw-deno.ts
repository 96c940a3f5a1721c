// Floor reference on Deno: a bare Deno.serve + Deno.upgradeWebSocket server, echoing
// `Server received: <msg>` (text stays text, binary stays binary). No Hono, no registry. Deno's
// defaults otherwise (idleTimeout 120 s with pings). Run: `deno run -A bench/servers/raw-deno.ts`.
// With `--fanout` (bench/run.mjs fan-out phase) it also keeps a Set of open sockets and answers a
// text message `fanout <payload>` by sending <payload> to every one of them in a loop (the naive
// fan-out), instead of echoing it.
const PREFIX = 'Server received: ';
const PREFIX_BYTES = new TextEncoder().encode(PREFIX);
const FANOUT = 'fanout ';
const fanout = Deno.args.includes('--fanout');
const clients = new Set<WebSocket>();

function onMessage(this: WebSocket, event: MessageEvent): void {
  const data = event.data;
  if (typeof data === 'string') {
    if (fanout && data.startsWith(FANOUT)) {
      const payload = data.slice(FANOUT.length);
      for (const client of clients) client.send(payload);
      return;
    }
    this.send(PREFIX + data);
    return;
  }
  const bytes = new Uint8Array(data as ArrayBuffer);
  const reply = new Uint8Array(PREFIX_BYTES.length + bytes.byteLength);
  reply.set(PREFIX_BYTES, 0);
  reply.set(bytes, PREFIX_BYTES.length);
  this.send(reply);
}

Deno.serve(
  {
    port: 0,
    hostname: '127.0.0.1',
    onListen: ({ port }) => {
      console.log(JSON.stringify({ event: 'listening', url: `http://127.0.0.1:${port}`, server: 'raw-deno', fanout }));
    },
  },
  (request) => {
    if (new URL(request.url).pathname !== '/ws' || request.headers.get('upgrade')?.toLowerCase() !== 'websocket') {
      return new Response('not found\n', { status: 404, headers: { 'Content-Type': 'text/plain' } });
    }
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.binaryType = 'arraybuffer';
    socket.onmessage = onMessage;
    if (fanout) {
      socket.onopen = () => clients.add(socket);
      socket.onclose = () => clients.delete(socket);
    }
    return response;
  },
);

// Exit promptly on SIGTERM (the benchmark stops servers that way).
Deno.addSignalListener('SIGTERM', () => Deno.exit(0));
