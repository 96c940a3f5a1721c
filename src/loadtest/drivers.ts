// How the orchestrator talks to the engines: one in this process (--procs 1), or one per forked
// client process (worker.ts) over the IPC channel. Both answer the same commands.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { withDeadline } from '../timers.ts';
import { dispatch, LoadEngine, type Command, type CommandArgs, type CommandResults, type Progress } from './engine.ts';

export interface Driver {
  readonly label: string;
  call<C extends Command>(cmd: C, args: CommandArgs[C]): Promise<CommandResults[C]>;
  progress(): Progress;
  /** Ends the engine's sockets; a child process is asked to exit, and killed after `graceMs`. */
  stop(graceMs: number): Promise<void>;
  /** At once, no questions asked. */
  kill(): void;
}

export class LocalDriver implements Driver {
  readonly label = 'this process';
  readonly #engine = new LoadEngine();

  call<C extends Command>(cmd: C, args: CommandArgs[C]): Promise<CommandResults[C]> {
    return dispatch(this.#engine, cmd, args);
  }

  progress(): Progress {
    return this.#engine.progress();
  }

  async stop(): Promise<void> {
    this.#engine.abort();
  }

  kill(): void {
    this.#engine.abort();
  }
}

/** The worker module next to this one, with this module's extension (.ts under Deno, .js when built). */
function workerPath(): string {
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js';
  return fileURLToPath(new URL(`./worker${ext}`, import.meta.url));
}

const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== 'undefined';

interface Pending {
  resolve(value: unknown): void;
  reject(error: Error): void;
}

export class ForkDriver implements Driver {
  readonly label: string;
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, Pending>();
  readonly #exited: Promise<void>;
  #nextId = 1;
  #progress: Progress = { phase: 'starting', done: 0, ok: 0 };
  #gone: string | undefined;

  private constructor(index: number, stderr: (text: string) => void) {
    this.label = `client process ${index}`;
    this.#child = fork(workerPath(), [], {
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
      // Node: do not pass on the parent's flags (e.g. those of `node --test`). Deno builds its own.
      ...(isDeno ? {} : { execArgv: [] }),
    });
    const forward = (chunk: unknown) => {
      const lines = String(chunk).split('\n').filter(Boolean);
      for (const line of lines) stderr(`[${this.label}] ${line}\n`);
    };
    this.#child.stdout?.on('data', forward);
    this.#child.stderr?.on('data', forward);
    this.#exited = new Promise((resolve) => {
      this.#child.once('exit', (code, signal) => {
        this.#gone = `${this.label} exited (${signal ?? `code ${code}`})`;
        for (const p of this.#pending.values()) p.reject(new Error(this.#gone));
        this.#pending.clear();
        resolve();
      });
    });
    this.#child.on('error', (error) => stderr(`[${this.label}] ${error.message}\n`));
    this.#child.on('message', (raw: unknown) => {
      const m = raw as { type?: string; id?: number; result?: unknown; error?: string } & Partial<Progress>;
      if (m.type === 'progress') this.#progress = { phase: m.phase ?? '', done: m.done ?? 0, ok: m.ok ?? 0 };
      else if (m.type === 'ready') this.#pending.get(0)?.resolve(undefined);
      else if (typeof m.id === 'number') {
        const p = this.#pending.get(m.id);
        this.#pending.delete(m.id);
        if (m.type === 'result') p?.resolve(m.result);
        else p?.reject(new Error(`${this.label}: ${m.error}`));
      }
    });
  }

  /** Forks a client process and waits until it says it is ready. */
  static async start(index: number, stderr: (text: string) => void, timeoutMs = 15_000): Promise<ForkDriver> {
    const driver = new ForkDriver(index, stderr);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${driver.label} did not start within ${timeoutMs} ms`)), timeoutMs);
      driver.#pending.set(0, {
        resolve: () => {
          clearTimeout(timer);
          driver.#pending.delete(0);
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      });
    }).catch((error: unknown) => {
      driver.kill();
      throw error;
    });
    return driver;
  }

  call<C extends Command>(cmd: C, args: CommandArgs[C]): Promise<CommandResults[C]> {
    if (this.#gone) return Promise.reject(new Error(this.#gone));
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#child.send({ id, cmd, args });
    });
  }

  progress(): Progress {
    return this.#progress;
  }

  async stop(graceMs: number): Promise<void> {
    if (this.#gone) return;
    if (this.#child.connected) this.#child.send({ cmd: 'exit' });
    if ((await withDeadline(this.#exited, graceMs, 'late' as const)) !== 'late') return;
    this.kill();
    await withDeadline(this.#exited, 2000, 'late' as const);
  }

  kill(): void {
    if (this.#gone) return;
    this.#child.kill('SIGKILL');
  }
}
