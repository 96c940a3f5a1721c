// A latency histogram that every client process can fill and the orchestrator can merge: log
// buckets 2 % wide from 1 µs up (a value is reported within ~1 % of the truth), bounded in size
// whatever the number of samples, and plain JSON so it crosses the IPC channel as is.

const MIN_MS = 0.001;
const GROWTH = 1.02;
const LOG_GROWTH = Math.log(GROWTH);

/** The wire form of a histogram: sparse [bucket, count] pairs plus exact count, sum, min and max. */
export interface HistogramData {
  buckets: [number, number][];
  count: number;
  sum: number;
  min: number;
  max: number;
}

/** What the summary shows for a set of durations (milliseconds, rounded to µs). */
export interface Percentiles {
  count: number;
  p50: number | null;
  p99: number | null;
  max: number | null;
  mean: number | null;
}

function bucketOf(ms: number): number {
  return ms <= MIN_MS ? 0 : Math.floor(Math.log(ms / MIN_MS) / LOG_GROWTH) + 1;
}

/** The geometric middle of a bucket. */
function valueOf(bucket: number): number {
  return bucket === 0 ? MIN_MS : MIN_MS * GROWTH ** (bucket - 0.5);
}

const round3 = (n: number) => Math.round(n * 1000) / 1000;

export class Histogram {
  readonly #counts = new Map<number, number>();
  count = 0;
  sum = 0;
  min = Infinity;
  max = -Infinity;

  record(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) return;
    const b = bucketOf(ms);
    this.#counts.set(b, (this.#counts.get(b) ?? 0) + 1);
    this.count++;
    this.sum += ms;
    if (ms < this.min) this.min = ms;
    if (ms > this.max) this.max = ms;
  }

  merge(data: HistogramData | undefined): this {
    if (!data || data.count === 0) return this;
    for (const [b, n] of data.buckets) this.#counts.set(b, (this.#counts.get(b) ?? 0) + n);
    this.count += data.count;
    this.sum += data.sum;
    this.min = Math.min(this.min, data.min);
    this.max = Math.max(this.max, data.max);
    return this;
  }

  /** Nearest-rank percentile (p in 0–100), clamped to the exact min and max. */
  percentile(p: number): number | null {
    if (this.count === 0) return null;
    const rank = Math.max(1, Math.ceil((p / 100) * this.count));
    let seen = 0;
    for (const b of [...this.#counts.keys()].sort((x, y) => x - y)) {
      seen += this.#counts.get(b)!;
      if (seen >= rank) return Math.min(this.max, Math.max(this.min, valueOf(b)));
    }
    return this.max;
  }

  toJSON(): HistogramData {
    return {
      buckets: [...this.#counts.entries()],
      count: this.count,
      sum: this.sum,
      min: this.count ? this.min : 0,
      max: this.count ? this.max : 0,
    };
  }

  summary(): Percentiles {
    const r = (n: number | null) => (n === null ? null : round3(n));
    return {
      count: this.count,
      p50: r(this.percentile(50)),
      p99: r(this.percentile(99)),
      max: this.count ? round3(this.max) : null,
      mean: this.count ? round3(this.sum / this.count) : null,
    };
  }

  static from(...data: (HistogramData | undefined)[]): Histogram {
    const h = new Histogram();
    for (const d of data) h.merge(d);
    return h;
  }
}
