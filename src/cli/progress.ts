// Progress of long CLI jobs (prewarm, import, export): a bar with bytes, rate and ETA on a
// terminal (cli-progress), plain log lines when the output goes to a file or a journal.
import cliProgress from 'cli-progress';
import { formatBytes, formatDuration } from '../units.js';

export interface Progress {
  /** Sets the total bytes expected (it may grow, e.g. as prewarm learns each image's size). */
  total(bytes: number): void;
  /** Sets the bytes done so far, with an optional note (which image, which blob). */
  update(done: number, note?: string): void;
  /** A line that stays (a finished image, a warning). */
  log(line: string): void;
  stop(): void;
}

/** Lines on a non-terminal: at most one per `every` ms, plus the last. */
const PLAIN_EVERY_MS = 2000;

export function createProgress(label: string, out: NodeJS.WriteStream = process.stderr): Progress {
  return out.isTTY ? new BarProgress(label, out) : new PlainProgress(label, out);
}

class BarProgress implements Progress {
  readonly #bar: cliProgress.SingleBar;
  #total = 0;
  readonly #started = Date.now();
  readonly #out: NodeJS.WriteStream;

  constructor(label: string, out: NodeJS.WriteStream) {
    this.#out = out;
    this.#bar = new cliProgress.SingleBar(
      {
        stream: out,
        format: `${label} [{bar}] {percentage}% | {done} of {all} | {rate}/s | ETA {eta_formatted} | {note}`,
        hideCursor: true,
        etaBuffer: 20,
        fps: 5,
      },
      cliProgress.Presets.shades_classic,
    );
    this.#bar.start(1, 0, { done: '0 B', all: '?', rate: '0 B', note: '' });
  }

  total(bytes: number): void {
    this.#total = bytes;
    this.#bar.setTotal(Math.max(bytes, 1));
  }

  update(done: number, note = ''): void {
    const seconds = Math.max((Date.now() - this.#started) / 1000, 0.001);
    this.#bar.update(done, { done: formatBytes(done), all: formatBytes(this.#total), rate: formatBytes(done / seconds), note });
  }

  log(line: string): void {
    // Clear the bar's line, print, and let the bar draw itself again below.
    this.#out.write(`\r\x1b[K${line}\n`);
    this.#bar.render();
  }

  stop(): void {
    this.#bar.stop();
  }
}

class PlainProgress implements Progress {
  readonly #label: string;
  readonly #out: NodeJS.WriteStream;
  readonly #started = Date.now();
  #total = 0;
  #done = 0;
  #lastLine = 0;

  constructor(label: string, out: NodeJS.WriteStream) {
    this.#label = label;
    this.#out = out;
  }

  total(bytes: number): void {
    this.#total = bytes;
  }

  update(done: number, note?: string): void {
    this.#done = done;
    if (Date.now() - this.#lastLine < PLAIN_EVERY_MS) return;
    this.#line(note);
  }

  log(line: string): void {
    this.#out.write(`${line}\n`);
  }

  stop(): void {
    this.#line();
  }

  #line(note?: string): void {
    this.#lastLine = Date.now();
    const seconds = Math.max((Date.now() - this.#started) / 1000, 0.001);
    const rate = this.#done / seconds;
    const eta = this.#total > this.#done && rate > 0 ? ` ETA ${formatDuration(((this.#total - this.#done) / rate) * 1000)}` : '';
    const of = this.#total > 0 ? ` of ${formatBytes(this.#total)}` : '';
    this.#out.write(`${this.#label}: ${formatBytes(this.#done)}${of} at ${formatBytes(rate)}/s${eta}${note ? ` (${note})` : ''}\n`);
  }
}
