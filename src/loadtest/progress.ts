// Progress while the phases run, on stderr: cli-progress bars when it is a terminal, one line per
// finished phase when it is not, nothing with --json.
import process from 'node:process';
import cliProgress from 'cli-progress';

export type ProgressMode = 'bars' | 'lines' | 'quiet';

export class ProgressView {
  readonly #mode: ProgressMode;
  readonly #stderr: (text: string) => void;
  #multi: cliProgress.MultiBar | undefined;
  #bar: cliProgress.SingleBar | undefined;
  #name = '';

  constructor(mode: ProgressMode, stderr: (text: string) => void) {
    this.#mode = mode;
    this.#stderr = stderr;
  }

  #bars(): cliProgress.MultiBar {
    if (!this.#multi) {
      // cli-progress writes to a stream; this one forwards to the io we were given.
      const stream = {
        isTTY: true,
        columns: process.stderr?.columns || 100,
        write: (text: string) => {
          this.#stderr(text);
          return true;
        },
      };
      this.#multi = new cliProgress.MultiBar({
        stream: stream as unknown as NodeJS.WritableStream,
        format: '{phase} [{bar}] {value}/{total} {unit} {detail}',
        barsize: 30,
        fps: 10,
        // Nothing that a Ctrl-C would leave behind: the cursor stays visible, and lines are cut
        // to the terminal width instead of switching line wrapping off.
        hideCursor: false,
        linewrap: true,
        clearOnComplete: false,
        stopOnComplete: false,
        gracefulExit: false,
      });
    }
    return this.#multi;
  }

  start(name: string, total: number, unit: string): void {
    this.#name = name;
    if (this.#mode !== 'bars') return;
    this.#bar = this.#bars().create(Math.max(1, total), 0, { phase: name.padEnd(8), unit, detail: '' });
  }

  update(value: number, detail = ''): void {
    this.#bar?.update(value, { detail });
  }

  /** The phase is over: the bar shows the final numbers, or a line says them. */
  end(value: number, line: string): void {
    if (this.#mode === 'bars') this.#bar?.update(value, { detail: `| ${line}` });
    else if (this.#mode === 'lines') this.#stderr(`${this.#name}: ${line}\n`);
    this.#bar = undefined;
  }

  note(line: string): void {
    if (this.#mode === 'bars' && this.#multi) this.#multi.log(`${line}\n`);
    else if (this.#mode !== 'quiet') this.#stderr(`${line}\n`);
  }

  stop(): void {
    this.#multi?.stop();
    this.#multi = undefined;
  }
}
