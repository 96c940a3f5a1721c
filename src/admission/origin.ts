// The Origin allow-list of `allowedOrigins`. Runtime-free.

/** Origin allow-list: exact origins, or `scheme://*.domain` for any subdomain. Empty list: any origin. */
export function originMatcher(allowed: readonly string[]): (origin: string | undefined) => boolean {
  if (allowed.length === 0) return () => true;
  const exact = new Set<string>();
  const suffixes: [scheme: string, suffix: string][] = [];
  for (const entry of allowed) {
    const lower = entry.toLowerCase();
    const star = lower.indexOf('://*.');
    if (star < 0) exact.add(lower);
    else suffixes.push([lower.slice(0, star + 3), lower.slice(star + 4)]);
  }
  return (origin) => {
    if (origin === undefined) return true; // not a browser: Origin is a browser's promise, not a credential
    const lower = origin.toLowerCase();
    if (exact.has(lower)) return true;
    return suffixes.some(([scheme, suffix]) => lower.startsWith(scheme) && lower.endsWith(suffix) && lower.length > scheme.length + suffix.length);
  };
}
