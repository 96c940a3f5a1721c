// The sockets of one client process and what they do in each phase. The orchestrator (index.ts)
// drives one engine per process, in this process (--procs 1) or in a forked worker (worker.ts),
// through the same commands; every result is plain JSON so it can cross the IPC channel.
//
// Node APIs only where Deno has them too: `ws` (npm), node:buffer; timestamps from `performance`.
import { Buffer } from 'node:buffer';
import WebSocket from 'ws';
import { Histogram, type HistogramData } from './histogram.ts';

/** Wall-clock milliseconds with sub-millisecond precision, comparable between processes of one machine. */
export const epochNow = (): number => performance.timeOrigin + performance.now();

export interface ConnectPlan {
  url: string;
  /** Connections this process opens. */
  count: number;
  /** Global index of the first one (source addresses are picked round-robin by global index). */
  firstIndex: number;
  sources: string[];
  /**
   * With sources: the local ports this process binds, picked here rather than by the kernel.
   * Candidate k is `low + (offset + phase + k × stride) mod size`; each process has its own phase,
   * so processes never pick the same port. Why: Node binds with SO_REUSEADDR, and Linux's search
   * for a free port in bind(addr, 0) then looks at half the range, odd ports first, and costs
   * O(ports in use) per call once that half fills: about 7,000 connections per source address,
   * after which connects crawl at a few hundred per second, all of it kernel time in the client.
   */
  ports?: { low: number; size: number; offset: number; phase: number; stride: number };
  /** Connects started per second by this process; 0 = no pacing. */
  rate: number;
  /** Handshakes in flight in this process. */
  concurrency: number;
  handshakeTimeoutMs: number;
}

export interface ConnectResult {
  requested: number;
  opened: number;
  failed: number;
  /** Failures by cause: `HTTP 503`, `ECONNREFUSED`, `EADDRNOTAVAIL`, `timeout`, … */
  failures: Record<string, number>;
  handshake: HistogramData;
  startedAt: number;
  endedAt: number;
}

export interface EchoPlan {
  protocol: 'echo' | 'pubsub';
  messages: number;
  durationMs: number;
  replyTimeoutMs: number;
}

export interface EchoResult {
  connections: number;
  sent: number;
  received: number;
  /** Sent, but no reply within the reply timeout (or the socket closed first). */
  missing: number;
  latency: HistogramData;
  startedAt: number;
  endedAt: number;
}

/** What answers a subscribe: its confirmation or an error. */
const SUBSCRIBE_ANSWERS = ['"subscribed"', '"error"'] as const;

export interface SubscribeResult {
  subscribed: number;
  failed: number;
  /** Failures by cause: `timeout`, `closed`, or the server's error code. */
  failures: Record<string, number>;
  /** Subscribes answered `unavailable` and sent again (as hubbub's client does), and the sockets that needed it. */
  retries: number;
  retried: number;
}

export interface PublishResult {
  sentAt: number;
}

export interface FanoutWaitResult {
  k: number;
  expected: number;
  received: number;
  firstAt: number | null;
  lastAt: number | null;
}

export interface EngineStatus {
  open: number;
  subscribed: number;
  /** Open sockets that closed without being asked to, by close code and by phase. */
  dropped: { total: number; byCode: Record<string, number>; byPhase: Record<string, number> };
  /** Messages that matched nothing (late replies, a server's own chatter). */
  unexpected: number;
  /** Fan-out messages a socket had already seen. */
  duplicates: number;
}

export interface CloseResult {
  closedCleanly: number;
  terminated: number;
}

export interface Progress {
  phase: string;
  done: number;
  ok: number;
}

interface Conn {
  ws: WebSocket;
  index: number;
  open: boolean;
  subscribed: boolean;
  /** Highest fan-out message number this socket has received. */
  lastFanout: number;
  /** A pending request: resolved with the reply text, or null on timeout or close. */
  waiter: ((text: string | null) => void) | undefined;
  /** The reply to the pending request is the first message containing any of these. */
  match: readonly string[];
}

interface Receipt {
  count: number;
  firstAt: number | null;
  lastAt: number | null;
}

/** Tries per connection when a source port we picked is taken (e.g. by a TIME_WAIT socket). */
const PORT_ATTEMPTS = 64;
/** After this many port-taken errors in a row on one source address, stop retrying on it. */
const SOURCE_GIVE_UP = 256;

const inc = (record: Record<string, number>, key: string, by = 1) => {
  record[key] = (record[key] ?? 0) + by;
};

/** How a failed handshake is reported: the HTTP status, the error code, or `timeout`. */
export function classifyError(error: unknown): string {
  const e = error as { code?: unknown; message?: unknown };
  const message = typeof e?.message === 'string' ? e.message : String(error);
  if (/handshake has timed out/i.test(message)) return 'timeout';
  if (typeof e?.code === 'string' && e.code) return e.code;
  return `error: ${message.slice(0, 80)}`;
}

export class LoadEngine {
  readonly #conns: Conn[] = [];
  /** Sockets still in their handshake, so that abort() can end them. */
  readonly #connecting = new Set<WebSocket>();
  readonly #sleeps = new Set<{ timer: ReturnType<typeof setTimeout>; resolve: () => void }>();
  #phase = 'idle';
  #done = 0;
  #ok = 0;
  #closing = false;
  #aborted = false;
  #topic: string | undefined;
  readonly #receipts = new Map<number, Receipt>();
  #fanWait: { k: number; expected: number; resolve: () => void } | undefined;
  readonly #dropped = { total: 0, byCode: {} as Record<string, number>, byPhase: {} as Record<string, number> };
  /** Next port candidate per source address (see ConnectPlan.ports). */
  readonly #portCursor = new Map<string, number>();
  /** Port-taken errors in a row per source address: a source that is not a local address fails them all. */
  readonly #portMisses = new Map<string, number>();
  #unexpected = 0;
  #duplicates = 0;

  progress(): Progress {
    return { phase: this.#phase, done: this.#done, ok: this.#ok };
  }

  #begin(phase: string): void {
    this.#phase = phase;
    this.#done = 0;
    this.#ok = 0;
  }

  #sleep(ms: number): Promise<void> {
    if (this.#aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          this.#sleeps.delete(entry);
          resolve();
        }, ms),
        resolve,
      };
      this.#sleeps.add(entry);
    });
  }

  async connect(plan: ConnectPlan): Promise<ConnectResult> {
    this.#begin('connect');
    const handshake = new Histogram();
    const failures: Record<string, number> = {};
    let opened = 0;
    let failed = 0;
    const startedAt = epochNow();
    const t0 = performance.now();
    const interval = plan.rate > 0 ? 1000 / plan.rate : 0;
    let next = 0;
    const worker = async () => {
      while (next < plan.count && !this.#aborted) {
        const j = next++;
        if (interval > 0) {
          const wait = t0 + j * interval - performance.now();
          if (wait >= 1) await this.#sleep(wait);
          if (this.#aborted) return;
        }
        const outcome = await this.#openOne(plan, plan.firstIndex + j);
        this.#done++;
        if (typeof outcome === 'number') {
          opened++;
          this.#ok++;
          handshake.record(outcome);
        } else {
          failed++;
          inc(failures, outcome);
        }
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(plan.concurrency, plan.count)) }, worker));
    this.#phase = 'connected';
    return { requested: plan.count, opened, failed, failures, handshake: handshake.toJSON(), startedAt, endedAt: epochNow() };
  }

  #nextPort(plan: ConnectPlan, source: string): number | undefined {
    const p = plan.ports;
    if (!p) return undefined;
    const k = this.#portCursor.get(source) ?? 0;
    this.#portCursor.set(source, k + 1);
    return p.low + ((p.offset + p.phase + k * p.stride) % p.size);
  }

  /**
   * Opens one socket: resolves with its handshake time in ms (from the first attempt), or the
   * cause of its failure. A source port we picked that turns out to be taken is skipped: up to
   * PORT_ATTEMPTS tries, none of them counted as failures.
   */
  async #openOne(plan: ConnectPlan, index: number): Promise<number | string> {
    const source = plan.sources.length > 0 ? plan.sources[index % plan.sources.length] : undefined;
    const started = performance.now();
    for (let attempt = 1; ; attempt++) {
      const port = source ? this.#nextPort(plan, source) : undefined;
      const outcome = await this.#attempt(plan, index, source, port, started);
      if (port === undefined || source === undefined) return outcome;
      const portTaken = outcome === 'EADDRINUSE' || outcome === 'EADDRNOTAVAIL';
      const misses = portTaken ? (this.#portMisses.get(source) ?? 0) + 1 : 0;
      this.#portMisses.set(source, misses);
      if (!portTaken || attempt >= PORT_ATTEMPTS || misses >= SOURCE_GIVE_UP || this.#aborted) return outcome;
    }
  }

  #attempt(plan: ConnectPlan, index: number, source: string | undefined, localPort: number | undefined, started: number): Promise<number | string> {
    return new Promise((resolve) => {
      let settled = false;
      let ws: WebSocket;
      try {
        ws = new WebSocket(plan.url, {
          perMessageDeflate: false,
          handshakeTimeout: plan.handshakeTimeoutMs,
          followRedirects: false,
          ...(source ? { localAddress: source } : {}),
          ...(localPort !== undefined ? { localPort } : {}),
        });
      } catch (error) {
        resolve(classifyError(error));
        return;
      }
      const conn: Conn = { ws, index, open: false, subscribed: false, lastFanout: 0, waiter: undefined, match: [] };
      const settle = (failure?: string) => {
        if (settled) return;
        settled = true;
        this.#connecting.delete(ws);
        if (failure !== undefined) return resolve(failure);
        if (this.#aborted) {
          ws.terminate();
          return resolve('aborted');
        }
        conn.open = true;
        this.#conns.push(conn);
        resolve(performance.now() - started);
      };
      this.#connecting.add(ws);
      ws.once('open', () => settle());
      ws.once('unexpected-response', (_req, res) => {
        settle(`HTTP ${res.statusCode}`);
        res.resume();
        ws.terminate();
      });
      ws.on('error', (error) => settle(classifyError(error)));
      ws.on('close', (code) => {
        if (!settled) return settle(`closed before open (${code})`);
        if (!conn.open) return;
        conn.open = false;
        const waiter = conn.waiter;
        conn.waiter = undefined;
        waiter?.(null);
        if (!this.#closing) {
          this.#dropped.total++;
          inc(this.#dropped.byCode, String(code));
          inc(this.#dropped.byPhase, this.#phase);
        }
        this.#recheckFanWait();
      });
      ws.on('message', (data) => this.#onMessage(conn, data));
    });
  }

  #onMessage(conn: Conn, data: WebSocket.RawData): void {
    // Binary frames are read as UTF-8 too: plenty of echo servers send back what they got as binary.
    const text = Array.isArray(data) ? Buffer.concat(data).toString() : Buffer.isBuffer(data) ? data.toString() : Buffer.from(data).toString();
    if (conn.waiter && conn.match.some((m) => text.includes(m))) {
      const waiter = conn.waiter;
      conn.waiter = undefined;
      waiter(text);
      return;
    }
    if (this.#topic !== undefined && text.includes('"loadtest"')) {
      let k: unknown;
      try {
        const msg = JSON.parse(text) as { type?: unknown; topic?: unknown; data?: { loadtest?: unknown } };
        if (msg.type === 'message' && msg.topic === this.#topic) k = msg.data?.loadtest;
      } catch {
        // not ours
      }
      if (typeof k === 'number') return this.#fanoutReceipt(conn, k);
    }
    this.#unexpected++;
  }

  /** Sends `payload` and resolves with the first message that contains one of `match`, or null. */
  #request(conn: Conn, payload: string, match: readonly string[], timeoutMs: number): Promise<string | null> {
    return new Promise((resolve) => {
      if (!conn.open || this.#aborted) return resolve(null);
      const timer = setTimeout(() => {
        if (conn.waiter === done) conn.waiter = undefined;
        resolve(null);
      }, timeoutMs);
      const done = (text: string | null) => {
        clearTimeout(timer);
        resolve(text);
      };
      conn.match = match;
      conn.waiter = done;
      conn.ws.send(payload);
    });
  }

  async echo(plan: EchoPlan): Promise<EchoResult> {
    this.#begin('echo');
    const latency = new Histogram();
    const startedAt = epochNow();
    const endAt = performance.now() + plan.durationMs;
    let sent = 0;
    let received = 0;
    let missing = 0;
    const live = this.#conns.filter((c) => c.open);
    const loop = async (conn: Conn) => {
      for (let k = 0; k < plan.messages; k++) {
        if (!conn.open || this.#aborted || performance.now() >= endAt) return;
        const token = `lt:${conn.index}:${k};`;
        const [payload, match] = plan.protocol === 'pubsub' ? ['{"type":"ping"}', ['"pong"']] : [token, [token]];
        const t = performance.now();
        sent++;
        const reply = await this.#request(conn, payload, match, plan.replyTimeoutMs);
        this.#done++;
        if (reply === null) {
          missing++;
          return; // a late reply would be taken for the next one's: this connection stops here
        }
        received++;
        this.#ok++;
        latency.record(performance.now() - t);
      }
    };
    await Promise.all(live.map(loop));
    this.#phase = 'echoed';
    return { connections: live.length, sent, received, missing, latency: latency.toJSON(), startedAt, endedAt: epochNow() };
  }

  async subscribe(args: { topic: string; timeoutMs: number }): Promise<SubscribeResult> {
    this.#begin('subscribe');
    this.#topic = args.topic;
    const failures: Record<string, number> = {};
    let subscribed = 0;
    let retries = 0;
    let retried = 0;
    const payload = JSON.stringify({ type: 'subscribe', topic: args.topic });
    await Promise.all(
      this.#conns
        .filter((c) => c.open)
        .map(async (conn) => {
          // `unavailable` means the subscribe was undone and may be sent again: hubbub's client
          // sends it again after a jittered backoff (0–1 s), until the reply timeout is spent.
          const until = performance.now() + args.timeoutMs;
          let reply = await this.#request(conn, payload, SUBSCRIBE_ANSWERS, args.timeoutMs);
          let again = 0;
          while (reply?.includes('"unavailable"') && conn.open) {
            const wait = Math.random() * 1000;
            if (performance.now() + wait >= until) break;
            again++;
            await this.#sleep(wait);
            reply = await this.#request(conn, payload, SUBSCRIBE_ANSWERS, Math.max(1, until - performance.now()));
          }
          retries += again;
          if (again) retried++;
          this.#done++;
          if (reply !== null && reply.includes('"subscribed"')) {
            conn.subscribed = true;
            subscribed++;
            this.#ok++;
            return;
          }
          let cause = conn.open ? 'timeout' : 'closed';
          if (reply !== null) {
            try {
              cause = `error ${String((JSON.parse(reply) as { code?: unknown }).code)}`;
            } catch {
              cause = 'error';
            }
          }
          inc(failures, cause);
        }),
    );
    this.#phase = 'fanout';
    this.#done = 0;
    this.#ok = 0;
    const failed = Object.values(failures).reduce((a, b) => a + b, 0);
    return { subscribed, failed, failures, retries, retried };
  }

  /** Publishes fan-out message `k` from the first subscribed socket of this process. */
  publish(args: { topic: string; k: number }): PublishResult {
    const publisher = this.#conns.find((c) => c.open && c.subscribed);
    if (!publisher) throw new Error('no open subscribed connection to publish from');
    const sentAt = epochNow();
    publisher.ws.send(JSON.stringify({ type: 'publish', topic: args.topic, data: { loadtest: args.k, sentAt } }));
    return { sentAt };
  }

  #fanoutReceipt(conn: Conn, k: number): void {
    if (k <= conn.lastFanout) {
      this.#duplicates++;
      return;
    }
    conn.lastFanout = k;
    const now = epochNow();
    let receipt = this.#receipts.get(k);
    if (!receipt) {
      receipt = { count: 0, firstAt: now, lastAt: now };
      this.#receipts.set(k, receipt);
    }
    receipt.count++;
    receipt.lastAt = now;
    this.#checkFanWait();
  }

  #expectedReceivers(): number {
    let n = 0;
    for (const c of this.#conns) if (c.open && c.subscribed) n++;
    return n;
  }

  /** On a receipt: cheap, compares counts. */
  #checkFanWait(): void {
    const wait = this.#fanWait;
    if (wait && (this.#receipts.get(wait.k)?.count ?? 0) >= wait.expected) wait.resolve();
  }

  /** On a socket closing (rare): done if every socket still open has the message. */
  #recheckFanWait(): void {
    const wait = this.#fanWait;
    if (!wait) return;
    for (const c of this.#conns) if (c.open && c.subscribed && c.lastFanout < wait.k) return;
    wait.resolve();
  }

  /** Resolves once every open subscribed socket here has message `k`, or after `timeoutMs`. */
  async awaitFanout(args: { k: number; timeoutMs: number }): Promise<FanoutWaitResult> {
    const expected = this.#expectedReceivers();
    const have = () => this.#receipts.get(args.k)?.count ?? 0;
    if (have() < expected && !this.#aborted) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(finish, args.timeoutMs);
        function finish() {
          clearTimeout(timer);
          resolve();
        }
        this.#fanWait = { k: args.k, expected, resolve: finish };
        this.#checkFanWait();
      });
      this.#fanWait = undefined;
    }
    const receipt = this.#receipts.get(args.k);
    this.#receipts.delete(args.k - 1); // keep the map small; late receipts of older messages do not matter
    this.#done = args.k;
    this.#ok = args.k;
    return { k: args.k, expected, received: Math.min(have(), expected), firstAt: receipt?.firstAt ?? null, lastAt: receipt?.lastAt ?? null };
  }

  status(): EngineStatus {
    let open = 0;
    let subscribed = 0;
    for (const c of this.#conns) {
      if (c.open) open++;
      if (c.open && c.subscribed) subscribed++;
    }
    return {
      open,
      subscribed,
      dropped: structuredClone(this.#dropped),
      unexpected: this.#unexpected,
      duplicates: this.#duplicates,
    };
  }

  /** Marks the phase (for the drop statistics) without doing anything. */
  setPhase(args: { phase: string }): void {
    this.#begin(args.phase);
  }

  /** Close handshake on every socket; whatever has not closed after `timeoutMs` is terminated. */
  async close(args: { timeoutMs: number }): Promise<CloseResult> {
    this.#begin('close');
    this.#closing = true;
    let closedCleanly = 0;
    const open = this.#conns.filter((c) => c.ws.readyState !== WebSocket.CLOSED);
    await new Promise<void>((resolve) => {
      let remaining = open.length;
      if (remaining === 0) return resolve();
      const timer = setTimeout(resolve, args.timeoutMs);
      for (const conn of open) {
        conn.ws.once('close', () => {
          closedCleanly++;
          this.#done++;
          if (--remaining === 0) {
            clearTimeout(timer);
            resolve();
          }
        });
        conn.ws.close(1000, 'loadtest done');
      }
    });
    let terminated = 0;
    for (const conn of this.#conns) {
      if (conn.ws.readyState !== WebSocket.CLOSED) {
        terminated++;
        conn.ws.terminate();
      }
    }
    this.#conns.length = 0;
    return { closedCleanly, terminated };
  }

  /** Ends everything now: sockets terminated, waits and sleeps released. Idempotent. */
  abort(): void {
    this.#aborted = true;
    this.#closing = true;
    for (const entry of this.#sleeps) {
      clearTimeout(entry.timer);
      entry.resolve();
    }
    this.#sleeps.clear();
    for (const ws of this.#connecting) ws.terminate();
    this.#connecting.clear();
    for (const conn of this.#conns) {
      const waiter = conn.waiter;
      conn.waiter = undefined;
      waiter?.(null);
      conn.ws.terminate();
    }
    this.#conns.length = 0;
    this.#fanWait?.resolve();
  }
}

/** The commands an engine answers, by name: what the IPC channel and the in-process driver call. */
export const COMMANDS = ['connect', 'echo', 'subscribe', 'publish', 'awaitFanout', 'status', 'setPhase', 'close'] as const;
export type Command = (typeof COMMANDS)[number];

export interface CommandArgs {
  connect: ConnectPlan;
  echo: EchoPlan;
  subscribe: { topic: string; timeoutMs: number };
  publish: { topic: string; k: number };
  awaitFanout: { k: number; timeoutMs: number };
  status: Record<string, never>;
  setPhase: { phase: string };
  close: { timeoutMs: number };
}

export interface CommandResults {
  connect: ConnectResult;
  echo: EchoResult;
  subscribe: SubscribeResult;
  publish: PublishResult;
  awaitFanout: FanoutWaitResult;
  status: EngineStatus;
  setPhase: void;
  close: CloseResult;
}

export async function dispatch<C extends Command>(engine: LoadEngine, cmd: C, args: CommandArgs[C]): Promise<CommandResults[C]> {
  const method = engine[cmd] as (a: CommandArgs[C]) => CommandResults[C] | Promise<CommandResults[C]>;
  return method.call(engine, args);
}
