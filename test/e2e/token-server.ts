// A docker token-auth server for end-to-end tests: what Harbor's /service/token does for the real
// docker-registry configured with `auth: token`. Users have a password and repository prefixes
// (Harbor projects); a known user gets the requested actions on repositories under its prefixes
// and nothing elsewhere; anonymous clients get pull on the anonymous prefixes (public projects).
// Tokens are RS256 JWTs signed with a key and self-signed certificate made by openssl; the JWT
// header's `kid` is the libtrust key id, which is how distribution finds the key in its
// rootcertbundle. It listens on 127.0.0.1, can be stopped and started again on the same port (an
// outage), and records every request it answered.
import { createHash, createPrivateKey, createPublicKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { join } from 'node:path';
import { type Cleanup, run, tempDir } from './real.js';

/** One account at the token server. */
export interface TokenUser {
  password: string;
  /** Repository name prefixes this user may use ('team-a/'); '*' is every repository. */
  prefixes: string[];
  /** Actions granted under those prefixes (default: pull only). */
  actions?: string[];
}

export interface TokenServerOptions {
  users: Record<string, TokenUser>;
  /** Prefixes anonymous clients may pull (Harbor's public projects); default none. */
  anonymous?: string[];
  /** JWT `iss`; the registry's `auth.token.issuer` must be the same. */
  issuer?: string;
  /** JWT `aud`; the registry's `auth.token.service` must be the same. */
  service?: string;
}

/** One `access` entry of a token (distribution's ResourceActions). */
export interface Access {
  type: string;
  name: string;
  actions: string[];
}

/** What the server saw and answered, one per request. */
export interface TokenRequest {
  method: string;
  /** The user named in the credentials; null for anonymous requests. */
  user: string | null;
  scopes: string[];
  status: number;
  access: Access[];
}

/** The `auth: token:` settings of a docker-registry that trusts this server. */
export interface RegistryTokenAuth {
  realm: string;
  service: string;
  issuer: string;
  rootCertBundle: string;
}

/**
 * distribution's name for a key (libtrust KeyID): base32 of the first 30 bytes of the SHA-256 of
 * the DER SubjectPublicKeyInfo, in 4-character groups joined by ':'.
 */
export function libtrustKeyId(publicKey: KeyObject): string {
  const der = publicKey.export({ type: 'spki', format: 'der' });
  const s = base32(createHash('sha256').update(der).digest().subarray(0, 30));
  return s.match(/.{1,4}/g)!.join(':');
}

/** RFC 4648 base32 without padding (30 bytes make exactly 48 characters, so none is needed). */
function base32(bytes: Buffer): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let out = '';
  let bits = 0;
  let value = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

/**
 * Splits `repository:team-a/app:pull,push` into type, name and actions. The name may hold a
 * `host:port`, so the type ends at the first ':' and the actions start after the last.
 */
export function parseScope(scope: string): { type: string; name: string; actions: string[] } | null {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) return null;
  return { type: scope.slice(0, first), name: scope.slice(first + 1, last), actions: scope.slice(last + 1).split(',').filter(Boolean) };
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export class TokenServer {
  /** Every request answered since start (restarts included), oldest first. */
  readonly requests: TokenRequest[] = [];
  private server: Server | null = null;
  private mark = 0;
  private readonly kid: string;

  private readonly opts: TokenServerOptions;

  private constructor(
    opts: TokenServerOptions,
    private readonly key: KeyObject,
    readonly certFile: string,
    public port: number,
  ) {
    // A copy: setUser changes this server's users, never the caller's object.
    this.opts = { ...opts, users: { ...opts.users } };
    this.kid = libtrustKeyId(createPublicKey(key));
  }

  /** Makes a key and certificate with openssl, listens on 127.0.0.1 (port 0 picks one); stopped on cleanup. */
  static async start(cleanup: Cleanup, opts: TokenServerOptions, port = 0): Promise<TokenServer> {
    const dir = tempDir(cleanup, 'cove-tok-');
    const keyFile = join(dir, 'token.key');
    const certFile = join(dir, 'token.crt');
    await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=cove-e2e-token-issuer'], {
      timeoutMs: 30_000,
    });
    const ts = new TokenServer(opts, createPrivateKey(readFileSync(keyFile)), certFile, port);
    await ts.listen();
    cleanup.add(() => ts.stop());
    return ts;
  }

  get issuer(): string {
    return this.opts.issuer ?? 'cove-e2e-issuer';
  }
  get service(): string {
    return this.opts.service ?? 'cove-e2e-registry';
  }
  get realm(): string {
    return `http://127.0.0.1:${this.port}/token`;
  }
  get running(): boolean {
    return this.server !== null;
  }
  /** What startRegistry's `token` option takes. */
  registryAuth(): RegistryTokenAuth {
    return { realm: this.realm, service: this.service, issuer: this.issuer, rootCertBundle: this.certFile };
  }

  /** Adds, changes (a new password, other prefixes) or, with undefined, removes a user. */
  setUser(name: string, user: TokenUser | undefined): void {
    if (user) this.opts.users[name] = user;
    else delete this.opts.users[name];
  }

  /** Remembers how many requests came so far; `since()` returns the ones after. */
  markNow(): void {
    this.mark = this.requests.length;
  }
  since(): TokenRequest[] {
    return this.requests.slice(this.mark);
  }

  /** Stops listening and cuts open connections: clients now get connection refused. */
  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = null;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }

  /** Listens again on the same port (after stop()). */
  async restart(): Promise<void> {
    if (this.server) return;
    await this.listen();
  }

  private async listen(): Promise<void> {
    const server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        res.statusCode = 500;
        res.end(String(err));
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    const addr = server.address();
    this.port = typeof addr === 'object' && addr ? addr.port : this.port;
    this.server = server;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    const method = req.method ?? 'GET';
    if (url.pathname !== '/token' || (method !== 'GET' && method !== 'POST')) {
      req.resume();
      return this.answer(res, 404, { errors: [{ code: 'NOT_FOUND', message: `no ${method} ${url.pathname} here` }] });
    }
    // GET: Basic credentials and ?scope= (repeated); POST: the OAuth2 password grant some clients
    // try first (grant_type=password, username, password, space-separated scope).
    let username: string | null = null;
    let password = '';
    let scopes = url.searchParams.getAll('scope');
    if (method === 'POST') {
      const form = new URLSearchParams(await readBody(req));
      if (form.get('grant_type') !== 'password') return this.record(res, method, null, [], 400, { error: 'unsupported_grant_type' });
      username = form.get('username');
      password = form.get('password') ?? '';
      scopes = (form.get('scope') ?? '').split(' ').filter(Boolean);
    } else {
      req.resume();
      const basic = /^Basic\s+(\S+)$/i.exec(req.headers.authorization ?? '');
      if (basic) {
        const text = Buffer.from(basic[1]!, 'base64').toString('utf8');
        const colon = text.indexOf(':');
        username = colon < 0 ? text : text.slice(0, colon);
        password = colon < 0 ? '' : text.slice(colon + 1);
      }
    }
    scopes = scopes.flatMap((s) => s.split(' ')).filter(Boolean);
    const user = username === null ? null : this.opts.users[username];
    if (username !== null && (!user || user.password !== password)) {
      // Harbor answers wrong credentials with 401, whatever the scope.
      return this.record(res, method, username, scopes, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'authentication required' }] });
    }
    const access = scopes.map((s) => this.grant(user ?? null, s)).filter((a): a is Access => a !== null);
    const now = Math.floor(Date.now() / 1000);
    const token = this.jwt({
      iss: this.issuer,
      sub: username ?? '',
      aud: url.searchParams.get('service') ?? this.service,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomUUID(),
      access,
    });
    const issuedAt = new Date(now * 1000).toISOString();
    const body = method === 'POST' ? { access_token: token, expires_in: 300, issued_at: issuedAt, scope: scopes.join(' ') } : { token, access_token: token, expires_in: 300, issued_at: issuedAt };
    return this.record(res, method, username, scopes, 200, body, access);
  }

  /**
   * What `user` (null: anonymous) gets for one scope. Like Harbor's token service, an entry the
   * user may not use stays in `access` with its actions emptied; a scope that is not a repository
   * (registry:catalog:*) gets nothing.
   */
  private grant(user: TokenUser | null, scope: string): Access | null {
    const s = parseScope(scope);
    if (!s) return null;
    if (s.type !== 'repository') return { type: s.type, name: s.name, actions: [] };
    const under = (prefixes: string[]) => prefixes.some((p) => p === '*' || s.name.startsWith(p));
    let allowed: string[] = [];
    if (user && under(user.prefixes)) allowed = user.actions ?? ['pull'];
    else if (under(this.opts.anonymous ?? [])) allowed = ['pull'];
    return { type: s.type, name: s.name, actions: s.actions.filter((a) => allowed.includes(a) || (a === '*' && allowed.length > 0)) };
  }

  private jwt(claims: Record<string, unknown>): string {
    const input = `${b64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', kid: this.kid }))}.${b64url(JSON.stringify(claims))}`;
    // RSA keys sign with PKCS#1 v1.5 by default: RS256.
    return `${input}.${b64url(sign('sha256', Buffer.from(input), this.key))}`;
  }

  private record(res: ServerResponse, method: string, user: string | null, scopes: string[], status: number, body: unknown, access: Access[] = []): void {
    this.requests.push({ method, user, scopes, status, access });
    this.answer(res, status, body);
  }

  private answer(res: ServerResponse, status: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  }
}

/** Reads a small request body (bounded: token requests are a few hundred bytes). */
function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    req.setEncoding('utf8');
    req.on('data', (d: string) => {
      text += d;
      if (text.length > 64 * 1024) req.destroy(new Error('token request body too large'));
    });
    req.on('end', () => resolve(text));
    req.on('error', reject);
  });
}

/** The claims of a JWT, unverified (tests read what a token grants). */
export function jwtClaims(token: string): Record<string, unknown> {
  const part = token.split('.')[1];
  if (!part) throw new Error(`not a JWT: ${token.slice(0, 40)}`);
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')) as Record<string, unknown>;
}
