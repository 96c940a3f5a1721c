// Test helpers: spawn a real server process, talk to it over real sockets.
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import WebSocket from 'ws';
import type { HubStats } from '../src/mod.ts';
import { rawHttp, type HttpResponse } from './frames.ts';

/** The project root (tests run from compiled .test-build/test/). */
export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The deno binary installed from npm (the `deno` package's wrapper would not forward signals). */
/** The Node server from dist/, with no test handler: what the multi-node tests start. */
export const nodeServer: RuntimeTarget = { name: 'node', command: [process.execPath, 'dist/node.js'], testHandler: '' };

/** Whether something accepts TCP connections on 127.0.0.1:`port` (answered within 1 s). */
export function reachable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
    setTimeout(() => (s.destroy(), resolve(false)), 1000).unref();
  });
}

/**
 * A service the tests use (Redis, NATS) on 127.0.0.1:`port`: false when it is there, else the
 * reason to skip. In CI (CI=true) a missing service is a failure, not a skip.
 */
/**
 * A TCP proxy on 127.0.0.1 (a port of its own) to 127.0.0.1:`port`, for faults between a node and
 * its broker. `refuse(true)`: new connections are closed at once, as if nothing listened.
 * `silence()`: the connections it holds stay open (its kernel still acknowledges every segment, so
 * TCP on the far end sees a healthy peer) and nothing is forwarded either way, as a proxy or load
 * balancer that let go of its upstream does; connections made after that are forwarded again.
 */
export async function tcpProxy(port: number) {
  const held = new Set<{ silent: boolean; close: () => void }>();
  let accepted = 0;
  let refusing = false;
  const server = net.createServer((client) => {
    if (refusing) return void client.destroy();
    accepted++;
    const upstream = net.connect(port, '127.0.0.1');
    const pair = { silent: false, close: () => (client.destroy(), upstream.destroy()) };
    held.add(pair);
    client.on('data', (d) => pair.silent || upstream.write(d));
    upstream.on('data', (d) => pair.silent || client.write(d));
    for (const s of [client, upstream]) {
      s.on('error', () => undefined);
      s.on('close', () => (held.delete(pair), pair.close()));
    }
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return {
    port: (server.address() as net.AddressInfo).port,
    /** Connections forwarded so far. */
    get accepted() {
      return accepted;
    },
    refuse(on: boolean) {
      refusing = on;
    },
    silence() {
      for (const pair of held) pair.silent = true;
    },
    close() {
      for (const pair of held) pair.close();
      server.close();
    },
  };
}

export async function serviceSkip(kind: string, port: number): Promise<string | false> {
  if (await reachable(port)) return false;
  if (process.env.CI) throw new Error(`CI: ${kind} must be running on 127.0.0.1:${port}`);
  return `${kind} is not running on 127.0.0.1:${port}; start it to run these tests`;
}

export function denoBinary(): string {
  const require = createRequire(path.join(root, 'package.json'));
  return (require('deno/install_api.cjs') as { runInstall(): string }).runInstall();
}

/** How a runner starts the real server on its runtime. */
export interface RuntimeTarget {
  name: string;
  /** Command and leading args, e.g. ['node', 'dist/node.js']. */
  command: readonly string[];
  /** Path of the test handler module as this runtime loads it. */
  testHandler: string;
  /** The address the server listens on (`--host`). @default '127.0.0.1' */
  host?: string;
  /** Documented behaviours of this runtime that differ from Node (README, "Runtime differences"). */
  differences?: ReadonlySet<RuntimeDifference>;
}

export type RuntimeDifference =
  /** A client that resets mid-handshake leaves a socket that never fires open/close: its slot returns by expiry. */
  | 'vanished-handshake-expires'
  /** A refused upgrade's TCP connection is answered completely but not closed by the server. */
  | 'refused-connection-kept-open'
  /** The runtime's idle timeout closes a silent peer with a 1001 close frame (Node drops it: 1006). */
  | 'idle-close-1001'
  /** The runtime never negotiates permessage-deflate. */
  | 'no-permessage-deflate'
  /** The runtime's HTTP server has no timeout for slow request headers. */
  | 'no-headers-timeout'
  /** The runtime drops a slow request head after its own fixed time (Bun: about 10 s, checked every 4 s), not after --headers-timeout. */
  | 'fixed-headers-timeout'
  /** The runtime cannot say when a closed socket's TCP connection is gone (Bun), so a shutdown waits out the time it may linger (about 5 s) even when every peer answered at once. */
  | 'shutdown-waits-out-linger'
  /** The runtime gives the adapter no hook on accepted TCP connections (Deno, Bun, workerd): no --max-pending-connections, no early drop near the fd limit. */
  | 'no-pending-connection-cap'
  /** The application cannot send pings (workerd): there is no heartbeat, a silent peer is never dropped as idle. */
  | 'no-heartbeat'
  /** The runtime exposes no send queue (workerd: no bufferedAmount): the slow-consumer policies never act, and the runtime buffers what a stalled reader does not read. */
  | 'no-backpressure'
  /** The runtime strips the Upgrade header from a non-101 answer (workerd), so a 426 carries only Sec-WebSocket-Version. */
  | 'no-upgrade-header-on-426'
  /** The hub sweeps only when an event arrives (workerd: no timer, so the Durable Object can hibernate): a token's expiry warning and its 4001 come with the first message or connect after their time. */
  | 'sweeps-on-events'
  /** The runtime's frame layer sends control frames over 125 bytes (workerd: a pong echoing a long ping, a long close reason). */
  | 'oversized-control-frames';

export interface ServerProcess {
  /** http://… or, with --tls-cert, https://… (what the listening line says). */
  url: string;
  /** The admin listener (`--admin-port`), if the server has one; /stats and /metrics live there then. */
  adminUrl: string | undefined;
  /** ws://…/ws, or wss://…/ws over TLS. */
  wsUrl: string;
  child: ChildProcess;
  /** Every stdout line so far (JSON logs). */
  lines: string[];
  stderr: () => string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stats(): Promise<Stats>;
  stop(): Promise<void>;
}

/** What GET /stats answers: the hub's own stats with the runtime's name and process figures. */
export type Stats = HubStats & { runtime: string; process: Record<string, number> };

const running = new Set<ServerProcess>();
process.on('exit', () => {
  for (const s of running) s.child.kill('SIGKILL');
});

export async function startServer(target: RuntimeTarget, args: readonly string[] = [], env: Record<string, string> = {}): Promise<ServerProcess> {
  const [cmd, ...lead] = target.command;
  const child = spawn(cmd!, [...lead, '--host', target.host ?? '127.0.0.1', '--port', '0', ...args], {
    cwd: root,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NO_COLOR: '1', ...env },
  });
  const lines: string[] = [];
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let adminUrl: string | undefined;
  const listening = new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! });
    rl.on('line', (line) => {
      lines.push(line);
      try {
        const record = JSON.parse(line) as { event?: string; url?: string; adminUrl?: string };
        adminUrl ??= record.adminUrl;
        if (record.event === 'listening' && record.url) resolve(record.url);
      } catch {
        // not a log line
      }
    });
    exited.then(({ code, signal }) => reject(new Error(`${target.name} server exited (${code ?? signal}) before listening: ${stderr}`)));
    setTimeout(() => reject(new Error(`${target.name} server did not listen within 30 s: ${stderr}`)), 30_000).unref();
  });
  const url = await listening;
  // /stats where it is served, with the admin token the server was given.
  const tokenAt = args.indexOf('--admin-token');
  const statsHeaders: Record<string, string> = tokenAt >= 0 ? { Authorization: `Bearer ${args[tokenAt + 1]}` } : {};
  // Over TLS, /stats is read trusting the server's own certificate (fetch cannot be given a CA).
  const certAt = args.indexOf('--tls-cert');
  const ca = certAt >= 0 ? readFileSync(path.resolve(root, args[certAt + 1]!), 'utf8') : undefined;
  const readStats = async (statsUrl: string) =>
    (ca ? JSON.parse((await httpsGet(statsUrl, { ca, headers: statsHeaders })).body) : await (await fetch(statsUrl, { headers: statsHeaders })).json()) as Stats;
  const server: ServerProcess = {
    url,
    adminUrl,
    wsUrl: `${url.replace(/^http/, 'ws')}/ws`, // https → wss
    child,
    lines,
    stderr: () => stderr,
    exited,
    stats: () => readStats(`${adminUrl ?? url}/stats`),
    stop: async () => {
      running.delete(server);
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
  running.add(server);
  return server;
}

/**
 * fetch on a fresh connection (`Connection: close`): a kept-alive connection that the server closed
 * in the meantime (workerd's launcher does) would fail the next fetch, and a connection to a worker
 * picked by round-robin would keep answering from that worker.
 */
export function fetchFresh(url: string, init: RequestInit = {}): Promise<Response> {
  const headers = new Headers(init.headers);
  headers.set('connection', 'close');
  return fetch(url, { ...init, headers });
}

/** One call of the server API (`--api-key`) on a fresh connection: the status and the JSON body (the text when it is not JSON). */
export async function apiCall(baseUrl: string, key: string | null, method: string, apiPath: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetchFresh(`${baseUrl}${apiPath}`, {
    method,
    headers: { ...(key !== null ? { authorization: `Bearer ${key}` } : {}), ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
    ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, body: json };
}

/**
 * A GET over https with node:https, whose certificate checking can be given a CA (`ca`), unlike
 * fetch's. Never with checking off: a test that trusts everything proves nothing about TLS.
 */
export function httpsGet(url: string, options: { ca?: string | Buffer; headers?: Record<string, string> } = {}, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ...(options.ca ? { ca: options.ca } : {}), headers: options.headers ?? {}, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`timed out: GET ${url}`)));
    req.on('error', reject);
  });
}

/**
 * Runs a command to completion (bad-options checks), within `timeoutMs`: a process still running
 * then is killed and reported `timedOut`, and one that logs `listening` is killed at once (it
 * started when it should have refused), so a regression fails in seconds, not at the suite's timeout.
 */
export async function runToExit(target: RuntimeTarget, args: readonly string[], env: Record<string, string> = {}, timeoutMs = 10_000) {
  const [cmd, ...lead] = target.command;
  const started = Date.now();
  const child = spawn(cmd!, [...lead, ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NO_COLOR: '1', ...env } });
  let stdout = '';
  let stderr = '';
  let timedOut = false;
  let listened = false;
  child.stdout!.setEncoding('utf8').on('data', (c: string) => {
    stdout += c;
    if (!listened && /"event":"listening"/.test(stdout)) {
      listened = true;
      child.kill('SIGKILL');
    }
  });
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  const [code, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  return { code, signal, stdout, stderr, timedOut, listened, elapsedMs: Date.now() - started };
}

/** Polls until `check` passes or the time is up; returns the last value. */
export async function eventually<T>(read: () => Promise<T>, check: (value: T) => boolean, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let value = await read();
  while (!check(value) && Date.now() < deadline) {
    await sleep(25);
    value = await read();
  }
  return value;
}

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Rejects with `timed out: <what>` unless `promise` settles within `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([promise, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms)))]).finally(() => clearTimeout(timer));
}

/** What the echo handler puts before every message it echoes. */
export const PREFIX = 'Server received: ';

/** The host:port of a URL (a Host header). */
export function hostOf(url: string): string {
  return new URL(url).host;
}

/** A process's resident set size in KiB (Linux /proc). */
export function rssKiB(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

/** Opens a WebSocket and waits for it to open (rejects on an HTTP refusal with its status). */
export function connect(url: string, options: WebSocket.ClientOptions = {}): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { handshakeTimeout: 10_000, ...options });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      const err = Object.assign(new Error(`unexpected response ${res.statusCode}`), { status: res.statusCode, headers: res.headers });
      res.resume();
      reject(err);
      ws.terminate();
    });
    ws.once('error', reject);
  });
}

/** Resolves with the next message (text as string, binary as Buffer with `binary` flag). */
export function nextMessage(ws: WebSocket, timeoutMs = 5000): Promise<{ data: Buffer; text: string; binary: boolean }> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no message within timeout')), timeoutMs);
    ws.once('message', (data: Buffer, binary: boolean) => {
      clearTimeout(timer);
      resolve({ data, text: data.toString(), binary });
    });
  });
}

/** Resolves with the close code and reason. */
export function closed(ws: WebSocket, timeoutMs = 10_000): Promise<{ code: number; reason: string }> {
  return new Promise((resolve, reject) => {
    if (ws.readyState === WebSocket.CLOSED) return reject(new Error('already closed'));
    const timer = setTimeout(() => reject(new Error('not closed within timeout')), timeoutMs);
    ws.once('close', (code: number, reason: Buffer) => {
      clearTimeout(timer);
      resolve({ code, reason: reason.toString() });
    });
  });
}

/** Buffers every message of a socket, so two messages arriving in one TCP read are not lost. */
export function inbox(ws: WebSocket) {
  const queue: string[] = [];
  const waiters: ((text: string) => void)[] = [];
  ws.on('message', (data: Buffer) => {
    const waiter = waiters.shift();
    if (waiter) waiter(data.toString());
    else queue.push(data.toString());
  });
  return {
    next(timeoutMs = 5000): Promise<string> {
      const queued = queue.shift();
      if (queued !== undefined) return Promise.resolve(queued);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(waiter), 1);
          reject(new Error('no message within timeout'));
        }, timeoutMs);
        const waiter = (text: string) => {
          clearTimeout(timer);
          resolve(text);
        };
        waiters.push(waiter);
      });
    },
    async request(text: string): Promise<string> {
      ws.send(text);
      return this.next();
    },
  };
}

export async function request(ws: WebSocket, text: string): Promise<string> {
  const reply = nextMessage(ws);
  ws.send(text);
  return (await reply).text;
}

export type RawResponse = HttpResponse;

/**
 * Sends a raw HTTP request over TCP and reads the response head (frames.ts `rawHttp`). Unlike
 * rawHttp, the socket is left flowing: what arrives before the caller listens is discarded, and
 * 'end' fires when the server ends the connection.
 */
export async function rawRequest(url: string, headers: Record<string, string>, requestPath = '/ws', timeoutMs = 5000): Promise<RawResponse> {
  const response = await rawHttp(url, headers, { path: requestPath, timeoutMs });
  response.socket.resume();
  return response;
}
