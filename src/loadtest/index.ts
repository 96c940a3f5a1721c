// `hubbub loadtest`: opens many WebSocket connections to one server and measures it, phase by
// phase (connect, hold, echo, fanout), then prints a table or, with --json, one JSON object.
// `loadtestHelp()` (options.ts) is the user documentation.
//
// Shape: this module is the orchestrator. The sockets live in LoadEngines (engine.ts), one in
// this process with --procs 1, else one per forked client process (worker.ts), so that no
// process needs more than 19,000 file descriptors (the limit here is 20,000 per process). The
// orchestrator splits the connections, the rate and the handshake concurrency among them, runs
// each phase on all of them at once, and merges their results (latency histograms merge exactly).
//
// Targets: loopback only unless --allow-remote. A load test is indistinguishable from a
// denial-of-service attack to the server it hits, so a typo or a pasted production URL must not
// be enough to aim one at somebody else's machine. (On the hubbub development and CI machines only
// loopback may be used at all; the flag exists for a user's own staging servers.)
//
// Portability: Node APIs that Deno also implements (node:child_process fork with IPC, node:fs,
// node:dns, node:net, node:process, `ws` from npm), `fetch` and `performance` for the rest, so a thin
// `deno run -A` entry can run it.
import { lookup } from 'node:dns/promises';
import { readFile } from 'node:fs/promises';
import { openFileLimit } from '../runtime/fd-limit.ts';
import { withDeadline } from '../timers.ts';
import { ForkDriver, LocalDriver, type Driver } from './drivers.ts';
import type { ConnectPlan, EngineStatus } from './engine.ts';
import { Histogram } from './histogram.ts';
import { describeSource, sampleServerMemory, statsUrlFor, type MemoryReading, type MemorySource } from './memory.ts';
import {
  bareHost,
  checkSocketsPerProcess,
  isLoopback,
  LoadtestUsageError,
  MAX_SOCKETS_PER_PROCESS,
  parseLoadtestArgs,
  REMOTE_REFUSAL,
  type LoadtestOptions,
} from './options.ts';
import { ProgressView } from './progress.ts';
import { renderTable, type Summary } from './report.ts';

export { loadtestHelp, parseLoadtestArgs, type LoadtestOptions } from './options.ts';
export type { Summary as LoadtestSummary } from './report.ts';

export interface LoadtestIO {
  stdout(text: string): void;
  stderr(text: string): void;
  /** Whether stderr is a terminal: progress bars are drawn only then (and never with --json). */
  isTTY: boolean;
}

/** Runs `hubbub loadtest <argv>`. Resolves with the exit code: 0 ok, 1 failures over --max-failures (or --timeout, or a client process died), 2 a bad flag. */
export async function runLoadtest(argv: readonly string[], io: LoadtestIO): Promise<number> {
  let options: LoadtestOptions;
  let environment: Environment;
  try {
    const command = parseLoadtestArgs(argv);
    if (command.kind === 'help') {
      io.stdout(command.text);
      return 0;
    }
    options = command.options;
    environment = await checkSystem(options);
  } catch (error) {
    if (error instanceof LoadtestUsageError) {
      io.stderr(`hubbub loadtest: ${error.message}\n`);
      return 2;
    }
    throw error;
  }
  return new Run(options, io, environment).run();
}

/** TCP sockets in TIME_WAIT in this network namespace (Linux). */
async function timeWaitSockets(): Promise<number | undefined> {
  try {
    const m = /^TCP:.*\btw (\d+)/m.exec(await readFile('/proc/net/sockstat', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

async function ephemeralRange(): Promise<{ low: number; high: number } | undefined> {
  try {
    const [low, high] = (await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8')).trim().split(/\s+/).map(Number);
    return low && high && high >= low ? { low, high } : undefined;
  } catch {
    return undefined;
  }
}

type Environment = Summary['environment'];

/** The checks that need the system: what localhost is, the server pid, fd and port limits. */
async function checkSystem(options: LoadtestOptions): Promise<Environment> {
  const host = bareHost(options.url);
  if (!options.allowRemote && host === 'localhost') {
    let addresses: { address: string }[] = [];
    try {
      addresses = await lookup('localhost', { all: true });
    } catch {
      // cannot resolve: the connect phase will say so
    }
    const outside = addresses.find((a) => !isLoopback(a.address));
    if (outside) throw new LoadtestUsageError(`refusing to load localhost: it resolves to ${outside.address} here; ${REMOTE_REFUSAL}`);
  }
  const files = openFileLimit();
  let cap = MAX_SOCKETS_PER_PROCESS;
  let why = 'one process may open 20,000 files';
  if (files !== undefined && files - Math.min(1000, Math.ceil(files * 0.05)) < cap) {
    cap = files - Math.min(1000, Math.ceil(files * 0.05));
    why = `the open-file limit of a process here is ${files}`;
  }
  checkSocketsPerProcess(options, cap, why);
  if (options.serverPid !== undefined) {
    try {
      await readFile(`/proc/${options.serverPid}/status`, 'utf8');
    } catch {
      throw new LoadtestUsageError(`--server-pid ${options.serverPid}: cannot read /proc/${options.serverPid}/status (no such process, or not Linux)`);
    }
  }
  const portRange = await ephemeralRange();
  const ports = portRange ? portRange.high - portRange.low + 1 : undefined;
  const perSource = Math.ceil(options.connections / Math.max(1, options.sources.length));
  if (ports !== undefined && perSource > ports) {
    throw new LoadtestUsageError(
      `--connections ${options.connections} from ${options.sources.length || 1} source address${options.sources.length > 1 ? 'es' : ''} is ${perSource} per address, ` +
        `more than the ${ports} ephemeral ports (/proc/sys/net/ipv4/ip_local_port_range): use --source with ${Math.ceil(options.connections / ports)} or more addresses, e.g. 127.0.0.1,127.0.0.2`,
    );
  }
  return { openFileLimit: files, socketsPerProcessLimit: cap, ephemeralPorts: ports, portRange, timeWaitAtStart: await timeWaitSockets() };
}

/** `total` split into `parts` near-equal integers. */
function split(total: number, parts: number): number[] {
  return Array.from({ length: parts }, (_, i) => Math.floor(total / parts) + (i < total % parts ? 1 : 0));
}

const round = (n: number, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits;
/** A duration for a progress line: `0.42 ms`, `12.3 ms`, `584 ms`. */
const shown = (n: number | null) => (n === null ? '-' : n < 10 ? n.toFixed(2) : n < 100 ? n.toFixed(1) : String(Math.round(n)));
const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
const mergeCounts = (records: Record<string, number>[]) => {
  const out: Record<string, number> = {};
  for (const r of records) for (const [k, v] of Object.entries(r)) out[k] = (out[k] ?? 0) + v;
  return out;
};

class Stopped extends Error {}

class Run {
  readonly #o: LoadtestOptions;
  readonly #io: LoadtestIO;
  readonly #view: ProgressView;
  readonly #drivers: Driver[] = [];
  readonly #stop = new AbortController();
  readonly #s: Summary;
  readonly #t0 = performance.now();
  #phase = 'starting client processes';
  #statuses: EngineStatus[] = [];

  constructor(options: LoadtestOptions, io: LoadtestIO, environment: Environment) {
    this.#o = options;
    this.#io = io;
    this.#view = new ProgressView(options.json ? 'quiet' : io.isTTY ? 'bars' : 'lines', io.stderr);
    const o = options;
    this.#s = {
      tool: 'hubbub loadtest',
      url: o.url.href,
      startedAt: new Date().toISOString(),
      durationMs: 0,
      options: {
        connections: o.connections,
        rate: o.rate,
        concurrency: o.concurrency,
        procs: o.procs,
        sources: o.sources,
        protocol: o.protocol,
        phases: o.phases,
        holdMs: o.holdMs,
        echoMessages: o.echoMessages,
        echoDurationMs: o.echoDurationMs,
        fanout: o.fanout,
        topic: o.topic,
        replyTimeoutMs: o.replyTimeoutMs,
        handshakeTimeoutMs: o.handshakeTimeoutMs,
        timeoutMs: o.timeoutMs,
        maxFailures: o.maxFailures,
      },
      perProcess: split(o.connections, o.procs),
      environment,
      dropped: { total: 0, byCode: {}, byPhase: {} },
      unexpectedMessages: 0,
      failures: { total: 0, connect: 0, dropped: 0, echoMissing: 0, subscribe: 0, fanoutMissing: 0 },
      ok: false,
      exitCode: 1,
    };
  }

  async run(): Promise<number> {
    const work = this.#phases().then(
      () => 'done' as const,
      (error: unknown) => {
        if (!(error instanceof Stopped) && !this.#stop.signal.aborted) this.#s.error = error instanceof Error ? error.message : String(error);
        return 'error' as const;
      },
    );
    const outcome = await withDeadline(work, this.#o.timeoutMs, 'timeout' as const);
    if (outcome === 'timeout') {
      const running = this.#drivers.map((d) => d.progress()).filter((p) => p.phase === this.#phase);
      this.#s.timedOut = {
        phase: this.#phase,
        afterMs: Math.round(performance.now() - this.#t0),
        done: sum(running.map((p) => p.done)),
        ok: sum(running.map((p) => p.ok)),
      };
      this.#stop.abort();
      for (const d of this.#drivers) d.kill();
    }
    // Client processes are told to go and killed if they linger; every socket ends with them.
    await Promise.all(this.#drivers.map((d) => d.stop(outcome === 'done' ? 3000 : 500)));
    this.#view.stop();
    return this.#finish();
  }

  #check(): void {
    if (this.#stop.signal.aborted) throw new Stopped();
  }

  /** Runs one command on every engine at once; `progress` gets the summed progress every 200 ms. */
  async #all<T>(call: (d: Driver, i: number) => Promise<T>, progress?: (done: number, ok: number) => void): Promise<T[]> {
    const tick = progress
      ? setInterval(() => {
          const ps = this.#drivers.map((d) => d.progress()).filter((p) => p.phase === this.#phase);
          progress(sum(ps.map((p) => p.done)), sum(ps.map((p) => p.ok)));
        }, 200)
      : undefined;
    try {
      const results = await Promise.all(this.#drivers.map(call));
      this.#check();
      return results;
    } finally {
      clearInterval(tick);
    }
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      const signal = this.#stop.signal;
      function done() {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        resolve();
      }
      signal.addEventListener('abort', done);
    });
  }

  async #memory(): Promise<MemoryReading> {
    const source: MemorySource = { pid: this.#o.serverPid, statsUrl: statsUrlFor(this.#o.url) };
    return sampleServerMemory(source, 3, 250, this.#stop.signal);
  }

  async #phases(): Promise<void> {
    const o = this.#o;
    const s = this.#s;
    const counts = s.perProcess;

    this.#phase = 'starting client processes';
    if (o.procs === 1) this.#drivers.push(new LocalDriver());
    else {
      await Promise.all(
        counts.map(async (_, i) => {
          const driver = await ForkDriver.start(i + 1, this.#io.stderr);
          this.#drivers.push(driver);
          if (this.#stop.signal.aborted) driver.kill();
        }),
      );
    }
    this.#check();

    // The server's memory before we connect: the baseline for the hold phase.
    const memorySource = describeSource({ pid: o.serverPid, statsUrl: statsUrlFor(o.url) });
    let baseline: MemoryReading | string | undefined;
    if (o.phases.includes('hold')) {
      this.#phase = 'baseline memory';
      baseline = await this.#memory().catch((error: Error) => error.message);
    }
    this.#check();

    // ---- connect
    this.#phase = 'connect';
    let offset = 0;
    const range = this.#s.environment.portRange ?? { low: 32768, high: 60999 };
    const size = range.high - range.low + 1;
    const portOffset = Math.floor(Math.random() * size); // a new start each run: the last run's ports may be in TIME_WAIT
    const plans: ConnectPlan[] = counts.map((n, i) => {
      const plan: ConnectPlan = {
        url: o.url.href,
        count: n,
        firstIndex: offset,
        sources: o.sources,
        ...(o.sources.length > 0 ? { ports: { low: range.low, size, offset: portOffset, phase: i, stride: counts.length } } : {}),
        rate: o.rate > 0 ? (o.rate * n) / o.connections : 0,
        concurrency: Math.max(1, Math.round((o.concurrency * n) / o.connections)),
        handshakeTimeoutMs: o.handshakeTimeoutMs,
      };
      offset += n;
      return plan;
    });
    this.#view.start('connect', o.connections, 'connections');
    const connected = await this.#all(
      (d, i) => d.call('connect', plans[i]!),
      (done, ok) => this.#view.update(done, `| ${ok} open, ${done - ok} failed`),
    );
    const startedAt = Math.min(...connected.map((r) => r.startedAt));
    const endedAt = Math.max(...connected.map((r) => r.endedAt));
    const opened = sum(connected.map((r) => r.opened));
    const wallMs = Math.max(0.001, endedAt - startedAt);
    s.connect = {
      requested: o.connections,
      opened,
      failed: sum(connected.map((r) => r.failed)),
      failures: mergeCounts(connected.map((r) => r.failures)),
      wallMs: round(wallMs),
      connectsPerSecond: round(opened / (wallMs / 1000)),
      handshakeMs: Histogram.from(...connected.map((r) => r.handshake)).summary(),
    };
    this.#view.end(o.connections, `${opened} open at ${Math.round(s.connect.connectsPerSecond)}/s, p99 ${shown(s.connect.handshakeMs.p99)} ms, ${s.connect.failed} failed`);
    if (opened === 0) {
      s.error = 'no connection opened; the other phases were skipped';
      return;
    }

    // ---- hold
    if (o.phases.includes('hold')) {
      this.#phase = 'hold';
      await this.#all((d) => d.call('setPhase', { phase: 'hold' }));
      const seconds = Math.ceil(o.holdMs / 1000);
      this.#view.start('hold', seconds, 's');
      const t = performance.now();
      const tick = setInterval(() => this.#view.update(Math.min(seconds, Math.floor((performance.now() - t) / 1000))), 250);
      await this.#sleep(o.holdMs);
      clearInterval(tick);
      this.#check();
      let loaded: MemoryReading | string;
      try {
        loaded = await this.#memory();
      } catch (error) {
        loaded = (error as Error).message;
      }
      this.#check();
      const open = sum((await this.#all((d) => d.call('status', {}))).map((st) => st.open));
      let memory: NonNullable<Summary['hold']>['memory'];
      if (typeof baseline === 'object' && typeof loaded === 'object') {
        const delta = loaded.bytes - baseline.bytes;
        memory = {
          source: memorySource,
          baselineBytes: baseline.bytes,
          loadedBytes: loaded.bytes,
          deltaBytes: delta,
          // RSS can fall across a small run (a collection, malloc trimming): then the cost per
          // connection is below what RSS can show, and is not reported as a negative number.
          bytesPerConnection: open > 0 && delta >= 0 ? Math.round(delta / open) : null,
          ...(loaded.live !== undefined ? { serverLive: loaded.live } : {}),
        };
      } else {
        const reason = typeof baseline === 'string' ? baseline : typeof loaded === 'string' ? loaded : 'no baseline';
        memory = { source: memorySource, error: `${reason}${o.serverPid === undefined ? ' (give --server-pid to read /proc instead)' : ''}` };
      }
      s.hold = { durationMs: o.holdMs, open, memory };
      this.#view.end(
        seconds,
        'error' in memory
          ? `${open} open; memory not measured`
          : memory.bytesPerConnection === null
            ? `${open} open; server memory per connection below what RSS shows (RSS ${memory.deltaBytes < 0 ? 'fell' : 'rose'} by ${(Math.abs(memory.deltaBytes) / 1024).toFixed(0)} KiB)`
            : `${open} open; server +${(memory.bytesPerConnection / 1024).toFixed(1)} KiB per connection`,
      );
    }

    // ---- echo
    if (o.phases.includes('echo')) {
      this.#phase = 'echo';
      const open = sum((await this.#all((d) => d.call('status', {}))).map((st) => st.open));
      this.#view.start('echo', open * o.echoMessages, 'messages');
      const echoed = await this.#all(
        (d) => d.call('echo', { protocol: o.protocol, messages: o.echoMessages, durationMs: o.echoDurationMs, replyTimeoutMs: o.replyTimeoutMs }),
        (done) => this.#view.update(done),
      );
      const wall = Math.max(0.001, Math.max(...echoed.map((r) => r.endedAt)) - Math.min(...echoed.map((r) => r.startedAt)));
      const received = sum(echoed.map((r) => r.received));
      s.echo = {
        protocol: o.protocol,
        connections: sum(echoed.map((r) => r.connections)),
        sent: sum(echoed.map((r) => r.sent)),
        received,
        missing: sum(echoed.map((r) => r.missing)),
        wallMs: round(wall),
        messagesPerSecond: round(received / (wall / 1000)),
        latencyMs: Histogram.from(...echoed.map((r) => r.latency)).summary(),
      };
      this.#view.end(received, `${received} round trips, ${Math.round(s.echo.messagesPerSecond)}/s, p99 ${shown(s.echo.latencyMs.p99)} ms, ${s.echo.missing} missing`);
    }

    // ---- fanout
    if (o.phases.includes('fanout')) {
      this.#phase = 'subscribe';
      const open = sum((await this.#all((d) => d.call('status', {}))).map((st) => st.open));
      this.#view.start('subscribe', open, 'connections');
      const subs = await this.#all((d) => d.call('subscribe', { topic: o.topic, timeoutMs: o.replyTimeoutMs }), (done) => this.#view.update(done));
      const subscribers = sum(subs.map((r) => r.subscribed));
      this.#view.end(open, `${subscribers} subscribed to ${o.topic}`);
      const publisherIndex = subs.findIndex((r) => r.subscribed > 0);
      const timeToAll = new Histogram();
      const timeToFirst = new Histogram();
      let expected = 0;
      let delivered = 0;
      let incomplete = 0;
      let messages = 0;
      const t = performance.now();
      this.#phase = 'fanout';
      if (publisherIndex >= 0) {
        const publisher = this.#drivers[publisherIndex]!;
        this.#view.start('fanout', o.fanout, 'messages');
        for (let k = 1; k <= o.fanout; k++) {
          const [published, ...waits] = await Promise.all([
            publisher.call('publish', { topic: o.topic, k }),
            ...this.#drivers.map((d) => d.call('awaitFanout', { k, timeoutMs: o.replyTimeoutMs })),
          ]);
          this.#check();
          messages++;
          const want = sum(waits.map((w) => w.expected));
          const got = sum(waits.map((w) => w.received));
          expected += want;
          delivered += got;
          const lasts = waits.map((w) => w.lastAt).filter((x): x is number => x !== null);
          const firsts = waits.map((w) => w.firstAt).filter((x): x is number => x !== null);
          if (got === want && lasts.length) timeToAll.record(Math.max(...lasts) - published.sentAt);
          else incomplete++;
          if (firsts.length) timeToFirst.record(Math.min(...firsts) - published.sentAt);
          this.#view.update(k, `| last ${got}/${want} in ${lasts.length ? Math.round(Math.max(...lasts) - published.sentAt) : '-'} ms`);
        }
      }
      const wall = Math.max(0.001, performance.now() - t);
      s.fanout = {
        topic: o.topic,
        subscribers,
        subscribeFailed: sum(subs.map((r) => r.failed)),
        subscribeFailures: mergeCounts(subs.map((r) => r.failures)),
        subscribeRetries: sum(subs.map((r) => r.retries)),
        subscribeRetried: sum(subs.map((r) => r.retried)),
        messages,
        expected,
        delivered,
        missing: expected - delivered,
        incomplete,
        wallMs: round(wall),
        deliveriesPerSecond: round(delivered / (wall / 1000)),
        timeToAllMs: timeToAll.summary(),
        timeToFirstMs: timeToFirst.summary(),
        duplicates: 0,
      };
      this.#view.end(messages, `${delivered}/${expected} delivered, time to all p99 ${shown(s.fanout.timeToAllMs.p99)} ms, ${s.fanout.missing} missing`);
    }

    // ---- close (drops are read first: after this, closes are ours)
    this.#phase = 'close';
    this.#statuses = await this.#all((d) => d.call('status', {}));
    const closing = sum(this.#statuses.map((st) => st.open));
    this.#view.start('close', closing, 'connections');
    const closed = await this.#all((d) => d.call('close', { timeoutMs: o.replyTimeoutMs }), (done) => this.#view.update(done));
    s.close = { closedCleanly: sum(closed.map((r) => r.closedCleanly)), terminated: sum(closed.map((r) => r.terminated)) };
    this.#view.end(closing, `${s.close.closedCleanly} closed cleanly, ${s.close.terminated} terminated`);
  }

  #finish(): number {
    const s = this.#s;
    const o = this.#o;
    // Drops: from the statuses read before closing, or (after a timeout or an error) not known.
    const st = this.#statuses;
    s.dropped = {
      total: sum(st.map((x) => x.dropped.total)),
      byCode: mergeCounts(st.map((x) => x.dropped.byCode)),
      byPhase: mergeCounts(st.map((x) => x.dropped.byPhase)),
    };
    s.unexpectedMessages = sum(st.map((x) => x.unexpected));
    if (s.fanout) s.fanout.duplicates = sum(st.map((x) => x.duplicates));
    const f = {
      connect: s.connect?.failed ?? 0,
      dropped: s.dropped.total,
      echoMissing: s.echo?.missing ?? 0,
      subscribe: s.fanout?.subscribeFailed ?? 0,
      fanoutMissing: s.fanout?.missing ?? 0,
    };
    s.failures = { total: f.connect + f.dropped + f.echoMissing + f.subscribe + f.fanoutMissing, ...f };
    s.durationMs = Math.round(performance.now() - this.#t0);
    s.ok = !s.timedOut && !s.error && s.failures.total <= o.maxFailures;
    s.exitCode = s.ok ? 0 : 1;
    this.#io.stdout(o.json ? `${JSON.stringify(s, null, 2)}\n` : renderTable(s));
    return s.exitCode;
  }
}
