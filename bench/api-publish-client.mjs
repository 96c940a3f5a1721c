// Load client for bench/api-publish.mjs (issue 14): pubsub subscribers, in a forked child of their
// own (IPC) so that their sockets and CPU are neither the server's nor the orchestrator's; each
// process stays under its 20,000-fd hard limit. Commands (IPC):
//   { cmd: 'connect', url, count, topic, addresses, concurrency } → opens `count` WebSockets (source
//     addresses round-robin over `addresses`), each subscribes to `topic` and waits for its
//     `subscribed` answer → { opened, failures, failureReasons, wallMs }
//   { cmd: 'received' } → { messages, bad, closedEarly }: `message` frames counted since connect
//   { cmd: 'close', timeoutMs } → close handshake on every socket, then terminate stragglers
//   { cmd: 'exit' }
// Counting is cheap on purpose (a prefix check, no JSON.parse per delivery): the client must keep up.
import WebSocket from 'ws';
import { assertLoopbackSources, closeSockets, openWebSocket, pool, serveCommands, wsUrlOf } from './lib.mjs';

const sockets = [];
const counts = { messages: 0, bad: 0 };
const MESSAGE = Buffer.from('{"type":"message"');

serveCommands({
  async connect({ url, count, topic, addresses = ['127.0.0.1'], concurrency = 200, handshakeTimeoutMs = 15_000 }) {
    assertLoopbackSources(addresses);
    const wsUrl = wsUrlOf(url);
    const failureReasons = {};
    let failures = 0;
    const subscribe = JSON.stringify({ type: 'subscribe', topic });
    const wallMs = await pool(count, concurrency, async (i) => {
      let answered;
      const subscribed = new Promise((resolve) => (answered = resolve));
      const { ws, failure } = await openWebSocket(WebSocket, wsUrl, {
        handshakeTimeoutMs,
        localAddress: addresses[i % addresses.length],
        setup: (socket) => {
          let first = true;
          socket.on('message', (data) => {
            if (first) {
              first = false;
              return answered(data.toString());
            }
            if (data.length > MESSAGE.length && data.subarray(0, MESSAGE.length).equals(MESSAGE)) counts.messages++;
            else counts.bad++;
          });
        },
      });
      if (failure) {
        failures++;
        failureReasons[failure] = (failureReasons[failure] ?? 0) + 1;
        return;
      }
      ws.send(subscribe);
      const answer = await subscribed;
      if (!answer.startsWith('{"type":"subscribed"')) throw new Error(`subscribe answered ${answer.slice(0, 200)}`);
      sockets.push(ws);
    });
    counts.messages = 0;
    counts.bad = 0;
    return { opened: sockets.length, failures, failureReasons, wallMs };
  },
  received() {
    return { ...counts, closedEarly: sockets.filter((ws) => ws.closedEarly !== undefined).length };
  },
  async close({ timeoutMs = 20_000 }) {
    const result = await closeSockets(WebSocket, sockets.splice(0), { timeoutMs });
    return { closed: result };
  },
});
