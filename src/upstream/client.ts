// One configured upstream registry over undici: keep-alive connections, the auth flow, manual
// redirects that never carry Authorization to another origin, and failures turned into the
// error classes the resolver understands. Bodies not handed back are always drained or destroyed.
import type { LookupFunction } from 'node:net';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { request as undiciRequest, type Dispatcher } from 'undici';
import type { UpstreamConfig } from '../config.js';
import { UpstreamAuthError, UpstreamStatusError, UpstreamUnavailableError, publicUpstream } from '../errors.js';
import { realmAllowed, UpstreamAuth, type AuthAttempt } from './auth.js';
import { Breaker, type BreakerSnapshot } from './breaker.js';
import { dropBody, readSmall } from '../http-util.js';
import { parseRetryAfter } from './retry-after.js';
import { createAgent, createDispatcher, createProxyAgent, proxyFor, type DispatcherOptions } from './dispatcher.js';

/** A request to the upstream. */
export interface UpstreamRequest {
  method: string;
  /** Path and query below the upstream's base URL, e.g. "/v2/proj/app/manifests/1". */
  path: string;
  headers?: Record<string, string>;
  /** Repository the request is about; picks the token scope `repository:<repo>:pull`. */
  repo?: string;
  signal?: AbortSignal;
  /** Follow 301/302/303/307/308 (blob downloads: Harbor on S3 answers 307). */
  followRedirects?: boolean;
  /**
   * Nothing cached stands behind this request (an uncached manifest, a blob): while the upstream
   * is marked down it waits, at most the silence deadline, for a probe rather than failing at
   * once, so the first pull after the link came back is not refused just because nobody asked
   * meanwhile. Revalidations, which have the cached answer to give, never wait.
   */
  patient?: boolean;
}

/** The final response; `body` belongs to the caller, who must consume or destroy it. */
export interface UpstreamResponse {
  status: number;
  /** Response headers, lower-cased names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: Readable;
  /** The URL that answered (after redirects). */
  url: string;
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);
const MAX_REDIRECTS = 5;
/** Largest body read into memory for the auth flow's token requests. */
const SMALL_BODY_LIMIT = 1024 * 1024;

type Raw = Dispatcher.ResponseData;

function flatHeaders(headers: Raw['headers']): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue;
    out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

/** Discards a body we do not hand back so its connection returns to the pool (or is closed). */
function discard(res: Raw): void {
  res.body.dump({ limit: 64 * 1024 }).catch(() => undefined);
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  let text = err.message || err.name;
  if (typeof code === 'string' && !text.includes(code)) text += ` (${code})`;
  // undici wraps socket errors; the cause carries ECONNREFUSED, ENOTFOUND, certificate errors.
  const cause = (err as { cause?: unknown }).cause;
  if (cause instanceof Error && cause.message && !text.includes(cause.message)) text += `: ${cause.message}`;
  return text;
}

export class UpstreamClient {
  /** The configured upstream name, e.g. "origin". */
  readonly name: string;
  readonly baseUrl: URL;
  readonly #base: string;
  readonly #log: Logger;
  readonly #userAgent: string;
  readonly #options: DispatcherOptions;
  readonly #dispatcher: Dispatcher;
  /** Dispatchers for other origins (redirect targets): one direct Agent, one per proxy. */
  readonly #foreign = new Map<string, Dispatcher>();
  readonly #auth: UpstreamAuth;
  readonly #tokenRealms: readonly string[];
  readonly #breaker: Breaker;
  /** When the upstream last answered anything (ms since epoch). */
  #lastAnswerAt = 0;
  #closed = false;
  /** Requests to the upstream still waiting for its response headers: released when it is marked down. */
  readonly #waiting = new Set<AbortController>();
  /** How long a request waits for headers before Cove checks the upstream with a probe (0: never). */
  readonly #silenceMs: number;
  /** The silence check under way, if any: one probe however many requests wait. */
  #silenceCheck: Promise<void> | null = null;

  readonly #offline: boolean;

  /**
   * With `offline`, every request fails at once without touching the network (COVE_OFFLINE).
   * `silenceMs` (COVE_REVALIDATE_DEADLINE) is how long a request may wait for response headers
   * before Cove probes the upstream: a silent probe marks it down and releases every waiter.
   */
  constructor(cfg: UpstreamConfig, options: { logger: Logger; userAgent: string; offline?: boolean; lookup?: LookupFunction; silenceMs?: number; staleCount?: () => number }) {
    this.name = cfg.name;
    this.#offline = options.offline ?? false;
    this.#base = cfg.url.replace(/\/+$/, '');
    this.baseUrl = new URL(this.#base);
    this.#log = options.logger;
    this.#userAgent = options.userAgent;
    this.#options = { timeoutMs: cfg.timeoutMs, bodyTimeoutMs: cfg.bodyTimeoutMs, ca: cfg.ca, insecure: cfg.insecure, proxy: cfg.proxy, lookup: options.lookup };
    this.#dispatcher = createDispatcher(this.baseUrl, this.#options);
    this.#auth = new UpstreamAuth({
      upstream: cfg.name,
      baseUrl: this.baseUrl,
      username: cfg.username,
      password: cfg.password,
      tokenRealms: cfg.tokenRealms,
      logger: options.logger,
      get: (url, headers, signal) => this.#getSmall(url, headers, signal),
    });
    this.#tokenRealms = cfg.tokenRealms;
    this.#silenceMs = options.silenceMs ?? 0;
    this.#breaker = new Breaker(cfg.name, options.logger, () => this.#probe(), { onOpen: () => this.#releaseWaiting(), staleCount: options.staleCount });
  }

  /** How long the upstream has to connect and send response headers, and a small body whole, in ms. */
  get timeoutMs(): number {
    return this.#options.timeoutMs;
  }

  /** Whether the upstream is marked down, and since when it failed; for /healthz. */
  get breaker(): BreakerSnapshot {
    return this.#breaker.snapshot();
  }

  /** The auth scheme learned so far ("anonymous" until a challenge said otherwise). */
  get authMode(): string {
    return this.#auth.mode;
  }

  /**
   * Sends a request with authentication (retrying once after a 401 challenge) and, when asked,
   * follows redirects. Throws UpstreamUnavailableError when the upstream cannot be reached,
   * UpstreamAuthError when it refuses every credential Cove can offer.
   */
  async request(req: UpstreamRequest): Promise<UpstreamResponse> {
    if (this.#closed) throw new UpstreamUnavailableError(this.name, `upstream ${this.name} client is closed`, { publicMessage: 'Cove is shutting down' });
    if (this.#offline) throw new UpstreamUnavailableError(this.name, `offline mode (COVE_OFFLINE=true): upstream ${this.name} is never contacted`, {
      publicMessage: `offline mode: ${publicUpstream(this.name)} is never contacted`,
    });
    if (req.patient) await this.#breaker.settle(this.#silenceMs > 0 ? this.#silenceMs : PATIENT_WAIT_MS);
    this.#breaker.check();
    const url = new URL(this.#base + req.path);
    const headers: Record<string, string> = {};
    for (const [k, v] of Object.entries(req.headers ?? {})) {
      // Credentials are the client's business alone; a caller's Authorization is never forwarded.
      if (k.toLowerCase() !== 'authorization') headers[k.toLowerCase()] = v;
    }
    headers['accept-encoding'] = 'identity';
    headers['user-agent'] = this.#userAgent;

    let attempt: AuthAttempt = await this.#auth.initial(req.repo, req.signal);
    let res = await this.#send(url, req.method, withAuth(headers, attempt), this.#dispatcher, req.signal);
    if (res.statusCode === 401) {
      const challenge = flatHeaders(res.headers)['www-authenticate'];
      discard(res);
      attempt = await this.#auth.respond(challenge, req.repo, attempt, req.signal);
      res = await this.#send(url, req.method, withAuth(headers, attempt), this.#dispatcher, req.signal);
      if (res.statusCode === 401) {
        discard(res);
        const rejected = this.#auth.rejected(attempt);
        this.#breaker.answeredBadly(rejected);
        throw rejected;
      }
    }

    let current = url;
    let method = req.method;
    let sameOrigin = true;
    for (let hops = 0; req.followRedirects && REDIRECTS.has(res.statusCode); hops++) {
      const location = flatHeaders(res.headers).location;
      if (location === undefined) break;
      discard(res);
      if (hops >= MAX_REDIRECTS) {
        throw new UpstreamStatusError(this.name, res.statusCode, `upstream ${this.name}: more than ${MAX_REDIRECTS} redirects for ${req.path}`);
      }
      let next: URL;
      try {
        next = new URL(location, current);
      } catch {
        throw new UpstreamStatusError(this.name, res.statusCode, `upstream ${this.name} redirected ${req.path} to an invalid location`);
      }
      if (next.protocol !== 'http:' && next.protocol !== 'https:') {
        throw new UpstreamStatusError(this.name, res.statusCode, `upstream ${this.name} redirected ${req.path} to a ${next.protocol} URL`);
      }
      // Once the chain leaves the upstream's origin, Authorization is never sent again, even if a
      // later hop comes back: a storage host must not be able to bounce credentials anywhere.
      if (next.origin !== this.baseUrl.origin) sameOrigin = false;
      if (res.statusCode === 303 && method !== 'HEAD') method = 'GET';
      this.#log.debug({ upstream: this.name, status: res.statusCode, to: next.origin }, 'following upstream redirect');
      const hopHeaders = sameOrigin ? withAuth(headers, attempt) : headers;
      res = await this.#send(next, method, hopHeaders, sameOrigin ? this.#dispatcher : this.#foreignFor(next), req.signal);
      current = next;
    }

    const flat = flatHeaders(res.headers);
    if (res.statusCode === 429) this.#breaker.holdOff(Number(parseRetryAfter(flat['retry-after']) ?? 0));
    if (res.statusCode === 429 || res.statusCode >= 500) {
      this.#breaker.answeredBadly(new UpstreamStatusError(this.name, res.statusCode, `upstream ${this.name} answered ${res.statusCode} for ${req.path}`));
    }
    return { status: res.statusCode, headers: flat, body: res.body, url: current.toString() };
  }

  /**
   * One GET sent as a client of Cove would send it: with the `authorization` given (the
   * client's own Basic credentials, a token the origin issued to it, or none), never the robot's,
   * and no redirects. For the origin's own URLs or a token realm that realmAllowed() accepts;
   * anything else is refused before it is sent. Answers status, headers and a small body.
   */
  async askAs(url: URL, authorization: string | null, signal?: AbortSignal): Promise<{ status: number; headers: Record<string, string>; body: Buffer }> {
    if (this.#closed) throw new UpstreamUnavailableError(this.name, `upstream ${this.name} client is closed`, { publicMessage: 'Cove is shutting down' });
    if (this.#offline) throw new UpstreamUnavailableError(this.name, `offline mode (COVE_OFFLINE=true): upstream ${this.name} is never contacted`, {
      publicMessage: `offline mode: ${publicUpstream(this.name)} is never contacted`,
    });
    const own = url.origin === this.baseUrl.origin;
    if (!own && !realmAllowed(url, this.baseUrl, this.#tokenRealms)) {
      throw new UpstreamAuthError(this.name, 401, `upstream ${this.name} named ${url.origin}, which is not its own origin nor in COVE_UPSTREAM_TOKEN_REALMS; client credentials are not sent there`);
    }
    if (own) this.#breaker.check();
    const headers: Record<string, string> = { accept: 'application/json', 'accept-encoding': 'identity', 'user-agent': this.#userAgent };
    if (authorization !== null) headers.authorization = authorization;
    const res = await this.#send(url, 'GET', headers, own ? this.#dispatcher : this.#foreignFor(url), signal);
    try {
      const body = await readSmall(res.body, SMALL_BODY_LIMIT);
      return { status: res.statusCode, headers: flatHeaders(res.headers), body };
    } catch (err) {
      dropBody(res.body);
      if (signal?.aborted) throw err;
      throw new UpstreamUnavailableError(this.name, `upstream ${this.name} at ${url.origin}: ${describe(err)}`, { cause: err });
    }
  }

  /**
   * A request sent at `since` had no answer within a deadline of Cove's own (a revalidation's):
   * mark the upstream down now (see Breaker.trip), unless some answer has come from it since then
   * (a slow link mid-token-dance is alive, not down), and check it with a probe: if /v2/ is silent
   * too, requests still waiting on it are released; if it answers, the upstream is only slow for
   * that request, and is marked reachable again.
   */
  suspect(reason: string, since: number): void {
    if (this.#closed || this.#lastAnswerAt >= since) return;
    this.#breaker.trip(reason);
    this.#checkSilence(since);
  }

  /** Closes every connection this client holds. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#breaker.stop();
    const all = [this.#dispatcher, ...this.#foreign.values()];
    this.#foreign.clear();
    // A connection attempt into a black hole would hold close() for the whole connect timeout:
    // what has not closed within a second is destroyed.
    await Promise.all(all.map((d) => closeWithin(d, CLOSE_GRACE_MS)));
  }

  #foreignFor(url: URL): Dispatcher {
    const proxy = proxyFor(url, this.#options.proxy);
    const key = proxy ?? 'direct';
    let d = this.#foreign.get(key);
    if (!d) {
      d = proxy !== null ? createProxyAgent(proxy, this.#options) : createAgent(this.#options);
      this.#foreign.set(key, d);
    }
    return d;
  }

  async #send(url: URL, method: string, headers: Record<string, string>, dispatcher: Dispatcher, signal?: AbortSignal, probing = false): Promise<Raw> {
    const own = url.origin === this.baseUrl.origin && !probing;
    // A request to the upstream itself waits for headers only while the upstream is not marked
    // down: it is released the moment it is, and a long silence makes Cove check.
    const watch = own ? new AbortController() : null;
    const sentAt = Date.now();
    let silence: NodeJS.Timeout | undefined;
    if (watch !== null) {
      this.#waiting.add(watch);
      if (this.#silenceMs > 0) silence = setTimeout(() => this.#checkSilence(sentAt), this.#silenceMs);
    }
    const combined = watch === null ? signal : signal === undefined ? watch.signal : AbortSignal.any([signal, watch.signal]);
    let res: Raw;
    try {
      const pending = undiciRequest(url, { method: method as Dispatcher.HttpMethod, headers, dispatcher, signal: combined });
      res = combined === undefined ? await pending : await releasable(pending, combined);
    } catch (err) {
      // The caller gave up: that is not the upstream's fault, so its own reason goes back.
      if (signal?.aborted) throw err;
      // Released because the upstream was marked down meanwhile: the breaker says why.
      if (watch?.signal.aborted) throw watch.signal.reason;
      const where = url.origin === this.baseUrl.origin ? this.baseUrl.origin : `${url.origin} (redirected from ${this.baseUrl.origin})`;
      const failure = new UpstreamUnavailableError(this.name, `upstream ${this.name} at ${where} unavailable: ${describe(err)}`, { cause: err });
      if (own) this.#breaker.failure(failure);
      throw failure;
    } finally {
      clearTimeout(silence);
      if (watch !== null) this.#waiting.delete(watch);
    }
    if (url.origin === this.baseUrl.origin) this.#lastAnswerAt = Date.now();
    if (own) this.#breaker.success();
    return res;
  }

  /**
   * A request sent at `since` has had no headers for the silence deadline. A slow answer to one
   * request is not an outage, so Cove asks the upstream's /v2/ with the same deadline: if that
   * is silent too (a black hole, a TLS handshake that never ends, a dead link), the upstream is
   * marked down now, and every request waiting on it is released with 503.
   */
  #checkSilence(since: number): void {
    if (this.#silenceCheck !== null || this.#closed) return;
    const deadlineMs = this.#silenceMs > 0 ? this.#silenceMs : this.#options.timeoutMs;
    const url = new URL(`${this.#base}/v2/`);
    this.#silenceCheck = this.#send(url, 'GET', { 'user-agent': this.#userAgent }, this.#dispatcher, AbortSignal.timeout(deadlineMs), true)
      .then(
        (res) => {
          discard(res);
          this.#breaker.success();
        },
        () => {
          if (this.#lastAnswerAt >= since) return;
          this.#breaker.trip(`no answer within ${deadlineMs} ms, and /v2/ was silent too (COVE_REVALIDATE_DEADLINE)`);
          this.#releaseWaiting();
        },
      )
      .finally(() => {
        this.#silenceCheck = null;
      });
  }

  /** The upstream was marked down: requests still waiting for its headers fail now, not at their timeout. */
  #releaseWaiting(): void {
    if (this.#waiting.size === 0) return;
    const reason = this.#breaker.downError();
    for (const watch of this.#waiting) watch.abort(reason);
    this.#waiting.clear();
  }

  /** The breaker's probe: any HTTP answer from /v2/ means the upstream is back. */
  async #probe(): Promise<void> {
    const res = await this.#send(new URL(`${this.#base}/v2/`), 'GET', { 'user-agent': this.#userAgent }, this.#dispatcher, undefined, true);
    discard(res);
  }

  /** GET for the token endpoint (same upstream or its domain, so the upstream's dispatcher). */
  async #getSmall(url: URL, headers: Record<string, string>, signal?: AbortSignal): Promise<{ status: number; body: Buffer }> {
    const dispatcher = url.origin === this.baseUrl.origin ? this.#dispatcher : this.#foreignFor(url);
    const res = await this.#send(url, 'GET', { ...headers, 'accept-encoding': 'identity', 'user-agent': this.#userAgent }, dispatcher, signal);
    try {
      return { status: res.statusCode, body: await readSmall(res.body, SMALL_BODY_LIMIT) };
    } catch (err) {
      dropBody(res.body);
      if (signal?.aborted) throw err;
      throw new UpstreamUnavailableError(this.name, `token endpoint ${url.origin} of upstream ${this.name}: ${describe(err)}`, { cause: err });
    }
  }
}

/**
 * The response, or the abort reason as soon as `release` aborts (the caller gave up, a probe's
 * deadline passed, the upstream was marked down). undici rejects an aborted request that is still
 * queued for a connection only once that connection's attempt ends (a TLS handshake into a black
 * hole: the whole connect timeout), so this does not wait for it; a response that comes after all
 * is discarded.
 */
function releasable(pending: Promise<Raw>, release: AbortSignal): Promise<Raw> {
  return new Promise<Raw>((resolve, reject) => {
    const onRelease = () => {
      reject(release.reason);
      pending.then(discard, () => undefined);
    };
    if (release.aborted) {
      onRelease();
      return;
    }
    release.addEventListener('abort', onRelease, { once: true });
    pending.then(
      (res) => {
        release.removeEventListener('abort', onRelease);
        if (release.aborted) discard(res);
        else resolve(res);
      },
      (err: unknown) => {
        release.removeEventListener('abort', onRelease);
        reject(err);
      },
    );
  });
}

/** How long a patient request waits for a probe while the upstream is marked down, when no silence deadline is set. */
const PATIENT_WAIT_MS = 1000;

/** How long close() lets requests in flight finish before their connections are destroyed. */
const CLOSE_GRACE_MS = 1000;

async function closeWithin(d: Dispatcher, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => {
    timer = setTimeout(() => resolve('late'), ms);
  });
  const closed = d.close().then(
    () => 'closed' as const,
    () => 'late' as const,
  );
  const how = await Promise.race([closed, late]).finally(() => clearTimeout(timer));
  if (how === 'late') await d.destroy().catch(() => undefined);
}

function withAuth(headers: Record<string, string>, attempt: AuthAttempt): Record<string, string> {
  return attempt.authorization === null ? headers : { ...headers, authorization: attempt.authorization };
}
