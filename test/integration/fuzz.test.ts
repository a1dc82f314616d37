// Fuzzing the request surface: over 10,000 generated requests against one in-process Cove (TLS
// listener for HTTP/2, the plain listener beside it for HTTP/1.1) in front of a healthy origin.
// Raw sockets send the malformed and truncated ones, undici the well-formed HTTP/1.1 ones,
// node:http2 the HTTP/2 ones. Random names, references, digests (valid, invalid, odd
// algorithms), ranges, methods, query strings, headers and encodings, from a seeded PRNG
// (COVE_FUZZ_SEED repeats a run). What must hold: no 5xx, every request settles in time, every
// 4xx under /v2/ carries an OCI error body, bytes served for a digest hash to it, Cove still
// answers at the end, and no file appears outside its data directory.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { Pool } from 'undici';
import { dropBody } from '../../src/http-util.js';
import { startTestCove } from '../helpers/cove.js';
import { sha256 } from '../helpers/http.js';
import { makeImage, makeIndex } from '../helpers/images.js';
import { OriginRegistry } from '../helpers/origin-registry.js';

const SEED = process.env.COVE_FUZZ_SEED ? Number(process.env.COVE_FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
/** Requests per transport: undici (HTTP/1.1), raw sockets (mostly malformed), HTTP/2. */
const SCALE = Number(process.env.COVE_FUZZ_SCALE ?? 1);
const ONLY = process.env.COVE_FUZZ_ONLY;
const share = (name: string, n: number) => (ONLY && ONLY !== name ? 0 : Math.round(n * SCALE));
const COUNTS = { undici: share('undici', 5_200), raw: share('raw', 1_800), h2: share('h2', 3_200) };
/** Every request must settle (answer, or a closed connection where that is the right outcome) within this. */
const REQUEST_TIMEOUT_MS = 10_000;
/** The whole run is bounded; past this no new request starts and the test fails. */
const RUN_LIMIT_MS = 150_000;

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

const parent = mkdtempSync(join(tmpdir(), 'cove-fuzz-'));
const dataDir = join(parent, 'data');
mkdirSync(dataDir);
t.teardown(() => rmSync(parent, { recursive: true, force: true }));
const certFile = join(parent, 'cert.pem');
const keyFile = join(parent, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=cove-fuzz', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
const ca = readFileSync(certFile);
/** A name requests try to reach outside the data directory with; no file of that name may appear. */
const ESCAPE = `cove-fuzz-escape-${SEED}`;

/** Every file and folder under `root` (relative), except the data directory's own contents. */
function snapshot(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (path === dataDir) continue;
      out.push(relative(root, path));
      if (statSync(path).isDirectory()) walk(path);
    }
  };
  walk(root);
  return out.sort();
}

// ---- what the requests are made of ----------------------------------------------------------

const images = [makeImage({ layers: [5_000, 120_000], seed: 'fuzz-a' }), makeImage({ layers: [9_000], seed: 'fuzz-b', mediaType: 'oci' })];
const index = makeIndex([{ image: images[0]! }, { image: images[1]!, platform: { os: 'linux', architecture: 'arm64' } }], 'oci');
const REPOS = ['proj/app', 'library/busybox', 'a', 'deep/er/path/x'];
const blobs = new Map<string, Buffer>();
for (const image of images) {
  blobs.set(image.configDigest, image.config);
  for (const layer of image.layers) blobs.set(layer.digest, layer.bytes);
}
const manifests = new Map<string, Buffer>([[images[0]!.manifestDigest, images[0]!.manifest], [images[1]!.manifestDigest, images[1]!.manifest], [index.digest, index.bytes]]);
const KNOWN_TAGS = ['1', 'latest', 'multi'];

const ACCEPTS = [
  'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, */*',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
  '*/*',
  'text/html',
  'application/json;q=0.1, */*;q=0',
  ';;;,,,',
  'application/vnd.oci.image.index.v1+json; q=abc',
];

class Gen {
  readonly #next: () => number;
  constructor(seed: number) {
    this.#next = prng(seed);
  }
  float(): number {
    return this.#next();
  }
  int(max: number): number {
    return Math.floor(this.#next() * max);
  }
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)]!;
  }
  chance(p: number): boolean {
    return this.#next() < p;
  }
  hex(n: number): string {
    let s = '';
    for (let i = 0; i < n; i++) s += '0123456789abcdef'[this.int(16)];
    return s;
  }
  text(n: number, alphabet = 'abcdefghijklmnopqrstuvwxyz0123456789'): string {
    let s = '';
    for (let i = 0; i < n; i++) s += alphabet[this.int(alphabet.length)];
    return s;
  }
  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.int(256);
    return b;
  }

  name(): string {
    switch (this.int(12)) {
      case 0:
      case 1:
      case 2:
      case 3:
        return this.pick(REPOS);
      case 4:
        return `${this.text(1 + this.int(8))}/${this.text(1 + this.int(8))}`;
      case 5:
        return this.pick(['Proj/App', 'proj//app', 'proj/app/', '/proj', '-a', 'a-', 'a..b', 'a__b', 'a___b', 'a--b', 'a.b_c-d', '', '.', '..']);
      case 6:
        return this.pick(['proj/../etc', '%2e%2e/x', 'proj/%2e%2e/%2e%2e', `../../../../tmp/${ESCAPE}`, `..%2f..%2f${ESCAPE}`, 'a/./b', 'a%00b', 'a%2fb']);
      case 7:
        return this.text(200 + this.int(200));
      case 8:
        return Array.from({ length: 1 + this.int(12) }, () => this.text(1 + this.int(5))).join('/');
      case 9:
        return this.pick(['ünïcode', 'a b', 'a\tb', 'a"b', "a'b", 'a<b>', 'a;b', 'a,b', 'a@b', 'a:b', 'a~b']);
      case 10:
        return encodeURIComponent(this.pick(REPOS));
      default:
        return this.text(1 + this.int(30), 'abcdefghijklmnopqrstuvwxyz0123456789._-/');
    }
  }

  digest(): string {
    switch (this.int(10)) {
      case 0:
      case 1:
      case 2:
        return this.pick([...blobs.keys()]);
      case 3:
        return this.pick([...manifests.keys()]);
      case 4:
        return `sha256:${this.hex(64)}`;
      case 5:
        return `sha512:${this.hex(128)}`;
      case 6:
        return this.pick([`sha256:${this.hex(63)}`, `sha256:${this.hex(65)}`, `sha256:${this.hex(64).toUpperCase()}`, 'sha256:', ':', `md5:${this.hex(32)}`, `sha256+b64u:${this.text(43)}`, `SHA256:${this.hex(64)}`]);
      case 7:
        return `${this.text(1 + this.int(10))}:${this.text(1 + this.int(80), 'abcdefghijklmnopqrstuvwxyz0123456789=_-')}`;
      case 8:
        return `sha256:${this.hex(62)}%${this.hex(2)}`;
      default:
        return this.text(1 + this.int(70));
    }
  }

  reference(): string {
    if (this.chance(0.4)) return this.digest();
    switch (this.int(6)) {
      case 0:
      case 1:
        return this.pick(KNOWN_TAGS);
      case 2:
        return this.text(1 + this.int(20), 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-');
      case 3:
        return this.pick(['.hidden', '-dash', 'a'.repeat(128), 'a'.repeat(129), 'tag with space', 'tag%20x', 'ü', '']);
      default:
        return this.text(1 + this.int(10));
    }
  }

  query(): string {
    if (this.chance(0.5)) return '';
    const parts: string[] = [];
    for (let i = 0, n = 1 + this.int(3); i < n; i++) {
      const key = this.pick(['ns', 'n', 'last', 'artifactType', 'x', 'ns', '', '%zz', 'n[]']);
      const value = this.pick(['docker.io', 'ghcr.io', 'harbor.example.com', String(this.int(1_000)), '-1', '99999999999999', this.text(this.int(20)), '%', '%ff%fe', 'a=b', this.reference()]);
      parts.push(`${key}=${value}`);
    }
    return `?${parts.join(this.pick(['&', '&&', ';']))}`;
  }

  path(): string {
    const name = this.name();
    switch (this.int(14)) {
      case 0:
      case 1:
      case 2:
      case 3:
        return `/v2/${name}/blobs/${this.digest()}${this.query()}`;
      case 4:
      case 5:
      case 6:
        return `/v2/${name}/manifests/${this.reference()}${this.query()}`;
      case 7:
        return `/v2/${name}/tags/list${this.query()}`;
      case 8:
        return `/v2/${name}/referrers/${this.digest()}${this.query()}`;
      case 9:
        return this.pick(['/v2/', '/v2', '/', '/healthz', '/readyz', '/metrics', '/_cove/node', '/_cove/status.json', '/_cove/token', '/v2/_catalog', '/v1/search', '/favicon.ico', '//v2/', '/v2//', '/V2/']) + this.query();
      case 10:
        return `/v2/${name}/blobs/uploads/${this.pick(['', this.text(36)])}`;
      case 11:
        return `/v2/${name}/${this.pick(['manifest', 'blob', 'tags', 'referrers', this.text(5)])}/${this.reference()}`;
      case 12:
        return `/v2/${name}/blobs/${this.digest()}/${this.text(3)}`;
      default:
        return `/${this.text(this.int(40), 'abcdefghijklmnopqrstuvwxyz0123456789/%._-~')}`;
    }
  }

  method(): string {
    if (this.chance(0.8)) return this.pick(['GET', 'GET', 'GET', 'HEAD']);
    return this.pick(['POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'TRACE', 'PROPFIND', 'FOO']);
  }

  range(): string {
    return this.pick([
      'bytes=0-',
      `bytes=${this.int(130_000)}-`,
      `bytes=${this.int(5_000)}-${this.int(10_000)}`,
      `bytes=-${this.int(1_000)}`,
      'bytes=0-0',
      'bytes=5-3',
      'bytes=0-1,3-4',
      'bytes=99999999999999999999-',
      'bytes=abc',
      'items=0-1',
      'bytes =0-1',
      '',
    ]);
  }

  headers(): Record<string, string> {
    const h: Record<string, string> = {};
    if (this.chance(0.6)) h.accept = this.pick(ACCEPTS);
    if (this.chance(0.3)) h.range = this.range();
    if (this.chance(0.2)) h['accept-encoding'] = this.pick(['gzip', 'br, gzip, deflate', 'identity', '*', 'zstd;q=1.0, gzip;q=0']);
    if (this.chance(0.1)) h.authorization = this.pick(['Bearer x', 'Basic !!!', `Basic ${Buffer.from('u:p').toString('base64')}`, `Bearer ${this.text(500)}`, 'Negotiate abc', '']);
    if (this.chance(0.1)) h['if-none-match'] = this.pick(['*', `"${this.digest()}"`, 'garbage']);
    if (this.chance(0.05)) h['x-cove-peer'] = this.text(this.int(40));
    if (this.chance(0.05)) h.via = this.pick(['cove/a', `1.1 ${this.text(8)}`, Array.from({ length: 40 }, () => 'x').join(', ')]);
    if (this.chance(0.05)) h['user-agent'] = this.text(this.int(300));
    if (this.chance(0.05)) h[`x-${this.text(5)}`] = this.text(this.int(2_000));
    return h;
  }

  /** A request as raw bytes, malformed more often than not. */
  raw(): { bytes: Buffer; expectAnswer: boolean; halfClose: boolean } {
    const line = (method: string, target: string, version = 'HTTP/1.1') => `${method} ${target} ${version}\r\n`;
    // Connection: close, so the answer is followed by the server's close and the socket is done.
    const wellFormed = (close = true) => `${line(this.method(), this.path())}Host: cove\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
    switch (this.int(16)) {
      case 0:
        return { bytes: this.bytes(1 + this.int(200)), expectAnswer: false, halfClose: this.chance(0.5) };
      case 1:
        return { bytes: Buffer.from(`${line('GET', '/v2/')}Host: cove\r\nX-Big: ${'a'.repeat(66_000 + this.int(10_000))}\r\n\r\n`), expectAnswer: true, halfClose: false };
      case 2: {
        // Truncated anywhere, then the client's side closes.
        const full = wellFormed();
        return { bytes: Buffer.from(full.slice(0, 1 + this.int(full.length - 2))), expectAnswer: false, halfClose: true };
      }
      case 3:
        return { bytes: Buffer.from(`${line('GET', this.path())}Host: cove\r\nBad Header\r\n\r\n`), expectAnswer: true, halfClose: false };
      case 4:
        return { bytes: Buffer.from(`${line('GET', '/v2/')}Host: cove\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n`), expectAnswer: true, halfClose: false };
      case 5:
        return { bytes: Buffer.from(`${line('POST', '/v2/x/blobs/uploads/')}Host: cove\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n${this.text(10)}\r\n`), expectAnswer: true, halfClose: false };
      case 6:
        return { bytes: Buffer.from(`${line('GET', this.path(), this.pick(['HTTP/1.0', 'HTTP/0.9', 'HTTP/2.0', 'HTTP/9.9', 'HTTP/1', 'http/1.1']))}\r\n`), expectAnswer: false, halfClose: false };
      case 7:
        return { bytes: Buffer.from(`${line('GET', `http://cove${this.path()}`)}Host: cove\r\n\r\n`), expectAnswer: true, halfClose: false };
      case 8:
        return { bytes: Buffer.from(`${line(this.pick(['get', 'G ET', 'GET\t', 'CONNECT', 'OPTIONS']), this.pick(['/v2/', '*', 'cove:443', '']))}Host: cove\r\n\r\n`), expectAnswer: true, halfClose: false };
      case 9:
        return { bytes: Buffer.from(`${line('GET', `/v2/${this.bytes(20).toString('latin1')}`)}Host: cove\r\n\r\n`, 'latin1'), expectAnswer: true, halfClose: false };
      case 10:
        return { bytes: Buffer.from(`${line('GET', '/v2/')}Host: cove\r\nContent-Length: ${this.pick(['-1', 'abc', '1, 2', '99999999999999999999'])}\r\n\r\n`), expectAnswer: true, halfClose: false };
      case 11:
        // Pipelined GETs (a HEAD's answer has no body, which would blur where the next one starts).
        return { bytes: Buffer.from(`GET ${this.path()} HTTP/1.1\r\nHost: cove\r\n\r\nGET ${this.path()} HTTP/1.1\r\nHost: cove\r\n\r\nGET /v2/ HTTP/1.1\r\nHost: cove\r\nConnection: close\r\n\r\n`), expectAnswer: true, halfClose: false };
      case 12:
        return { bytes: Buffer.from(`${line('GET', '/v2/')}\r\n`), expectAnswer: true, halfClose: false };
      case 13:
        return { bytes: Buffer.from(`${line('GET', '/v2/')}Host: cove\r\n${'X-Many: y\r\n'.repeat(3_000)}\r\n`), expectAnswer: true, halfClose: false };
      case 14:
        return { bytes: Buffer.from(`${line('GET', `/v2/${'a/'.repeat(3_000)}x/manifests/1`)}Host: cove\r\n\r\n`), expectAnswer: true, halfClose: false };
      default:
        return { bytes: Buffer.from(wellFormed()), expectAnswer: true, halfClose: false };
    }
  }
}

// ---- checking answers -----------------------------------------------------------------------

interface Outcome {
  transport: string;
  method: string;
  path: string;
  status: number;
  contentType: string | undefined;
  body: Buffer;
  headers: Record<string, string | string[] | undefined>;
  range?: string;
}

const failures: string[] = [];
const statusCounts = new Map<number, number>();
let checked = 0;

function fail(o: { transport: string; method: string; path: string }, why: string): void {
  if (failures.length < 50) failures.push(`${o.transport} ${o.method} ${JSON.stringify(o.path.slice(0, 200))}: ${why}`);
}

/** The rules every answer keeps. */
function check(o: Outcome): void {
  checked++;
  statusCounts.set(o.status, (statusCounts.get(o.status) ?? 0) + 1);
  if (o.status >= 500) fail(o, `status ${o.status}: ${o.body.toString('utf8', 0, 300)}`);
  const underV2 = o.path.startsWith('/v2');
  if (underV2 && o.status >= 400 && o.status < 500) {
    if (!/^application\/json/.test(o.contentType ?? '')) fail(o, `${o.status} with content-type ${o.contentType}`);
    else if (o.method !== 'HEAD') {
      try {
        const body = JSON.parse(o.body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> };
        if (!Array.isArray(body.errors) || body.errors.length === 0 || typeof body.errors[0]!.code !== 'string' || typeof body.errors[0]!.message !== 'string') {
          fail(o, `${o.status} body is not an OCI error: ${o.body.toString('utf8', 0, 200)}`);
        }
      } catch {
        fail(o, `${o.status} body is not JSON: ${o.body.toString('utf8', 0, 200)}`);
      }
    }
  }
  // Bytes served for a digest hash to it (or are the right slice of it).
  const m = /^\/v2\/.+\/(blobs|manifests)\/(sha256:[0-9a-f]{64})(?:\?|$)/.exec(o.path);
  if (m && o.method === 'GET' && (o.status === 200 || o.status === 206)) {
    const known = blobs.get(m[2]!) ?? manifests.get(m[2]!);
    if (o.status === 200 && sha256(o.body) !== m[2]) fail(o, `200 body hashes to ${sha256(o.body)}`);
    if (o.status === 206) {
      const cr = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(o.headers['content-range'] ?? ''));
      if (!cr) fail(o, `206 with content-range ${o.headers['content-range']}`);
      else if (known && !o.body.equals(known.subarray(Number(cr[1]), Number(cr[2]) + 1))) fail(o, `206 body is not bytes ${cr[1]}-${cr[2]} of the blob`);
      else if (Number(cr[2]) - Number(cr[1]) + 1 !== o.body.length) fail(o, `206 length ${o.body.length} does not match ${cr[0]}`);
    }
  }
}

/** Runs `count` jobs with at most `width` at a time. */
/**
 * Runs jobs, at most `width` at a time, until `sent()` reaches `count` (a job may decide not to
 * send what it generated), twice `count` attempts are used up, or the run's time is.
 */
async function pool(count: number, width: number, job: () => Promise<void>, until: number, sent: () => number): Promise<void> {
  let attempts = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (sent() < count && attempts < 2 * count && Date.now() < until) {
        attempts++;
        const before = sent();
        await job();
        // A job that sent nothing may not have waited on anything: let the event loop turn.
        if (sent() === before) await new Promise((r) => setImmediate(r));
      }
    }),
  );
}

/** The slowest requests of the run, reported at the end (a slow path is worth a look). */
const slowest: Array<{ ms: number; what: string }> = [];

function withTimeout<T>(what: string, promise: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout;
  const started = Date.now();
  if (process.env.COVE_FUZZ_TRACE) console.error(`start ${started % 1_000_000} ${what.slice(0, 300)}`);
  return Promise.race([
    promise.finally(() => {
      clearTimeout(timer);
      const ms = Date.now() - started;
      if (slowest.length < 5 || ms > slowest[slowest.length - 1]!.ms) {
        slowest.push({ ms, what: what.slice(0, 120) });
        slowest.sort((a, b) => b.ms - a.ms).splice(5);
      }
    }),
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`hang: no outcome within ${REQUEST_TIMEOUT_MS} ms: ${what}`)), REQUEST_TIMEOUT_MS);
    }),
  ]);
}

// ---- the transports ---------------------------------------------------------------------------

async function viaUndici(base: string, gen: Gen, count: number, until: number): Promise<number> {
  const client = new Pool(base, { connections: 8, headersTimeout: REQUEST_TIMEOUT_MS, bodyTimeout: REQUEST_TIMEOUT_MS });
  let sent = 0;
  await pool(
    count,
    8,
    async () => {
      const method = gen.method();
      const path = gen.path();
      const headers = gen.headers();
      // undici refuses a path with bytes a request target cannot hold, and its pool then stalls
      // on the next request (undici 7): such paths go out on raw sockets instead.
      if (/[^\x21-\x7e]/.test(path)) return;
      const body = method === 'POST' || method === 'PUT' || method === 'PATCH' ? gen.bytes(gen.int(300)) : undefined;
      let res;
      try {
        res = await withTimeout(`undici ${method} ${path} ${JSON.stringify(headers).slice(0, 300)}`, client.request({ method, path, headers, body }));
      } catch (err) {
        const e = err as Error & { code?: string };
        // undici refuses some requests itself (bad characters in a path or header): never sent.
        if (e.code === 'UND_ERR_INVALID_ARG' || e.name === 'InvalidArgumentError' || /invalid/i.test(e.message)) return;
        fail({ transport: 'undici', method, path }, `request failed: ${e.code ?? ''} ${e.message}`);
        return;
      }
      sent++;
      let bytes: Buffer;
      try {
        bytes = Buffer.from(await withTimeout(`undici body ${path}`, res.body.arrayBuffer()));
      } catch (err) {
        dropBody(res.body);
        fail({ transport: 'undici', method, path }, `body failed: ${(err as Error).message}`);
        return;
      }
      check({ transport: 'undici', method, path, status: res.statusCode, contentType: String(res.headers['content-type'] ?? ''), body: bytes, headers: res.headers, range: headers.range });
    },
    until,
    () => sent,
  );
  // destroy, not close: close would wait on a request that hung (already reported).
  await client.destroy();
  return sent;
}

async function viaRaw(port: number, tlsPort: number, gen: Gen, count: number, until: number): Promise<number> {
  let sent = 0;
  await pool(
    count,
    12,
    async () => {
      const overTls = gen.chance(0.25);
      const { bytes, expectAnswer, halfClose } = gen.raw();
      const what = `raw${overTls ? '+tls' : ''} ${JSON.stringify(bytes.toString('latin1', 0, 80))}`;
      const got = await withTimeout(
        what,
        new Promise<{ data: Buffer; error: string | null }>((resolve) => {
          const socket: Socket = overTls
            ? tlsConnect({ host: '127.0.0.1', port: tlsPort, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] })
            : netConnect(port, '127.0.0.1');
          const chunks: Buffer[] = [];
          let error: string | null = null;
          socket.on('data', (c: Buffer) => chunks.push(c));
          socket.on('error', (e: Error & { code?: string }) => (error = e.code ?? e.message));
          socket.on('close', () => resolve({ data: Buffer.concat(chunks), error }));
          socket.once(overTls ? 'secureConnect' : 'connect', () => {
            socket.write(bytes);
            if (halfClose) socket.end();
          });
          // The answer to a request that was whole comes at once; then this side closes.
          setTimeout(() => socket.end(), 1_500).unref();
        }),
      ).catch((err: Error) => {
        fail({ transport: 'raw', method: '-', path: what }, err.message);
        return null;
      });
      if (got === null) return;
      sent++;
      const text = got.data.toString('latin1');
      const status = /^HTTP\/1\.[01] (\d{3}) /.exec(text);
      if (!status) {
        if (expectAnswer) fail({ transport: 'raw', method: '-', path: what }, `no answer (${got.error ?? 'closed'}): ${JSON.stringify(text.slice(0, 100))}`);
        return;
      }
      // Every answer on the connection (pipelined requests get several).
      for (const answer of text.split(/(?=HTTP\/1\.[01] \d{3} )/)) {
        const code = Number(/^HTTP\/1\.[01] (\d{3}) /.exec(answer)?.[1] ?? 0);
        const head = answer.slice(0, answer.indexOf('\r\n\r\n'));
        const type = /\r\ncontent-type: *([^\r\n]*)/i.exec(head)?.[1];
        const bodyText = answer.slice(head.length + 4);
        // Every 4xx on a raw connection, whatever its target, must carry an OCI error (held to the
        // /v2/ rule); 2xx bodies here are not checked (pipelined answers share one buffer).
        const head0 = bytes.toString('latin1', 0, 5);
        check({ transport: 'raw', method: head0 === 'HEAD ' ? 'HEAD' : 'GET', path: code >= 400 ? `/v2/(raw) ${what}` : '', status: code, contentType: type, body: Buffer.from(bodyText, 'latin1'), headers: {} });
      }
    },
    until,
    () => sent,
  );
  return sent;
}

async function viaH2(url: string, gen: Gen, count: number, until: number): Promise<number> {
  let session: ClientHttp2Session | null = null;
  /** Sessions the server sent GOAWAY on (its answer to a header block over the limit): their later streams are refused. */
  const goneAway = new WeakSet<ClientHttp2Session>();
  const connect = () => {
    const s = h2connect(url, { ca, maxSessionMemory: 50 });
    s.on('error', () => undefined);
    s.on('goaway', () => {
      goneAway.add(s);
      if (session === s) session = null;
    });
    s.on('close', () => {
      if (session === s) session = null;
    });
    return s;
  };
  let sent = 0;
  await pool(
    count,
    24,
    async () => {
      session ??= connect();
      const method = gen.method();
      const path = gen.path();
      const headers = gen.headers();
      if (gen.chance(0.02)) headers['x-big'] = 'z'.repeat(70_000);
      const s = session;
      let stream;
      try {
        stream = s.request({ ':method': method, ':path': path, ...headers }, { endStream: !(method === 'POST' || method === 'PUT') });
      } catch {
        // node's client refuses some header values itself, or the session is going away: never sent.
        if ((s.closed || s.destroyed || goneAway.has(s)) && session === s) session = null;
        return;
      }
      if (method === 'POST' || method === 'PUT') stream.end(gen.bytes(gen.int(300)));
      const done = new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer } | { reset: number | undefined; error: string }>((resolve) => {
        let response: Record<string, string | string[] | undefined> = {};
        const chunks: Buffer[] = [];
        stream.on('response', (h) => (response = h as Record<string, string | string[] | undefined>));
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => resolve({ status: Number(response[':status']), headers: response, body: Buffer.concat(chunks) }));
        stream.on('error', (e: Error) => resolve({ reset: stream.rstCode, error: e.message }));
      });
      const r = await withTimeout(`h2 ${method} ${path}`, done).catch((err: Error) => {
        stream.close();
        fail({ transport: 'h2', method, path }, err.message);
        return null;
      });
      if (r === null) return;
      sent++;
      if ('reset' in r) {
        // A stream reset is the protocol's answer to a header list over the limit, and (from
        // nghttp2, PROTOCOL_ERROR) to a :path or header value with bytes HTTP/2 forbids.
        const forbidden = /[^\x21-\x7e]/.test(path) || Object.values(headers).some((v) => /[^\x20-\x7e]/.test(v) || /^\s|\s$/.test(v));
        if (!headers['x-big'] && !(forbidden && r.reset === 1) && !goneAway.has(s)) fail({ transport: 'h2', method, path }, `stream failed: ${r.error} (rst ${r.reset})`);
        return;
      }
      check({ transport: 'h2', method, path, status: r.status, contentType: r.headers['content-type'] as string | undefined, body: r.body, headers: r.headers, range: headers.range });
    },
    until,
    () => sent,
  );
  (session as ClientHttp2Session | null)?.close();
  return sent;
}

// ---- the run ------------------------------------------------------------------------------------

t.test(`fuzz the request surface (seed ${SEED}; COVE_FUZZ_SEED=${SEED} repeats it)`, async (t) => {
  t.comment(`COVE_FUZZ_SEED=${SEED}`);
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown) => unhandled.push(err);
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => process.off('unhandledRejection', onUnhandled));

  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', images[0]!);
  origin.putImage('proj/app', 'latest', images[1]!);
  origin.putImage('library/busybox', 'latest', images[1]!);
  origin.putIndex('proj/app', 'multi', index, images);
  origin.putImage('deep/er/path/x', '1', images[0]!);

  const before = snapshot(parent);
  const beforeTmp = readdirSync(tmpdir()).filter((n) => n.includes(ESCAPE));
  const cove = await startTestCove(t, origin.url, { COVE_TLS_CERT: certFile, COVE_TLS_KEY: keyFile, COVE_LISTEN_HTTP: '127.0.0.1:0', COVE_TAG_TTL: '1h' }, { dataDir, keepData: true });
  const t0 = Date.now();
  const until = t0 + RUN_LIMIT_MS;
  // One generator per transport: each sequence depends on the seed only, not on timing.
  const [h1, raw, h2] = await Promise.all([
    viaUndici(`http://127.0.0.1:${cove.httpPort}`, new Gen(SEED), COUNTS.undici, until),
    viaRaw(cove.httpPort!, cove.port, new Gen(SEED + 1), COUNTS.raw, until),
    viaH2(`https://127.0.0.1:${cove.port}`, new Gen(SEED + 2), COUNTS.h2, until),
  ]);
  const ms = Date.now() - t0;
  t.comment(`${h1 + raw + h2} requests in ${ms} ms (undici ${h1}, raw ${raw}, http2 ${h2}); statuses ${JSON.stringify(Object.fromEntries([...statusCounts].sort((a, b) => a[0] - b[0])))}`);
  t.comment(`slowest: ${JSON.stringify(slowest)}`);
  t.ok(ms < RUN_LIMIT_MS, `the run finished within ${RUN_LIMIT_MS} ms`);
  t.ok(h1 + raw + h2 >= 10_000, `at least 10,000 requests were sent (${h1 + raw + h2})`);
  t.ok(checked >= 9_000, `answers checked: ${checked}`);
  t.same(failures, [], 'no 5xx, no hang, OCI errors on /v2/, bytes that match their digests');
  t.same(unhandled.map(String), [], 'no unhandled rejection');
  t.equal(origin.requests.filter((r) => r.status >= 500).length, 0, 'the origin stayed healthy (no 5xx from it to excuse)');

  // Still answering, on both listeners.
  const plain = await fetch(`http://127.0.0.1:${cove.httpPort}/v2/`);
  t.equal(plain.status, 200, 'the plain listener answers /v2/');
  await plain.arrayBuffer();
  const session = h2connect(`https://127.0.0.1:${cove.port}`, { ca });
  session.on('error', () => undefined);
  const status = await new Promise<number>((resolve) => {
    const req = session.request({ ':path': '/v2/' });
    req.on('response', (h) => resolve(Number(h[':status'])));
    req.on('error', () => resolve(0));
    req.resume();
  });
  session.close();
  t.equal(status, 200, 'the TLS listener answers /v2/ over HTTP/2');

  await cove.stop();
  t.same(snapshot(parent), before, 'no file appeared outside the data directory');
  t.same(readdirSync(tmpdir()).filter((n) => n.includes(ESCAPE)), beforeTmp, 'nothing named by a path-escape attempt appeared in the temp folder');
});
