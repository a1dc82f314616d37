// Asking the origin what a client may pull, with the client's own credentials: the origin (Harbor,
// or a parent Cove in front of it) is the only judge. Bearer origins are asked through their token
// service, and what they granted is read from the token's `access` claim; Basic origins are asked
// with a small authenticated request. Cove never guesses: an origin it cannot ask is an outage.
import { UpstreamAuthError, UpstreamStatusError, UpstreamUnavailableError } from '../errors.js';
import { findChallenge, parseChallenges } from '../upstream/challenge.js';
import { pullScope } from '../upstream/auth.js';
import type { UpstreamClient } from '../upstream/client.js';
import { grantsPull, readGrants } from './token.js';

/** The origin's verdict on one credential. */
export type Verdict =
  /** The credential is accepted; `pull` says whether it may pull the repository asked about (true when none was). */
  | { accepted: true; subject: string; pull: boolean }
  /** The origin refused the credential itself (wrong password, or anonymous where it wants one). */
  | { accepted: false };

/** How the origin wants to be asked, learnt from its /v2/ answer and kept a while. */
type Scheme = { kind: 'open' } | { kind: 'basic' } | { kind: 'bearer'; realm: URL; service: string | null };
const SCHEME_TTL_MS = 10 * 60_000;

export class OriginCheck {
  readonly #client: UpstreamClient;
  #scheme: { value: Scheme; at: number } | null = null;

  constructor(client: UpstreamClient) {
    this.#client = client;
  }

  /**
   * Whether `authorization` (a client's `Basic …`, or null for anonymous) is accepted, and whether
   * it may pull `repo` (a repository path at the origin; null: just the credential, as for
   * `docker login`). Throws UpstreamUnavailableError when the origin cannot be asked now.
   */
  async verdict(authorization: string | null, repo: string | null, signal?: AbortSignal): Promise<Verdict> {
    const scheme = await this.#learnScheme(signal);
    const user = usernameOf(authorization);
    switch (scheme.kind) {
      case 'open':
        return { accepted: true, subject: user ?? 'anonymous', pull: true };
      case 'basic': {
        if (authorization === null) return { accepted: false };
        const path = repo === null ? '/v2/' : `/v2/${repo}/tags/list?n=1`;
        const res = await this.#ask(new URL(path, this.#client.baseUrl), authorization, signal);
        if (res.status === 401) return { accepted: false };
        // 404: the credential works and the repository is simply not there (nothing to serve).
        return { accepted: true, subject: user ?? 'anonymous', pull: res.status === 200 || res.status === 404 };
      }
      case 'bearer':
        return this.#bearer(scheme, authorization, repo, user, signal);
    }
  }

  async #bearer(
    scheme: Extract<Scheme, { kind: 'bearer' }>,
    authorization: string | null,
    repo: string | null,
    user: string | null,
    signal?: AbortSignal,
  ): Promise<Verdict> {
    const url = new URL(scheme.realm);
    if (scheme.service !== null) url.searchParams.set('service', scheme.service);
    if (repo !== null) url.searchParams.set('scope', pullScope(repo));
    const res = await this.#ask(url, authorization, signal);
    if (res.status === 401 || res.status === 403) return { accepted: false };
    if (res.status !== 200) throw new UpstreamAuthError(this.#client.name, res.status, `token service of upstream ${this.#client.name} answered ${res.status}`);
    let token = '';
    try {
      const body = JSON.parse(res.body.toString('utf8')) as { token?: unknown; access_token?: unknown };
      token = typeof body.token === 'string' && body.token !== '' ? body.token : typeof body.access_token === 'string' ? body.access_token : '';
    } catch {
      token = '';
    }
    if (token === '') throw new UpstreamAuthError(this.#client.name, res.status, `token service of upstream ${this.#client.name} sent no token`);
    const grants = readGrants(token);
    const subject = grants?.sub ?? user ?? 'anonymous';
    if (repo === null) return { accepted: true, subject, pull: true };
    if (grants) return { accepted: true, subject, pull: grantsPull(grants.access, repo) };
    // An opaque token: try it on the repository itself.
    const probe = await this.#ask(new URL(`/v2/${repo}/tags/list?n=1`, this.#client.baseUrl), `Bearer ${token}`, signal);
    return { accepted: true, subject, pull: probe.status === 200 || probe.status === 404 };
  }

  async #learnScheme(signal?: AbortSignal): Promise<Scheme> {
    if (this.#scheme && Date.now() - this.#scheme.at < SCHEME_TTL_MS) return this.#scheme.value;
    const res = await this.#ask(new URL('/v2/', this.#client.baseUrl), null, signal);
    let value: Scheme;
    if (res.status === 200) value = { kind: 'open' };
    else if (res.status === 401) {
      const challenges = parseChallenges(res.headers['www-authenticate']);
      const bearer = findChallenge(challenges, 'bearer');
      if (bearer?.params.realm) {
        let realm: URL;
        try {
          realm = new URL(bearer.params.realm);
        } catch {
          throw new UpstreamAuthError(this.#client.name, 401, `upstream ${this.#client.name} sent a Bearer challenge with an invalid realm`);
        }
        value = { kind: 'bearer', realm, service: bearer.params.service ?? null };
      } else if (findChallenge(challenges, 'basic')) value = { kind: 'basic' };
      else throw new UpstreamAuthError(this.#client.name, 401, `upstream ${this.#client.name} answered 401 without a challenge Cove can follow`);
    } else throw new UpstreamStatusError(this.#client.name, res.status, `upstream ${this.#client.name} answered ${res.status} for /v2/`);
    this.#scheme = { value, at: Date.now() };
    return value;
  }

  async #ask(url: URL, authorization: string | null, signal?: AbortSignal) {
    const res = await this.#client.askAs(url, authorization, signal);
    // An origin that is up but failing cannot judge either: the same as unreachable.
    if (res.status >= 500 || res.status === 429) {
      this.#scheme = null;
      throw new UpstreamUnavailableError(this.#client.name, `upstream ${this.#client.name} answered ${res.status} while checking a client's access`);
    }
    return res;
  }
}

/** The user name of a Basic credential, for logs and the token's subject. */
export function usernameOf(authorization: string | null): string | null {
  if (authorization === null || !/^basic /i.test(authorization)) return null;
  const decoded = Buffer.from(authorization.slice(6).trim(), 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  return colon > 0 ? decoded.slice(0, colon) : null;
}
