// withDeadline after an event-loop stall: the reply that came in during the stall is the answer.
// A CPU-starved worker (the 250,000-connection run: 32 processes on 2 cores) stalls for seconds;
// its timers then run before the I/O that arrived meanwhile is read, and a deadline that answered
// at once took healthy Redis replies for missing ones.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { withDeadline } from '../../src/timers.ts';

/** A TCP echo server on its own thread (its own event loop), so it answers while this one is stalled. */
async function echoThread(): Promise<{ port: number; stop: () => Promise<number> }> {
  const worker = new Worker(
    `const net = require('node:net'); const { parentPort } = require('node:worker_threads');
     const server = net.createServer((s) => s.on('data', (d) => s.write(d)));
     server.listen(0, '127.0.0.1', () => parentPort.postMessage(server.address().port));`,
    { eval: true },
  );
  const [port] = (await once(worker, 'message')) as [number];
  return { port, stop: () => worker.terminate() };
}

function stall(ms: number): void {
  const until = Date.now() + ms;
  while (Date.now() < until);
}

describe('withDeadline', () => {
  it('a reply already in the socket when the deadline fires after a stall is the answer, not the fallback', async () => {
    const echo = await echoThread();
    const socket = net.connect(echo.port, '127.0.0.1');
    try {
      await once(socket, 'connect');
      for (let round = 0; round < 5; round++) {
        const reply = new Promise<string>((resolve) => socket.once('data', (d) => resolve(String(d))));
        // In the check phase (setImmediate): the next phase that runs callbacks is the timers', so
        // the expired deadline runs before the poll phase reads the echo that came in meanwhile.
        await new Promise((resolve) => setImmediate(resolve));
        socket.write(`ping ${round}`);
        const verdict = withDeadline(reply, 20, 'late');
        stall(200);
        assert.equal(await verdict, `ping ${round}`, `round ${round}`);
      }
    } finally {
      socket.destroy();
      await echo.stop();
    }
  });

  it('without a reply, the fallback comes one loop turn after the deadline', async () => {
    const started = Date.now();
    assert.equal(await withDeadline(new Promise(() => undefined), 30, 'late'), 'late');
    assert.ok(Date.now() - started >= 29);
  });

  it('a rejection of the work passes through', async () => {
    await assert.rejects(withDeadline(Promise.reject(new Error('boom')), 10_000, 'late'), /boom/);
  });
});
