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
/**
 * Shortest gap between probes asked for by requests: while the upstream is marked down, a request
 * that finds it so starts a probe (in the background) unless one ran this recently, so under
 * traffic a returning origin is noticed within about this long, whatever the back-off has grown to.
 */
export const DEMAND_PROBE_INTERVAL_MS = 1000;
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
  /** The class of the last failure (unreachable, or an answer Cove could not use), or null. */
  lastErrorClass: ErrorClass | null;
  /** When that failure was (ms since epoch), or null. */
  lastErrorAt: number | null;
  /** Stale answers given while the upstream was marked down: this outage so far, else the last one. */
  staleWhileDown: number;
}

export interface BreakerOptions {
  threshold?: number;
  baseMs?: number;
  maxMs?: number;
  /** Jitter source in [0, 1). */
  random?: () => number;
  now?: () => number;
  /** Shortest gap between probes that requests start (DEMAND_PROBE_INTERVAL_MS). */
  demandIntervalMs?: number;
  /** Told when failures open the breaker (the client releases requests waiting on the upstream). */
  onOpen?: () => void;
  /** Stale answers given so far (a running count); the breaker reports those given while it was open. */
  staleCount?: () => number;
}

/** Failures that are a timeout: one is enough to mark the upstream down (a black hole, a dead link). */
const TIMEOUT_KINDS = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'ETIMEDOUT']);

/** What kind of failure the last one was, as the status page and /metrics name it. */
export const ERROR_CLASSES = ['timeout', 'refused', 'reset', 'dns', 'tls', 'http-5xx', 'rate-limited', 'auth', 'other'] as const;
export type ErrorClass = (typeof ERROR_CLASSES)[number];

/** The class of a failure to reach an upstream, from the system or library code in its cause chain. */
export function errorClass(err: unknown): ErrorClass {
  if (err instanceof UpstreamStatusError) return err.status === 429 ? 'rate-limited' : err.status >= 500 ? 'http-5xx' : 'other';
  if (err instanceof UpstreamAuthError) return 'auth';
  const kind = errorKind(err) ?? '';
  if (TIMEOUT_KINDS.has(kind) || kind === 'BODY_DEADLINE' || kind === 'SILENT') return 'timeout';
  if (kind === 'ECONNREFUSED') return 'refused';
  if (kind === 'ECONNRESET' || kind === 'EPIPE' || kind === 'UND_ERR_SOCKET' || kind === 'UND_ERR_CLOSED') return 'reset';
  if (kind === 'ENOTFOUND' || kind === 'EAI_AGAIN' || kind === 'EAI_FAIL' || kind === 'EAI_NONAME') return 'dns';
  if (/^(ERR_TLS|ERR_SSL|CERT_|UNABLE_TO_|DEPTH_ZERO|SELF_SIGNED|ERR_OSSL|EPROTO)/.test(kind)) return 'tls';
  return 'other';
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
  /** The probe under way, if any (requests with nothing cached may wait for it). */
  #probeRun: Promise<void> | null = null;
  #lastProbeAt = 0;
  readonly #demandIntervalMs: number;
  #lastErrorClass: ErrorClass | null = null;
  #lastErrorAt: number | null = null;
  readonly #onOpen: () => void;
  readonly #staleCount: () => number;
  /** The stale count when the breaker last opened, and the outage's total once it closed. */
  #staleAtOpen = 0;
  #staleLastOutage = 0;

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
    this.#onOpen = options.onOpen ?? (() => undefined);
    this.#demandIntervalMs = options.demandIntervalMs ?? DEMAND_PROBE_INTERVAL_MS;
    this.#staleCount = options.staleCount ?? (() => 0);
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
    this.#probeOnDemand();
    throw this.downError();
  }

  /** The error a request gets while the upstream is marked down: why, and when the next probe is. */
  downError(): UpstreamUnavailableError {
    const wait = this.#probeAt === null ? 0 : Math.max(0, Math.round((this.#probeAt - this.#now()) / 1000));
    // A client may come back once the next probe has had its chance.
    const retryAfter = String(Math.max(1, Math.ceil(((this.#probeAt ?? this.#now()) - this.#now()) / 1000) + 1));
    // Opened by failures, or at once by a silence past a deadline (trip).
    const why = this.#failures > 0 ? `after ${this.#failures} failed attempts` : `(${this.#lastPublicError ?? 'no answer'})`;
    return new UpstreamUnavailableError(
      this.#name,
      `upstream ${this.#name} is marked down ${why} (last: ${this.#lastError ?? 'unknown'}); next probe in ${wait} s`,
      { publicMessage: `${publicUpstream(this.#name)} is marked down ${why}; next probe in ${wait} s`, retryAfter, markedDown: true },
    );
  }

  /** The upstream answered (any HTTP status). */
  success(): void {
    this.#failures = 0;
    if (this.#open) this.#close('request');
  }

  /** The upstream could not be reached. A timeout is enough on its own: a silent link is down. */
  failure(err: Error): void {
    this.#failures++;
    this.#noteError(err);
    this.#lastError = err.message;
    this.#lastPublicError = publicError(this.#name, err);
    const timeout = this.#lastErrorClass === 'timeout';
    if (!this.#open && (this.#failures >= this.#threshold || timeout)) {
      this.#markDown({ upstream: this.#name, failures: this.#failures, err: err.message }, timeout ? 'upstream marked down at once (a timeout): answering from cache without waiting' : 'upstream marked down: answering from cache without waiting');
    }
  }

  /**
   * The upstream answered, but not with something Cove could use (5xx, 429, refused
   * credentials): not a reason to stop asking, but the status page names it.
   */
  answeredBadly(err: Error): void {
    this.#noteError(err);
    this.#lastPublicError = publicError(this.#name, err);
  }

  /**
   * The upstream did not answer within a deadline Cove keeps for itself (a revalidation's, or the
   * silence check's): one such silence is strong evidence (a black hole, a dead link), so the
   * breaker opens now, and requests fail at once until a probe gets an answer, instead of each
   * waiting its own deadline.
   */
  trip(reason: string): void {
    this.#lastError = reason;
    this.#lastPublicError = reason;
    this.#lastErrorClass = 'timeout';
    this.#lastErrorAt = this.#now();
    if (this.#open) return;
    // Requests already waiting are left to the client's silence check: a slow answer still counts.
    this.#markDown({ upstream: this.#name, reason }, 'upstream marked down at once (silent past a deadline): answering from cache without waiting', false);
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
      lastErrorClass: this.#lastErrorClass,
      lastErrorAt: this.#lastErrorAt,
      staleWhileDown: this.#open ? this.#staleCount() - this.#staleAtOpen : this.#staleLastOutage,
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
    this.#timer = setTimeout(() => this.#startProbe(), delay);
    this.#timer.unref();
  }

  /**
   * While marked down: waits, at most `ms` in all, for a probe to find the upstream back — the
   * probe under way, or a new one, started once the demand interval since the last has passed.
   */
  async settle(ms: number): Promise<void> {
    if (!this.#open || ms <= 0) return;
    const started = this.#now();
    if (this.#probeRun === null) {
      // The last probe ended lately: the link may have come back since, so wait for the next one
      // if it fits in the budget, rather than refuse on a verdict older than the request.
      const gap = this.#lastProbeAt + this.#demandIntervalMs - started;
      if (gap >= ms) return;
      if (gap > 0) await sleep(gap);
      if (!this.#open) return;
      this.#probeOnDemand();
    }
    const run = this.#probeRun;
    const left = ms - (this.#now() - started);
    if (run === null || left <= 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([run, new Promise<void>((resolve) => (timer = setTimeout(resolve, left)))]).finally(() => clearTimeout(timer));
  }

  /** A request found the upstream marked down: probe now, in the background, unless one ran lately. */
  #probeOnDemand(): void {
    if (this.#probeRun !== null || this.#stopped || this.#now() - this.#lastProbeAt < this.#demandIntervalMs) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#startProbe();
  }

  #startProbe(): void {
    if (this.#probeRun !== null) return;
    this.#probeRun = this.#runProbe().finally(() => {
      this.#probeRun = null;
    });
  }

  async #runProbe(): Promise<void> {
    this.#timer = null;
    if (!this.#open || this.#stopped) return;
    this.#lastProbeAt = this.#now();
    try {
      await this.#probe();
      this.#failures = 0;
      if (this.#open) this.#close('probe');
    } catch (err) {
      this.#probesFailed++;
      this.#noteError(err);
      this.#lastError = (err as Error).message;
      this.#lastPublicError = publicError(this.#name, err);
      this.#log.debug({ upstream: this.#name, err: this.#lastError }, 'upstream probe failed');
      this.#schedule();
    } finally {
      // The interval runs from a probe's end too: a request that waited for one does not start the next.
      this.#lastProbeAt = this.#now();
    }
  }

  #markDown(fields: Record<string, unknown>, message: string, release = true): void {
    this.#open = true;
    this.#since = this.#now();
    this.#opened++;
    this.#probesFailed = 0;
    this.#staleAtOpen = this.#staleCount();
    this.#log.warn({ ...fields, errorClass: this.#lastErrorClass }, message);
    this.#schedule();
    if (release) this.#onOpen();
  }

  #close(by: string): void {
    const downMs = this.#since === null ? 0 : this.#now() - this.#since;
    this.#open = false;
    this.#since = this.#now();
    this.#probeAt = null;
    this.#staleLastOutage = this.#staleCount() - this.#staleAtOpen;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#log.info({ upstream: this.#name, by, downSeconds: Math.round(downMs / 1000), staleWhileDown: this.#staleLastOutage }, 'upstream reachable again');
  }

  #noteError(err: unknown): void {
    this.#lastErrorClass = errorClass(err);
    this.#lastErrorAt = this.#now();
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A failure as a client may read it: the error's own public message, else its kind. */
function publicError(name: string, err: unknown): string {
  if (err instanceof UpstreamUnavailableError || err instanceof UpstreamStatusError || err instanceof UpstreamAuthError) return err.publicMessage;
  const kind = errorKind(err);
  return `${publicUpstream(name)} failed${kind === null ? '' : ` (${kind})`}`;
}
