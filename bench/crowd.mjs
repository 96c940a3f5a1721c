// The crowd benchmark (issue 5): hubbub in cluster mode holds N connections (default 100,000) from
// several load-client processes spread over 127.0.0.1–127.0.0.4, each echoing once, then a fan-out
// to all of them through the Redis backplane. Prints one JSON object: the loadtest summary plus the
// whole server's RSS (primary + workers, from /proc) before and while loaded.
//
//   npm run build && node bench/crowd.mjs [--connections 100000] [--workers 6] [--procs 6]
//
// Needs Redis on 127.0.0.1:6379. Bounded: the loadtest stops itself (--timeout), the server is killed.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { createInterface } from 'node:readline';

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const connections = Number(arg('connections', 100_000));
const workers = Number(arg('workers', Math.ceil(connections / 17_000)));
const procs = Number(arg('procs', Math.ceil(connections / 17_000)));

function rssKiB(pid) {
  try {
    return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]);
  } catch {
    return 0;
  }
}
function treeRssKiB(pid) {
  const children = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).filter((d) => {
    try {
      return readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1].split(' ')[1] === String(pid);
    } catch {
      return false;
    }
  });
  return rssKiB(pid) + children.reduce((sum, c) => sum + rssKiB(Number(c)), 0);
}

const server = spawn(process.execPath, ['dist/node.js', '--host', '127.0.0.1', '--port', '0', '--workers', String(workers), '--max-connections', String(connections + 10_000), '--handler', 'pubsub', '--backplane', 'redis://127.0.0.1:6379'], { stdio: ['ignore', 'pipe', 'inherit'] });
const kill = () => server.kill('SIGKILL');
process.on('exit', kill);
const url = await new Promise((resolve, reject) => {
  createInterface({ input: server.stdout }).on('line', (line) => {
    try {
      const r = JSON.parse(line);
      if (r.event === 'listening') resolve(r.url);
    } catch {}
  });
  setTimeout(() => reject(new Error('server did not start')), 30_000).unref();
});
await new Promise((r) => setTimeout(r, 2000));
const baselineKiB = treeRssKiB(server.pid);
let peakKiB = baselineKiB;
const sampler = setInterval(() => (peakKiB = Math.max(peakKiB, treeRssKiB(server.pid))), 2000);

const client = spawn(process.execPath, ['dist/node.js', 'loadtest', '--url', `${url.replace('http', 'ws')}/ws`, '--connections', String(connections), '--procs', String(procs), '--concurrency', '600', '--source', '127.0.0.1,127.0.0.2,127.0.0.3,127.0.0.4', '--protocol', 'pubsub', '--echo-messages', '1', '--fanout', '3', '--hold', '5s', '--timeout', '600s', '--reply-timeout', '60s', '--handshake-timeout', '30s', '--json'], { stdio: ['ignore', 'pipe', 'inherit'] });
let out = '';
client.stdout.on('data', (c) => (out += c));
const code = await new Promise((r) => client.on('exit', r));
clearInterval(sampler);
const summary = JSON.parse(out);
const result = {
  bench: 'crowd',
  connections,
  workers,
  clientProcesses: procs,
  loadAverage: readFileSync('/proc/loadavg', 'utf8').trim(),
  server: { baselineMB: baselineKiB / 1024, peakMB: peakKiB / 1024, kBPerConnection: (peakKiB - baselineKiB) / connections },
  loadtestExitCode: code,
  loadtest: summary,
};
mkdirSync('bench/results', { recursive: true });
writeFileSync(`bench/results/crowd-${new Date().toISOString().replace(/[:.]/g, '-')}.json`, JSON.stringify(result, null, 2));
console.log(JSON.stringify(result));
kill();
process.exit(code === 0 ? 0 : 1);
