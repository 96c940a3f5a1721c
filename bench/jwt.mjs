#!/usr/bin/env node
// The cost of JWT verification per upgrade: the connect rate of the Node server with no auth,
// with --jwt-secret (HS256) and with --jwks-url (ES256, the JWKS served here on 127.0.0.1), and the
// server's CPU time per connect.
//
//   npm run build && node bench/jwt.mjs [--connections 3000] [--concurrency 50] [--rounds 3]
//
// Each round runs every variant in turn (one server at a time): N connects, at most `concurrency`
// in flight, each one opened, then closed by the client; every token is a different one (signed
// ahead of time, outside the measured window), so nothing is cached per token. Per variant the
// median over rounds is reported, and its ratio to no auth. One JSON object goes to stdout.
import { createServer } from 'node:http';
import { join } from 'node:path';
import { sign } from 'hono/utils/jwt/jwt';
import WebSocket from 'ws';
import { cpuTicks, CLK_TCK, createLog, int, machineInfo, median, r, ratio, root, runMain, startServer } from './lib.mjs';

const log = createLog('jwt');
const SECRET = 'a-bench-secret-of-more-than-32-characters';

function parseArgs(argv) {
  const opts = { connections: 3000, concurrency: 50, rounds: 3 };
  for (let i = 0; i < argv.length; i++) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (flag === '--connections') opts.connections = int(flag, value, 1);
    else if (flag === '--concurrency') opts.concurrency = int(flag, value, 1);
    else if (flag === '--rounds') opts.rounds = int(flag, value, 1);
    else throw new Error(`unknown flag ${flag}`);
    i++;
  }
  return opts;
}

/** Opens and closes `tokens.length` (or `count`) connections, `concurrency` at a time; returns connects per second. */
async function connectRate(wsUrl, count, concurrency, tokens) {
  let next = 0;
  let failed = 0;
  const one = (i) =>
    new Promise((resolve) => {
      const ws = new WebSocket(tokens ? `${wsUrl}?token=${tokens[i]}` : wsUrl);
      ws.once('open', () => {
        ws.close();
        resolve();
      });
      ws.once('unexpected-response', (_req, res) => {
        failed++;
        res.resume();
        resolve();
      });
      ws.once('error', () => {
        failed++;
        resolve();
      });
    });
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < count) await one(next++);
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return { rate: count / seconds, failed };
}

runMain(log, async () => {
  const opts = parseArgs(process.argv.slice(2));
  const ec = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const publicJwk = { ...(await crypto.subtle.exportKey('jwk', ec.publicKey)), kid: 'bench-1', alg: 'ES256', use: 'sig' };
  const privateJwk = { ...(await crypto.subtle.exportKey('jwk', ec.privateKey)), kid: 'bench-1', alg: 'ES256' };
  const jwks = createServer((_req, res) => res.writeHead(200, { 'Content-Type': 'application/json' }).end(JSON.stringify({ keys: [publicJwk] })));
  await new Promise((resolve) => jwks.listen(0, '127.0.0.1', resolve));
  const jwksUrl = `http://127.0.0.1:${jwks.address().port}/jwks.json`;

  const exp = Math.floor(Date.now() / 1000) + 3600;
  const tokensFor = async (key) => Promise.all(Array.from({ length: opts.connections }, (_, i) => sign({ sub: `user-${i}`, exp }, key)));
  const variants = {
    'no auth': { args: [], tokens: undefined },
    '--jwt-secret (HS256)': { args: ['--jwt-secret', SECRET], tokens: await tokensFor(SECRET) },
    '--jwks-url (ES256)': { args: ['--jwks-url', jwksUrl], tokens: await tokensFor(privateJwk) },
  };
  const results = Object.fromEntries(Object.keys(variants).map((name) => [name, { rates: [], cpuMsPerConnect: [] }]));
  for (let round = 1; round <= opts.rounds; round++) {
    for (const [name, variant] of Object.entries(variants)) {
      const server = await startServer({
        name,
        command: process.execPath,
        args: [join(root, 'dist/node.js'), '--port', '0', '--host', '127.0.0.1', '--max-connections', '100000', '--log-level', 'info', ...variant.args],
        log,
      });
      const wsUrl = `${server.url.replace(/^http/, 'ws')}/ws`;
      await connectRate(wsUrl, Math.min(200, opts.connections), opts.concurrency, variant.tokens); // warm-up
      const before = cpuTicks(server.child.pid);
      const { rate, failed } = await connectRate(wsUrl, opts.connections, opts.concurrency, variant.tokens);
      const after = cpuTicks(server.child.pid);
      const cpuMs = ((after.utime + after.stime - before.utime - before.stime) * 1000) / CLK_TCK;
      if (failed > 0) throw new Error(`${name}: ${failed} connects failed`);
      results[name].rates.push(rate);
      results[name].cpuMsPerConnect.push(cpuMs / opts.connections);
      log(`round ${round} ${name}: ${Math.round(rate)} connects/s, ${r(cpuMs / opts.connections, 3)} ms server CPU per connect`);
      await server.stop();
    }
  }
  jwks.close();
  const base = median(results['no auth'].rates);
  const baseCpu = median(results['no auth'].cpuMsPerConnect);
  const summary = Object.fromEntries(
    Object.entries(results).map(([name, { rates, cpuMsPerConnect }]) => [
      name,
      { connectsPerSecond: Math.round(median(rates)), rateVsNoAuth: ratio(median(rates), base), serverCpuMsPerConnect: r(median(cpuMsPerConnect), 3), cpuVsNoAuth: ratio(median(cpuMsPerConnect), baseCpu) },
    ]),
  );
  process.stdout.write(`${JSON.stringify({ bench: 'jwt', options: opts, machine: machineInfo(), summary }, null, 2)}\n`);
});
