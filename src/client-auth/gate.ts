// Pull authorization for clients (COVE_CLIENT_AUTH=passthrough): each client gets only what its
// own origin credentials allow. Clients speak the registry token flow they already know: a pull
// without a credential gets a Bearer challenge whose realm is Cove's token endpoint; there the
// client's Basic credentials (or none) are checked against the origin for the asked scope, and
// Cove issues a short-lived token of its own. Decisions are cached for the TTL, honoured through
// an outage for the grace period, and kept across restarts (decisions.ts).
import { OciError, isUpstreamFailure } from '../errors.js';
import type { Logger } from '../log.js';
import type { Counters } from '../metrics.js';
import type { Req } from '../http/respond.js';
import { DecisionBook } from './decisions.js';
import type { OriginCheck } from './origin-check.js';
import { usernameOf } from './origin-check.js';
import { grantsPull, MIN_TOKEN_LIFETIME_S, TOKEN_LIFETIME_S, type Access, type TokenSigner } from './token.js';
import { isValidName } from '../oci/reference.js';

/** The path of Cove's token endpoint (the realm of its challenges). */
export const TOKEN_PATH = '/_cove/token';
/** Most scopes one token request may name. */
const MAX_SCOPES = 16;

export interface ClientAuthOptions {
  signer: TokenSigner;
  book: DecisionBook;
  /** The origin judge of each upstream, by name. */
  checks: Map<string, OriginCheck>;
  /** The upstream a request without one (docker login's /v2/) is about. */
  defaultUpstream: string;
  /** Where a client's repository name goes (the route map: ns, default ns, a Cove's own names). */
  resolve: (name: string, ns: string | null, fromCove: boolean) => { upstream: string; repo: string };
  ttlMs: number;
  graceMs: number;
  counters: Counters;
  log: Logger;
  now?: () => number;
}

/** Who a request is from, once allowed. */
export interface Principal {
  subject: string;
}

/**
 * A pull as the client names it — its own repository name, and what selects the route — and
 * where it goes. Scopes and tokens speak the client's names (clients build scopes from their image
 * names); decisions are the origin's, about the repository the name routes to.
 */
export interface PullRequestScope {
  name: string;
  ns: string | null;
  fromCove: boolean;
  upstream: string;
  repo: string;
}

/** What one decision rested on, for the counters and the log. */
type Outcome =
  | { allowed: true; subject: string; reason: 'origin' | 'cached' | 'grace' }
  | { allowed: false; subject: string | null; reason: 'no-credentials' | 'refused-by-origin' | 'not-granted' | 'outside-grace' | 'origin-unreachable' };

export class ClientAuth {
  readonly #o: ClientAuthOptions;
  readonly #now: () => number;

  constructor(options: ClientAuthOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Allows a pull of the client's `name` (routed to `repo` at `upstream`), or throws: 401 with a
   * challenge when the request carries no usable credential, 403 when the origin does not let
   * this client pull it.
   */
  async authorize(req: Req, pull: PullRequestScope): Promise<Principal> {
    const { name, upstream, repo } = pull;
    const service = serviceFor(pull.ns, pull.fromCove);
    const authorization = headerOf(req, 'authorization');
    const challenge = this.challenge(req, service, name);
    if (authorization === null) {
      this.#count({ allowed: false, subject: null, reason: 'no-credentials' });
      throw unauthorized('authentication required: log in with your origin (Harbor) credentials', challenge);
    }
    if (/^bearer /i.test(authorization)) {
      const claims = this.#o.signer.verify(authorization.slice(7).trim(), this.#now());
      if (claims === null) throw unauthorized('the token is invalid or expired; ask the token endpoint again', challenge);
      if (claims.aud !== service || !grantsPull(claims.access, name)) {
        // The client holds a token for other repositories: the challenge names this one.
        throw unauthorized(`the token does not grant pulling ${name}`, challenge);
      }
      return { subject: claims.sub };
    }
    if (/^basic /i.test(authorization)) {
      const outcome = await this.#decide(authorization, upstream, repo);
      if (outcome.allowed) return { subject: outcome.subject };
      if (outcome.reason === 'not-granted') throw denied(name, outcome.subject ?? 'this client');
      throw unauthorized(refusal(outcome.reason), challenge);
    }
    throw unauthorized('unsupported Authorization scheme: use Basic or a Bearer token from the token endpoint', challenge);
  }

  /**
   * GET /v2/ (what `docker login` tries): any credential the origin accepts. A client with none
   * is sent to the token endpoint.
   */
  async authorizeAny(req: Req): Promise<Principal> {
    const upstream = this.#o.defaultUpstream;
    const authorization = headerOf(req, 'authorization');
    const challenge = this.challenge(req, serviceFor(null, false), null);
    if (authorization !== null && /^bearer /i.test(authorization)) {
      const claims = this.#o.signer.verify(authorization.slice(7).trim(), this.#now());
      if (claims !== null) return { subject: claims.sub };
      throw unauthorized('the token is invalid or expired; ask the token endpoint again', challenge);
    }
    if (authorization !== null && /^basic /i.test(authorization)) {
      const outcome = await this.#decide(authorization, upstream, '');
      if (outcome.allowed) return { subject: outcome.subject };
      throw unauthorized(refusal(outcome.reason), challenge);
    }
    throw unauthorized('authentication required: log in with your origin (Harbor) credentials', challenge);
  }

  /** The `WWW-Authenticate` value that sends a client to the token endpoint for `name` (or none). */
  challenge(req: Req, service: string, name: string | null): string {
    const scope = name === null ? '' : `,scope="repository:${name}:pull"`;
    return `Bearer realm="${realmOf(req)}",service="${service}"${scope}`;
  }

  /**
   * GET /_cove/token?service=…&scope=…: the client's Basic credentials (or none) are checked
   * with the origin; the token grants pull on each scope the origin allowed. Throws 401 when the
   * origin refuses the credential itself.
   */
  async token(req: Req, query: URLSearchParams): Promise<{ token: string; access_token: string; expires_in: number; issued_at: string }> {
    const service = query.get('service') ?? serviceFor(null, false);
    const selector = parseService(service);
    if (selector === null) throw new OciError('UNAUTHORIZED', `unknown service ${JSON.stringify(service.slice(0, 80))}`);
    const names = scopesOf(query);
    const upstream = this.#o.defaultUpstream;
    let authorization = headerOf(req, 'authorization');
    if (authorization !== null && !/^basic /i.test(authorization)) authorization = null;
    const access: Access[] = [];
    let subject = 'anonymous';
    if (authorization !== null) {
      // The credential itself first: a wrong password is refused whatever the scope.
      const login = await this.#decide(authorization, upstream, '');
      if (!login.allowed) throw unauthorized(refusal(login.reason), this.challenge(req, service, names[0] ?? null));
      subject = login.subject;
    }
    for (const name of names) {
      // The name as the client will pull it, routed as its pulls will be (ns from the service).
      let target;
      try {
        target = this.#o.resolve(name, selector.ns, selector.fromCove);
      } catch {
        continue; // no route: nothing to grant
      }
      if (!this.#o.checks.has(target.upstream)) continue;
      const outcome = await this.#decide(authorization, target.upstream, target.repo);
      if (outcome.allowed) access.push({ type: 'repository', name, actions: ['pull'] });
    }
    // A token outlives no decision by much: as long as the TTL, within the spec's usual bounds.
    const lifetime = Math.min(TOKEN_LIFETIME_S, Math.max(MIN_TOKEN_LIFETIME_S, Math.round(this.#o.ttlMs / 1000)));
    const issued = this.#o.signer.issue(subject, service, access, this.#now(), lifetime);
    return { token: issued.token, access_token: issued.token, expires_in: issued.expiresIn, issued_at: issued.issuedAt };
  }

  /** Writes pending decisions to disk. */
  close(): Promise<void> {
    return this.#o.book.close();
  }

  /**
   * The origin's decision for a credential and repository ("" for the credential alone): from
   * the book within the TTL; else asked again; with the origin away, an earlier allowance within
   * the grace period.
   */
  async #decide(authorization: string | null, upstream: string, repo: string): Promise<Outcome> {
    const { book, signer, ttlMs, graceMs, counters } = this.#o;
    const now = this.#now();
    const key = DecisionBook.key(signer.credentialDigest(authorization), upstream, repo);
    const known = book.get(key);
    if (known && now - known.decidedAt < ttlMs) {
      counters.clientAuthCacheHits++;
      return this.#count(known.allowed ? { allowed: true, subject: known.subject, reason: 'cached' } : { allowed: false, subject: known.subject, reason: repo === '' ? 'refused-by-origin' : 'not-granted' }, repo, true);
    }
    let verdict;
    try {
      verdict = await this.#o.checks.get(upstream)!.verdict(authorization, repo === '' ? null : repo);
    } catch (err) {
      if (!isUpstreamFailure(err)) throw err;
      if (known?.allowed && now - known.decidedAt < graceMs) {
        return this.#count({ allowed: true, subject: known.subject, reason: 'grace' }, repo);
      }
      this.#o.log.warn({ upstream, repo: repo || undefined, err: (err as Error).message }, 'client auth: the origin cannot be asked');
      return this.#count({ allowed: false, subject: usernameOf(authorization), reason: known?.allowed ? 'outside-grace' : 'origin-unreachable' }, repo);
    }
    if (!verdict.accepted) {
      const outcome: Outcome = { allowed: false, subject: usernameOf(authorization), reason: authorization === null ? 'no-credentials' : 'refused-by-origin' };
      book.put(key, { subject: outcome.subject ?? 'anonymous', allowed: false, decidedAt: now });
      return this.#count(outcome, repo);
    }
    book.put(key, { subject: verdict.subject, allowed: verdict.pull, decidedAt: now });
    return this.#count(verdict.pull ? { allowed: true, subject: verdict.subject, reason: 'origin' } : { allowed: false, subject: verdict.subject, reason: 'not-granted' }, repo);
  }

  #count(outcome: Outcome, repo?: string, cached = false): Outcome {
    const { counters, log } = this.#o;
    counters.add(counters.clientAuth, `${outcome.allowed ? 'allowed' : 'refused'}:${outcome.reason}`);
    // One line per decision the origin (or the grace) made; cache hits stay quiet.
    if (!cached) log.info({ subject: outcome.subject ?? 'anonymous', repo: repo || undefined, allowed: outcome.allowed, reason: outcome.reason }, 'client auth decision');
    return outcome;
  }
}

/**
 * The service of Cove's challenges and tokens. It carries what routes a client's names — the
 * request's `ns`, and whether another Cove sent it — so that the token endpoint, which sees only
 * the names, routes them as the pulls will be routed.
 */
export function serviceFor(ns: string | null, fromCove: boolean): string {
  return `cove${ns === null ? '' : `;ns=${ns}`}${fromCove ? ';via-cove' : ''}`;
}

function parseService(service: string): { ns: string | null; fromCove: boolean } | null {
  const m = /^cove(?:;ns=([A-Za-z0-9.:[\]-]{1,255}))?(;via-cove)?$/.exec(service);
  return m ? { ns: m[1] ?? null, fromCove: m[2] !== undefined } : null;
}

function refusal(reason: Exclude<Outcome, { allowed: true }>['reason']): string {
  switch (reason) {
    case 'no-credentials':
      return 'the origin does not allow anonymous pulls here: log in with your origin (Harbor) credentials';
    case 'refused-by-origin':
      return 'the origin refused these credentials';
    case 'not-granted':
      return 'the origin does not let these credentials pull this repository';
    case 'outside-grace':
      return 'the origin is unreachable and this client was last allowed longer ago than COVE_CLIENT_AUTH_GRACE';
    case 'origin-unreachable':
      return 'the origin is unreachable and these credentials were not seen before the outage';
  }
}

function unauthorized(message: string, challenge: string): OciError {
  return new OciError('UNAUTHORIZED', message, { headers: { 'www-authenticate': challenge } });
}

function denied(repo: string, subject: string): OciError {
  return new OciError('DENIED', `${subject} may not pull ${repo} (the origin does not grant it)`, { detail: { name: repo } });
}

/** Repositories named by `scope=repository:<name>:<actions>` parameters that include pull. */
function scopesOf(query: URLSearchParams): string[] {
  const repos: string[] = [];
  for (const value of query.getAll('scope')) {
    for (const scope of value.split(' ')) {
      const m = /^repository:(.+):([a-z*,]+)$/.exec(scope);
      if (!m || !m[2]!.split(',').some((a) => a === 'pull' || a === '*') || !isValidName(m[1]!)) continue;
      if (!repos.includes(m[1]!)) repos.push(m[1]!);
      if (repos.length > MAX_SCOPES) throw new OciError('UNAUTHORIZED', `a token request may name at most ${MAX_SCOPES} repositories`);
    }
  }
  return repos;
}

function headerOf(req: Req, name: string): string | null {
  const v = req.headers[name];
  const value = Array.isArray(v) ? v[0] : v;
  return value === undefined || value === '' ? null : value;
}

/** The token endpoint's URL as this client reaches Cove: its own scheme and Host. */
function realmOf(req: Req): string {
  const encrypted = (req.socket as { encrypted?: boolean } | undefined)?.encrypted === true || req.httpVersion === '2.0';
  const host = headerOf(req, 'host') ?? headerOf(req, ':authority') ?? '';
  // A Host Cove cannot vouch for is left out: the realm is then relative to what the client used.
  const safe = /^[A-Za-z0-9.-]+(:\d{1,5})?$|^\[[0-9a-fA-F:.]+\](:\d{1,5})?$/.test(host) ? host : 'localhost';
  return `${encrypted ? 'https' : 'http'}://${safe}${TOKEN_PATH}`;
}
