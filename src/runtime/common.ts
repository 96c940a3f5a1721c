// Small helpers the runtime folders share. Runtime-free.

/** A client address as the core keys it: IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as plain IPv4; 'unknown' when absent. */
export function clientAddress(address: string | undefined | null): string {
  if (!address) return 'unknown';
  const plain = address.startsWith('::ffff:') ? address.slice(7) : address;
  // One string per address, not one per connection (a crowd behind a NAT or a proxy shares a few).
  const known = addresses.get(plain);
  if (known !== undefined) return known;
  if (addresses.size >= MAX_INTERNED) addresses.clear();
  addresses.set(plain, plain);
  return plain;
}
const addresses = new Map<string, string>();
const MAX_INTERNED = 10_000;

/** A host as it appears in a URL (IPv6 in brackets). */
export function urlHost(host: string): string {
  return host.includes(':') ? `[${host}]` : host;
}

/** Runs a full garbage collection where the runtime exposes `gc()` (node --expose-gc, deno --v8-flags=--expose-gc). */
export function collectExposedGarbage(): boolean {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  return gc !== undefined;
}

/**
 * The error that ends the body of a `Connection: close` answer (`closingAfterAnswer`). A runtime
 * reports it to its error hook, which should know it and stay quiet.
 */
export const CLOSE_AFTER_BODY = new Error('hubbub: closing the connection after a Connection: close answer');

/**
 * For runtimes that send a response's `Connection: close` but keep the TCP connection for the next
 * request (Deno): the same answer, with a body that fails after its last byte. The body goes out
 * chunked, then the stream errors with `CLOSE_AFTER_BODY`, and the runtime, unable to finish the
 * response, ends the connection. Other responses pass through untouched.
 */
export function closingAfterAnswer(response: Response): Response {
  if (response.status === 101 || response.headers.get('connection') !== 'close') return response;
  const reader = response.body?.getReader();
  const headers = new Headers(response.headers);
  headers.delete('content-length'); // with a length, the runtime stops at the body's end and never sees the error
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const chunk = reader ? await reader.read() : undefined;
      if (chunk && !chunk.done) controller.enqueue(chunk.value);
      else controller.error(CLOSE_AFTER_BODY);
    },
  });
  return new Response(body, { status: response.status, statusText: response.statusText, headers });
}
