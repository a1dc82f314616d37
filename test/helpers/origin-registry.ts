// An in-process origin registry for integration tests: a real node:http server on loopback that
// speaks the distribution pull API the way Debian's docker-registry and Harbor do (content
// negotiation, Range, tags paging, referrers, Basic and Bearer auth, 307 blob redirects to a
// second host), counts every request and byte, and misbehaves on demand (fault modes).
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Image, Index } from './images.js';
import { reset } from './link.js';

const LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

export type RequestKind = 'manifest' | 'blob' | 'tags' | 'referrers' | 'base' | 'token' | 'other';

export interface RecordedRequest {
  method: string;
  path: string;
  kind: RequestKind;
  repo: string | null;
  /** Digest of a blob request, or the reference of a manifest request. */
  digest: string | null;
  status: number;
  range: string | null;
  accept: string | null;
  ns: string | null;
  authorization: string | null;
  /** True when served by the redirect (storage) host. */
  redirected: boolean;
  /** When it arrived (ms since epoch), to measure how requests bunch in time. */
  at: number;
  /** The Host header: which name a client used for the origin (several Coves, one origin). */
  host: string | null;
  /** Blob body bytes handed to the socket for this request (blob GETs; 0 until the body starts). */
  bodyBytes?: number;
}

export type Fault =
  | { type: 'status'; status: number; retryAfter?: number | string }
  | { type: 'slow'; bytesPerSecond: number }
  /**
   * Like 'slow', but a slice waits while the socket is full (as a server's write blocks), so the
   * bytes counted are the ones the client could take, not a queue growing in this process.
   */
  | { type: 'paced'; bytesPerSecond: number }
  | { type: 'truncate'; afterBytes: number }
  | { type: 'wrong-bytes' }
  | { type: 'stall'; afterBytes?: number }
  /** Headers and `afterBytes` body bytes, then the connection is killed with a TCP RST. */
  | { type: 'reset'; afterBytes: number }
  | { type: 'blackhole' }
  /** The answer comes, whole and right, after `ms` (a slow link's round trip, or an overloaded origin). */
  | { type: 'delay'; ms: number }
  | { type: 'head-404' }
  /** 200 with Content-Length 0 and an empty body, whatever the blob is. */
  | { type: 'zero-length' }
  /** Content-Length says `contentLength`; the body is the real one (longer or shorter), then the connection closes. */
  | { type: 'length-lie'; contentLength: number }
  /** Every response is cut after `afterBytes` body bytes; Range is honoured, so resumes advance. */
  | { type: 'cut-every'; afterBytes: number }
  /** No Content-Length (chunked), optionally slow: the size is known only at the end. */
  | { type: 'no-length'; bytesPerSecond?: number }
  /** Range headers are ignored: always 200 with the whole blob. */
  | { type: 'ignore-range' }
  /**
   * No Content-Length (chunked): the real body, then `extraBytes` more bytes, as fast as the
   * reader takes them — a body that keeps growing. Every byte handed to the socket is counted.
   */
  | { type: 'endless'; extraBytes: number };

export interface FaultMatch {
  digest?: string;
  repo?: string;
  kind?: RequestKind;
}

export interface OriginOptions {
  host?: string;
  auth?: 'none' | 'basic' | 'bearer';
  username?: string;
  password?: string;
  /** Answer blob GETs with 307 to a second server on 127.0.0.2 (Harbor on S3). */
  redirectBlobs?: boolean;
  /** Lifetime of issued bearer tokens, seconds. */
  tokenExpiresIn?: number;
  /**
   * Bearer mode with several accounts, as Harbor projects grant them: each user may pull the
   * repositories under its prefixes ("*": all). Tokens are JWT-shaped with an `access` claim.
   * Without credentials a token grants `anonymousPrefixes` (none by default).
   */
  users?: Record<string, { password: string; prefixes: string[] }>;
  anonymousPrefixes?: string[];
  /** Every answer's Date header is this far from the real time (an origin whose clock is off, or a node's). */
  dateOffsetMs?: number;
}

interface StoredManifest {
  bytes: Buffer;
  mediaType: string;
}

interface Repo {
  manifests: Map<string, StoredManifest>;
  tags: Map<string, string>;
  blobs: Map<string, Buffer>;
}

interface ActiveFault {
  match: FaultMatch;
  fault: Fault;
  remaining: number;
}

const BODY_FAULTS = new Set(['slow', 'paced', 'truncate', 'reset', 'wrong-bytes', 'stall', 'zero-length', 'length-lie', 'cut-every', 'no-length', 'endless']);

function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** One listening node:http server whose sockets can be cut at once. */
class Listener {
  readonly server: Server;
  readonly #sockets = new Set<Socket>();
  port = 0;

  constructor(handler: (req: IncomingMessage, res: ServerResponse) => void) {
    this.server = createServer(handler);
    this.server.keepAliveTimeout = 2000;
    this.server.on('connection', (socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
  }

  listen(host: string, port: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => {
        this.server.off('error', reject);
        const address = this.server.address();
        if (address && typeof address === 'object') this.port = address.port;
        resolve();
      });
    });
  }

  close(): Promise<void> {
    if (!this.server.listening) return Promise.resolve();
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const socket of this.#sockets) socket.destroy();
    return closed;
  }
}

export class OriginRegistry {
  readonly requests: RecordedRequest[] = [];
  blobBytesServed = 0;
  readonly blobBytesByDigest = new Map<string, number>();
  redirectAuthHeadersSeen = 0;
  /** Tokens issued to the accounts of `users` (token service requests that succeeded). */
  tokenRequests = 0;

  readonly #options: Required<Omit<OriginOptions, 'username' | 'password' | 'users'>> & {
    username: string | null;
    password: string | null;
    users: OriginOptions['users'] | null;
  };
  readonly #repos = new Map<string, Repo>();
  readonly #faults: ActiveFault[] = [];
  /** Issued bearer tokens: the repositories each may pull, and when it expires (ms). */
  readonly #tokens = new Map<string, { repos: Set<string>; expiresAt: number }>();
  readonly #main: Listener;
  readonly #storage: Listener | null;
  /** Timers of slow bodies, cleared on stop. */
  readonly #timers = new Set<NodeJS.Timeout>();

  private constructor(options: OriginOptions) {
    this.#options = {
      host: options.host ?? '127.0.0.1',
      auth: options.auth ?? 'none',
      username: options.username ?? null,
      password: options.password ?? null,
      redirectBlobs: options.redirectBlobs ?? false,
      tokenExpiresIn: options.tokenExpiresIn ?? 300,
      users: options.users ?? null,
      anonymousPrefixes: options.anonymousPrefixes ?? [],
      dateOffsetMs: options.dateOffsetMs ?? 0,
    };
    this.#main = new Listener((req, res) => this.#handle(req, res, false));
    this.#storage = this.#options.redirectBlobs ? new Listener((req, res) => this.#handle(req, res, true)) : null;
  }

  static async start(options: OriginOptions = {}): Promise<OriginRegistry> {
    const origin = new OriginRegistry(options);
    await origin.#main.listen(origin.#options.host, 0);
    if (origin.#storage) await origin.#storage.listen('127.0.0.2', 0);
    return origin;
  }

  get port(): number {
    return this.#main.port;
  }

  get url(): string {
    return `http://${this.#options.host}:${this.#main.port}`;
  }

  /** Stops answering (connections refused) but keeps the content; see restart(). */
  async stop(): Promise<void> {
    for (const timer of this.#timers) clearTimeout(timer);
    this.#timers.clear();
    await this.#main.close();
    if (this.#storage) await this.#storage.close();
  }

  /** Listens again on the same port with the same content. */
  async restart(): Promise<void> {
    await this.#main.listen(this.#options.host, this.#main.port);
    if (this.#storage) await this.#storage.listen('127.0.0.2', this.#storage.port);
  }

  close(): Promise<void> {
    return this.stop();
  }

  // ---- content ----

  #repo(name: string): Repo {
    let repo = this.#repos.get(name);
    if (!repo) {
      repo = { manifests: new Map(), tags: new Map(), blobs: new Map() };
      this.#repos.set(name, repo);
    }
    return repo;
  }

  /** Stores an image's blobs and manifest; `tag` null stores it by digest only. */
  putImage(repoName: string, tag: string | null, image: Image): void {
    const repo = this.#repo(repoName);
    repo.blobs.set(image.configDigest, image.config);
    for (const layer of image.layers) repo.blobs.set(layer.digest, layer.bytes);
    repo.manifests.set(image.manifestDigest, { bytes: image.manifest, mediaType: image.mediaType });
    if (tag !== null) repo.tags.set(tag, image.manifestDigest);
  }

  putIndex(repoName: string, tag: string, index: Index, children: Image[]): void {
    for (const child of children) this.putImage(repoName, null, child);
    const repo = this.#repo(repoName);
    repo.manifests.set(index.digest, { bytes: index.bytes, mediaType: index.mediaType });
    repo.tags.set(tag, index.digest);
  }

  /** Stores manifest bytes under a reference as given: a digest key need not match the bytes. */
  putManifest(repoName: string, reference: string, bytes: Buffer, mediaType: string): void {
    const repo = this.#repo(repoName);
    if (reference.includes(':')) {
      repo.manifests.set(reference, { bytes, mediaType });
    } else {
      const digest = sha256(bytes);
      repo.manifests.set(digest, { bytes, mediaType });
      repo.tags.set(reference, digest);
    }
  }

  putBlob(repoName: string, bytes: Buffer): string {
    const digest = sha256(bytes);
    this.#repo(repoName).blobs.set(digest, bytes);
    return digest;
  }

  moveTag(repoName: string, tag: string, to: Image | string): void {
    if (typeof to === 'string') this.#repo(repoName).tags.set(tag, to);
    else this.putImage(repoName, tag, to);
  }

  deleteTag(repoName: string, tag: string): void {
    this.#repos.get(repoName)?.tags.delete(tag);
  }

  // ---- faults and counters ----

  /** Misbehave for requests matching `match`, `times` times (default: until cleared). */
  setFault(match: FaultMatch, fault: Fault, times = Number.POSITIVE_INFINITY): void {
    this.#faults.push({ match, fault, remaining: times });
  }

  clearFaults(): void {
    this.#faults.length = 0;
  }

  resetCounters(): void {
    this.requests.length = 0;
    this.blobBytesServed = 0;
    this.blobBytesByDigest.clear();
    this.redirectAuthHeadersSeen = 0;
  }

  count(filter: { method?: string; kind?: RequestKind; digest?: string; repo?: string } = {}): number {
    return this.requests.filter(
      (r) =>
        !r.redirected &&
        (filter.method === undefined || r.method === filter.method) &&
        (filter.kind === undefined || r.kind === filter.kind) &&
        (filter.digest === undefined || r.digest === filter.digest) &&
        (filter.repo === undefined || r.repo === filter.repo),
    ).length;
  }

  #takeFault(rec: RecordedRequest, accepts: (f: Fault) => boolean): Fault | null {
    for (const active of this.#faults) {
      const { match } = active;
      if (active.remaining <= 0) continue;
      if (match.digest !== undefined && match.digest !== rec.digest) continue;
      if (match.repo !== undefined && match.repo !== rec.repo) continue;
      if (match.kind !== undefined && match.kind !== rec.kind) continue;
      if (!accepts(active.fault)) continue;
      active.remaining--;
      return active.fault;
    }
    return null;
  }

  // ---- HTTP ----

  #handle(req: IncomingMessage, res: ServerResponse, redirected: boolean): void {
    const url = new URL(req.url ?? '/', 'http://origin');
    const rec: RecordedRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      kind: 'other',
      repo: null,
      digest: null,
      status: 0,
      range: header(req, 'range'),
      accept: header(req, 'accept'),
      ns: url.searchParams.get('ns'),
      authorization: header(req, 'authorization'),
      redirected,
      at: Date.now(),
      host: header(req, 'host'),
    };
    this.requests.push(rec);
    if (this.#options.dateOffsetMs !== 0) res.setHeader('date', new Date(Date.now() + this.#options.dateOffsetMs).toUTCString());
    const writeHead = res.writeHead.bind(res);
    res.writeHead = ((status: number, ...rest: unknown[]) => {
      rec.status = status;
      return (writeHead as (...a: unknown[]) => ServerResponse)(status, ...rest);
    }) as typeof res.writeHead;
    req.resume();
    try {
      if (redirected) {
        if (rec.authorization) this.redirectAuthHeadersSeen++;
        this.#serveStorage(url, rec, req, res);
      } else {
        this.#route(url, rec, req, res);
      }
    } catch (err) {
      if (res.headersSent) res.destroy();
      else sendError(res, 500, 'UNKNOWN', (err as Error).message);
    }
  }

  #route(url: URL, rec: RecordedRequest, req: IncomingMessage, res: ServerResponse): void {
    const path = url.pathname;
    if (path === '/token') {
      rec.kind = 'token';
      // The token service can be down while the registry is up (a fault with kind 'token').
      const tokenFault = this.#takeFault(rec, (f) => f.type === 'status' || f.type === 'blackhole');
      if (tokenFault?.type === 'blackhole') return;
      if (tokenFault?.type === 'status') {
        sendError(res, tokenFault.status, 'UNAVAILABLE', `injected status ${tokenFault.status}`);
        return;
      }
      this.#serveToken(url, req, res);
      return;
    }
    let m: RegExpExecArray | null;
    if (path === '/v2/' || path === '/v2') {
      rec.kind = 'base';
    } else if ((m = /^\/v2\/(.+)\/tags\/list$/.exec(path))) {
      rec.kind = 'tags';
      rec.repo = m[1]!;
    } else if ((m = /^\/v2\/(.+)\/(manifests|blobs|referrers)\/([^/]+)$/.exec(path))) {
      rec.kind = m[2] === 'manifests' ? 'manifest' : m[2] === 'blobs' ? 'blob' : 'referrers';
      rec.repo = m[1]!;
      rec.digest = m[3]!;
    }

    // A black hole takes the connection before anything else, auth included: it never answers.
    if (this.#takeFault(rec, (f) => f.type === 'blackhole')) return;
    const delay = this.#takeFault(rec, (f) => f.type === 'delay');
    if (delay?.type === 'delay') {
      setTimeout(() => {
        if (res.destroyed) return;
        try {
          this.#afterDelay(url, rec, req, res);
        } catch (err) {
          if (res.headersSent) res.destroy();
          else sendError(res, 500, 'UNKNOWN', (err as Error).message);
        }
      }, delay.ms);
      return;
    }
    this.#afterDelay(url, rec, req, res);
  }

  /** The request past the black hole and delay faults: auth, status faults, then the registry. */
  #afterDelay(url: URL, rec: RecordedRequest, req: IncomingMessage, res: ServerResponse): void {
    // Auth before status faults, so a 401 round of the Bearer flow does not use up a `times: 1` fault.
    if (!this.#authorized(rec, req, res)) return;
    const statusFault = this.#takeFault(rec, (f) => f.type === 'status');
    if (statusFault?.type === 'status') {
      const headers: Record<string, string> = {};
      if (statusFault.retryAfter !== undefined) headers['retry-after'] = String(statusFault.retryAfter);
      sendError(res, statusFault.status, errorCodeFor(statusFault.status, rec.kind), `injected status ${statusFault.status}`, headers);
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      sendError(res, 405, 'UNSUPPORTED', 'the test origin is read-only');
      return;
    }
    switch (rec.kind) {
      case 'base':
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': '2', 'docker-distribution-api-version': 'registry/2.0' });
        res.end(req.method === 'HEAD' ? undefined : '{}');
        return;
      case 'manifest':
        this.#serveManifest(rec, req, res);
        return;
      case 'blob':
        this.#serveBlob(rec, req, res);
        return;
      case 'tags':
        this.#serveTags(url, rec, res);
        return;
      case 'referrers':
        this.#serveReferrers(url, rec, res);
        return;
      default:
        sendError(res, 404, 'NAME_UNKNOWN', `no route for ${url.pathname}`);
    }
  }

  #authorized(rec: RecordedRequest, req: IncomingMessage, res: ServerResponse): boolean {
    const { auth, username, password } = this.#options;
    if (auth === 'none') return true;
    const given = header(req, 'authorization') ?? '';
    if (auth === 'basic') {
      if (given === basic(username, password)) return true;
      sendError(res, 401, 'UNAUTHORIZED', 'authentication required', { 'www-authenticate': 'Basic realm="origin"' });
      return false;
    }
    // Harbor also takes Basic credentials directly on /v2/.
    if (rec.kind === 'base' && username !== null && given === basic(username, password)) return true;
    if (rec.kind === 'base' && this.#options.users && Object.entries(this.#options.users).some(([u, a]) => given === basic(u, a.password))) return true;
    const token = /^Bearer (.+)$/.exec(given)?.[1];
    const issued = token ? this.#tokens.get(token) : undefined;
    if (issued && issued.expiresAt > Date.now() && (rec.repo === null || issued.repos.has(rec.repo))) return true;
    const scope = rec.repo ? `,scope="repository:${rec.repo}:pull"` : '';
    // Like Harbor: an expired or insufficient bearer token gets a Basic challenge.
    const challenge = token ? 'Basic realm="origin"' : `Bearer realm="${this.url}/token",service="origin"${scope}`;
    sendError(res, 401, 'UNAUTHORIZED', 'authentication required', { 'www-authenticate': challenge });
    return false;
  }

  #serveToken(url: URL, req: IncomingMessage, res: ServerResponse): void {
    const { username, password, tokenExpiresIn, users } = this.#options;
    if (users) {
      this.#serveUserToken(url, req, res, users);
      return;
    }
    if (username !== null && header(req, 'authorization') !== basic(username, password)) {
      sendJson(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password', detail: null }] });
      return;
    }
    const repos = new Set<string>();
    for (const scope of url.searchParams.getAll('scope').flatMap((s) => s.split(' '))) {
      // repository:<name>:<actions>; a name may hold host:port, so split at the ends only.
      if (!scope.startsWith('repository:')) continue;
      const rest = scope.slice('repository:'.length);
      const cut = rest.lastIndexOf(':');
      if (cut > 0 && rest.slice(cut + 1).split(',').includes('pull')) repos.add(rest.slice(0, cut));
    }
    const token = randomBytes(16).toString('hex');
    this.#tokens.set(token, { repos, expiresAt: Date.now() + tokenExpiresIn * 1000 });
    sendJson(res, 200, { token, expires_in: tokenExpiresIn, issued_at: new Date().toISOString(), scope: url.searchParams.get('scope') });
  }

  /** A token for one of several accounts, granting pull on the asked repositories under its prefixes. */
  #serveUserToken(url: URL, req: IncomingMessage, res: ServerResponse, users: NonNullable<OriginOptions['users']>): void {
    const given = header(req, 'authorization');
    let sub = '';
    let prefixes = this.#options.anonymousPrefixes;
    if (given) {
      const user = Object.entries(users).find(([name, account]) => given === basic(name, account.password));
      if (!user) {
        sendJson(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'invalid username or password', detail: null }] });
        return;
      }
      [sub, { prefixes }] = user;
    }
    const repos = new Set<string>();
    for (const scope of url.searchParams.getAll('scope').flatMap((s) => s.split(' '))) {
      const m = /^repository:(.+):([a-z*,]+)$/.exec(scope);
      if (!m || !m[2]!.split(',').includes('pull')) continue;
      if (prefixes.some((p) => p === '*' || m[1]!.startsWith(p))) repos.add(m[1]!);
    }
    const b64u = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
    const claims = { sub, access: [...repos].map((name) => ({ type: 'repository', name, actions: ['pull'] })) };
    const token = `${b64u({ alg: 'RS256', typ: 'JWT' })}.${b64u(claims)}.${randomBytes(16).toString('base64url')}`;
    this.#tokens.set(token, { repos, expiresAt: Date.now() + this.#options.tokenExpiresIn * 1000 });
    this.tokenRequests++;
    sendJson(res, 200, { token, expires_in: this.#options.tokenExpiresIn, issued_at: new Date().toISOString() });
  }

  #serveManifest(rec: RecordedRequest, req: IncomingMessage, res: ServerResponse): void {
    const repo = this.#repos.get(rec.repo!);
    const reference = rec.digest!;
    const byTag = !reference.includes(':');
    const digest = byTag ? repo?.tags.get(reference) : reference;
    let stored = digest ? repo?.manifests.get(digest) : undefined;
    let servedDigest = digest;
    if (!repo || !stored || !servedDigest) {
      sendError(res, 404, 'MANIFEST_UNKNOWN', `manifest unknown: ${rec.repo}:${reference}`);
      return;
    }
    const accept = acceptList(req);
    if (byTag && stored.mediaType === LIST && !accept.includes(LIST)) {
      // distribution rewrites a list to its linux/amd64 child for clients without list support
      const list = JSON.parse(stored.bytes.toString()) as { manifests: Array<{ digest: string; platform?: { architecture?: string; os?: string } }> };
      const child = list.manifests.find((d) => d.platform?.architecture === 'amd64' && d.platform?.os === 'linux');
      const childManifest = child ? repo.manifests.get(child.digest) : undefined;
      if (!child || !childManifest) {
        sendError(res, 404, 'MANIFEST_UNKNOWN', 'no linux/amd64 manifest in the list');
        return;
      }
      stored = childManifest;
      servedDigest = child.digest;
    } else if (stored.mediaType === OCI_INDEX && !accept.includes(OCI_INDEX)) {
      // distribution does this by tag and by digest alike
      sendError(res, 404, 'MANIFEST_UNKNOWN', 'OCI index found, but accept header does not support OCI indexes');
      return;
    }
    const headers = {
      'content-type': stored.mediaType,
      'content-length': String(stored.bytes.length),
      'docker-content-digest': servedDigest,
      etag: `"${servedDigest}"`,
    };
    if (req.method === 'HEAD') {
      res.writeHead(200, headers);
      res.end();
      return;
    }
    this.#sendBody(rec, res, 200, headers, stored.bytes, () => {});
  }

  #serveBlob(rec: RecordedRequest, req: IncomingMessage, res: ServerResponse): void {
    const bytes = this.#repos.get(rec.repo!)?.blobs.get(rec.digest!);
    if (!bytes) {
      sendError(res, 404, 'BLOB_UNKNOWN', `blob unknown: ${rec.digest}`);
      return;
    }
    if (req.method === 'HEAD') {
      if (this.#takeFault(rec, (f) => f.type === 'head-404')) {
        sendError(res, 404, 'BLOB_UNKNOWN', 'blob unknown (not pulled through yet)');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(bytes.length), 'docker-content-digest': rec.digest! });
      res.end();
      return;
    }
    if (this.#storage) {
      res.writeHead(307, { location: `http://127.0.0.2:${this.#storage.port}/storage/${rec.repo}/${rec.digest}`, 'content-length': '0' });
      res.end();
      return;
    }
    this.#sendBlob(rec, req, res, bytes);
  }

  #serveStorage(url: URL, rec: RecordedRequest, req: IncomingMessage, res: ServerResponse): void {
    const m = /^\/storage\/(.+)\/([^/]+)$/.exec(url.pathname);
    rec.kind = 'blob';
    rec.repo = m?.[1] ?? null;
    rec.digest = m?.[2] ?? null;
    const bytes = m ? this.#repos.get(m[1]!)?.blobs.get(m[2]!) : undefined;
    if (!bytes) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('no such object');
      return;
    }
    this.#sendBlob(rec, req, res, bytes);
  }

  #sendBlob(rec: RecordedRequest, req: IncomingMessage, res: ServerResponse, bytes: Buffer): void {
    const ignoreRange = this.#takeFault(rec, (f) => f.type === 'ignore-range') !== null;
    const range = ignoreRange ? null : parseRange(header(req, 'range'), bytes.length);
    if (range === 'unsatisfiable') {
      sendError(res, 416, 'RANGE_INVALID', 'range not satisfiable', { 'content-range': `bytes */${bytes.length}` });
      return;
    }
    const body = range ? bytes.subarray(range.start, range.end + 1) : bytes;
    const headers: Record<string, string> = {
      'content-type': 'application/octet-stream',
      'content-length': String(body.length),
      'docker-content-digest': rec.digest!,
      'accept-ranges': 'bytes',
    };
    if (range) headers['content-range'] = `bytes ${range.start}-${range.end}/${bytes.length}`;
    this.#sendBody(rec, res, range ? 206 : 200, headers, body, (n) => {
      this.blobBytesServed += n;
      this.blobBytesByDigest.set(rec.digest!, (this.blobBytesByDigest.get(rec.digest!) ?? 0) + n);
      rec.bodyBytes = (rec.bodyBytes ?? 0) + n;
    });
  }

  /** Writes a GET body, misbehaving as a matching body fault says; `count` hears every byte sent. */
  #sendBody(rec: RecordedRequest, res: ServerResponse, status: number, headers: Record<string, string>, original: Buffer, count: (n: number) => void): void {
    const fault = this.#takeFault(rec, (f) => BODY_FAULTS.has(f.type));
    let body = original;
    if (fault?.type === 'wrong-bytes') {
      // same length, a few bytes flipped: only a digest check can tell
      body = Buffer.from(original);
      for (let i = 0; i < body.length; i += 4096) body[i] = body[i]! ^ 0xff;
    }
    if (fault?.type === 'zero-length') {
      res.writeHead(status, { ...headers, 'content-length': '0' });
      res.end();
      return;
    }
    if (fault?.type === 'endless') {
      this.#sendEndless(rec, res, status, headers, body, fault.extraBytes, count);
      return;
    }
    if (fault?.type === 'length-lie' || fault?.type === 'no-length') {
      // Raw bytes on the socket: node:http would not send a body that disagrees with its length.
      const socket = res.socket!;
      const lines = [`HTTP/1.1 ${status} OK`];
      for (const [name, value] of Object.entries(headers)) if (name !== 'content-length') lines.push(`${name}: ${value}`);
      lines.push(fault.type === 'length-lie' ? `content-length: ${fault.contentLength}` : 'transfer-encoding: chunked', 'connection: close');
      rec.status = status;
      socket.write(`${lines.join('\r\n')}\r\n\r\n`);
      if (fault.type === 'length-lie') {
        count(body.length);
        // Shorter than declared: the connection stays open, as a server that lost track would leave it.
        if (body.length < fault.contentLength) socket.write(body);
        else socket.end(body);
        return;
      }
      this.#drip(body, fault.bytesPerSecond ?? null, () => socket.destroyed, (chunk, last) => {
        count(chunk.length);
        if (chunk.length > 0) socket.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]));
        if (last) socket.end('0\r\n\r\n');
      });
      return;
    }
    res.writeHead(status, headers);
    if (fault?.type === 'cut-every') {
      const cut = Math.min(fault.afterBytes, body.length);
      count(cut);
      res.flushHeaders();
      res.write(body.subarray(0, cut), () => {
        // A body that fits is sent whole: the cut is for responses longer than afterBytes.
        if (cut < body.length) res.socket?.destroy();
        else res.end();
      });
      return;
    }
    if (!fault || fault.type === 'wrong-bytes') {
      count(body.length);
      res.end(body);
      return;
    }
    if (fault.type === 'truncate' || fault.type === 'stall' || fault.type === 'reset') {
      const cut = Math.min(fault.type === 'stall' ? fault.afterBytes ?? 0 : fault.afterBytes, body.length);
      count(cut);
      res.flushHeaders(); // Node would hold back headers written with an empty first chunk
      res.write(body.subarray(0, cut), () => {
        if (fault.type === 'truncate') res.socket?.destroy();
        if (fault.type === 'reset' && res.socket) reset(res.socket);
      });
      return; // stall: never another byte; stop() cuts the socket
    }
    if (fault.type === 'paced') {
      this.#drip(
        body,
        fault.bytesPerSecond,
        () => res.destroyed,
        (chunk, last) => {
          count(chunk.length);
          if (last) res.end(chunk);
          else if (!res.write(chunk)) return (go) => res.once('drain', go);
        },
      );
      return;
    }
    if (fault.type !== 'slow') return;
    this.#drip(body, fault.bytesPerSecond, () => res.destroyed, (chunk, last) => {
      count(chunk.length);
      if (last) res.end(chunk);
      else res.write(chunk);
    });
  }

  /** The 'endless' fault: chunked, the body and then `extraBytes` of filler, paced by the socket. */
  #sendEndless(rec: RecordedRequest, res: ServerResponse, status: number, headers: Record<string, string>, body: Buffer, extraBytes: number, count: (n: number) => void): void {
    const socket = res.socket!;
    const lines = [`HTTP/1.1 ${status} OK`];
    for (const [name, value] of Object.entries(headers)) if (name !== 'content-length') lines.push(`${name}: ${value}`);
    lines.push('transfer-encoding: chunked', 'connection: close');
    rec.status = status;
    socket.write(`${lines.join('\r\n')}\r\n\r\n`);
    const total = body.length + extraBytes;
    const filler = Buffer.alloc(64 * 1024, 0x5a);
    let sent = 0;
    const pump = () => {
      while (!socket.destroyed && sent < total) {
        const chunk = sent < body.length ? body.subarray(sent, Math.min(body.length, sent + filler.length)) : filler.subarray(0, Math.min(filler.length, total - sent));
        sent += chunk.length;
        count(chunk.length);
        const more = socket.write(Buffer.concat([Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from('\r\n')]));
        if (!more) {
          socket.once('drain', pump);
          return;
        }
      }
      if (!socket.destroyed) socket.end('0\r\n\r\n');
    };
    pump();
  }

  /**
   * Hands `body` to `send` a slice every 50 ms at `bytesPerSecond` (all at once when null; below
   * 20 bytes a second, a byte at a time, further apart), stopping early once `gone()`; the last
   * slice is marked. Timers are cleared on stop.
   */
  #drip(
    body: Buffer,
    bytesPerSecond: number | null,
    gone: () => boolean,
    /** May return a way to wait (the socket is full): the next slice then comes once it calls back. */
    send: (chunk: Buffer, last: boolean) => void | ((go: () => void) => void),
  ): void {
    const slice = bytesPerSecond ? Math.max(1, Math.floor(bytesPerSecond / 20)) : body.length;
    const every = bytesPerSecond ? Math.max(50, Math.round((slice * 1000) / bytesPerSecond)) : 0;
    let offset = 0;
    const tick = () => {
      if (gone()) return;
      const chunk = body.subarray(offset, offset + slice);
      offset += chunk.length;
      const last = offset >= body.length;
      const wait = send(chunk, last);
      if (last) return;
      const next = () => {
        const timer = setTimeout(() => {
          this.#timers.delete(timer);
          tick();
        }, every);
        this.#timers.add(timer);
      };
      if (wait) wait(next);
      else next();
    };
    tick();
  }

  #serveTags(url: URL, rec: RecordedRequest, res: ServerResponse): void {
    const repo = this.#repos.get(rec.repo!);
    if (!repo) {
      sendError(res, 404, 'NAME_UNKNOWN', `repository name not known to registry: ${rec.repo}`);
      return;
    }
    let tags = [...repo.tags.keys()].sort();
    const last = url.searchParams.get('last');
    if (last) tags = tags.filter((tag) => tag > last);
    const nText = url.searchParams.get('n');
    const headers: Record<string, string> = {};
    if (nText !== null) {
      const n = Number(nText);
      if (!Number.isInteger(n) || n < 0) {
        sendError(res, 400, 'PAGINATION_NUMBER_INVALID', `invalid n: ${nText}`);
        return;
      }
      if (tags.length > n) {
        tags = tags.slice(0, n);
        headers.link = `</v2/${rec.repo}/tags/list?n=${n}&last=${encodeURIComponent(tags[tags.length - 1] ?? '')}>; rel="next"`;
      }
    }
    sendJson(res, 200, { name: rec.repo, tags }, headers);
  }

  #serveReferrers(url: URL, rec: RecordedRequest, res: ServerResponse): void {
    const repo = this.#repos.get(rec.repo!);
    const artifactType = url.searchParams.get('artifactType');
    const manifests: unknown[] = [];
    for (const [digest, stored] of repo?.manifests ?? []) {
      let doc: { subject?: { digest?: string }; artifactType?: string; config?: { mediaType?: string }; annotations?: unknown };
      try {
        doc = JSON.parse(stored.bytes.toString());
      } catch {
        continue;
      }
      if (doc.subject?.digest !== rec.digest) continue;
      const type = doc.artifactType ?? doc.config?.mediaType;
      if (artifactType && type !== artifactType) continue;
      manifests.push({ mediaType: stored.mediaType, digest, size: stored.bytes.length, artifactType: type, annotations: doc.annotations });
    }
    const headers: Record<string, string> = { 'content-type': OCI_INDEX };
    if (artifactType) headers['oci-filters-applied'] = 'artifactType';
    sendJson(res, 200, { schemaVersion: 2, mediaType: OCI_INDEX, manifests }, headers);
  }
}

function header(req: IncomingMessage, name: string): string | null {
  const value = req.headers[name];
  if (value === undefined) return null;
  return Array.isArray(value) ? value.join(', ') : value;
}

function acceptList(req: IncomingMessage): string[] {
  return (header(req, 'accept') ?? '')
    .split(',')
    .map((s) => s.split(';')[0]!.trim().toLowerCase())
    .filter(Boolean);
}

function basic(username: string | null, password: string | null): string {
  return `Basic ${Buffer.from(`${username ?? ''}:${password ?? ''}`).toString('base64')}`;
}

function parseRange(value: string | null, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  if (!value) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(value.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  if (m[1] === '') {
    const n = Number(m[2]);
    return n === 0 ? 'unsatisfiable' : { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  if (start >= size) return 'unsatisfiable';
  return { start, end: m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1) };
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', ...headers, 'content-length': String(bytes.length) });
  res.end(res.req.method === 'HEAD' ? undefined : bytes);
}

function sendError(res: ServerResponse, status: number, code: string, message: string, headers: Record<string, string> = {}): void {
  sendJson(res, status, { errors: [{ code, message, detail: null }] }, headers);
}

/** The OCI error code a registry would send with an injected status. */
function errorCodeFor(status: number, kind: RequestKind): string {
  if (status === 401) return 'UNAUTHORIZED';
  if (status === 403) return 'DENIED';
  if (status === 404) return kind === 'blob' ? 'BLOB_UNKNOWN' : kind === 'manifest' ? 'MANIFEST_UNKNOWN' : 'NAME_UNKNOWN';
  if (status === 429) return 'TOOMANYREQUESTS';
  return 'UNKNOWN';
}
