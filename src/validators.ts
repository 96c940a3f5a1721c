// Validator builders shared by hubbub's options (options.ts) and `hubbub loadtest`'s flags
// (loadtest/options.ts). Each returns what a value must be (`accepts`, used in every error and in
// `--help`), a parser for text from a flag or the environment (undefined when invalid) and a check
// for a value given as an object field. Runtime-free: no node:* imports, nothing else from src.

export interface Validator<T> {
  /** Human description of what is accepted, e.g. `an integer from 1 to 10`. */
  accepts: string;
  /** Parses a string from a flag or the environment. Returns undefined when invalid. */
  parse(text: string): T | undefined;
  /** Checks a value given as an object field. */
  check(value: unknown): value is T;
}

export function inRange(n: number, min: number, max: number): number | undefined {
  return Number.isInteger(n) && n >= min && n <= max ? n : undefined;
}

const inRangeCheck = (min: number, max: number) => (value: unknown): value is number =>
  typeof value === 'number' && inRange(value, min, max) !== undefined;

/** The items of a comma-separated list, trimmed, empty ones left out. */
export function commaList(text: string): string[] {
  return text.split(',').map((item) => item.trim()).filter(Boolean);
}

/** Integers in [min, max], written in decimal digits (a minus sign only where the range has negatives). */
export function integer(min: number, max: number): Validator<number> {
  const digits = min < 0 ? /^-?\d+$/ : /^\d+$/;
  return {
    accepts: `an integer from ${min} to ${max}`,
    parse: (text) => (digits.test(text.trim()) ? inRange(Number(text), min, max) : undefined),
    check: inRangeCheck(min, max),
  };
}

/** Milliseconds as shown to a user: whole seconds as `5s`, anything else as `250ms`. */
function showMs(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** Durations in milliseconds: a number of milliseconds, or a number with a unit: `500ms`, `10s`, `2m`. */
export function duration(min: number, max: number): Validator<number> {
  return {
    accepts: `a duration from ${showMs(min)} to ${showMs(max)} (e.g. 500ms, 10s, 2m, or plain milliseconds)`,
    parse: (text) => {
      const m = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
      if (!m) return undefined;
      const scale = m[2] === 's' ? 1000 : m[2] === 'm' ? 60_000 : 1;
      return inRange(Math.round(Number(m[1]) * scale), min, max);
    },
    check: inRangeCheck(min, max),
  };
}

/** 0 (off) or a duration in [min, max]. */
export function durationOrOff(min: number, max: number): Validator<number> {
  const d = duration(min, max);
  const ok = (n: number | undefined) => (n === 0 || (n !== undefined && n >= min) ? n : undefined);
  return {
    accepts: `0 (off) or ${d.accepts}`,
    parse: (text) => (text.trim() === '0' ? 0 : ok(d.parse(text))),
    check: (value): value is number => typeof value === 'number' && (value === 0 || d.check(value)),
  };
}

/** Sizes in bytes: bytes, or with a unit: `64KiB`, `1MiB`, `64k`, `1m`. */
export function bytes(min: number, max: number): Validator<number> {
  const units: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2 };
  return {
    accepts: `a size from ${min} to ${max} bytes (e.g. 65536, 64KiB, 1MiB)`,
    parse: (text) => {
      const m = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(text.trim());
      const unit = m ? units[m[2]!.toLowerCase()] : undefined;
      return m && unit ? inRange(Math.round(Number(m[1]) * unit), min, max) : undefined;
    },
    check: inRangeCheck(min, max),
  };
}

/** 0 (off) or a size in [min, max]. */
export function bytesOrOff(min: number, max: number): Validator<number> {
  const b = bytes(min, max);
  return {
    accepts: `0 (off) or ${b.accepts}`,
    parse: (text) => (text.trim() === '0' ? 0 : b.parse(text)),
    check: (value): value is number => value === 0 || b.check(value),
  };
}

/** true/1/yes/on or false/0/no/off (any case). */
export function boolean(): Validator<boolean> {
  return {
    accepts: 'true or false',
    parse: (text) => (/^(true|1|yes|on)$/i.test(text) ? true : /^(false|0|no|off)$/i.test(text) ? false : undefined),
    check: (value): value is boolean => typeof value === 'boolean',
  };
}

export function oneOf<T extends string>(values: readonly T[]): Validator<T> {
  const known = (value: unknown): value is T => typeof value === 'string' && (values as readonly string[]).includes(value);
  return {
    accepts: `one of ${values.join(', ')}`,
    parse: (text) => (known(text) ? text : undefined),
    check: known,
  };
}

const ORIGIN = /^https?:\/\/(\*\.)?[a-z0-9.-]+(:\d{1,5})?$/i;

/** A comma-separated list of origins (scheme://host[:port], `*.` allowed as the first label). */
export function origins(): Validator<string[]> {
  const valid = (list: unknown[]) => list.every((o) => typeof o === 'string' && ORIGIN.test(o));
  return {
    accepts: 'a comma-separated list of origins like https://app.example.com or https://*.example.com',
    parse: (text) => {
      const list = commaList(text);
      return valid(list) ? list : undefined;
    },
    check: (value): value is string[] => Array.isArray(value) && valid(value),
  };
}

/** A comma-separated list (empty = none) of secrets matching `pattern`, no two alike. */
export function secretList(pattern: RegExp, accepts: string): Validator<string[]> {
  const valid = (list: unknown[]) => list.every((s) => typeof s === 'string' && pattern.test(s)) && new Set(list).size === list.length;
  return {
    accepts: `a comma-separated list of ${accepts}`,
    parse: (text) => {
      const list = commaList(text);
      return valid(list) ? list : undefined;
    },
    check: (value): value is string[] => Array.isArray(value) && valid(value),
  };
}

/** Text matching `pattern` (and '' too, with `orEmpty`). */
export function matching(pattern: RegExp, accepts: string, orEmpty = false) {
  const ok = (text: string) => (orEmpty && text === '') || pattern.test(text);
  return {
    accepts: orEmpty ? `'' or ${accepts}` : accepts,
    parse: (text: string) => (ok(text) ? text : undefined),
    check: (value: unknown): value is string => typeof value === 'string' && ok(value),
  };
}

/** The candidate closest to `name` (edit distance), if it is close enough to be a likely typo. */
function closest(name: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const d = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(name.length / 4)) ? best : undefined;
}

/** ` (did you mean "x"?)`, or nothing. */
export function didYouMean(name: string, candidates: readonly string[]): string {
  const match = closest(name, candidates);
  return match === undefined ? '' : ` (did you mean ${JSON.stringify(match)}?)`;
}

function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) current[j] = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    previous = current;
  }
  return previous[b.length]!;
}
