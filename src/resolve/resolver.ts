// The resolver owns the one fallback policy: tiers are asked in order and the first that has the
// thing wins. A tier that fails is skipped; if every tier failed, the most telling error is
// thrown (an unreachable upstream beats a bad status, so the client hears "unavailable").
import { UpstreamUnavailableError } from '../errors.js';
import type { Tier } from '../tiers/tier.js';
import type { Logger } from '../log.js';

/** A value found in a tier, with the tier that had it. */
export interface Found<T> {
  tier: Tier;
  value: T;
}

export class Resolver {
  readonly tiers: readonly Tier[];
  readonly #log: Logger;

  constructor(tiers: readonly Tier[], log: Logger) {
    if (tiers.length === 0) throw new Error('Resolver needs at least one tier');
    this.tiers = tiers;
    this.#log = log;
  }

  /**
   * Asks each tier from `startAt` on; answers the first non-null value, null when every tier
   * answered "not here", and throws when at least one tier failed and none had it.
   */
  async first<T>(ask: (tier: Tier) => Promise<T | null>, startAt = 0): Promise<Found<T> | null> {
    let failure: unknown = null;
    for (const tier of this.tiers.slice(startAt)) {
      try {
        const value = await ask(tier);
        if (value !== null) return { tier, value };
      } catch (err) {
        this.#log.debug({ tier: tier.name, err }, 'tier failed');
        if (failure === null || err instanceof UpstreamUnavailableError) failure = err;
      }
    }
    if (failure !== null) throw failure;
    return null;
  }
}
