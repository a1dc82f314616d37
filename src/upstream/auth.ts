// Authenticating to one upstream: anonymous first; a 401 names the scheme. Bearer → fetch a token
// from the challenge's realm (with Basic credentials when configured) and retry; Basic → retry with
// the credentials. The scheme is remembered so later requests authenticate up front. Harbor answers
// an expired or insufficient token with a *Basic* challenge: the token is dropped and re-fetched
// from the remembered realm rather than treated as "use Basic".
import type { Logger } from 'pino';
import { UpstreamAuthError, UpstreamStatusError, UpstreamUnavailableError, publicUpstream } from '../errors.js';
import { findChallenge, parseChallenges } from './challenge.js';
import { TokenCache, type IssuedToken, type TokenKey } from './token-cache.js';

/** Largest token response read; a token JSON is a few KiB. */
const TOKEN_BODY_LIMIT = 1024 * 1024;

/** A GET the auth flow needs (the token endpoint); the client supplies it with its dispatcher. */
export type AuthGet = (url: URL, headers: Record<string, string>, signal?: AbortSignal) => Promise<{ status: number; body: Buffer }>;

export interface UpstreamAuthOptions {
  /** Upstream name, for errors and logs. */
  upstream: string;
  /** The upstream's base URL; token realms must live on its origin or in `tokenRealms`. */
  baseUrl: URL;
  /** Other origins whose token realms may be followed (COVE_UPSTREAM_TOKEN_REALMS). */
  tokenRealms?: readonly string[];
  username: string | null;
  password: string | null;
  /** Performs the token request (body read with a limit by the caller). */
  get: AuthGet;
  logger: Logger;
  tokens?: TokenCache;
}

/** What one attempt sent: the Authorization value (null = anonymous) and the token's key if Bearer. */
export interface AuthAttempt {
  authorization: string | null;
  tokenKey: TokenKey | null;
}

export type AuthMode = 'anonymous' | 'basic' | 'bearer';

/** The pull scope the distribution token spec uses for a repository. */
export function pullScope(repo: string): string {
  return `repository:${repo}:pull`;
}

function bareHost(hostname: string): string {
  const h = hostname.toLowerCase().replace(/\.$/, '');
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

/**
 * Whether a token realm may be followed (and sent credentials): on the upstream's own origin —
 * scheme, host and port alike — or on one of the origins listed in `allowed`
 * (COVE_UPSTREAM_TOKEN_REALMS). Another port on the same host, or a "related" domain, is another
 * service and never gets the upstream's credentials. Never plain HTTP when the upstream is TLS.
 */
export function realmAllowed(realm: URL, upstream: URL, allowed: readonly string[] = []): boolean {
  if (realm.protocol !== 'https:' && realm.protocol !== 'http:') return false;
  if (upstream.protocol === 'https:' && realm.protocol !== 'https:') return false;
  const origin = (u: URL) => `${u.protocol}//${bareHost(u.hostname)}${u.port === '' ? '' : `:${u.port}`}`;
  return origin(realm) === origin(upstream) || allowed.some((a) => origin(new URL(a)) === origin(realm));
}

export class UpstreamAuth {
  readonly #o: UpstreamAuthOptions;
  readonly #tokens: TokenCache;
  readonly #basic: string | null;
  #mode: AuthMode = 'anonymous';
  /** The realm and service of the last Bearer challenge, for asking tokens up front. */
  #bearer: { realm: string; service: string | null } | null = null;
  /** Scope a repository's challenge named, when it differs from the default pull scope. */
  readonly #scopeByRepo = new Map<string, string>();

  constructor(options: UpstreamAuthOptions) {
    this.#o = options;
    this.#tokens = options.tokens ?? new TokenCache();
    this.#basic =
      options.username !== null && options.username !== ''
        ? `Basic ${Buffer.from(`${options.username}:${options.password ?? ''}`).toString('base64')}`
        : null;
  }

  /** The scheme learned from the upstream's challenges so far. */
  get mode(): AuthMode {
    return this.#mode;
  }

  /** Whether credentials are configured. */
  get hasCredentials(): boolean {
    return this.#basic !== null;
  }

  /** What to send before any challenge: nothing, Basic, or a (cached or fetched) Bearer token. */
  async initial(repo: string | undefined, signal?: AbortSignal): Promise<AuthAttempt> {
    if (this.#mode === 'basic' && this.#basic) return { authorization: this.#basic, tokenKey: null };
    if (this.#mode === 'bearer' && this.#bearer) {
      const scope = repo === undefined ? null : (this.#scopeByRepo.get(repo) ?? pullScope(repo));
      const key: TokenKey = { realm: this.#bearer.realm, service: this.#bearer.service, scope };
      const token = await this.#tokens.obtain(key, () => this.#fetchToken(key, signal));
      return { authorization: `Bearer ${token}`, tokenKey: key };
    }
    return { authorization: null, tokenKey: null };
  }

  /**
   * After a 401 answered `previous`: what to retry with. Throws UpstreamAuthError when nothing
   * else can be tried (no usable challenge, no credentials for Basic, the same Basic refused).
   */
  async respond(wwwAuthenticate: string | undefined, repo: string | undefined, previous: AuthAttempt, signal?: AbortSignal): Promise<AuthAttempt> {
    const name = this.#o.upstream;
    const challenges = parseChallenges(wwwAuthenticate);
    const bearer = findChallenge(challenges, 'bearer');
    const basic = findChallenge(challenges, 'basic');
    const sentToken = previous.authorization?.startsWith('Bearer ') ? previous.authorization.slice(7) : null;

    if (bearer) {
      const realmText = bearer.params.realm;
      if (!realmText) throw new UpstreamAuthError(name, 401, `upstream ${name} sent a Bearer challenge without a realm`);
      let realm: URL;
      try {
        realm = new URL(realmText);
      } catch {
        throw new UpstreamAuthError(name, 401, `upstream ${name} sent a Bearer challenge with an invalid realm ${JSON.stringify(realmText)}`);
      }
      if (!realmAllowed(realm, this.#o.baseUrl, this.#o.tokenRealms)) {
        throw new UpstreamAuthError(
          name,
          401,
          `upstream ${name} (${this.#o.baseUrl.origin}) named token realm ${realmText}, which is not on its own origin; refusing to follow it (list that origin in COVE_UPSTREAM_TOKEN_REALMS if it is the registry's token service)`,
        );
      }
      const service = bearer.params.service ?? null;
      const challengeScope = bearer.params.scope ?? null;
      const scope = challengeScope ?? (repo === undefined ? null : pullScope(repo));
      if (repo !== undefined && challengeScope !== null && challengeScope !== pullScope(repo)) this.#rememberScope(repo, challengeScope);
      const key: TokenKey = { realm: realmText, service, scope };
      if (sentToken !== null) {
        this.#tokens.invalidate(key, sentToken);
        if (previous.tokenKey) this.#tokens.invalidate(previous.tokenKey, sentToken);
      }
      if (this.#mode !== 'bearer') this.#o.logger.debug({ upstream: name, realm: realmText, service }, 'upstream uses bearer tokens');
      this.#mode = 'bearer';
      this.#bearer = { realm: realmText, service };
      const token = await this.#tokens.obtain(key, () => this.#fetchToken(key, signal));
      return { authorization: `Bearer ${token}`, tokenKey: key };
    }

    if (basic) {
      if (sentToken !== null && previous.tokenKey) {
        // Harbor's answer to an expired or insufficient token: fetch a fresh one from the realm.
        this.#tokens.invalidate(previous.tokenKey, sentToken);
        const key = previous.tokenKey;
        const token = await this.#tokens.obtain(key, () => this.#fetchToken(key, signal));
        return { authorization: `Bearer ${token}`, tokenKey: key };
      }
      if (this.#basic === null) {
        throw new UpstreamAuthError(name, 401, `upstream ${name} requires credentials (Basic challenge, 401) and none are configured`, {
          publicMessage: `${publicUpstream(name)} requires credentials (401) and Cove has none configured`,
        });
      }
      if (previous.authorization === this.#basic) {
        throw new UpstreamAuthError(name, 401, `upstream ${name} refused the configured credentials (401)`, { publicMessage: `${publicUpstream(name)} refused Cove's credentials (401)` });
      }
      if (this.#mode !== 'basic') this.#o.logger.debug({ upstream: name }, 'upstream uses basic auth');
      this.#mode = 'basic';
      return { authorization: this.#basic, tokenKey: null };
    }

    throw new UpstreamAuthError(
      name,
      401,
      `upstream ${name} answered 401 without a usable challenge${wwwAuthenticate ? ` (${wwwAuthenticate.slice(0, 200)})` : ''}`,
    );
  }

  /** The error for a 401 that survived the retry. */
  rejected(attempt: AuthAttempt, status = 401): UpstreamAuthError {
    const name = this.#o.upstream;
    if (this.#basic === null) {
      return new UpstreamAuthError(name, status, `upstream ${name} refused anonymous access (${status}); configure credentials`, {
        publicMessage: `${publicUpstream(name)} refused anonymous access (${status}); Cove needs credentials for it`,
      });
    }
    const how = attempt.authorization?.startsWith('Bearer ') ? 'a token obtained with the configured credentials' : 'the configured credentials';
    return new UpstreamAuthError(name, status, `upstream ${name} refused ${how} (${status})`, { publicMessage: `${publicUpstream(name)} refused ${how} (${status})` });
  }

  /** Forget learned state (scheme, realm, tokens). */
  reset(): void {
    this.#mode = 'anonymous';
    this.#bearer = null;
    this.#scopeByRepo.clear();
    this.#tokens.clear();
  }

  #rememberScope(repo: string, scope: string): void {
    // Bounded: an edge node pulls a handful of repositories; drop the oldest beyond that.
    if (this.#scopeByRepo.size >= 1024) this.#scopeByRepo.delete(this.#scopeByRepo.keys().next().value!);
    this.#scopeByRepo.set(repo, scope);
  }

  async #fetchToken(key: TokenKey, signal?: AbortSignal): Promise<IssuedToken> {
    const name = this.#o.upstream;
    const url = new URL(key.realm);
    if (key.service !== null) url.searchParams.set('service', key.service);
    if (key.scope !== null) url.searchParams.append('scope', key.scope);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.#basic) headers.authorization = this.#basic;
    let res: { status: number; body: Buffer };
    try {
      res = await this.#o.get(url, headers, signal);
    } catch (err) {
      if (err instanceof UpstreamUnavailableError || signal?.aborted) throw err;
      throw new UpstreamUnavailableError(name, `token endpoint ${key.realm} of upstream ${name} unreachable: ${(err as Error).message}`, { cause: err });
    }
    this.#o.logger.debug({ upstream: name, realm: key.realm, scope: key.scope, status: res.status }, 'token request');
    if (res.status === 401 || res.status === 403) {
      const who = this.#basic ? 'the configured credentials' : 'anonymous access';
      throw new UpstreamAuthError(name, res.status, `token endpoint ${key.realm} of upstream ${name} refused ${who} (${res.status})`);
    }
    if (res.status === 429 || res.status >= 500) {
      throw new UpstreamStatusError(name, res.status, `token endpoint ${key.realm} of upstream ${name} answered ${res.status}`);
    }
    if (res.status !== 200) {
      throw new UpstreamAuthError(name, res.status, `token endpoint ${key.realm} of upstream ${name} answered ${res.status}`);
    }
    if (res.body.length > TOKEN_BODY_LIMIT) {
      throw new UpstreamAuthError(name, res.status, `token endpoint ${key.realm} of upstream ${name} sent an oversized response`);
    }
    let parsed: unknown;
    try {
      parsed = JSON.parse(res.body.toString('utf8'));
    } catch (err) {
      throw new UpstreamAuthError(name, res.status, `token endpoint ${key.realm} of upstream ${name} sent a response that is not JSON`, { cause: err });
    }
    const body = (parsed ?? {}) as Record<string, unknown>;
    // The spec: use `token`; `access_token` is the OAuth 2 name some servers send instead.
    const token = typeof body.token === 'string' && body.token !== '' ? body.token : typeof body.access_token === 'string' ? body.access_token : '';
    if (token === '') throw new UpstreamAuthError(name, res.status, `token endpoint ${key.realm} of upstream ${name} sent no token`);
    const expiresIn = typeof body.expires_in === 'number' ? body.expires_in : typeof body.expires_in === 'string' ? Number(body.expires_in) : null;
    return { token, expiresIn: expiresIn !== null && Number.isFinite(expiresIn) ? expiresIn : null };
  }
}
