#!/usr/bin/env node
// A V8 CPU profile of a server's handshakes only (issue 15): where hubbub's cost per upgrade goes,
// next to raw ws. Starts the server with its inspector on 127.0.0.1, opens N WebSockets (H in
// flight) while profiling, then closes them unprofiled; prints the busy time by function (self and
// inclusive) as JSON and keeps the .cpuprofile. Loopback only.
//
//   node bench/profile-handshake.mjs [--server hubbub-node|raw-ws] [--connections 3000] [--in-flight 20] [--warmup 2000]
import { writeFileSync } from 'node:fs';
import WebSocket from 'ws';
import { createLog, freePort, inspectorSession, int, openWebSocket, pool, runMain, sleep, startServer, wsUrlOf } from './lib.mjs';

const log = createLog('profile-handshake');
const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []));
const server = args.server ?? 'hubbub-node';
const connections = int('--connections', args.connections ?? '3000', 1);
const inFlight = int('--in-flight', args['in-flight'] ?? '20', 1);
const warmup = int('--warmup', args.warmup ?? '2000', 0);
const SCRIPTS = {
  'raw-ws': ['bench/servers/raw-ws.mjs'],
  'hubbub-node': ['dist/node.js', '--host', '127.0.0.1', '--port', '0', '--max-connections', '100000', '--heartbeat-interval', '0', ...(args['hubbub-args'] ?? '').split(' ').filter(Boolean)],
};

async function openMany(url, count) {
  const open = [];
  await pool(count, inFlight, async () => {
    const result = await openWebSocket(WebSocket, url);
    if (result.ws) open.push(result.ws);
  });
  return open;
}

runMain(log, async () => {
  const port = await freePort();
  const [script, ...rest] = SCRIPTS[server];
  const s = await startServer({ name: server, command: process.execPath, args: [`--inspect=127.0.0.1:${port}`, script, ...rest], log });
  try {
    const url = wsUrlOf(s.url);
    for (const ws of await openMany(url, warmup)) ws.terminate();
    await sleep(1000);
    const inspector = await inspectorSession(port);
    const { result: open, profile } = await inspector.cpuProfile(() => openMany(url, connections));
    const file = `/tmp/handshake-${server}.cpuprofile`;
    writeFileSync(file, JSON.stringify(profile));
    for (const ws of open) ws.terminate();
    log(`${open.length} open; profile in ${file}`);
  } finally {
    s.child.kill('SIGKILL');
  }
});
