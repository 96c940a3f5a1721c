// A forked client process of `hubbub loadtest --procs N` (started by drivers.ts, never by hand).
// It owns one LoadEngine and answers the orchestrator's commands over the IPC channel:
//   parent → { id, cmd, args }                 child → { type: 'result', id, result } | { type: 'error', id, error }
//   parent → { cmd: 'exit' }                   child → { type: 'progress', phase, done, ok } (every 100 ms, on change)
// It ends its sockets and exits when told to, or as soon as the parent goes away.
import process from 'node:process';
import { COMMANDS, dispatch, LoadEngine, type Command } from './engine.ts';

interface Request {
  id?: number;
  cmd?: string;
  args?: unknown;
}

if (typeof process.send !== 'function') {
  process.stderr.write('hubbub loadtest worker: run by `hubbub loadtest --procs N`, not directly\n');
  process.exit(2);
}

const send = (message: unknown) => {
  if (process.connected) process.send!(message);
};
const engine = new LoadEngine();
let lastProgress = '';
const ticker = setInterval(() => {
  const p = engine.progress();
  const key = `${p.phase}:${p.done}:${p.ok}`;
  if (key === lastProgress) return;
  lastProgress = key;
  send({ type: 'progress', ...p });
}, 100);

function quit(code: number): void {
  clearInterval(ticker);
  engine.abort();
  process.exit(code);
}

process.on('message', (raw: unknown) => {
  const message = raw as Request;
  if (message.cmd === 'exit') return quit(0);
  const { id, cmd } = message;
  if (typeof id !== 'number' || !(COMMANDS as readonly string[]).includes(cmd ?? '')) {
    send({ type: 'error', id, error: `unknown command ${JSON.stringify(cmd)}` });
    return;
  }
  dispatch(engine, cmd as Command, message.args as never).then(
    (result) => send({ type: 'result', id, result }),
    (error: unknown) => send({ type: 'error', id, error: error instanceof Error ? error.message : String(error) }),
  );
});

// Never outlive the orchestrator.
process.on('disconnect', () => quit(0));
send({ type: 'ready', pid: process.pid });
