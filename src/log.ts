// Structured logs: one JSON object per line, one line per event. Connection-scoped lines carry
// the connection id. Nothing is logged per message at the default level.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent';
export const logLevels: readonly LogLevel[] = ['debug', 'info', 'warn', 'error', 'silent'];

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(event: string, fields?: LogFields): void;
  info(event: string, fields?: LogFields): void;
  warn(event: string, fields?: LogFields): void;
  error(event: string, fields?: LogFields): void;
  readonly level: LogLevel;
}

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

function serialise(value: unknown): unknown {
  if (value instanceof Error) {
    const out: Record<string, unknown> = { name: value.name, message: value.message };
    if ('code' in value) out.code = (value as { code: unknown }).code;
    if (value.stack) out.stack = value.stack;
    if (value.cause !== undefined) out.cause = serialise(value.cause);
    return out;
  }
  return value;
}

export function createLogger(level: LogLevel, write: (line: string) => void = (line) => console.log(line)): Logger {
  const min = rank[level];
  const emit = (lvl: Exclude<LogLevel, 'silent'>, event: string, fields?: LogFields) => {
    if (rank[lvl] < min) return;
    const record: Record<string, unknown> = { time: new Date().toISOString(), level: lvl, event };
    if (fields) for (const key in fields) record[key] = serialise(fields[key]);
    let line: string;
    try {
      line = JSON.stringify(record);
    } catch {
      line = JSON.stringify({ time: record.time, level: lvl, event, note: 'fields not serialisable' });
    }
    write(line);
  };
  return {
    level,
    debug: (event, fields) => emit('debug', event, fields),
    info: (event, fields) => emit('info', event, fields),
    warn: (event, fields) => emit('warn', event, fields),
    error: (event, fields) => emit('error', event, fields),
  };
}

/**
 * A failure that can repeat many times a second (a broker that is down): the first of each stage is
 * logged, then one line per `windowMs` with the count, so an outage cannot flood the log.
 */
export function rateLimitedFailures(log: Logger, event: string, windowMs = 10_000): (stage: string, error: unknown) => void {
  const failures = new Map<string, { count: number; loggedAt: number }>();
  return (stage, error) => {
    const now = Date.now();
    let entry = failures.get(stage);
    if (!entry) failures.set(stage, (entry = { count: 0, loggedAt: 0 }));
    entry.count++;
    if (now - entry.loggedAt < windowMs) return;
    log.warn(event, { stage, error, occurrences: entry.count });
    entry.loggedAt = now;
    entry.count = 0;
  };
}
