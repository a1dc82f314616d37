// The configured prewarm list (COVE_PREWARM): fetched shortly after start and again every
// COVE_PREWARM_INTERVAL, one run at a time, so the images are local before anyone pulls them
// and tags that moved at the origin are followed.
import type { Logger } from '../log.js';
import { prewarm, type PrewarmDeps } from './prewarm.js';
import type { Platform } from './platforms.js';

export class PrewarmSchedule {
  readonly #refs: readonly string[];
  readonly #deps: PrewarmDeps;
  readonly #platforms: readonly Platform[];
  readonly #intervalMs: number;
  readonly #log: Logger;
  readonly #abort = new AbortController();
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;

  constructor(refs: readonly string[], deps: PrewarmDeps, options: { platforms: readonly Platform[]; intervalMs: number; log: Logger }) {
    this.#refs = refs;
    this.#deps = deps;
    this.#platforms = options.platforms;
    this.#intervalMs = options.intervalMs;
    this.#log = options.log;
  }

  start(): void {
    if (this.#refs.length === 0) return;
    // The first run waits a moment: start-up (and the first client pulls) come first.
    const first = setTimeout(() => this.#tick(), 1000);
    first.unref();
    this.#timer = setInterval(() => this.#tick(), this.#intervalMs);
    this.#timer.unref();
  }

  /** Stops the schedule; a run in progress is aborted (fills it started finish for the cache). */
  async stop(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#abort.abort();
    await this.#running?.catch(() => undefined);
  }

  #tick(): void {
    if (this.#running || this.#abort.signal.aborted) return;
    const started = Date.now();
    this.#running = prewarm(this.#refs, this.#deps, { platforms: this.#platforms, signal: this.#abort.signal })
      .then((result) => {
        const fetched = result.refs.reduce((n, r) => n + (r.bytes.fetched), 0);
        this.#log.info({ refs: this.#refs.length, ok: result.ok, errors: result.errors, fetchedBytes: fetched, ms: Date.now() - started }, 'prewarm list refreshed');
      })
      .catch((err: Error) => this.#log.error({ err: err.message }, 'prewarm list failed'))
      .finally(() => {
        this.#running = null;
      });
  }
}
