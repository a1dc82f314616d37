// Cove's own pull tokens: JWTs (HS256) in the shape of the Docker registry token spec, so that a
// Cove in front of this one (an edge below a regional parent) reads what it was granted exactly
// as it reads Harbor's tokens, from the `access` claim. Signed with a key kept in the data
// directory, bound to subject, audience (the upstream), repositories and expiry.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/** One grant, as the registry token spec writes it. */
export interface Access {
  type: string;
  name: string;
  actions: string[];
}

/** The claims Cove signs and checks. */
export interface TokenClaims {
  iss: string;
  /** Who the origin said the client is ("anonymous" for none). */
  sub: string;
  /** The service the token is for: "cove:<upstream name>". */
  aud: string;
  iat: number;
  nbf: number;
  exp: number;
  access: Access[];
}

/**
 * Lifetime of an issued token, seconds, at most: short, so a revoked account stops pulling soon.
 * The gate issues tokens no longer than the decision TTL, and never under MIN_TOKEN_LIFETIME_S
 * (the registry token spec's default; clients refresh tokens that expire sooner constantly).
 */
export const TOKEN_LIFETIME_S = 300;
export const MIN_TOKEN_LIFETIME_S = 60;
/** Clocks of clients and Cove may differ a little; nbf is set this far back. */
const SKEW_S = 30;
const KEY_FILE = 'client-auth.key';

const b64u = (b: Buffer | string) => Buffer.from(b).toString('base64url');
const HEADER = b64u(JSON.stringify({ typ: 'JWT', alg: 'HS256' }));

export class TokenSigner {
  readonly #key: Buffer;
  readonly issuer: string;

  constructor(key: Buffer, issuer: string) {
    if (key.length < 32) throw new TypeError('a token key needs at least 32 bytes');
    this.#key = key;
    this.issuer = issuer;
  }

  /**
   * The key in `<data>/client-auth.key`, made on first use (32 random bytes, mode 0600, created
   * exclusively so two starts cannot each write their own).
   */
  static async forDataDir(dataDir: string, issuer: string): Promise<TokenSigner> {
    const path = join(dataDir, KEY_FILE);
    await mkdir(dataDir, { recursive: true });
    try {
      const handle = await open(path, 'wx', 0o600);
      try {
        await handle.writeFile(randomBytes(32).toString('hex'));
        await handle.sync();
      } finally {
        await handle.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const hex = (await readFile(path, 'utf8')).trim();
    if (!/^[0-9a-f]{64,}$/.test(hex)) throw new Error(`${path} does not hold a token key (64 or more hex digits); remove it to make a new one`);
    return new TokenSigner(Buffer.from(hex, 'hex'), issuer);
  }

  /** A keyed digest of a credential: what decisions are filed under, never the credential itself. */
  credentialDigest(authorization: string | null): string {
    return authorization === null ? 'anonymous' : createHmac('sha256', this.#key).update(`credential\0${authorization}`).digest('hex');
  }

  issue(sub: string, aud: string, access: Access[], now = Date.now(), lifetimeS = TOKEN_LIFETIME_S): { token: string; expiresIn: number; issuedAt: string } {
    const iat = Math.floor(now / 1000);
    const claims: TokenClaims = { iss: this.issuer, sub, aud, iat, nbf: iat - SKEW_S, exp: iat + lifetimeS, access };
    const body = `${HEADER}.${b64u(JSON.stringify(claims))}`;
    return { token: `${body}.${this.#sign(body)}`, expiresIn: lifetimeS, issuedAt: new Date(iat * 1000).toISOString() };
  }

  /** The claims of a token this Cove signed and that is valid now, else null. */
  verify(token: string, now = Date.now()): TokenClaims | null {
    const parts = token.split('.');
    if (parts.length !== 3 || parts[0] !== HEADER) return null;
    const expected = Buffer.from(this.#sign(`${parts[0]}.${parts[1]}`));
    const given = Buffer.from(parts[2]!);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) return null;
    let claims: TokenClaims;
    try {
      claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as TokenClaims;
    } catch {
      return null;
    }
    const t = Math.floor(now / 1000);
    if (typeof claims.exp !== 'number' || typeof claims.nbf !== 'number' || t >= claims.exp || t < claims.nbf) return null;
    if (claims.iss !== this.issuer || !Array.isArray(claims.access)) return null;
    return claims;
  }

  #sign(body: string): string {
    return createHmac('sha256', this.#key).update(body).digest('base64url');
  }
}

/** Whether a token's grants include pulling `repo`. */
export function grantsPull(access: readonly Access[], repo: string): boolean {
  return access.some((a) => a.type === 'repository' && a.name === repo && (a.actions.includes('pull') || a.actions.includes('*')));
}

/**
 * The `access` claim of a JWT issued by someone else (Harbor, a parent Cove), read without
 * checking its signature: Cove got it straight from the origin's token service over its own
 * connection, and only learns from it what was granted. Null when the token is not such a JWT.
 */
export function readGrants(token: string): { sub: string | null; access: Access[] } | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  try {
    const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as { sub?: unknown; access?: unknown };
    if (!claims || typeof claims !== 'object' || !Array.isArray(claims.access)) return null;
    const access: Access[] = [];
    for (const a of claims.access as unknown[]) {
      const e = a as { type?: unknown; name?: unknown; actions?: unknown } | null;
      if (typeof e?.type === 'string' && typeof e.name === 'string' && Array.isArray(e.actions)) {
        access.push({ type: e.type, name: e.name, actions: e.actions.filter((x): x is string => typeof x === 'string') });
      }
    }
    return { sub: typeof claims.sub === 'string' && claims.sub !== '' ? claims.sub : null, access };
  } catch {
    return null;
  }
}
