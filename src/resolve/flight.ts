// Single-flight: concurrent callers asking for the same key share one piece of work. The entry
// is removed in `finally`, so a failure is never cached and the next caller starts afresh.

export class SingleFlight<T> {
  readonly #inflight = new Map<string, Promise<T>>();

  /** Runs `work` unless a call with the same key is under way; then joins that one. */
  run(key: string, work: () => Promise<T>): { promise: Promise<T>; joined: boolean } {
    const existing = this.#inflight.get(key);
    if (existing) return { promise: existing, joined: true };
    const promise = (async () => {
      try {
        return await work();
      } finally {
        this.#inflight.delete(key);
      }
    })();
    this.#inflight.set(key, promise);
    return { promise, joined: false };
  }

  /** How many distinct keys are in flight (for metrics and tests). */
  get size(): number {
    return this.#inflight.size;
  }
}
