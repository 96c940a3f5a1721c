#!/usr/bin/env node
// What history costs a publish: hub.publish to one subscriber (a socket that only counts), in this
// process, with --history-size 0 (offsets only) and with history on, rounds interleaved (off, on,
// off, on, …) so that what else the machine does weighs on both alike. Run `npm run build` first.
//
//   node bench/publish-history.mjs [--publishes 200000] [--rounds 6] [--size 100] [--history 100]
//
// Prints {publishes, size, history, off: [ns…], on: [ns…], medians, ratio on ÷ off} as JSON: ns per
// publish (the offset, the history ring, the envelope, one send). No network: this is the
// per-publication cost, which a fan-out to many sockets divides among them.
import { resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = resolve(fileURLToPath(import.meta.url), '..', '..');
const { createHub } = await import(pathToFileURL(resolve(root, 'dist/mod.js')).href);
const { Connection } = await import(pathToFileURL(resolve(root, 'dist/connection.js')).href);
const { createPubSubHandler } = await import(pathToFileURL(resolve(root, 'dist/handlers/pubsub.js')).href);

const args = Object.fromEntries(process.argv.slice(2).reduce((pairs, arg, i, all) => (arg.startsWith('--') ? [...pairs, [arg.slice(2), all[i + 1]]] : pairs), []));
const publishes = Number(args.publishes ?? 200_000);
const rounds = Number(args.rounds ?? 6);
const size = Number(args.size ?? 100);
const history = Number(args.history ?? 100);

function run(historySize) {
  const hub = createHub({ logLevel: 'silent', historySize, handler: (h) => createPubSubHandler(h) }, undefined, { sweeper: 'manual' });
  let sent = 0;
  const socket = { readyState: 1, bufferedAmount: 0, send: () => void sent++, close() {}, ping() {} };
  const conn = hub.registry.reserve('127.0.0.1');
  if (!(conn instanceof Connection)) throw new Error('no slot');
  conn.onOpen(undefined, socket);
  conn.subscribe('t');
  const body = JSON.stringify({ data: 'x'.repeat(size), from: conn.id });
  for (let i = 0; i < 10_000; i++) hub.publish('t', body); // warm up
  const started = process.hrtime.bigint();
  for (let i = 0; i < publishes; i++) hub.publish('t', body);
  const ns = Number(process.hrtime.bigint() - started) / publishes;
  if (sent !== publishes + 10_000) throw new Error(`sent ${sent}`);
  void hub.shutdown(0);
  return Math.round(ns);
}

const off = [];
const on = [];
for (let i = 0; i < rounds; i++) {
  off.push(run(0));
  on.push(run(history));
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
console.log(JSON.stringify({ publishes, size, history, off, on, medianOff: median(off), medianOn: median(on), ratio: Math.round((median(on) / median(off)) * 1000) / 1000 }));
