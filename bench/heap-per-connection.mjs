#!/usr/bin/env node
// Heap per idle connection on Node, by constructor: each server runs with
// --heapsnapshot-signal; a snapshot is taken before and after N idle WebSocket connections (each
// has echoed one message), and the difference in self size per constructor, divided by N, is
// printed as JSON, hubbub beside raw `ws`. Heap only (RSS adds code and pages touched once: see
// `npm run bench`). Usage:
//   node bench/heap-per-connection.mjs [--servers raw-ws,hubbub-node] [--connections 2000] [--top 25]
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';
import { createLog, here, int, root, runMain, sleep, startServer } from './lib.mjs';

const log = createLog('heap');
const SERVERS = {
  'raw-ws': (dir) => [process.execPath, [`--heapsnapshot-signal=SIGUSR2`, `--diagnostic-dir=${dir}`, join(here, 'servers/raw-ws.mjs')]],
  'hubbub-node': (dir) => [process.execPath, [`--heapsnapshot-signal=SIGUSR2`, `--diagnostic-dir=${dir}`, join(root, 'dist/node.js'), '--host', '127.0.0.1', '--port', '0', '--max-connections', '100000', '--log-level', 'info']],
};

function parseArgs(argv) {
  const o = { servers: ['raw-ws', 'hubbub-node'], connections: 2000, top: 25 };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '--servers') o.servers = value.split(',');
    else if (flag === '--connections') o.connections = int(flag, value, 1);
    else if (flag === '--top') o.top = int(flag, value, 1);
    else throw new Error(`unknown option ${flag} (known: --servers, --connections, --top)`);
  }
  for (const s of o.servers) if (!SERVERS[s]) throw new Error(`--servers: unknown server ${s} (known: ${Object.keys(SERVERS).join(', ')})`);
  return o;
}

/** Self size by "type:name" of a .heapsnapshot file. */
function bySelfSize(file) {
  const snap = JSON.parse(readFileSync(file, 'utf8'));
  const f = snap.snapshot.meta.node_fields;
  const types = snap.snapshot.meta.node_types[0];
  const [iType, iName, iSize] = ['type', 'name', 'self_size'].map((k) => f.indexOf(k));
  const out = new Map();
  const nodes = snap.nodes;
  for (let i = 0; i < nodes.length; i += f.length) {
    const type = types[nodes[i + iType]];
    // Strings and numbers by type only (their "name" is their content).
    const key = type === 'object' || type === 'closure' || type === 'native' ? `${type}:${snap.strings[nodes[i + iName]]}` : type;
    out.set(key, (out.get(key) ?? 0) + nodes[i + iSize]);
  }
  return out;
}

async function snapshot(pid, dir) {
  const before = new Set(readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  for (let i = 0; i < 600; i++) {
    await sleep(100);
    const made = readdirSync(dir).filter((n) => !before.has(n) && n.endsWith('.heapsnapshot'));
    // Written when the size stops changing (the file appears before it is complete).
    if (made.length) {
      const file = join(dir, made[0]);
      let size = -1;
      for (;;) {
        const now = readFileSync(file).length;
        if (now === size) {
          try {
            JSON.parse(readFileSync(file, 'utf8'));
            return file;
          } catch {}
        }
        size = now;
        await sleep(300);
      }
    }
  }
  throw new Error('no heap snapshot within 60 s');
}

async function openIdle(wsUrl, n) {
  const sockets = [];
  for (let i = 0; i < n; i += 200) {
    await Promise.all(
      Array.from({ length: Math.min(200, n - i) }, async () => {
        const ws = new WebSocket(wsUrl);
        await new Promise((resolve, reject) => (ws.once('open', resolve), ws.once('error', reject)));
        ws.send('hi');
        await new Promise((resolve) => ws.once('message', resolve));
        sockets.push(ws);
      }),
    );
  }
  return sockets;
}

async function measure(name, o) {
  const dir = mkdtempSync(join(tmpdir(), `heap-${name}-`));
  const [command, args] = SERVERS[name](dir);
  const server = await startServer({ name, command, args, log });
  try {
    const wsUrl = `${server.url.replace(/^http/, 'ws')}/ws`;
    // Warm the code paths (and JIT) with a first crowd, closed before the first snapshot.
    for (const ws of await openIdle(wsUrl, Math.min(500, o.connections))) ws.close();
    await sleep(1500);
    const a = bySelfSize(await snapshot(server.child.pid, dir));
    const sockets = await openIdle(wsUrl, o.connections);
    await sleep(1000);
    const b = bySelfSize(await snapshot(server.child.pid, dir));
    for (const ws of sockets) ws.terminate();
    const rows = [...new Set([...a.keys(), ...b.keys()])].map((k) => ({ key: k, bytes: ((b.get(k) ?? 0) - (a.get(k) ?? 0)) / o.connections }));
    const total = rows.reduce((s, r) => s + r.bytes, 0);
    rows.sort((x, y) => Math.abs(y.bytes) - Math.abs(x.bytes));
    return { server: name, connections: o.connections, heapBytesPerConnection: Math.round(total), top: rows.slice(0, o.top).map((r) => ({ ...r, bytes: Math.round(r.bytes) })) };
  } finally {
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

runMain(log, async () => {
  const o = parseArgs(process.argv.slice(2));
  const results = [];
  for (const name of o.servers) results.push(await measure(name, o));
  const base = results.find((r) => r.server === 'raw-ws');
  const out = { bench: 'heap-per-connection', connections: o.connections, results, ...(base ? { ratios: Object.fromEntries(results.map((r) => [r.server, +(r.heapBytesPerConnection / base.heapBytesPerConnection).toFixed(3)])) } : {}) };
  process.stdout.write(`${JSON.stringify(out, null, 1)}\n`);
});
