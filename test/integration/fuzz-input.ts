// What the fuzz test's requests are made of: the images the origin holds, a seeded PRNG, and
// generators of names, references, digests, paths, methods, headers and raw (often malformed)
// requests. Shared by the test and its HTTP/2 client process, so both draw the same sequence.
import { makeImage, makeIndex } from '../helpers/images.js';

/** Every request must settle (answer, or a closed connection where that is the right outcome) within this. */
export const REQUEST_TIMEOUT_MS = 10_000;

/** mulberry32: small, fast, and the same sequence for the same seed everywhere. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let x = a;
    x = Math.imul(x ^ (x >>> 15), x | 1);
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61);
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
}

export const images = [makeImage({ layers: [5_000, 120_000], seed: 'fuzz-a' }), makeImage({ layers: [9_000], seed: 'fuzz-b', mediaType: 'oci' })];
export const index = makeIndex([{ image: images[0]! }, { image: images[1]!, platform: { os: 'linux', architecture: 'arm64' } }], 'oci');
export const REPOS = ['proj/app', 'library/busybox', 'a', 'deep/er/path/x'];
export const blobs = new Map<string, Buffer>();
for (const image of images) {
  blobs.set(image.configDigest, image.config);
  for (const layer of image.layers) blobs.set(layer.digest, layer.bytes);
}
export const manifests = new Map<string, Buffer>([[images[0]!.manifestDigest, images[0]!.manifest], [images[1]!.manifestDigest, images[1]!.manifest], [index.digest, index.bytes]]);
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


export class Gen {
  readonly #next: () => number;
  /** A name path-escape attempts use: no file of that name may appear anywhere. */
  readonly escape: string;
  constructor(seed: number, escape: string) {
    this.#next = prng(seed);
    this.escape = escape;
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
        return this.pick(['proj/../etc', '%2e%2e/x', 'proj/%2e%2e/%2e%2e', `../../../../tmp/${this.escape}`, `..%2f..%2f${this.escape}`, 'a/./b', 'a%00b', 'a%2fb']);
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



/** Runs `count` jobs with at most `width` at a time. */
/**
 * Runs jobs, at most `width` at a time, until `sent()` reaches `count` (a job may decide not to
 * send what it generated), twice `count` attempts are used up, or the run's time is.
 */
export async function pool(count: number, width: number, job: () => Promise<void>, until: number, sent: () => number): Promise<void> {
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
export const slowest: Array<{ ms: number; what: string }> = [];

export function withTimeout<T>(what: string, promise: Promise<T>): Promise<T> {
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
