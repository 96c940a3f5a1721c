// A small raw RFC 6455 toolkit over node:net for the conformance and fuzz tests: a hand-written
// handshake, frames built byte by byte, and a parser that flags frames a server must never send.
import { createHash, randomBytes } from 'node:crypto';
import net from 'node:net';

export const Opcode = {
  CONTINUATION: 0x0,
  TEXT: 0x1,
  BINARY: 0x2,
  CLOSE: 0x8,
  PING: 0x9,
  PONG: 0xa,
} as const;

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

/** The Sec-WebSocket-Accept a server must answer for `key` (RFC 6455 §4.2.2). */
export function acceptFor(key: string): string {
  return createHash('sha1').update(key + GUID).digest('base64');
}

export interface FrameSpec {
  opcode: number;
  payload?: Uint8Array | string;
  /** Default true. */
  fin?: boolean;
  rsv1?: boolean;
  rsv2?: boolean;
  rsv3?: boolean;
  /**
   * true (default): masked with a random key; false: unmasked; a 4-byte buffer: masked with that key.
   * A client must mask (RFC 6455 §5.1).
   */
  mask?: boolean | Uint8Array;
  /** Forces the length encoding: 7, 16 or 64 bits (default: the smallest that fits). */
  lengthBits?: 7 | 16 | 64;
  /** Declares this payload length instead of the real one (a lying or truncated frame). */
  declaredLength?: number | bigint;
}

/** Builds one frame's bytes. */
export function buildFrame(spec: FrameSpec): Buffer {
  const payload = typeof spec.payload === 'string' ? Buffer.from(spec.payload, 'utf8') : Buffer.from(spec.payload ?? []);
  const length = BigInt(spec.declaredLength ?? payload.length);
  const bits = spec.lengthBits ?? (length < 126n ? 7 : length < 65536n ? 16 : 64);
  const maskKey = spec.mask === false ? undefined : spec.mask === true || spec.mask === undefined ? randomBytes(4) : Buffer.from(spec.mask);
  if (maskKey && maskKey.length !== 4) throw new Error('a mask key is 4 bytes');
  const head: number[] = [
    ((spec.fin ?? true) ? 0x80 : 0) | (spec.rsv1 ? 0x40 : 0) | (spec.rsv2 ? 0x20 : 0) | (spec.rsv3 ? 0x10 : 0) | (spec.opcode & 0x0f),
  ];
  const maskBit = maskKey ? 0x80 : 0;
  let ext: Buffer;
  if (bits === 7) {
    if (length > 125n) throw new Error(`length ${length} does not fit 7 bits`);
    head.push(maskBit | Number(length));
    ext = Buffer.alloc(0);
  } else if (bits === 16) {
    if (length > 0xffffn) throw new Error(`length ${length} does not fit 16 bits`);
    head.push(maskBit | 126);
    ext = Buffer.alloc(2);
    ext.writeUInt16BE(Number(length));
  } else {
    head.push(maskBit | 127);
    ext = Buffer.alloc(8);
    ext.writeBigUInt64BE(length);
  }
  const body = maskKey ? applyMask(payload, maskKey) : payload;
  return Buffer.concat([Buffer.from(head), ext, maskKey ?? Buffer.alloc(0), body]);
}

/** XORs `data` with a 4-byte mask key (masking and unmasking are the same). */
export function applyMask(data: Uint8Array, key: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(data.length);
  for (let i = 0; i < data.length; i++) out[i] = data[i]! ^ key[i & 3]!;
  return out;
}

/** The payload of a close frame: a 2-byte code and an optional reason (raw bytes allowed). */
export function closePayload(code?: number, reason: Uint8Array | string = ''): Buffer {
  if (code === undefined) return Buffer.alloc(0);
  const head = Buffer.alloc(2);
  head.writeUInt16BE(code);
  return Buffer.concat([head, typeof reason === 'string' ? Buffer.from(reason, 'utf8') : Buffer.from(reason)]);
}

export const textFrame = (text: string | Uint8Array, extra: Partial<FrameSpec> = {}) => buildFrame({ opcode: Opcode.TEXT, payload: text, ...extra });
export const binaryFrame = (data: Uint8Array, extra: Partial<FrameSpec> = {}) => buildFrame({ opcode: Opcode.BINARY, payload: data, ...extra });
export const pingFrame = (data: Uint8Array | string = '', extra: Partial<FrameSpec> = {}) => buildFrame({ opcode: Opcode.PING, payload: data, ...extra });
export const closeFrame = (code?: number, reason: Uint8Array | string = '', extra: Partial<FrameSpec> = {}) =>
  buildFrame({ opcode: Opcode.CLOSE, payload: closePayload(code, reason), ...extra });

/** A parsed frame (from the server). */
export interface Frame {
  fin: boolean;
  rsv1: boolean;
  rsv2: boolean;
  rsv3: boolean;
  opcode: number;
  masked: boolean;
  /** Unmasked payload. */
  payload: Buffer;
  /** How the length was encoded on the wire. */
  lengthBits: 7 | 16 | 64;
}

/** What a server must never send: a reason, or undefined when the frame is well-formed. */
export function serverFrameViolation(frame: Frame): string | undefined {
  if (frame.masked) return 'server frame is masked';
  if (frame.rsv1 || frame.rsv2 || frame.rsv3) return 'server frame has reserved bits set (no extension negotiated)';
  if (![0x0, 0x1, 0x2, 0x8, 0x9, 0xa].includes(frame.opcode)) return `server frame has unknown opcode 0x${frame.opcode.toString(16)}`;
  if (frame.opcode >= 0x8) {
    if (!frame.fin) return 'server control frame is fragmented';
    if (frame.payload.length > 125) return 'server control frame payload > 125 bytes';
  }
  if (frame.opcode === Opcode.CLOSE && frame.payload.length === 1) return 'server close frame has a 1-byte payload';
  return undefined;
}

/** A streaming parser: push bytes as they come, get whole frames out. */
export class FrameParser {
  #buffer: Buffer = Buffer.alloc(0);
  /** Refuses frames whose declared payload exceeds this (a broken server must not make us buffer forever). */
  readonly maxPayload: number;

  constructor(maxPayload = 16 * 1024 * 1024) {
    this.maxPayload = maxPayload;
  }

  /** Bytes received but not yet a whole frame. */
  get pending(): number {
    return this.#buffer.length;
  }

  push(chunk: Uint8Array): Frame[] {
    this.#buffer = this.#buffer.length ? Buffer.concat([this.#buffer, chunk]) : Buffer.from(chunk);
    const frames: Frame[] = [];
    for (;;) {
      const b = this.#buffer;
      if (b.length < 2) break;
      const first = b[0]!;
      const second = b[1]!;
      const masked = (second & 0x80) !== 0;
      let length = second & 0x7f;
      let offset = 2;
      let lengthBits: 7 | 16 | 64 = 7;
      if (length === 126) {
        if (b.length < 4) break;
        length = b.readUInt16BE(2);
        offset = 4;
        lengthBits = 16;
      } else if (length === 127) {
        if (b.length < 10) break;
        const big = b.readBigUInt64BE(2);
        if (big > BigInt(this.maxPayload)) throw new Error(`server frame declares a ${big}-byte payload`);
        length = Number(big);
        offset = 10;
        lengthBits = 64;
      }
      if (length > this.maxPayload) throw new Error(`server frame declares a ${length}-byte payload`);
      const keyLength = masked ? 4 : 0;
      if (b.length < offset + keyLength + length) break;
      const key = masked ? b.subarray(offset, offset + 4) : undefined;
      const raw = b.subarray(offset + keyLength, offset + keyLength + length);
      frames.push({
        fin: (first & 0x80) !== 0,
        rsv1: (first & 0x40) !== 0,
        rsv2: (first & 0x20) !== 0,
        rsv3: (first & 0x10) !== 0,
        opcode: first & 0x0f,
        masked,
        payload: key ? applyMask(raw, key) : Buffer.from(raw),
        lengthBits,
      });
      this.#buffer = b.subarray(offset + keyLength + length);
    }
    return frames;
  }
}

/** How the TCP connection ended, seen from the client. */
export type TcpEnd =
  /** The server sent FIN. */
  | 'end'
  /** The server reset the connection (ECONNRESET / EPIPE). */
  | 'reset'
  /** We closed it ourselves. */
  | 'local';

export type ConnEvent =
  | { type: 'frame'; frame: Frame }
  | { type: 'tcp-close'; how: TcpEnd; error?: string }
  /** The server's bytes do not parse as frames. */
  | { type: 'malformed'; error: string };

export interface CloseInfo {
  code: number | undefined;
  reason: string;
  /** The raw reason bytes (a server should send valid UTF-8). */
  reasonBytes: Buffer;
}

/** One raw WebSocket connection after a successful handshake. */
export class RawConnection {
  readonly socket: net.Socket;
  /** Every event so far, in order (frames, malformed data, the TCP end). */
  readonly history: ConnEvent[] = [];
  #queue: ConnEvent[] = [];
  #waiters: ((event: ConnEvent) => void)[] = [];
  #parser = new FrameParser();
  #tcpEnd: TcpEnd | undefined;
  #broken = false;

  constructor(socket: net.Socket, rest: Buffer) {
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.#onData(chunk));
    socket.on('end', () => this.#onEnd('end'));
    socket.on('error', (error: NodeJS.ErrnoException) => this.#onEnd('reset', error.code ?? error.message));
    socket.on('close', () => this.#onEnd('local'));
    if (rest.length) this.#onData(rest);
  }

  /** How the TCP connection ended, if it did. */
  get tcpEnded(): TcpEnd | undefined {
    return this.#tcpEnd;
  }

  #emit(event: ConnEvent): void {
    this.history.push(event);
    const waiter = this.#waiters.shift();
    if (waiter) waiter(event);
    else this.#queue.push(event);
  }

  #onData(chunk: Buffer): void {
    if (this.#broken) return;
    let frames: Frame[];
    try {
      frames = this.#parser.push(chunk);
    } catch (error) {
      this.#broken = true;
      this.#emit({ type: 'malformed', error: (error as Error).message });
      return;
    }
    for (const frame of frames) this.#emit({ type: 'frame', frame });
  }

  #onEnd(how: TcpEnd, error?: string): void {
    if (this.#tcpEnd) return;
    this.#tcpEnd = how;
    // A server that ends TCP (FIN) in the middle of a frame is broken; a reset or our own close may cut one.
    if (how === 'end' && !this.#broken && this.#parser.pending) this.#emit({ type: 'malformed', error: `${this.#parser.pending} bytes of an incomplete frame before the server's FIN` });
    this.#emit(error ? { type: 'tcp-close', how, error } : { type: 'tcp-close', how });
  }

  /** Writes raw bytes (frames, garbage, anything). Errors surface as a tcp-close event. */
  write(...chunks: Uint8Array[]): void {
    if (this.socket.destroyed || !this.socket.writable) return;
    for (const chunk of chunks) this.socket.write(chunk);
  }

  sendFrame(spec: FrameSpec): void {
    this.write(buildFrame(spec));
  }

  sendText(text: string | Uint8Array, extra: Partial<FrameSpec> = {}): void {
    this.write(textFrame(text, extra));
  }

  sendClose(code?: number, reason: Uint8Array | string = '', extra: Partial<FrameSpec> = {}): void {
    this.write(closeFrame(code, reason, extra));
  }

  /** The next event, or 'timeout'. */
  nextEvent(timeoutMs = 5000): Promise<ConnEvent | 'timeout'> {
    const queued = this.#queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.#tcpEnd) return Promise.resolve(this.history[this.history.length - 1]!); // the tcp-close again
    return new Promise((resolve) => {
      const waiter = (event: ConnEvent) => {
        clearTimeout(timer);
        resolve(event);
      };
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(waiter);
        if (i >= 0) this.#waiters.splice(i, 1);
        resolve('timeout');
      }, timeoutMs);
      this.#waiters.push(waiter);
    });
  }

  /** The next frame. Rejects if the TCP connection ends, the data is malformed, or on timeout. */
  async nextFrame(timeoutMs = 5000): Promise<Frame> {
    const event = await this.nextEvent(timeoutMs);
    if (event === 'timeout') throw new Error(`no frame within ${timeoutMs} ms`);
    if (event.type === 'frame') return event.frame;
    if (event.type === 'malformed') throw new Error(`malformed server data: ${event.error}`);
    throw new Error(`TCP connection ended (${event.how}) while waiting for a frame`);
  }

  /**
   * Waits for the server's close frame, skipping other frames. Resolves with its code and reason, or
   * 'tcp-close-without-close-frame' when the TCP connection ends first. Rejects on timeout.
   */
  async expectClose(timeoutMs = 5000): Promise<CloseInfo | 'tcp-close-without-close-frame'> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const event = await this.nextEvent(Math.max(0, deadline - Date.now()));
      if (event === 'timeout') throw new Error(`no close frame and no TCP close within ${timeoutMs} ms`);
      if (event.type === 'tcp-close') return 'tcp-close-without-close-frame';
      if (event.type === 'malformed') throw new Error(`malformed server data: ${event.error}`);
      if (event.frame.opcode === Opcode.CLOSE) return parseClose(event.frame.payload);
    }
  }

  /** Waits until the TCP connection ends; 'timeout' if it is still open after `timeoutMs`. Frames are skipped. */
  async waitForTcpClose(timeoutMs = 5000): Promise<TcpEnd | 'timeout'> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.#tcpEnd && this.#queue.length === 0) return this.#tcpEnd;
      const event = await this.nextEvent(Math.max(0, deadline - Date.now()));
      if (event === 'timeout') return 'timeout';
      if (event.type === 'tcp-close') return event.how;
    }
  }

  /** Closes our side at once (FIN, then the socket is gone). */
  destroy(): void {
    this.socket.destroy();
  }

  /** Aborts with a TCP reset. */
  reset(): void {
    if (!this.socket.destroyed) this.socket.resetAndDestroy();
  }
}

export function parseClose(payload: Buffer): CloseInfo {
  if (payload.length < 2) return { code: undefined, reason: '', reasonBytes: Buffer.alloc(0) };
  const reasonBytes = payload.subarray(2);
  return { code: payload.readUInt16BE(0), reason: reasonBytes.toString('utf8'), reasonBytes };
}

export interface HttpResponse {
  status: number;
  statusText: string;
  /** Lower-cased header names; repeated headers joined with ', '. */
  headers: Record<string, string>;
  socket: net.Socket;
  /** Bytes received after the response head. */
  rest: Buffer;
}

function endpoint(url: string): { host: string; port: number; path: string; hostHeader: string } {
  const u = new URL(url);
  const port = Number(u.port) || (u.protocol === 'https:' || u.protocol === 'wss:' ? 443 : 80);
  return { host: u.hostname, port, path: `${u.pathname}${u.search}`, hostHeader: u.host };
}

/**
 * Sends a raw HTTP/1.1 GET over a fresh TCP connection and reads the response head.
 * `headers` values of undefined leave that header out.
 */
export async function rawHttp(url: string, headers: Record<string, string | undefined>, options: { path?: string; timeoutMs?: number } = {}): Promise<HttpResponse> {
  const { host, port, path, hostHeader } = endpoint(url);
  const timeoutMs = options.timeoutMs ?? 5000;
  const socket = net.connect(port, host);
  socket.setNoDelay(true);
  return new Promise((resolve, reject) => {
    let buffer = Buffer.alloc(0);
    const timer = setTimeout(() => fail(new Error(`no HTTP response head within ${timeoutMs} ms`)), timeoutMs);
    const fail = (error: Error) => {
      clearTimeout(timer);
      socket.destroy();
      reject(error);
    };
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('error', fail);
      socket.off('end', onEnd);
      socket.pause();
      const [statusLine = '', ...lines] = buffer.subarray(0, end).toString('latin1').split('\r\n');
      const match = /^HTTP\/1\.[01] (\d{3}) ?(.*)$/.exec(statusLine);
      if (!match) return fail(new Error(`bad status line ${JSON.stringify(statusLine)}`));
      const parsed: Record<string, string> = {};
      for (const line of lines) {
        const i = line.indexOf(':');
        if (i <= 0) continue;
        const name = line.slice(0, i).trim().toLowerCase();
        const value = line.slice(i + 1).trim();
        parsed[name] = parsed[name] === undefined ? value : `${parsed[name]}, ${value}`;
      }
      resolve({ status: Number(match[1]), statusText: match[2] ?? '', headers: parsed, socket, rest: buffer.subarray(end + 4) });
    };
    const onEnd = () => fail(new Error(`connection ended before a response head (${buffer.length} bytes)`));
    socket.on('data', onData);
    socket.on('error', fail);
    socket.on('end', onEnd);
    socket.once('connect', () => {
      const all: Record<string, string | undefined> = { Host: hostHeader, ...headers };
      const head = Object.entries(all)
        .filter((e): e is [string, string] => e[1] !== undefined)
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join('');
      socket.write(`GET ${options.path ?? path} HTTP/1.1\r\n${head}\r\n`);
    });
  });
}

/**
 * The headers of a valid upgrade request with a fresh key: Host first when `host` is given (rawHttp
 * adds it otherwise); override or (with undefined) remove any.
 */
export function upgradeHeaders(host?: string, overrides: Record<string, string | undefined> = {}): Record<string, string> {
  const headers: Record<string, string | undefined> = {
    ...(host === undefined ? {} : { Host: host }),
    Upgrade: 'websocket',
    Connection: 'Upgrade',
    'Sec-WebSocket-Key': randomBytes(16).toString('base64'),
    'Sec-WebSocket-Version': '13',
    ...overrides,
  };
  return Object.fromEntries(Object.entries(headers).filter((e): e is [string, string] => e[1] !== undefined));
}

/**
 * Opens a raw WebSocket connection to `url` (ws://host:port/path or http://…): performs the handshake
 * and checks it (101, Upgrade: websocket, the right Sec-WebSocket-Accept). Rejects otherwise.
 */
export async function openRaw(url: string, options: { path?: string; timeoutMs?: number; headers?: Record<string, string | undefined> } = {}): Promise<RawConnection> {
  const headers = upgradeHeaders(undefined, options.headers);
  const response = await rawHttp(url, headers, options);
  const fail = (why: string) => {
    response.socket.destroy();
    throw Object.assign(new Error(`handshake failed: ${why}`), { status: response.status });
  };
  if (response.status !== 101) fail(`status ${response.status} ${response.statusText}`);
  if (response.headers.upgrade?.toLowerCase() !== 'websocket') fail(`Upgrade header ${JSON.stringify(response.headers.upgrade)}`);
  const expected = acceptFor(headers['Sec-WebSocket-Key']!);
  if (response.headers['sec-websocket-accept'] !== expected) fail(`Sec-WebSocket-Accept ${JSON.stringify(response.headers['sec-websocket-accept'])}, expected ${expected}`);
  const conn = new RawConnection(response.socket, response.rest);
  response.socket.resume();
  return conn;
}

/** A short readable description of a server frame, for transcripts and messages. */
export function describeFrame(frame: Frame): string {
  const bad = serverFrameViolation(frame);
  const flags = `${frame.fin ? '' : ' fin=0'}${bad ? ` [${bad}]` : ''}`;
  switch (frame.opcode) {
    case Opcode.TEXT:
      return `text ${JSON.stringify(frame.payload.toString('utf8'))}${flags}`;
    case Opcode.CONTINUATION:
      return `continuation ${JSON.stringify(frame.payload.toString('utf8'))}${flags}`;
    case Opcode.BINARY:
      return `binary ${frame.payload.toString('hex')}${flags}`;
    case Opcode.PING:
      return `ping ${JSON.stringify(frame.payload.toString('latin1'))}${flags}`;
    case Opcode.PONG:
      return `pong ${JSON.stringify(frame.payload.toString('latin1'))}${flags}`;
    case Opcode.CLOSE: {
      const { code, reason } = parseClose(frame.payload);
      return `${code === undefined ? 'close (no code)' : `close ${code} ${JSON.stringify(reason)}`}${flags}`;
    }
    default:
      return `opcode 0x${frame.opcode.toString(16)} ${frame.payload.toString('hex')}${flags}`;
  }
}
