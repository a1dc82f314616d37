// The nonces of signed peer requests this node accepted, kept for as long as their signatures
// could still pass the clock window, so that a captured request cannot be sent again. Only
// requests whose signature already checked out are recorded, so only a key holder can fill it;
// the bound keeps even a misbehaving key holder from growing it without end.
import { PEER_AUTH_WINDOW_S } from './protocol.js';

/** Nonces remembered at most; past it (after dropping expired ones) new requests are refused. */
export const MAX_NONCES = 100_000;

export class NonceLog {
  /** nonce → when its signature leaves the clock window (ms since epoch). */
  readonly #seen = new Map<string, number>();
  readonly #max: number;
  readonly #now: () => number;
  #nextSweep = 0;

  constructor(options: { max?: number; now?: () => number } = {}) {
    this.#max = options.max ?? MAX_NONCES;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Records a nonce signed at `seconds`. 'replay' when it was seen before, 'full' when the log
   * holds its maximum of live nonces (the request is refused rather than the nonce forgotten),
   * 'ok' otherwise.
   */
  record(nonce: string, seconds: number): 'ok' | 'replay' | 'full' {
    const now = this.#now();
    if (this.#seen.has(nonce)) return 'replay';
    if (now >= this.#nextSweep || this.#seen.size >= this.#max) this.#sweep(now);
    if (this.#seen.size >= this.#max) return 'full';
    // A signature from `seconds` passes until seconds + window (by our clock); keep it a second longer.
    this.#seen.set(nonce, (seconds + PEER_AUTH_WINDOW_S + 1) * 1000);
    return 'ok';
  }

  get size(): number {
    return this.#seen.size;
  }

  #sweep(now: number): void {
    for (const [nonce, until] of this.#seen) if (until <= now) this.#seen.delete(nonce);
    this.#nextSweep = now + 10_000;
  }
}
