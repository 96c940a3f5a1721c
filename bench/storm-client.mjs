// A load-client process of the reconnect-storm bench (bench/storm.mjs): N hubbub clients
// (dist/client, the real `hubbub/client` on `ws`) from one source address, each subscribed to one
// topic, that keep every offset they receive. Commands from the orchestrator (serveCommands):
//   open   {url, count, first, topics, source, mode, pace}  opens `count` clients (`pace`/s), resolves once all are subscribed
//   mark   {}                                          "the restart starts now": times are counted from here
//   count  {}                                          how many are back (resubscribed since the mark)
//   verify {finals, timeoutMs}                         waits until each has its topic's final offset; per-client losses
//   report {}                                          attempts and opens since the mark, as timestamps, and the counters
//   close  {}
// Modes: `jitter` = the client's defaults (full jitter 0.5 s → 20 s, /admission and Retry-After);
// `naive` = what a hand-rolled client does: a fixed 100 ms retry, no jitter, no backoff, no /admission.
import WebSocket from 'ws';
import { createClient } from '../dist/client/index.js';
import { bindableSource, serveCommands, sleep } from './lib.mjs';

const clients = [];
let mark = 0;
const attempts = []; // ms after the mark of each connection attempt (a WebSocket constructed)
const counters = { refusedHttp: 0, failedHandshakes: 0, closesSeen: {}, errors: 0, notRecovered: 0, duplicatesDropped: 0 };

function constructorFor(source) {
  const localAddress = bindableSource(source);
  return class SourcedWebSocket extends WebSocket {
    constructor(url) {
      if (mark) attempts.push(Date.now() - mark);
      super(url, { perMessageDeflate: false, handshakeTimeout: 15_000, ...(localAddress ? { localAddress } : {}) });
    }
  };
}

function one(url, topic, Ctor, mode) {
  const entry = { topic, start: undefined, offsets: [], backAt: undefined, subscribedOnce: undefined };
  entry.subscribedOnce = new Promise((resolve) => (entry.firstSubscribed = resolve));
  const options = mode === 'naive' ? { WebSocket: Ctor, backoff: { min: 100, max: 100 }, random: () => 1, admissionUrl: null } : { WebSocket: Ctor };
  const client = createClient(url, options);
  client.on('error', () => counters.errors++);
  client.on('reconnecting', ({ code, refused }) => {
    if (!mark) return;
    if (code !== undefined) counters.closesSeen[code] = (counters.closesSeen[code] ?? 0) + 1;
    else counters.failedHandshakes++;
    if (refused) counters.refusedHttp++;
  });
  const sub = client.subscribe(topic, (_data, meta) => entry.offsets.push(meta.offset));
  sub.on('subscribed', (info) => {
    if (entry.start === undefined) {
      entry.start = info.position.offset;
      entry.firstSubscribed();
      return;
    }
    if (mark && entry.backAt === undefined) entry.backAt = Date.now() - mark;
    if (info.recovered === false) counters.notRecovered++;
  });
  entry.client = client;
  return entry;
}

serveCommands({
  async open({ url, count, first, topics, source, mode, pace }) {
    const Ctor = constructorFor(source);
    // Paced (`pace` a second from this process) so the first connect is not itself the storm under test.
    for (let i = 0; i < count; i++) {
      clients.push(one(url, `storm-${(first + i) % topics}`, Ctor, mode));
      if (i % 50 === 49) await sleep((50 * 1000) / pace);
    }
    const deadline = Date.now() + 120_000;
    while (clients.some((c) => c.start === undefined)) {
      if (Date.now() > deadline) throw new Error(`${clients.filter((c) => c.start === undefined).length} clients not subscribed within 120 s`);
      await sleep(100);
    }
    return { opened: clients.length };
  },
  mark() {
    mark = Date.now();
    return { mark };
  },
  count() {
    return { back: clients.filter((c) => c.backAt !== undefined).length, connected: clients.filter((c) => c.client.state === 'connected').length };
  },
  async verify({ finals, timeoutMs }) {
    const deadline = Date.now() + timeoutMs;
    const done = (c) => (c.offsets.at(-1) ?? c.start) >= (finals[c.topic] ?? 0);
    while (!clients.every(done) && Date.now() < deadline) await sleep(100);
    let lost = 0;
    let duplicates = 0;
    let outOfOrder = 0;
    let clientsMissing = 0;
    let delivered = 0;
    for (const c of clients) {
      const expected = (finals[c.topic] ?? 0) - c.start;
      const seen = new Set();
      let previous = c.start;
      for (const o of c.offsets) {
        if (seen.has(o)) duplicates++;
        else if (o !== previous + 1) outOfOrder++;
        seen.add(o);
        previous = o;
      }
      let missing = 0;
      for (let o = c.start + 1; o <= (finals[c.topic] ?? 0); o++) if (!seen.has(o)) missing++;
      lost += missing;
      if (missing) clientsMissing++;
      delivered += expected - missing;
      counters.duplicatesDropped += c.client.stats.duplicatesDropped;
    }
    return { lost, duplicates, outOfOrder, clientsMissing, delivered };
  },
  report() {
    return { attempts, backAt: clients.map((c) => c.backAt ?? null), counters };
  },
  close() {
    for (const c of clients) c.client.close();
    return { closed: clients.length };
  },
});
