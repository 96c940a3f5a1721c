// Flags of `hubbub loadtest`. As in hubbub's own options (src/options.ts), and with the same
// validators (src/validators.ts), every flag is declared once with what it accepts and its default;
// a bad value is an error naming the flag and quoting what it got, and `--help` is generated from
// the same table.
import { isIP } from 'node:net';
import { boolean, commaList, duration, integer, oneOf } from '../validators.ts';

export type Phase = 'connect' | 'hold' | 'echo' | 'fanout';
export type Protocol = 'echo' | 'pubsub';

/** The order phases always run in: each one needs the connections the earlier ones opened. */
export const PHASES: readonly Phase[] = ['connect', 'hold', 'echo', 'fanout'];

/** A client process holds at most this many sockets: one process has 20,000 file descriptors. */
export const MAX_SOCKETS_PER_PROCESS = 19_000;
export const MAX_CONNECTIONS = 1_000_000;
export const MAX_PROCS = 64;

export interface LoadtestOptions {
  url: URL;
  connections: number;
  /** Connects per second over all processes; 0 = as fast as `concurrency` allows. */
  rate: number;
  /** Handshakes in flight over all processes. */
  concurrency: number;
  /** Local addresses to connect from, round-robin (empty = the OS picks). */
  sources: string[];
  procs: number;
  holdMs: number;
  serverPid: number | undefined;
  echoMessages: number;
  echoDurationMs: number;
  fanout: number;
  topic: string;
  protocol: Protocol;
  phases: Phase[];
  /** How long one echo reply, one subscribe ack, or one fan-out message to everyone may take. */
  replyTimeoutMs: number;
  handshakeTimeoutMs: number;
  timeoutMs: number;
  maxFailures: number;
  json: boolean;
  allowRemote: boolean;
}

/** A bad flag or target: printed as `hubbub loadtest: <message>`, exit code 2. */
export class LoadtestUsageError extends Error {
  override name = 'LoadtestUsageError';
}

type Key = keyof LoadtestOptions;

interface FlagSpec {
  flag: string;
  key: Key;
  /** Shown in --help after the flag, e.g. `<n>`; absent for a switch. */
  value?: string;
  accepts: string;
  doc: string;
  /** Default as shown in --help. */
  shown?: string;
  parse(text: string): unknown;
}

/** A flag given alone means true: `--json` is `--json=true`. */
function sw() {
  const b = boolean();
  return { ...b, accepts: `${b.accepts} (or no value)` };
}

const SPECS: readonly FlagSpec[] = [
  {
    flag: '--url', key: 'url', value: '<ws-url>', shown: '(required)',
    doc: 'the WebSocket endpoint, e.g. ws://127.0.0.1:8080/ws',
    accepts: 'a ws:// or wss:// URL',
    parse: (text) => {
      try {
        const url = new URL(text);
        return url.protocol === 'ws:' || url.protocol === 'wss:' ? url : undefined;
      } catch {
        return undefined;
      }
    },
  },
  { flag: '--connections', key: 'connections', value: '<n>', shown: '1000', doc: 'connections to open', ...integer(1, MAX_CONNECTIONS) },
  { flag: '--rate', key: 'rate', value: '<n>', shown: '0', doc: 'connects started per second, all processes together (0 = as fast as --concurrency allows)', ...integer(0, 1_000_000) },
  { flag: '--concurrency', key: 'concurrency', value: '<n>', shown: '200', doc: 'handshakes in flight at once, all processes together', ...integer(1, 100_000) },
  {
    flag: '--source', key: 'sources', value: '<ip,ip,...>', shown: '(the OS picks)',
    doc: 'local addresses to connect from, round-robin (127.0.0.1,127.0.0.2,...): each source address can reach one server port with about as many connections as there are ephemeral ports. ' +
      'The client picks the source ports itself (each process its own share of the ephemeral range, from a random start), because the kernel\'s own search for a free port in bind() slows to a crawl once a few thousand are taken',
    accepts: 'a comma-separated list of IP addresses',
    parse: (text) => {
      const list = commaList(text);
      return list.length > 0 && list.every((s) => isIP(s) !== 0) ? list : undefined;
    },
  },
  {
    flag: '--procs', key: 'procs', value: '<n>', shown: '1',
    doc: `client processes sharing the connections (each holds at most ${MAX_SOCKETS_PER_PROCESS.toLocaleString('en-US')} sockets: one process has 20,000 file descriptors); forked with node:child_process`,
    ...integer(1, MAX_PROCS),
  },
  { flag: '--hold', key: 'holdMs', value: '<duration>', shown: '5s', doc: 'hold phase: how long every connection stays idle before the server memory is read', ...duration(0, 3_600_000) },
  {
    flag: '--server-pid', key: 'serverPid', value: '<pid>', shown: '(read /stats)',
    doc: 'read the server memory (VmRSS) from /proc/<pid>/status, with its child processes (a cluster primary counts its workers); without it, from GET /stats on the URL origin (the whole cluster in cluster mode)',
    ...integer(1, 2 ** 22),
  },
  { flag: '--echo-messages', key: 'echoMessages', value: '<n>', shown: '10', doc: 'echo phase: round trips per connection (closed loop: send, await the reply, repeat)', ...integer(1, 1_000_000) },
  { flag: '--echo-duration', key: 'echoDurationMs', value: '<duration>', shown: '30s', doc: 'echo phase: stop sending after this long even if --echo-messages are not done', ...duration(1, 3_600_000) },
  { flag: '--fanout', key: 'fanout', value: '<n>', shown: '10', doc: 'fan-out phase (pubsub): messages published, one after the other once everyone has the previous one', ...integer(1, 100_000) },
  {
    flag: '--topic', key: 'topic', value: '<name>', shown: '(loadtest-<random>)', doc: 'fan-out phase: the topic every connection subscribes to',
    accepts: 'a topic of 1 to 256 characters, not starting with $',
    parse: (text) => (text.length >= 1 && text.length <= 256 && !text.startsWith('$') && !/[\u0000-\u001f\u007f]/.test(text) ? text : undefined),
  },
  {
    flag: '--protocol', key: 'protocol', value: '<name>', shown: 'echo',
    doc: "what the server speaks: 'echo' (replies to each message with a message containing it; only the echo phase exchanges messages) or 'pubsub' (hubbub --handler pubsub: echo is ping/pong, and the fan-out phase runs)",
    ...oneOf(['echo', 'pubsub']),
  },
  {
    flag: '--phases', key: 'phases', value: '<list>', shown: 'connect,hold,echo[,fanout with pubsub]',
    doc: 'phases to run; they always run in the order connect, hold, echo, fanout, and connect always runs',
    accepts: `a comma-separated list of ${PHASES.join(', ')}`,
    parse: (text) => {
      const list = commaList(text);
      if (list.length === 0 || !list.every((p) => (PHASES as readonly string[]).includes(p))) return undefined;
      return PHASES.filter((p) => p === 'connect' || list.includes(p));
    },
  },
  { flag: '--reply-timeout', key: 'replyTimeoutMs', value: '<duration>', shown: '10s', doc: 'longest wait for one echo reply, one subscribe ack, one fan-out message to reach everyone, and for the close handshakes at the end (then the rest are terminated)', ...duration(1, 600_000) },
  { flag: '--handshake-timeout', key: 'handshakeTimeoutMs', value: '<duration>', shown: '10s', doc: 'a handshake not done by then fails (counted as timeout)', ...duration(1, 600_000) },
  { flag: '--timeout', key: 'timeoutMs', value: '<duration>', shown: '120s', doc: 'hard bound on the whole run: when reached, the running phase is abandoned, the client processes are killed, the summary says so, exit 1', ...duration(100, 86_400_000) },
  { flag: '--max-failures', key: 'maxFailures', value: '<n>', shown: '0', doc: 'exit 1 when more things fail than this (connects, drops, missing replies and fan-out receipts)', ...integer(0, MAX_CONNECTIONS * 1000) },
  { flag: '--json', key: 'json', doc: 'print one JSON object instead of the table (and no progress bars)', ...sw() },
  { flag: '--allow-remote', key: 'allowRemote', doc: 'allow a target (and source addresses) outside loopback; see "Targets" below', ...sw() },
];

function defaults(): Omit<LoadtestOptions, 'url'> {
  return {
    connections: 1000,
    rate: 0,
    concurrency: 200,
    sources: [],
    procs: 1,
    holdMs: 5000,
    serverPid: undefined,
    echoMessages: 10,
    echoDurationMs: 30_000,
    fanout: 10,
    topic: `loadtest-${Math.random().toString(36).slice(2, 10)}`,
    protocol: 'echo',
    phases: [],
    replyTimeoutMs: 10_000,
    handshakeTimeoutMs: 10_000,
    timeoutMs: 120_000,
    maxFailures: 0,
    json: false,
    allowRemote: false,
  };
}

export type LoadtestCommand = { kind: 'run'; options: LoadtestOptions } | { kind: 'help'; text: string };

/** The hostname of a URL without IPv6 brackets. */
export function bareHost(url: URL): string {
  return url.hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
}

/** 127.0.0.0/8, ::1 (also as an IPv4-mapped 127.x address), or the name localhost. */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  if (isIP(h) === 6) return h === '::1' || /^::ffff:(127\.|7f[0-9a-f]{2}:)/.test(h);
  return false;
}

export const REMOTE_REFUSAL =
  'only loopback targets (127.0.0.0/8, ::1, localhost) are allowed without --allow-remote. A load test ' +
  'opens thousands of connections as fast as it can: aimed at someone else\'s server by accident (a typo, ' +
  'a pasted URL) it is a denial-of-service attack on them. Use --allow-remote only for servers you run ' +
  'or may load-test';

/**
 * Reads `hubbub loadtest` flags (`--connections 5` or `--connections=5`). Throws a
 * LoadtestUsageError naming the flag on a bad value, an unknown flag or a bad combination.
 * Checks that need the system (resolving localhost, the server pid, port ranges) are in index.ts.
 */
export function parseLoadtestArgs(argv: readonly string[]): LoadtestCommand {
  const values: Partial<Record<Key, unknown>> = {};
  const given = new Set<Key>();
  const byFlag = new Map(SPECS.map((s) => [s.flag, s]));
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--help' || arg === '-h') return { kind: 'help', text: loadtestHelp() };
    if (i === 0 && arg === 'loadtest') continue;
    // The target may also come as a bare argument: `hubbub loadtest ws://127.0.0.1:8080/ws`.
    if (!arg.startsWith('-') && /^wss?:\/\//i.test(arg)) {
      if (given.has('url')) throw new LoadtestUsageError(`the target is given twice (${JSON.stringify(arg)}); give one URL`);
      const url = byFlag.get('--url')!.parse(arg);
      if (url === undefined) throw new LoadtestUsageError(`the target must be ${byFlag.get('--url')!.accepts} (got ${JSON.stringify(arg)})`);
      values.url = url;
      given.add('url');
      continue;
    }
    const eq = arg.indexOf('=');
    const flag = eq > 0 ? arg.slice(0, eq) : arg;
    const spec = byFlag.get(flag);
    if (!spec) throw new LoadtestUsageError(`unknown ${flag.startsWith('-') ? 'flag' : 'argument'} ${JSON.stringify(flag)} (see --help)`);
    let text: string | undefined;
    if (eq > 0) text = arg.slice(eq + 1);
    else if (spec.value === undefined) text = 'true';
    else text = argv[++i];
    if (text === undefined) throw new LoadtestUsageError(`${flag} needs a value: ${spec.accepts}`);
    const value = spec.parse(text);
    if (value === undefined) throw new LoadtestUsageError(`${flag} must be ${spec.accepts} (got ${JSON.stringify(text)})`);
    values[spec.key] = value;
    given.add(spec.key);
  }
  if (!values.url) throw new LoadtestUsageError('a target is required: a ws:// or wss:// URL, e.g. --url ws://127.0.0.1:8080/ws (or the URL alone)');
  const options = { ...defaults(), ...values } as LoadtestOptions;

  if (!given.has('phases')) options.phases = options.protocol === 'pubsub' ? [...PHASES] : ['connect', 'hold', 'echo'];
  if (options.phases.includes('fanout') && options.protocol !== 'pubsub') {
    throw new LoadtestUsageError('--phases fanout needs --protocol pubsub: with an echo server nothing makes one message reach every connection');
  }

  const host = bareHost(options.url);
  if (!options.allowRemote && !isLoopback(host)) {
    throw new LoadtestUsageError(`refusing to load ${options.url.host}: ${REMOTE_REFUSAL}`);
  }
  for (const source of options.sources) {
    if (!options.allowRemote && !isLoopback(source)) throw new LoadtestUsageError(`--source ${source} is not a loopback address: ${REMOTE_REFUSAL}`);
    const targetFamily = isIP(host);
    if (targetFamily !== 0 && isIP(source) !== targetFamily) {
      throw new LoadtestUsageError(`--source ${source} is IPv${isIP(source)} but the target ${host} is IPv${targetFamily}`);
    }
  }
  if (options.procs > options.connections) {
    throw new LoadtestUsageError(`--procs ${options.procs} is more than --connections ${options.connections}`);
  }
  return { kind: 'run', options };
}

/** Refuses a plan that puts more sockets in one process than it can hold. */
export function checkSocketsPerProcess(options: LoadtestOptions, maxPerProcess: number, why: string): void {
  const perProcess = Math.ceil(options.connections / options.procs);
  if (perProcess <= maxPerProcess) return;
  const need = Math.ceil(options.connections / maxPerProcess);
  throw new LoadtestUsageError(
    `--connections ${options.connections} over --procs ${options.procs} is ${perProcess} sockets in one client process; ` +
      `at most ${maxPerProcess} fit (${why}): use --procs ${need} or more`,
  );
}

export function loadtestHelp(): string {
  const indent = 33;
  const wrap = (text: string) => {
    const lines: string[] = [];
    let line = '';
    for (const word of text.split(' ')) {
      if (line && line.length + 1 + word.length > 100 - indent) {
        lines.push(line);
        line = word;
      } else line = line ? `${line} ${word}` : word;
    }
    if (line) lines.push(line);
    return lines;
  };
  const rows = SPECS.map((s) => {
    const head = `  ${s.flag}${s.value ? ` ${s.value}` : ''}`;
    const body = [...wrap(s.doc), ...wrap(`${s.accepts}${s.shown ? `; default ${s.shown}` : ''}`)];
    return body.map((text, i) => `${(i === 0 ? head : '').padEnd(indent)}${text}`).join('\n');
  });
  return [
    'Usage: hubbub loadtest --url ws://127.0.0.1:8080/ws [flags]   (or the URL alone: hubbub loadtest ws://127.0.0.1:8080/ws)',
    '',
    'Opens many WebSocket connections to one server and measures it, phase by phase:',
    '  connect  open --connections at --rate: connects/s, handshake p50/p99, failures by HTTP status',
    '           or error (ECONNREFUSED, EADDRNOTAVAIL, timeout, ...)',
    '  hold     keep them idle for --hold: server memory per connection (--server-pid, else GET /stats)',
    '  echo     closed loop on every connection (send, await the reply, repeat): messages/s, latency',
    '           p50/p99/max',
    '  fanout   (--protocol pubsub) all subscribe to one topic, one connection publishes --fanout',
    '           messages: time until every connection has each one, and how many never arrived',
    'Then it closes every connection and prints a table (or, with --json, one JSON object) on stdout.',
    'Progress bars go to stderr when it is a terminal. Every phase is bounded by counts and times, and',
    '--timeout bounds the whole run: it always stops by itself.',
    '',
    ...rows,
    `${'  --help'.padEnd(indent)}show this text`,
    '',
    'Targets: only loopback (127.0.0.0/8, ::1, localhost) unless --allow-remote. A load test opens',
    "thousands of connections as fast as it can; aimed at someone else's server by accident (a typo, a",
    'pasted URL) it is a denial-of-service attack. The same rule applies to --source addresses.',
    '',
    `Limits: one client process holds at most ${MAX_SOCKETS_PER_PROCESS.toLocaleString('en-US')} sockets (a process may open 20,000 files);`,
    'more connections need --procs. One source address reaches one server port with at most as many',
    'connections as the ephemeral port range has ports; more need more --source addresses (on Linux',
    'every 127.x.y.z is a local address).',
    '',
    'Exit codes: 0 all good; 1 more failures than --max-failures, --timeout reached, or a client process',
    'died; 2 a bad flag or a refused target.',
    '',
  ].join('\n');
}
