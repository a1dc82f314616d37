// Error classes with stable codes, and the one mapping from an error to an OCI error response.
// Everything below the HTTP edge throws these; only src/http/respond.ts turns them into JSON.

/** OCI distribution error codes Cove answers with, and the HTTP status of each. */
export const OCI_ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  MANIFEST_UNKNOWN: 404,
  NAME_UNKNOWN: 404,
  NAME_INVALID: 400,
  PAGINATION_NUMBER_INVALID: 400,
  DIGEST_INVALID: 400,
  MANIFEST_INVALID: 400,
  RANGE_INVALID: 416,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  /** A request that came back to a Cove it already passed, or passed too many (Via). */
  LOOP_DETECTED: 508,
  UPSTREAM_UNAVAILABLE: 503,
  UNKNOWN: 500,
} as const;

export type OciErrorCode = keyof typeof OCI_ERROR_STATUS;

/** Base class: every failure Cove names has a stable `code` and may carry a `cause`. */
export class CoveError extends Error {
  readonly code: string;
  constructor(code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** A failure the client is told about as OCI error JSON with this code. */
export class OciError extends CoveError {
  declare readonly code: OciErrorCode;
  readonly status: number;
  readonly detail: unknown;
  /** Extra response headers, e.g. Retry-After on TOOMANYREQUESTS. */
  readonly headers: Record<string, string>;
  constructor(
    code: OciErrorCode,
    message: string,
    options: { detail?: unknown; cause?: unknown; headers?: Record<string, string> } = {},
  ) {
    super(code, message, { cause: options.cause });
    this.status = OCI_ERROR_STATUS[code];
    this.detail = options.detail ?? null;
    this.headers = options.headers ?? {};
  }
}

// Upstream errors carry two messages. `message` is for the log and the operator: it names the
// origin's URL, a redirect target, a token realm or the proxy, and the socket error. `publicMessage`
// is what a client is told: what went wrong, in terms of the configured upstream's name, never a
// URL, host, port or proxy address (an anonymous LAN client has no business learning where the
// origin or the egress proxy is). A throw site that knows a more useful safe sentence passes it.

/** The upstream could not be reached or did not answer in time (refused, DNS, timeout, TLS). */
export class UpstreamUnavailableError extends CoveError {
  readonly upstream: string;
  readonly publicMessage: string;
  /** Seconds after which asking again may work (the breaker's next probe), when known. */
  readonly retryAfter: string | undefined;
  /** Not asked at all: the upstream is marked down (the outage is known and already logged). */
  readonly markedDown: boolean;
  constructor(upstream: string, message: string, options?: { cause?: unknown; publicMessage?: string; retryAfter?: string; markedDown?: boolean }) {
    super('UPSTREAM_UNAVAILABLE', message, options);
    this.upstream = upstream;
    this.retryAfter = options?.retryAfter;
    this.markedDown = options?.markedDown ?? false;
    const kind = errorKind(options?.cause);
    this.publicMessage = options?.publicMessage ?? `${publicUpstream(upstream)} is unreachable${kind === null ? '' : ` (${kind})`}`;
  }
}

/** The upstream answered with a status Cove cannot use (5xx, 429, unexpected 4xx). */
export class UpstreamStatusError extends CoveError {
  readonly upstream: string;
  readonly status: number;
  readonly retryAfter: string | undefined;
  readonly publicMessage: string;
  constructor(upstream: string, status: number, message: string, retryAfter?: string, options?: { publicMessage?: string }) {
    super('UPSTREAM_STATUS', message);
    this.upstream = upstream;
    this.status = status;
    this.retryAfter = retryAfter;
    this.publicMessage =
      options?.publicMessage ??
      (status === 429
        ? `${publicUpstream(upstream)} is rate-limiting Cove (429); retry later`
        : status >= 400
          ? `${publicUpstream(upstream)} answered ${status}`
          : `${publicUpstream(upstream)} sent an answer Cove cannot use (${status}); see the Cove log`);
  }
}

/** The upstream refused Cove's credentials, or the token flow failed. */
export class UpstreamAuthError extends CoveError {
  readonly upstream: string;
  readonly status: number;
  readonly publicMessage: string;
  constructor(upstream: string, status: number, message: string, options?: { cause?: unknown; publicMessage?: string }) {
    super('UPSTREAM_AUTH', message, options);
    this.upstream = upstream;
    this.status = status;
    this.publicMessage = options?.publicMessage ?? `${publicUpstream(upstream)} did not accept Cove's credentials or token (${status}); see the Cove log`;
  }
}

/**
 * How a client hears of an upstream: the origin by its configured name, a parent Cove without its
 * address (its name is `parent:<host:port>`).
 */
export function publicUpstream(name: string): string {
  return name.startsWith('parent:') ? 'a parent Cove' : `upstream ${name}`;
}

/**
 * The first system or library error code in a cause chain (ECONNREFUSED, ENOTFOUND,
 * UND_ERR_CONNECT_TIMEOUT, CERT_HAS_EXPIRED, ...): a constant that says what failed and names no
 * address, unlike the messages that carry it.
 */
export function errorKind(err: unknown): string | null {
  for (let e = err, depth = 0; e instanceof Error && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && /^[A-Z][A-Z0-9_]{1,40}$/.test(code) && !code.startsWith('UPSTREAM_')) return code;
  }
  return null;
}

/** The upstream's name as an error's detail shows it (a parent's address left out). */
function detailUpstream(name: string): string {
  return name.startsWith('parent:') ? 'parent' : name;
}

/** Bytes received do not hash to the digest they were asked for, or their length is wrong. */
export class DigestMismatchError extends CoveError {
  constructor(message: string) {
    super('DIGEST_MISMATCH', message);
  }
}

/** A configuration key holds a value Cove cannot use; start-up stops with this message. */
export class ConfigError extends CoveError {
  constructor(message: string) {
    super('CONFIG_INVALID', message);
  }
}

/** Retry-After of an outage answer when nothing better is known, in seconds. */
export const OUTAGE_RETRY_AFTER_S = 5;
/** Longest Retry-After Cove passes on to a client, in seconds. */
const MAX_RETRY_AFTER_S = 600;

/** An upstream's Retry-After as a client gets it: whole seconds, at least 1, at most 10 minutes. */
function clientRetryAfter(seconds: string | undefined): string {
  const n = seconds === undefined ? NaN : Number(seconds);
  if (!Number.isFinite(n)) return String(OUTAGE_RETRY_AFTER_S);
  return String(Math.min(MAX_RETRY_AFTER_S, Math.max(1, Math.ceil(n))));
}

/** What the HTTP edge sends for any thrown value: status, OCI body, extra headers. */
export interface OciErrorResponse {
  status: number;
  body: { errors: Array<{ code: string; message: string; detail: unknown }> };
  headers: Record<string, string>;
}

/** A failure that asked nobody because the upstream is marked down: logged once, when it was marked. */
export function isMarkedDown(err: unknown): boolean {
  return err instanceof UpstreamUnavailableError && err.markedDown;
}

/** Failures that mean "the upstream could not answer now", as opposed to "it answered no". */
export function isUpstreamFailure(err: unknown): boolean {
  if (err instanceof UpstreamUnavailableError || err instanceof UpstreamAuthError) return true;
  if (err instanceof UpstreamStatusError) return err.status >= 500 || err.status === 429;
  return err instanceof CoveError && err.code === 'FILL_FAILED';
}

/**
 * The one mapping from an error to an OCI error response. Internal failures never leak a stack
 * or a cause chain to the client: they become UNKNOWN with a short message.
 */
export function toOciResponse(err: unknown): OciErrorResponse {
  const one = (code: string, message: string, detail: unknown = null) => ({ errors: [{ code, message, detail }] });
  if (err instanceof OciError) {
    return { status: err.status, body: one(err.code, err.message, err.detail), headers: err.headers };
  }
  // Every way the upstream can fail to serve now — unreachable, silent, 5xx, rate-limiting Cove —
  // is one answer to the client: 503 with Retry-After, so a pull fails fast and clearly and the
  // client's retry comes when asking again may work. The detail says which upstream and status.
  if (err instanceof UpstreamUnavailableError) {
    return {
      status: 503,
      body: one('UPSTREAM_UNAVAILABLE', err.publicMessage, { upstream: detailUpstream(err.upstream) }),
      headers: { 'retry-after': clientRetryAfter(err.retryAfter) },
    };
  }
  if (err instanceof UpstreamStatusError) {
    if (err.status >= 500 || err.status === 429) {
      return {
        status: 503,
        body: one('UPSTREAM_UNAVAILABLE', err.publicMessage, { upstream: detailUpstream(err.upstream), status: err.status }),
        headers: { 'retry-after': clientRetryAfter(err.retryAfter) },
      };
    }
    return { status: 502, body: one('UNKNOWN', err.publicMessage, { upstream: detailUpstream(err.upstream), status: err.status }), headers: {} };
  }
  if (err instanceof UpstreamAuthError) {
    return { status: 502, body: one('UNKNOWN', err.publicMessage, { upstream: detailUpstream(err.upstream), status: err.status }), headers: {} };
  }
  if (err instanceof DigestMismatchError) {
    return { status: 502, body: one('UNKNOWN', err.message), headers: {} };
  }
  return { status: 500, body: one('UNKNOWN', 'internal error; see the Cove log'), headers: {} };
}
