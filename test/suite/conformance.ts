// RFC 6455 conformance over raw frames (test/frames.ts): the real server's answers to bad and valid
// frames and to bad upgrade requests.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { connect, eventually, PREFIX, request, startServer, type RuntimeTarget, type ServerProcess, type Stats } from '../helpers.ts';
import {
  Opcode,
  buildFrame,
  closeFrame,
  describeFrame,
  openRaw,
  pingFrame,
  rawHttp,
  textFrame,
  upgradeHeaders,
  type RawConnection,
} from '../frames.ts';

/** Sent after a case's frames: its echo shows the server kept reading (and echoed nothing else first). */
const PROBE = 'probe';
/** How long a transcript waits for the next server event before recording silence. */
const QUIET_MS = 2000;
/** How long to wait, after the server's close frame, for the server to end TCP. */
const AFTER_CLOSE_MS = 2000;
/** A fixed mask key, so a case's bytes are the same on every run (cases that do not care use random keys). */
const KEY = Buffer.from([0x37, 0xfa, 0x21, 0x3d]);

export type FrameCaseName =
  | 'unmasked-client-frame'
  | 'rsv1-set'
  | 'rsv2-set'
  | 'rsv3-set'
  | 'unknown-opcode-0x3'
  | 'unknown-opcode-0xB'
  | 'ping-126-byte-payload'
  | 'fragmented-ping'
  | 'continuation-without-start'
  | 'text-invalid-utf8'
  | 'text-invalid-utf8-across-fragments'
  | 'close-code-999'
  | 'close-code-1004'
  | 'close-code-1005'
  | 'close-code-1006'
  | 'close-code-1015'
  | 'close-code-2999'
  | 'close-code-5000'
  | 'close-1-byte-payload'
  | 'close-reason-invalid-utf8'
  | 'valid-close-1000'
  | 'valid-close-4000-with-reason'
  | 'ping-with-payload'
  | 'empty-ping'
  | 'text-16-bit-length'
  | 'fragmented-text-3'
  | 'utf8-char-split-across-fragments'
  | 'ping-inside-fragmented-message';

export type HttpCaseName = 'handshake-missing-key' | 'handshake-version-12' | 'plain-get-ws';

export type CaseName = FrameCaseName | HttpCaseName;

/**
 * What the server sends back, one line per event (see `transcript`), in order, until it closed (a
 * close frame, then whether it ended TCP) or answered the probe sent after the case's frames (the
 * connection kept going and nothing else was echoed in between). Every case starts from a real
 * handshake. Node (`ws`) must answer exactly as RFC 6455 says; the runtimes whose own WebSocket layer
 * answers some cases differently have those answers listed below as observed (`denoAnswers`, …), so
 * their runs still fail if the behaviour changes.
 */
export type Transcript = readonly string[];

/** The answer to a raw HTTP request: status and the headers that must be there (lower-case names). */
export interface HttpAnswer {
  status: number;
  headers?: Record<string, string>;
}

export type Expected = Transcript | HttpAnswer;

interface FrameCase {
  name: FrameCaseName;
  title: string;
  /** Bytes written after the handshake, one write each. */
  send: () => Buffer[];
  /** Write the probe text after `send` (default true; false for cases that end the connection on purpose). */
  probe?: boolean;
  /** RFC 6455 (and Node's) answer. */
  expected: Transcript;
}

interface HttpCase {
  name: HttpCaseName;
  title: string;
  headers: () => Record<string, string | undefined>;
  expected: HttpAnswer;
}

const closesWith = (code: number): Transcript => [`close ${code} ""`, 'tcp-end'];
const echo = (text: string) => `text ${JSON.stringify(PREFIX + text)}`;
const probeEcho = echo(PROBE);

export const frameCases: readonly FrameCase[] = [
  {
    name: 'unmasked-client-frame',
    title: 'an unmasked client frame → close 1002',
    send: () => [textFrame('unmasked', { mask: false })],
    expected: closesWith(1002),
  },
  ...(['rsv1', 'rsv2', 'rsv3'] as const).map(
    (bit): FrameCase => ({
      name: `${bit}-set`,
      title: `a text frame with ${bit.toUpperCase()} set (no extension negotiated) → close 1002`,
      send: () => [textFrame('reserved', { [bit]: true, mask: KEY })],
      expected: closesWith(1002),
    }),
  ),
  ...([0x3, 0xb] as const).map(
    (opcode): FrameCase => ({
      name: opcode === 0x3 ? 'unknown-opcode-0x3' : 'unknown-opcode-0xB',
      title: `a frame with the reserved ${opcode < 8 ? 'data' : 'control'} opcode 0x${opcode.toString(16).toUpperCase()} → close 1002`,
      send: () => [buildFrame({ opcode, payload: 'what', mask: KEY })],
      expected: closesWith(1002),
    }),
  ),
  {
    name: 'ping-126-byte-payload',
    title: 'a ping with a 126-byte payload (control frames are ≤ 125) → close 1002',
    send: () => [pingFrame(Buffer.alloc(126, 0x61), { mask: KEY })],
    expected: closesWith(1002),
  },
  {
    name: 'fragmented-ping',
    title: 'a fragmented control frame (ping with FIN=0) → close 1002',
    send: () => [pingFrame('part', { fin: false, mask: KEY }), buildFrame({ opcode: Opcode.CONTINUATION, payload: 'rest', mask: KEY })],
    expected: closesWith(1002),
  },
  {
    name: 'continuation-without-start',
    title: 'a continuation frame with no message started → close 1002',
    send: () => [buildFrame({ opcode: Opcode.CONTINUATION, payload: 'orphan', mask: KEY })],
    expected: closesWith(1002),
  },
  {
    name: 'text-invalid-utf8',
    title: 'a text frame with invalid UTF-8 → close 1007',
    send: () => [textFrame(Buffer.from([0x68, 0x69, 0xff, 0x21]), { mask: KEY })],
    expected: closesWith(1007),
  },
  {
    name: 'text-invalid-utf8-across-fragments',
    title: 'invalid UTF-8 split across fragments (a valid lead, a bad continuation byte) → close 1007',
    send: () => [
      textFrame(Buffer.from([0x61, 0x62, 0xe2, 0x98]), { fin: false, mask: KEY }),
      buildFrame({ opcode: Opcode.CONTINUATION, payload: Buffer.from([0x28, 0x63]), mask: KEY }),
    ],
    expected: closesWith(1007),
  },
  ...([999, 1004, 1005, 1006, 1015, 2999, 5000] as const).map(
    (code): FrameCase => ({
      name: `close-code-${code}`,
      title: `a close frame with the invalid code ${code} → close 1002`,
      send: () => [closeFrame(code, '', { mask: KEY })],
      probe: false,
      expected: closesWith(1002),
    }),
  ),
  {
    name: 'close-1-byte-payload',
    title: 'a close frame with a 1-byte payload → close 1002',
    send: () => [buildFrame({ opcode: Opcode.CLOSE, payload: Buffer.from([0x03]), mask: KEY })],
    probe: false,
    expected: closesWith(1002),
  },
  {
    name: 'close-reason-invalid-utf8',
    title: 'a close reason with invalid UTF-8 → close 1007',
    send: () => [closeFrame(1000, Buffer.from([0x6f, 0x6b, 0xc3, 0x28]), { mask: KEY })],
    probe: false,
    expected: closesWith(1007),
  },
  {
    name: 'valid-close-1000',
    title: 'a valid close (1000) → the server answers close 1000 and ends TCP',
    send: () => [closeFrame(1000, '', { mask: KEY })],
    probe: false,
    expected: ['close 1000 ""', 'tcp-end'],
  },
  {
    name: 'valid-close-4000-with-reason',
    title: 'a valid close (4000 with a UTF-8 reason) → the server echoes code and reason and ends TCP',
    send: () => [closeFrame(4000, 'fin ☃', { mask: KEY })],
    probe: false,
    expected: ['close 4000 "fin ☃"', 'tcp-end'],
  },
  {
    name: 'ping-with-payload',
    title: 'a ping with a payload → a pong with the same payload; the connection goes on',
    send: () => [pingFrame(Buffer.from('ping-payload\x00\x01\xff', 'latin1'), { mask: KEY })],
    expected: [`pong ${JSON.stringify('ping-payload\x00\x01\xff')}`, probeEcho],
  },
  {
    name: 'empty-ping',
    title: 'an empty ping → an empty pong',
    send: () => [pingFrame('', { mask: KEY })],
    expected: ['pong ""', probeEcho],
  },
  {
    name: 'text-16-bit-length',
    title: 'a 1000-byte text frame (16-bit length) is echoed',
    send: () => [textFrame('x'.repeat(1000), { mask: KEY })],
    expected: [echo('x'.repeat(1000)), probeEcho],
  },
  {
    name: 'fragmented-text-3',
    title: 'a text message in 3 fragments is reassembled and echoed once',
    send: () => [
      textFrame('Hel', { fin: false }),
      buildFrame({ opcode: Opcode.CONTINUATION, payload: 'lo, ', fin: false }),
      buildFrame({ opcode: Opcode.CONTINUATION, payload: 'world' }),
    ],
    expected: [echo('Hello, world'), probeEcho],
  },
  {
    name: 'utf8-char-split-across-fragments',
    title: 'a multi-byte character split across fragments is echoed whole',
    send: () => [
      textFrame(Buffer.from([0x73, 0x6e, 0x6f, 0x77, 0xe2, 0x98]), { fin: false }),
      buildFrame({ opcode: Opcode.CONTINUATION, payload: Buffer.from([0x83, 0x6d, 0x61, 0x6e]) }),
    ],
    expected: [echo('snow☃man'), probeEcho],
  },
  {
    name: 'ping-inside-fragmented-message',
    title: 'a ping between fragments is answered with a pong, and the message is still echoed once',
    send: () => [
      textFrame('frag', { fin: false }),
      pingFrame('mid'),
      buildFrame({ opcode: Opcode.CONTINUATION, payload: 'men', fin: false }),
      buildFrame({ opcode: Opcode.CONTINUATION, payload: 'ted' }),
    ],
    expected: ['pong "mid"', echo('fragmented'), probeEcho],
  },
];

export const httpCases: readonly HttpCase[] = [
  {
    name: 'handshake-missing-key',
    title: 'an upgrade without Sec-WebSocket-Key → 400',
    headers: () => upgradeHeaders(undefined, { 'Sec-WebSocket-Key': undefined }),
    expected: { status: 400 },
  },
  {
    name: 'handshake-version-12',
    title: 'an upgrade with Sec-WebSocket-Version: 12 → 426 with Sec-WebSocket-Version: 13',
    headers: () => upgradeHeaders(undefined, { 'Sec-WebSocket-Version': '12' }),
    expected: { status: 426, headers: { 'sec-websocket-version': '13' } },
  },
  {
    name: 'plain-get-ws',
    title: 'a plain GET /ws without an upgrade → 426 (Upgrade: websocket)',
    headers: () => ({ Accept: '*/*' }),
    expected: { status: 426, headers: { upgrade: 'websocket' } },
  },
];

/**
 * Deno's answers where they differ from RFC 6455 / Node, as observed with Deno 2.9 (`deno run -A
 * main.ts`). Deno.upgradeWebSocket (fastwebsockets underneath) does not require client masking,
 * and on a frame it rejects it drops the TCP connection without sending a close frame; hubbub only
 * sees the socket's `error` and `close` events, so it cannot answer these itself.
 * See the README, "Runtime differences".
 */
export const denoAnswers: Partial<Record<CaseName, Expected>> = {
  // Deno does not require client frames to be masked: the unmasked frame is read and echoed.
  'unmasked-client-frame': [echo('unmasked'), probeEcho],
  // Every other frame Deno rejects: no close frame, the TCP connection is just closed (a FIN, or a
  // RST when the probe's bytes were still unread). hubbub sees `error` then `close` without a code.
  'rsv1-set': ['tcp-close-without-close-frame'],
  'rsv2-set': ['tcp-close-without-close-frame'],
  'rsv3-set': ['tcp-close-without-close-frame'],
  'unknown-opcode-0x3': ['tcp-close-without-close-frame'],
  'unknown-opcode-0xB': ['tcp-close-without-close-frame'],
  'ping-126-byte-payload': ['tcp-close-without-close-frame'],
  'fragmented-ping': ['tcp-close-without-close-frame'],
  'continuation-without-start': ['tcp-close-without-close-frame'],
  'text-invalid-utf8': ['tcp-close-without-close-frame'],
  'text-invalid-utf8-across-fragments': ['tcp-close-without-close-frame'],
  'close-1-byte-payload': ['tcp-close-without-close-frame'],
  'close-reason-invalid-utf8': ['tcp-close-without-close-frame'],
  // Deno answers invalid close codes (999, 1004, 1005, 1006, 1015, 2999, 5000) with close 1002 like
  // Node, the valid closing handshakes and every valid-frame case the same, and hubbub's own
  // handshake checks make the HTTP cases the same: no entry.
};

/**
 * Bun's answers where they differ from Node, as observed with Bun 1.4.5 (`bun run bun.ts`). Bun's
 * WebSocket layer (uWebSockets) rejects each of these frames with the same close code as Node and
 * ends TCP, but writes its own text into the close reason, where ws sends none. hubbub never sees
 * these frames (Bun answers them before any handler runs), so it cannot change the reason.
 * See the README, "Runtime differences".
 */
const bunCloses = (code: number, reason: string): Transcript => [`close ${code} ${JSON.stringify(reason)}`, 'tcp-end'];
export const bunAnswers: Partial<Record<CaseName, Expected>> = {
  'unmasked-client-frame': bunCloses(1002, 'Received an incorrectly masked frame'),
  'rsv1-set': bunCloses(1002, 'Received unexpected RSV1 bit'),
  'rsv2-set': bunCloses(1002, 'Received unexpected RSV2 or RSV3 bit'),
  'rsv3-set': bunCloses(1002, 'Received unexpected RSV2 or RSV3 bit'),
  'unknown-opcode-0x3': bunCloses(1002, 'Received invalid opcode'),
  'unknown-opcode-0xB': bunCloses(1002, 'Received invalid opcode'),
  'ping-126-byte-payload': bunCloses(1002, 'Received too big control frame'),
  'fragmented-ping': bunCloses(1002, 'Received fragmented control frame'),
  'continuation-without-start': bunCloses(1002, 'Received continuation frame outside a fragmented message'),
  'text-invalid-utf8': bunCloses(1007, 'Received invalid UTF-8'),
  'text-invalid-utf8-across-fragments': bunCloses(1007, 'Received invalid UTF-8'),
  'close-code-999': bunCloses(1002, 'Received invalid close code'),
  'close-code-1004': bunCloses(1002, 'Received invalid close code'),
  'close-code-1005': bunCloses(1002, 'Received invalid close code'),
  'close-code-1006': bunCloses(1002, 'Received invalid close code'),
  'close-code-1015': bunCloses(1002, 'Received invalid close code'),
  'close-code-2999': bunCloses(1002, 'Received invalid close code'),
  'close-code-5000': bunCloses(1002, 'Received invalid close code'),
  'close-1-byte-payload': bunCloses(1002, 'Received invalid close payload'),
  'close-reason-invalid-utf8': bunCloses(1007, 'Received invalid UTF-8'),
  // The valid closing handshakes, every valid-frame case and the HTTP cases are the same as Node: no entry.
};

/**
 * workerd's answers where they differ from Node, as observed with workerd 1.20260730 under Miniflare
 * 4.20260730 (test/fixtures/workerd-launcher.mjs). workerd parses frames itself, before the Durable
 * Object sees anything: it accepts unmasked frames; on a bad frame it sends close 1002 with its own
 * reason and then waits for the peer's close frame instead of ending TCP ('tcp still open'); it echoes
 * a 126-byte ping payload in a pong and writes a close reason over 123 bytes (both control frames RFC
 * 6455 forbids); it turns invalid UTF-8 into U+FFFD instead of failing the connection. A close frame
 * with a 1-byte payload or an explicit 1005 reaches the object as "no code", so it is answered as one.
 * Other invalid close codes reach the object, which answers 1002 as Node does: no entry.
 * See the README, "Runtime differences".
 */
const workerdCloses = (code: number, reason: string): Transcript => [`close ${code} ${JSON.stringify(reason)}`, 'tcp still open'];
export const workerdAnswers: Partial<Record<CaseName, Expected>> = {
  'unmasked-client-frame': [echo('unmasked'), probeEcho],
  'rsv1-set': [
    'close 1002 "Received a WebSocket frame whose compression bit was set, but the compression extension was not negotiated for this connection." [server control frame payload > 125 bytes]',
    'tcp still open',
  ],
  'rsv2-set': workerdCloses(1002, 'Received frame had RSV bits 2 or 3 set'),
  'rsv3-set': workerdCloses(1002, 'Received frame had RSV bits 2 or 3 set'),
  'unknown-opcode-0x3': workerdCloses(1002, 'Unknown opcode 3'),
  'unknown-opcode-0xB': workerdCloses(1002, 'Unknown opcode 11'),
  'ping-126-byte-payload': [`pong ${JSON.stringify('a'.repeat(126))} [server control frame payload > 125 bytes]`, probeEcho],
  'fragmented-ping': workerdCloses(1002, 'Received fragmented control frame'),
  'continuation-without-start': workerdCloses(1002, 'Unexpected continuation frame'),
  'text-invalid-utf8': [echo('hi\uFFFD!'), probeEcho],
  'text-invalid-utf8-across-fragments': [echo('ab\uFFFD(c'), probeEcho],
  'close-code-1005': ['close (no code)', 'tcp-end'],
  'close-1-byte-payload': ['close (no code)', 'tcp-end'],
  'close-reason-invalid-utf8': ['close 1000 "ok\uFFFD("', 'tcp-end'],
  // workerd drops Upgrade from a 426 (Sec-WebSocket-Version stays).
  'plain-get-ws': { status: 426, headers: { 'sec-websocket-version': '13' } },
};

/** The expectation for `name` on this target: Node's strict answer, or the documented Deno / Bun / workerd answer. */
export function expectedFor(target: RuntimeTarget, name: CaseName, strict: Expected): { expected: Expected; documented: boolean } {
  const answers: Partial<Record<string, Partial<Record<CaseName, Expected>>>> = { deno: denoAnswers, bun: bunAnswers, workerd: workerdAnswers };
  const deviation = answers[target.name]?.[name];
  return deviation === undefined ? { expected: strict, documented: false } : { expected: deviation, documented: true };
}

/**
 * Records what the server sends: one line per frame (see describeFrame), until
 *  - a close frame: then 'tcp-end' / 'tcp-reset' when the server ends TCP within AFTER_CLOSE_MS,
 *    or 'tcp still open' (we do not answer the close frame: the server must end TCP by itself);
 *  - the end of TCP without a close frame: 'tcp-close-without-close-frame' (FIN or RST: which one
 *    depends on whether our later bytes were still unread when the server closed, a race);
 *  - the echo of the probe;
 *  - QUIET_MS of silence: 'silent'.
 * Server pings (the heartbeat) may come at any time and are left out.
 */
export async function transcript(conn: RawConnection, quietMs = QUIET_MS): Promise<string[]> {
  const lines: string[] = [];
  for (;;) {
    const event = await conn.nextEvent(quietMs);
    if (event === 'timeout') {
      lines.push('silent');
      return lines;
    }
    if (event.type === 'malformed') {
      lines.push(`malformed server data: ${event.error}`);
      return lines;
    }
    if (event.type === 'tcp-close') {
      lines.push('tcp-close-without-close-frame');
      return lines;
    }
    if (event.frame.opcode === Opcode.PING && event.frame.fin && !event.frame.masked) continue;
    const line = describeFrame(event.frame);
    lines.push(line);
    if (event.frame.opcode === Opcode.CLOSE) {
      const how = await conn.waitForTcpClose(AFTER_CLOSE_MS);
      lines.push(how === 'timeout' ? 'tcp still open' : `tcp-${how}`);
      return lines;
    }
    if (line === probeEcho) return lines;
  }
}

/** Runs one frame case on a fresh connection and returns its transcript. */
export async function runFrameCase(wsUrl: string, c: FrameCase, quietMs = QUIET_MS): Promise<string[]> {
  const conn = await openRaw(wsUrl);
  try {
    for (const bytes of c.send()) conn.write(bytes);
    if (c.probe ?? true) conn.sendText(PROBE);
    return await transcript(conn, quietMs);
  } finally {
    conn.destroy();
  }
}

/** Runs one raw HTTP case; returns the status and the headers the expectation names. */
export async function runHttpCase(url: string, c: HttpCase, wsPath = '/ws'): Promise<{ status: number; headers: Record<string, string> }> {
  const response = await rawHttp(url, c.headers(), { path: wsPath });
  response.socket.destroy();
  return { status: response.status, headers: response.headers };
}

const releasedTotal = (s: Stats) => Object.values(s.released).reduce((a, b) => a + b, 0);

const isTranscript = (e: Expected): e is Transcript => Array.isArray(e);

export function runConformance(target: RuntimeTarget): void {
  describe(`${target.name}: RFC 6455 conformance over raw frames`, { timeout: 180_000 }, () => {
    let server: ServerProcess;
    let initial: Stats;
    before(async () => {
      server = await startServer(target);
      initial = await server.stats();
    });
    after(() => server.stop());

    for (const c of frameCases) {
      const { expected, documented } = expectedFor(target, c.name, c.expected);
      assert.ok(isTranscript(expected), `${c.name}: a frame case expects a transcript`);
      it(`${c.name}: ${c.title}${documented ? ` — documented ${target.name} difference: ${expected.join(', ')}` : ''}`, async () => {
        const got = await runFrameCase(server.wsUrl, c);
        assert.deepEqual(got, expected, `${target.name} ${c.name}: server transcript`);
        assert.equal(server.child.exitCode, null, 'the server is still running');
      });
    }

    for (const c of httpCases) {
      const { expected, documented } = expectedFor(target, c.name, c.expected);
      assert.ok(!isTranscript(expected), `${c.name}: an HTTP case expects a status`);
      it(`${c.name}: ${c.title}${documented ? ` — documented ${target.name} difference` : ''}`, async () => {
        const got = await runHttpCase(server.url, c);
        assert.equal(got.status, expected.status, `${target.name} ${c.name}: status`);
        for (const [name, value] of Object.entries(expected.headers ?? {})) {
          assert.equal(got.headers[name], value, `${target.name} ${c.name}: header ${name}`);
        }
      });
    }

    it('afterwards /stats returns to live 0 / reserved 0, and a normal client still gets its echo', async () => {
      const stats = await eventually(server.stats, (s) => s.live === 0 && s.reserved === 0, 5000);
      assert.equal(stats.live, 0, 'live');
      assert.equal(stats.reserved, 0, 'reserved');
      const ws = await connect(server.wsUrl);
      assert.equal(await request(ws, 'still here'), `${PREFIX}still here`);
      ws.close();
      const end = await eventually(server.stats, (s) => s.live === 0 && s.reserved === 0 && releasedTotal(s) - releasedTotal(initial) === s.accepted - initial.accepted, 5000);
      assert.deepEqual([end.live, end.reserved], [0, 0]);
      // At least one connection per frame case and the normal client (refused upgrades may be admitted first).
      assert.ok(end.accepted - initial.accepted >= frameCases.length + 1, `admitted ${end.accepted - initial.accepted}`);
      assert.equal(releasedTotal(end) - releasedTotal(initial), end.accepted - initial.accepted, 'every admitted connection released exactly once');
      assert.equal(server.child.exitCode, null, 'the server is still running');
    });
  });
}
