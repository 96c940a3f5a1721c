// Small helpers the runtime folders share. Runtime-free.

/** A client address as the core keys it: IPv4-mapped IPv6 (`::ffff:1.2.3.4`) as plain IPv4; 'unknown' when absent. */
export function clientAddress(address: string | undefined | null): string {
  if (!address) return 'unknown';
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

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
