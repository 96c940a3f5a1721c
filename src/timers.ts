// Small timer helpers shared by the core: a race against a deadline, and an interval that does not
// keep the process alive. Runtime-free (`unref` exists on Node, Deno and Bun timers; not on workerd).

/**
 * `work`'s value, or `fallback` if it has not settled within `ms`. The timer is cleared either way;
 * a rejection of `work` passes through (callers that expect none catch it first).
 *
 * The verdict waits one more turn of the event loop after the timer fires. After a stall (a long
 * turn, a process the CPU starved) timers run before the I/O that came in meanwhile is read, so a
 * reply that is already in the socket would otherwise count as late, and a healthy broker as gone.
 */
export function withDeadline<T, F>(work: Promise<T>, ms: number, fallback: F): Promise<T | F> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<F>((resolve) => (timer = setTimeout(() => nextTurn(() => resolve(fallback)), ms)));
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/** Runs `fn` after the I/O that is ready now has been handled (Node and Bun: setImmediate; elsewhere a 0 ms timer). */
function nextTurn(fn: () => void): void {
  const immediate = (globalThis as { setImmediate?: (fn: () => void) => unknown }).setImmediate;
  if (immediate) immediate(fn);
  else setTimeout(fn, 0);
}

/** Runs `tick` every `ms` until cleared with `clearInterval`; the timer does not hold the process open. */
export function unrefInterval(tick: () => void, ms: number): ReturnType<typeof setInterval> {
  return unref(setInterval(tick, ms));
}

/** Runs `fn` once after `ms`; the timer does not hold the process open. */
export function unrefTimeout(fn: () => void, ms: number): ReturnType<typeof setTimeout> {
  return unref(setTimeout(fn, ms));
}

function unref<T>(timer: T): T {
  (timer as { unref?: () => void }).unref?.();
  return timer;
}

/** Resolves after `ms`. */
export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
