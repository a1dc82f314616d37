// The configured prewarm list (COVE_PREWARM): fetched shortly after start and again every
// COVE_PREWARM_INTERVAL, one run at a time, so the images are local before anyone pulls them
// and tags that moved at the origin are followed. Runs go through the shared prewarm queue, so an
// image the webhook or an operator is prewarming already is joined, not fetched twice.
import type { Logger } from '../log.js';
import type { Platform } from './platforms.js';
import type { PrewarmQueue } from './queue.js';

export class PrewarmSchedule {
  readonly #refs: readonly string[];
  readonly #queue: PrewarmQueue;
  readonly #platforms: readonly Platform[];
  readonly #intervalMs: number;
  readonly #log: Logger;
  #stopped = false;
  #timers: NodeJS.Timeout[] = [];
  #running: Promise<void> | null = null;

  constructor(refs: readonly string[], queue: PrewarmQueue, options: { platforms: readonly Platform[]; intervalMs: number; log: Logger }) {
    this.#refs = refs;
    this.#queue = queue;
    this.#platforms = options.platforms;
    this.#intervalMs = options.intervalMs;
    this.#log = options.log;
  }

  start(): void {
    if (this.#refs.length === 0) return;
    // The first run waits a moment: start-up (and the first client pulls) come first.
    const first = setTimeout(() => this.#tick(), 1000);
    first.unref();
    const every = setInterval(() => this.#tick(), this.#intervalMs);
    every.unref();
    this.#timers = [first, every];
  }

  /** Stops the schedule. Its jobs are the queue's: closing the queue aborts them. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const timer of this.#timers) clearTimeout(timer);
    await this.#running?.catch(() => undefined);
  }

  #tick(): void {
    if (this.#running || this.#stopped) return;
    const started = Date.now();
    this.#running = this.#queue
      .run(this.#refs, { platforms: this.#platforms })
      .then((result) => {
        const fetched = result.refs.reduce((n, r) => n + r.bytes.fetched, 0);
        this.#log.info({ refs: this.#refs.length, ok: result.ok, errors: result.errors, fetchedBytes: fetched, ms: Date.now() - started }, 'prewarm list refreshed');
      })
      .catch((err: Error) => this.#log.warn({ err: err.message }, 'prewarm list not run this time'))
      .finally(() => {
        this.#running = null;
      });
  }
}
