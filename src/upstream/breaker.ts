// A circuit breaker per upstream. An edge site's link fails often; once the origin has failed to
// answer several times in a row, every further request would wait the full upstream timeout for
// nothing. While the breaker is open, requests fail at once (and cached content is served without
// delay); a background probe of /v2/ closes it when the origin answers again. The back-off
// between probes grows exponentially, with jitter, up to a cap.
import type { Logger } from 'pino';
import { UpstreamAuthError, UpstreamStatusError, UpstreamUnavailableError, errorKind, publicUpstream } from '../errors.js';

/** Consecutive failures to reach the upstream that open the breaker. */
export const BREAKER_THRESHOLD = 3;
/** First back-off before a probe; doubled for every failed probe. */
export const BREAKER_BASE_MS = 1000;
/** Longest back-off between probes. */
export const BREAKER_MAX_MS = 60_000;
/** Longest Retry-After honoured; a larger one is taken as this. */
export const RETRY_AFTER_MAX_MS = 10 * 60_000;

export interface BreakerSnapshot {
  state: 'closed' | 'open';
  consecutiveFailures: number;
  /** When the next probe runs (ms since epoch), while open. */
  probeAt: number | null;
  /** Times the breaker opened since start. */
  opened: number;
  /**
   * When the current state began (ms since epoch): since when the upstream is marked down, or
   * reachable again; null while it has never been marked down.
   */
  since: number | null;
  /**
   * The last failure as a client may read it (/healthz, the status page): what failed, never the
   * URL, host or proxy (the log has those).
   */
  lastError: string | null;
  /** Until when (ms since epoch) the upstream asked not to be sent requests (429 Retry-After). */
  retryAfterUntil: number | null;
}

export interface BreakerOptions {
  threshold?: number;
  baseMs?: number;
  maxMs?: number;
  /** Jitter source in [0, 1). */
  random?: () => number;
  now?: () => number;
}

export class Breaker {
  readonly #name: string;
  readonly #log: Logger;
  readonly #probe: () => Promise<void>;
  readonly #threshold: number;
  readonly #baseMs: number;
  readonly #maxMs: number;
  readonly #random: () => number;
  readonly #now: () => number;
  #failures = 0;
  #open = false;
  /** Failed probes since the breaker opened; sets the back-off. */
  #probesFailed = 0;
  #probeAt: number | null = null;
  #timer: NodeJS.Timeout | null = null;
  #opened = 0;
  #lastError: string | null = null;
  #lastPublicError: string | null = null;
  #stopped = false;
  #retryAfterUntil = 0;
  #since: number | null = null;

  /** `probe` resolves when the upstream answered anything at all and rejects when it did not. */
  constructor(name: string, log: Logger, probe: () => Promise<void>, options: BreakerOptions = {}) {
    this.#name = name;
    this.#log = log;
    this.#probe = probe;
    this.#threshold = options.threshold ?? BREAKER_THRESHOLD;
    this.#baseMs = options.baseMs ?? BREAKER_BASE_MS;
    this.#maxMs = options.maxMs ?? BREAKER_MAX_MS;
    this.#random = options.random ?? Math.random;
    this.#now = options.now ?? Date.now;
  }

  get isOpen(): boolean {
    return this.#open;
  }

  /** Throws at once while the upstream is marked down or has asked Cove to wait (429). */
  check(): void {
    const held = this.#retryAfterUntil - this.#now();
    if (held > 0) {
      const seconds = String(Math.ceil(held / 1000));
      throw new UpstreamStatusError(this.#name, 429, `upstream ${this.#name} asked to wait (429 Retry-After); ${seconds} s left`, seconds, {
        publicMessage: `${publicUpstream(this.#name)} asked Cove to wait (429); ${seconds} s left`,
      });
    }
    if (!this.#open) return;
    const wait = this.#probeAt === null ? 0 : Math.max(0, Math.round((this.#probeAt - this.#now()) / 1000));
    // A client may come back once the next probe has had its chance.
    const retryAfter = String(Math.max(1, Math.ceil(((this.#probeAt ?? this.#now()) - this.#now()) / 1000) + 1));
    // Opened by failures, or at once by a silence past a deadline (trip).
    const why = this.#failures > 0 ? `after ${this.#failures} failed attempts` : `(${this.#lastPublicError ?? 'no answer'})`;
    throw new UpstreamUnavailableError(
      this.#name,
      `upstream ${this.#name} is marked down ${why} (last: ${this.#lastError ?? 'unknown'}); next probe in ${wait} s`,
      { publicMessage: `${publicUpstream(this.#name)} is marked down ${why}; next probe in ${wait} s`, retryAfter },
    );
  }

  /** The upstream answered (any HTTP status). */
  success(): void {
    this.#failures = 0;
    if (this.#open) this.#close('request');
  }

  /** The upstream could not be reached. */
  failure(err: Error): void {
    this.#failures++;
    this.#lastError = err.message;
    this.#lastPublicError = publicError(this.#name, err);
    if (!this.#open && this.#failures >= this.#threshold) {
      this.#open = true;
      this.#since = this.#now();
      this.#opened++;
      this.#probesFailed = 0;
      this.#log.warn({ upstream: this.#name, failures: this.#failures, err: err.message }, 'upstream marked down: answering from cache without waiting');
      this.#schedule();
    }
  }

  /**
   * The upstream did not answer within a deadline Cove keeps for itself (a revalidation's): one
   * such silence is strong evidence (a black hole, a dead link), so the breaker opens now, and
   * requests fail at once until a probe gets an answer, instead of each waiting its own deadline.
   */
  trip(reason: string): void {
    this.#lastError = reason;
    this.#lastPublicError = reason;
    if (this.#open) return;
    this.#open = true;
    this.#since = this.#now();
    this.#opened++;
    this.#probesFailed = 0;
    this.#log.warn({ upstream: this.#name, reason }, 'upstream marked down at once: answering from cache without waiting');
    this.#schedule();
  }

  /** The upstream answered 429 with Retry-After: send it nothing for that long. */
  holdOff(seconds: number): void {
    if (!Number.isFinite(seconds) || seconds <= 0) return;
    const until = this.#now() + Math.min(seconds * 1000, RETRY_AFTER_MAX_MS);
    if (until > this.#retryAfterUntil) {
      this.#retryAfterUntil = until;
      this.#log.warn({ upstream: this.#name, seconds }, 'upstream rate-limited Cove: no requests until its Retry-After has passed');
    }
  }

  snapshot(): BreakerSnapshot {
    return {
      retryAfterUntil: this.#retryAfterUntil > this.#now() ? this.#retryAfterUntil : null,
      state: this.#open ? 'open' : 'closed',
      consecutiveFailures: this.#failures,
      probeAt: this.#open ? this.#probeAt : null,
      opened: this.#opened,
      since: this.#since,
      lastError: this.#lastPublicError,
    };
  }

  /** Stops probing (shutdown). */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
  }

  /** Back-off before the next probe: base·2^n, capped, with the upper half jittered. */
  backoffMs(): number {
    const ceiling = Math.min(this.#maxMs, this.#baseMs * 2 ** this.#probesFailed);
    return Math.round(ceiling / 2 + (ceiling / 2) * this.#random());
  }

  #schedule(): void {
    if (this.#stopped) return;
    const delay = this.backoffMs();
    this.#probeAt = this.#now() + delay;
    this.#timer = setTimeout(() => void this.#runProbe(), delay);
    this.#timer.unref();
  }

  async #runProbe(): Promise<void> {
    this.#timer = null;
    if (!this.#open || this.#stopped) return;
    try {
      await this.#probe();
      this.#failures = 0;
      if (this.#open) this.#close('probe');
    } catch (err) {
      this.#probesFailed++;
      this.#lastError = (err as Error).message;
      this.#lastPublicError = publicError(this.#name, err);
      this.#log.debug({ upstream: this.#name, err: this.#lastError }, 'upstream probe failed');
      this.#schedule();
    }
  }

  #close(by: string): void {
    this.#open = false;
    this.#since = this.#now();
    this.#probeAt = null;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#log.info({ upstream: this.#name, by }, 'upstream reachable again');
  }
}

/** A failure as a client may read it: the error's own public message, else its kind. */
function publicError(name: string, err: unknown): string {
  if (err instanceof UpstreamUnavailableError || err instanceof UpstreamStatusError || err instanceof UpstreamAuthError) return err.publicMessage;
  const kind = errorKind(err);
  return `${publicUpstream(name)} failed${kind === null ? '' : ` (${kind})`}`;
}
