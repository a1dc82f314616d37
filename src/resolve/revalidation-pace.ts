// Paces the HEADs that revalidate cached tags, so that an origin coming back from an outage is not
// met by a herd. Every node of a site holds the same tags, and every one of them went stale during
// the outage: the first pulls after the recovery would revalidate them all in the same instant.
// Two bounds spread them: at most `concurrency` tier asks of revalidations at once per node (the
// others wait their turn, first come first asked), and, right after a recovery, each revalidation
// first waits a random delay that spreads it over the rest of the window [recovery, recovery +
// spread). While a tier is marked down, or was never down, nothing waits: asking a down tier fails
// at once (the cached tag goes out stale), and normal operation must not slow down.

export interface RevalidationPaceOptions {
  /** Tier asks of revalidations running at once (at least 1). */
  concurrency: number;
  /** Length of the window after a recovery over which revalidations are spread, in ms (0: no delay). */
  spreadMs: number;
  /** Jitter source in [0, 1). */
  random?: () => number;
  now?: () => number;
}

export class RevalidationPace {
  readonly #concurrency: number;
  readonly #spreadMs: number;
  readonly #random: () => number;
  readonly #now: () => number;
  #running = 0;
  /**
   * Asks waiting for a slot, oldest first. Unbounded here, but bounded in practice: one
   * revalidation per cached tag record, and each asks one tier at a time.
   */
  readonly #waiting: Array<() => void> = [];

  constructor(options: RevalidationPaceOptions) {
    if (!Number.isSafeInteger(options.concurrency) || options.concurrency < 1) throw new RangeError(`revalidation concurrency must be a whole number of at least 1, not ${options.concurrency}`);
    if (!Number.isFinite(options.spreadMs) || options.spreadMs < 0) throw new RangeError(`recovery spread must be a duration of at least 0 ms, not ${options.spreadMs}`);
    this.#concurrency = options.concurrency;
    this.#spreadMs = options.spreadMs;
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? Date.now;
  }

  /** Tier asks running now. */
  get running(): number {
    return this.#running;
  }

  /** Tier asks waiting for a slot (those still in their recovery delay not counted). */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * How long a revalidation waits before asking a tier that is reachable since `upSince` (the
   * tier's Tier.upSince: null while marked down, 0 when never down): a random share of what is
   * left of the recovery window, else 0.
   */
  delayFor(upSince: number | null): number {
    if (upSince === null || upSince <= 0 || this.#spreadMs <= 0) return 0;
    const left = upSince + this.#spreadMs - this.#now();
    if (left <= 0) return 0;
    return Math.floor(this.#random() * left);
  }

  /**
   * Runs `ask` (one tier ask of a revalidation) after the recovery delay for `upSince` and once a
   * slot is free; the slot is released when the ask settles, whether it answered or threw.
   */
  async run<T>(upSince: number | null, ask: () => Promise<T>): Promise<T> {
    const delay = this.delayFor(upSince);
    if (delay > 0) {
      await new Promise<void>((resolve) => {
        // A pending delay must not hold the process open at shutdown.
        setTimeout(resolve, delay).unref();
      });
    }
    await this.#slot();
    try {
      return await ask();
    } finally {
      this.#release();
    }
  }

  #slot(): Promise<void> {
    if (this.#running < this.#concurrency) {
      this.#running++;
      return Promise.resolve();
    }
    // The releasing ask hands its slot over: #running stays as it is.
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#running--;
  }
}
