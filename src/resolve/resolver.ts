// The resolver owns the one fallback policy: tiers are asked in order (peers, parents, origin)
// and the first that has the thing wins. A tier that fails is skipped; if every tier failed, the
// most telling error is thrown (an unreachable upstream beats a bad status, so the client hears
// "unavailable"). A request's reach limits which tiers it may use.
import { UpstreamUnavailableError } from '../errors.js';
import type { Target, Tier } from '../tiers/tier.js';
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

  /** True when the request may ask this tier: peers never fetch for peers; local asks nobody. */
  allows(target: Target, tier: Tier): boolean {
    const reach = target.reach ?? 'all';
    if (reach === 'local') return false;
    return reach === 'all' || tier.kind !== 'peer';
  }

  /**
   * Asks each tier the target may use, from index `startAt` of `tiers` on; answers the first
   * non-null value, null when every tier answered "not here", and throws when at least one tier
   * failed and none had it.
   */
  async first<T>(target: Target, ask: (tier: Tier) => Promise<T | null>, startAt = 0): Promise<Found<T> | null> {
    let failure: unknown = null;
    for (const tier of this.tiers.slice(startAt)) {
      if (!this.allows(target, tier)) continue;
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
