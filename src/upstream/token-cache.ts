// Bearer tokens cached per (realm, service, scope) until shortly before they expire, with one
// fetch in flight per key: a pull's concurrent manifest and layer requests share one token.

/** What identifies a token: the token endpoint, the service it is for, and the scope asked. */
export interface TokenKey {
  realm: string;
  service: string | null;
  scope: string | null;
}

/** A token as the endpoint issued it. */
export interface IssuedToken {
  token: string;
  /** Lifetime in seconds (`expires_in`); null when the endpoint did not say. */
  expiresIn: number | null;
}

/** The distribution token spec: "when omitted, this defaults to 60 seconds". */
export const DEFAULT_TOKEN_LIFETIME_S = 60;

interface Entry {
  token: string;
  /** When to stop using it (already moved earlier than the real expiry). */
  useUntil: number;
}

export class TokenCache {
  readonly #entries = new Map<string, Entry>();
  readonly #inflight = new Map<string, Promise<string>>();
  readonly #now: () => number;

  constructor(options: { now?: () => number } = {}) {
    this.#now = options.now ?? Date.now;
  }

  /** Stable map key; scopes contain ':' (and `host:port`), so the parts are JSON-encoded, not joined. */
  static keyOf(key: TokenKey): string {
    return JSON.stringify([key.realm, key.service, key.scope]);
  }

  /** A cached, still-fresh token, or null. */
  get(key: TokenKey): string | null {
    const k = TokenCache.keyOf(key);
    const entry = this.#entries.get(k);
    if (!entry) return null;
    if (this.#now() >= entry.useUntil) {
      this.#entries.delete(k);
      return null;
    }
    return entry.token;
  }

  /**
   * The cached token, or the one `fetch` brings. Concurrent callers for the same key share one
   * fetch; a failed fetch is not cached (the next caller tries again).
   */
  async obtain(key: TokenKey, fetch: () => Promise<IssuedToken>): Promise<string> {
    const cached = this.get(key);
    if (cached !== null) return cached;
    const k = TokenCache.keyOf(key);
    const running = this.#inflight.get(k);
    if (running) return running;
    const flight = (async () => {
      try {
        const issued = await fetch();
        this.#put(k, issued);
        return issued.token;
      } finally {
        this.#inflight.delete(k);
      }
    })();
    this.#inflight.set(k, flight);
    return flight;
  }

  /**
   * Forgets a token the upstream rejected. Only drops the entry when it still holds that token,
   * so a fresh token fetched meanwhile by another request survives.
   */
  invalidate(key: TokenKey, token?: string): void {
    const k = TokenCache.keyOf(key);
    const entry = this.#entries.get(k);
    if (entry && (token === undefined || entry.token === token)) this.#entries.delete(k);
  }

  /** Number of cached tokens (fresh or not yet swept). */
  get size(): number {
    return this.#entries.size;
  }

  clear(): void {
    this.#entries.clear();
  }

  #put(k: string, issued: IssuedToken): void {
    const lifetimeS = issued.expiresIn !== null && Number.isFinite(issued.expiresIn) && issued.expiresIn > 0 ? issued.expiresIn : DEFAULT_TOKEN_LIFETIME_S;
    const lifetimeMs = lifetimeS * 1000;
    // Refresh early so a token does not expire between being picked and reaching the upstream:
    // a tenth of its life, at most 30 s (Harbor's 1800 s tokens are renewed 30 s early).
    const margin = Math.min(30_000, lifetimeMs / 10);
    this.#entries.set(k, { token: issued.token, useUntil: this.#now() + lifetimeMs - margin });
    // Sweep expired entries now and then so scopes of repositories never pulled again go away.
    if (this.#entries.size > 256) {
      const now = this.#now();
      for (const [key, entry] of this.#entries) if (now >= entry.useUntil) this.#entries.delete(key);
    }
  }
}
