// Harness for end-to-end tests against real registry software (Debian's docker-registry, skopeo,
// umoci, containerd/ctr, dockerd) and for scripts/bench.ts: temp dirs, child processes stopped by
// PID, the origin registry and its access log, test images, and Cove itself as a child process.
// Everything listens on 127.0.0.1; every wait is bounded; everything started is stopped on cleanup.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { request, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { arch, cpus, platform, release, tmpdir, totalmem } from 'node:os';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../helpers/process.js';

/** The part of a tap Test the harness uses (kept structural so bench.ts needs no tap). */
export interface TestLike {
  pass(message: string, extra: { skip: string }): unknown;
  fail(message: string): unknown;
  comment(...message: unknown[]): unknown;
  teardown(fn: () => unknown): unknown;
}

/** Repository root (this file runs from dist/test/e2e/). */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const COVE_CLI = join(ROOT, 'dist', 'src', 'cli.js');

const PACKAGE_OF: Record<string, string> = {
  'docker-registry': 'docker-registry',
  skopeo: 'skopeo',
  umoci: 'umoci',
  containerd: 'containerd',
  ctr: 'containerd',
  dockerd: 'docker.io',
  docker: 'docker.io',
  htpasswd: 'apache2-utils',
  curl: 'curl',
  'avahi-browse': 'avahi-utils',
  'avahi-daemon': 'avahi-daemon',
  'dbus-daemon': 'dbus',
  nginx: 'nginx',
  openssl: 'openssl',
};

// containerd, dockerd and docker-registry live in sbin on Debian; some shells leave it off PATH.
for (const dir of ['/usr/local/sbin', '/usr/sbin', '/sbin']) {
  const path = process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin';
  if (!path.split(delimiter).includes(dir)) process.env.PATH = `${path}${delimiter}${dir}`;
}

/** Absolute path of `name` on PATH, or null. */
export function which(name: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(delimiter)) {
    const p = join(dir, name);
    if (dir && existsSync(p)) return p;
  }
  return null;
}

/**
 * The Debian docker CLI. /usr/local/bin/docker on these machines is a newer CLI that may not talk
 * to Debian's 20.10 daemon (API 1.41), so the packaged one wins when present.
 */
export function dockerCli(): string | null {
  return existsSync('/usr/bin/docker') ? '/usr/bin/docker' : which('docker');
}

/** Under CI a missing prerequisite is a failure; elsewhere it is a visible skip. */
function missing(t: TestLike, reason: string): false {
  const ci = process.env.CI;
  if (ci && ci !== 'false' && ci !== '0') t.fail(`${reason} (CI is set, so this is a failure, not a skip)`);
  else {
    t.comment(`skipping: ${reason}`);
    // A skipped assertion: shows as "# SKIP <reason>" and counts as a skip in tap's summary.
    t.pass('end-to-end prerequisites', { skip: reason });
  }
  return false;
}

/** True when every tool is installed; otherwise skips (or fails under CI) naming what is missing. */
export function requireTools(t: TestLike, names: string[]): boolean {
  const absent = names.filter((n) => which(n) === null);
  if (absent.length === 0) return true;
  const pkgs = [...new Set(absent.map((n) => PACKAGE_OF[n] ?? n))];
  return missing(t, `${absent.join(', ')} not installed (apt-get install ${pkgs.join(' ')})`);
}

/** True when every file exists (built artefacts, say); otherwise skips (or fails under CI), saying how to make them. */
export function requireFiles(t: TestLike, files: string[], howToMake: string): boolean {
  const absent = files.filter((f) => !existsSync(f));
  if (absent.length === 0) return true;
  return missing(t, `${absent.join(', ')} not found (${howToMake})`);
}

/** True when running as root (containerd and dockerd need it); otherwise skips (or fails under CI). */
export function requireRoot(t: TestLike, what: string): boolean {
  if (process.getuid?.() === 0) return true;
  return missing(t, `${what} needs root`);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A timer for races: unref'd, so a race that is already won does not keep the process alive. */
const deadline = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

// Last resort when this process exits without running its cleanups (an uncaught error, a runner
// timeout): SIGKILL every child still alive, by PID, and remove the temp dirs. Normal runs do both
// earlier, gently, through Cleanup.
const live = new Set<ChildProcess>();
const liveDirs = new Set<string>();
process.on('exit', () => {
  for (const child of live) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  for (const dir of liveDirs) {
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      // best effort on the way out
    }
  }
});

/** Collects cleanups and runs them last-in first-out, once. */
export class Cleanup {
  private readonly fns: Array<() => unknown> = [];
  private done = false;
  add(fn: () => unknown): void {
    this.fns.push(fn);
  }
  async run(): Promise<void> {
    if (this.done) return;
    this.done = true;
    while (this.fns.length > 0) {
      const fn = this.fns.pop()!;
      try {
        await fn();
      } catch (err) {
        process.stderr.write(`cleanup: ${err instanceof Error ? err.message : String(err)}\n`);
      }
    }
  }
  /** Registers `run` as a tap teardown. */
  static forTest(t: TestLike): Cleanup {
    const c = new Cleanup();
    t.teardown(() => c.run());
    return c;
  }
}

/** A fresh directory under the system temp dir, removed on cleanup. Short paths: unix sockets live there. */
export function tempDir(cleanup: Cleanup, prefix = 'cove-e2e-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  liveDirs.add(dir);
  cleanup.add(() => {
    rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    liveDirs.delete(dir);
  });
  return dir;
}

/** A child process with its output in a log file. */
export class Proc {
  readonly exited: Promise<number | null>;
  exitCode: number | null | undefined = undefined;
  constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly logFile: string,
  ) {
    live.add(child);
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        live.delete(child);
        this.exitCode = code ?? (signal ? -1 : null);
        resolve(code);
      });
      child.once('error', () => {
        this.exitCode = -1;
        resolve(-1);
      });
    });
  }
  get pid(): number {
    return this.child.pid ?? -1;
  }
  get running(): boolean {
    return this.exitCode === undefined;
  }
  log(): string {
    try {
      return readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }
  tail(lines = 20): string {
    return this.log().split('\n').slice(-lines).join('\n');
  }
  /** The log's JSON lines (a Cove's pino output), skipping other lines and one cut by a kill. */
  jsonLines(): Array<Record<string, unknown>> {
    const out: Array<Record<string, unknown>> = [];
    for (const line of this.log().split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a line cut by a kill
      }
    }
    return out;
  }
  /** SIGTERM this PID, wait up to `graceMs`, then SIGKILL it. Never signals anything else. */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.running || this.child.pid === undefined) return;
    this.child.kill('SIGTERM');
    const timedOut = await Promise.race([this.exited.then(() => false), deadline(graceMs).then(() => true)]);
    if (timedOut && this.running) {
      this.child.kill('SIGKILL');
      await Promise.race([this.exited, deadline(5000)]);
    }
  }
}

/** Starts `cmd args` with stdout+stderr appended to `logFile`; stopped on cleanup. */
export function startProc(
  cleanup: Cleanup,
  name: string,
  cmd: string,
  args: string[],
  opts: { logFile: string; env?: NodeJS.ProcessEnv; cwd?: string; graceMs?: number },
): Proc {
  const fd = openSync(opts.logFile, 'a');
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: opts.env ?? process.env, cwd: opts.cwd });
  closeSync(fd);
  const proc = new Proc(name, child, opts.logFile);
  cleanup.add(() => proc.stop(opts.graceMs));
  return proc;
}

/** Runs a command to completion (bounded); throws with its output when it fails. */
export async function run(
  cmd: string,
  args: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string; allowFail?: boolean } = {},
): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const ms = performance.now() - t0;
      if ((code !== 0 || signal) && !opts.allowFail) {
        reject(new Error(`${cmd} ${args.join(' ')} -> ${signal ? `killed by ${signal} (timeout?)` : `exit ${code}`}\n${stderr}${stdout}`.trim()));
      } else resolve({ code, stdout, stderr, ms });
    });
    if (child.stdin) {
      child.stdin.on('error', () => undefined); // a command that exits without reading its input
      child.stdin.end(opts.input);
    }
  });
}

/** Polls until `fn` is true, at most `timeoutMs`; throws `what` on timeout. */
export async function waitFor(what: string, fn: () => boolean | Promise<boolean>, timeoutMs = 20_000, everyMs = 100): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await fn()) return;
    await sleep(everyMs);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

/**
 * One HTTP GET on loopback; body discarded unless `keep`; bounded by `timeoutMs`. An https: URL is
 * fetched without checking the certificate (the loopback test servers' own).
 */
export function httpGet(
  url: string,
  opts: { headers?: Record<string, string>; keep?: boolean; timeoutMs?: number; method?: string; noHash?: boolean } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; bytes: number; body: Buffer; sha256: string }> {
  return new Promise((resolve, reject) => {
    const options = { method: opts.method ?? 'GET', headers: opts.headers ?? {}, timeout: opts.timeoutMs ?? 30_000 };
    const send = (onResponse: (res: IncomingMessage) => void) =>
      url.startsWith('https:') ? httpsRequest(url, { ...options, rejectUnauthorized: false }, onResponse) : request(url, options, onResponse);
    const req = send((res) => {
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (c: Buffer) => {
        bytes += c.length;
        if (!opts.noHash) hash.update(c);
        if (opts.keep) chunks.push(c);
      });
      res.on('end', () =>
        resolve({ status: res.statusCode ?? 0, headers: res.headers, bytes, body: Buffer.concat(chunks), sha256: `sha256:${hash.digest('hex')}` }),
      );
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** True once `url` answers 200. */
async function answers200(url: string): Promise<boolean> {
  try {
    return (await httpGet(url, { timeoutMs: 1000 })).status === 200;
  } catch {
    return false;
  }
}

// ------------------------------------------------------------------------------------------ origin

/** One line of the distribution registry's combined-format access log. */
export interface AccessEntry {
  method: string;
  path: string;
  status: number;
  bytes: number;
  agent: string;
}

const ACCESS_LINE = /^(\S+) \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-) "[^"]*" "([^"]*)"/;

/** Parses the access lines (skips the registry's own structured log lines). */
export function parseAccessLog(text: string): AccessEntry[] {
  const out: AccessEntry[] = [];
  for (const line of text.split('\n')) {
    const m = ACCESS_LINE.exec(line);
    if (!m) continue;
    out.push({ method: m[2]!, path: m[3]!, status: Number(m[4]), bytes: m[5] === '-' ? 0 : Number(m[5]), agent: m[6]! });
  }
  return out;
}

export const isBlobPath = (path: string) => /^\/v2\/.+\/blobs\/sha(256|512):[0-9a-f]+/.test(path);

/** A Debian docker-registry on 127.0.0.1, storage in its own temp dir. */
export class Registry {
  private mark = 0;
  constructor(
    public proc: Proc,
    readonly port: number,
    readonly dir: string,
    readonly auth: { username: string; password: string } | null,
    /** Whether it listens with TLS (startRegistry's `tls`). */
    readonly tls = false,
  ) {}
  get url(): string {
    return `${this.tls ? 'https' : 'http'}://127.0.0.1:${this.port}`;
  }
  get hostPort(): string {
    return `127.0.0.1:${this.port}`;
  }
  /** Stops the registry; its storage stays, and restart() brings it back on the same port. */
  async stop(): Promise<void> {
    await this.proc.stop(5000);
  }

  async restart(cleanup: Cleanup): Promise<void> {
    this.proc = startProc(cleanup, this.proc.name, 'docker-registry', ['serve', join(this.dir, 'config.yml')], { logFile: this.proc.logFile, graceMs: 5000 });
    await waitFor(`docker-registry back on ${this.url}/v2/`, async () => {
      if (!this.proc.running) throw new Error(`docker-registry exited at restart:\n${this.proc.tail()}`);
      return httpGet(`${this.url}/v2/`, { timeoutMs: 1000 }).then(
        (r) => r.status === 200 || r.status === 401,
        () => false,
      );
    });
  }

  /** All access-log entries so far. */
  entries(): AccessEntry[] {
    return parseAccessLog(this.proc.log());
  }
  /** Remembers the current end of the access log; `since()` returns what came after. */
  markNow(): void {
    this.mark = this.entries().length;
  }
  since(): AccessEntry[] {
    return this.entries().slice(this.mark);
  }
  /** Blob GETs (and their body bytes) in `entries`. */
  static blobGets(entries: AccessEntry[]): { requests: number; bytes: number } {
    const gets = entries.filter((e) => e.method === 'GET' && isBlobPath(e.path));
    return { requests: gets.length, bytes: gets.reduce((n, e) => n + e.bytes, 0) };
  }
}

/**
 * podman's global options that keep it inside `dir`: its own storage (vfs), run root, temp and
 * network config, no systemd cgroups or journald — nothing of the host's containers touched.
 */
export function podmanIsolation(dir: string): string[] {
  return [
    '--root', join(dir, 'root'),
    '--runroot', join(dir, 'runroot'),
    '--tmpdir', join(dir, 'tmp'),
    '--network-config-dir', join(dir, 'net'),
    '--volumepath', join(dir, 'volumes'),
    '--storage-driver', 'vfs',
    '--cgroup-manager', 'cgroupfs',
    '--events-backend', 'file',
  ];
}

/** Host paths podman writes despite its per-run dirs (most specific first, so removal is exact). */
const PODMAN_HOST_SIDE_EFFECTS = [
  '/var/lib/containers/cache/blob-info-cache-v1.boltdb',
  '/var/lib/containers/cache',
  '/var/lib/containers',
  '/run/containers/networks',
  '/run/containers',
  '/run/libpod',
  '/dev/shm/libpod_lock',
  '/etc/cni/net.d/cni.lock',
  '/etc/containers/networks',
];

/**
 * Removes, at cleanup, the host paths podman creates that did not exist before, and returns
 * them. Register it before anything podman runs in, so it runs last.
 */
export function removePodmanSideEffects(cleanup: Cleanup): string[] {
  const absentBefore = PODMAN_HOST_SIDE_EFFECTS.filter((p) => !existsSync(p));
  cleanup.add(() => {
    for (const p of absentBefore) rmSync(p, { recursive: true, force: true });
  });
  return absentBefore;
}

/**
 * Starts docker-registry (optionally with htpasswd auth, with bearer-token auth against a token
 * server such as token-server.ts, in proxy mode, or listening with TLS on a certificate and key
 * in PEM files) and waits for /v2/.
 */
export async function startRegistry(
  cleanup: Cleanup,
  opts: {
    auth?: { username: string; password: string };
    token?: { realm: string; service: string; issuer: string; rootCertBundle: string };
    proxyRemote?: string;
    name?: string;
    tls?: { certificate: string; key: string };
  } = {},
): Promise<Registry> {
  if (opts.auth && opts.token) throw new Error('startRegistry: auth (htpasswd) and token are exclusive');
  const dir = tempDir(cleanup, 'cove-reg-');
  const port = await freePort();
  const name = opts.name ?? (opts.proxyRemote ? 'proxy' : 'origin');
  const lines = [
    'version: 0.1',
    'log:',
    '  level: info',
    `  fields: {service: ${name}}`,
    'storage:',
    `  filesystem: {rootdirectory: ${join(dir, 'data')}}`,
    '  delete: {enabled: true}',
    '  cache: {blobdescriptor: inmemory}',
    'http:',
    `  addr: 127.0.0.1:${port}`,
    `  secret: cove-e2e-${name}-${port}`,
  ];
  if (opts.tls) lines.push('  tls:', `    certificate: ${opts.tls.certificate}`, `    key: ${opts.tls.key}`);
  if (opts.auth) {
    const htpasswd = await run('htpasswd', ['-Bbn', opts.auth.username, opts.auth.password]);
    writeFileSync(join(dir, 'htpasswd'), htpasswd.stdout.split('\n').filter(Boolean).join('\n') + '\n');
    lines.push('auth:', '  htpasswd:', '    realm: basic-realm', `    path: ${join(dir, 'htpasswd')}`);
  }
  if (opts.token) {
    const tk = opts.token;
    lines.push('auth:', '  token:', `    realm: ${tk.realm}`, `    service: ${tk.service}`, `    issuer: ${tk.issuer}`, `    rootcertbundle: ${tk.rootCertBundle}`);
  }
  if (opts.proxyRemote) lines.push('proxy:', `  remoteurl: ${opts.proxyRemote}`);
  writeFileSync(join(dir, 'config.yml'), lines.join('\n') + '\n');
  // docker-registry needs ~2 s to stop on SIGTERM.
  const proc = startProc(cleanup, name, 'docker-registry', ['serve', join(dir, 'config.yml')], { logFile: join(dir, 'registry.log'), graceMs: 5000 });
  const registry = new Registry(proc, port, dir, opts.auth ?? null, opts.tls !== undefined);
  await waitFor(
    `docker-registry on ${registry.url}/v2/ (log: ${proc.logFile})`,
    async () => {
      if (!proc.running) throw new Error(`docker-registry exited at start:\n${proc.tail()}`);
      try {
        const s = (await httpGet(`${registry.url}/v2/`, { timeoutMs: 1000 })).status;
        return s === 200 || s === 401;
      } catch {
        return false;
      }
    },
    20_000,
  );
  return registry;
}

// ------------------------------------------------------------------------------------------ images

/**
 * Deterministic incompressible bytes: AES-256-CTR keystream keyed by `seed`. It looks like
 * /dev/urandom to gzip (so layer sizes are what we ask for) but repeats for the same seed.
 */
export function pseudoRandomBytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const iv = createHash('md5').update(seed).digest();
  const cipher = createCipheriv('aes-256-ctr', key, iv);
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/** A built image in an OCI layout, with what its manifest says. */
export interface TestImage {
  layout: string;
  tag: string;
  manifestDigest: string;
  manifestMediaType: string;
  config: Descriptor;
  layers: Descriptor[];
  /** Manifest + config + layers, in bytes. */
  totalBytes: number;
}

/** Builds `layout:tag` with umoci: one layer per size in `layerBytes`, content from `seed`. */
export async function buildImage(layoutDir: string, tag: string, layerBytes: number[], seed: string): Promise<TestImage> {
  if (!existsSync(join(layoutDir, 'index.json'))) await run('umoci', ['init', '--layout', layoutDir]);
  const ref = `${layoutDir}:${tag}`;
  await run('umoci', ['new', '--image', ref]);
  const src = mkdtempSync(join(tmpdir(), 'cove-src-'));
  try {
    for (const [i, size] of layerBytes.entries()) {
      const dir = join(src, `l${i}`);
      mkdirSync(dir);
      writeFileSync(join(dir, 'blob.bin'), pseudoRandomBytes(`${seed}/${tag}/${i}`, size));
      await run('umoci', ['insert', '--image', ref, dir, `/data/l${i}`], { timeoutMs: 300_000 });
      rmSync(dir, { recursive: true, force: true });
    }
  } finally {
    rmSync(src, { recursive: true, force: true });
  }
  await run('umoci', ['config', '--image', ref, '--config.cmd', '/bin/sh', '--config.label', `cove.e2e=${seed}`]);
  await run('umoci', ['gc', '--layout', layoutDir]);
  return readImage(layoutDir, tag);
}

/** Reads `tag` from an OCI layout. */
export function readImage(layoutDir: string, tag: string): TestImage {
  const index = JSON.parse(readFileSync(join(layoutDir, 'index.json'), 'utf8')) as {
    manifests: Array<Descriptor & { annotations?: Record<string, string> }>;
  };
  const desc = index.manifests.find((m) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  if (!desc) throw new Error(`no ${tag} in ${layoutDir}`);
  const manifest = JSON.parse(readFileSync(blobPath(layoutDir, desc.digest), 'utf8')) as { config: Descriptor; layers: Descriptor[] };
  const totalBytes = desc.size + manifest.config.size + manifest.layers.reduce((n, l) => n + l.size, 0);
  return {
    layout: layoutDir,
    tag,
    manifestDigest: desc.digest,
    manifestMediaType: desc.mediaType,
    config: manifest.config,
    layers: manifest.layers,
    totalBytes,
  };
}

function blobPath(layoutDir: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  return join(layoutDir, 'blobs', alg!, hex!);
}

/** A ustar header for one regular file `name` of `size` bytes (mode 0644, owner 0, mtime 0). */
function tarHeader(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  h.write(name, 0, 100);
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  h.write('00000000000\0', 136);
  h.write(' '.repeat(8), 148); // the checksum counts its own field as spaces
  h.write('0', 156);
  h.write('ustar\x0000', 257);
  const sum = h.reduce((n, b) => n + b, 0);
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return h;
}

/** Writes `chunks` to `file`, hashing them on the way: their digest and length. */
async function writeHashed(file: string, chunks: Iterable<Buffer>): Promise<{ digest: string; size: number }> {
  const hash = createHash('sha256');
  const fh = await open(file, 'w');
  let size = 0;
  try {
    for (const c of chunks) {
      hash.update(c);
      await fh.write(c);
      size += c.length;
    }
  } finally {
    await fh.close();
  }
  return { digest: `sha256:${hash.digest('hex')}`, size };
}

/** The tar of one file `data.bin` of `size` bytes: a 1 MiB block from `seed`, numbered, repeated. */
function* numberedBlockTar(seed: string, size: number): Generator<Buffer> {
  const block = pseudoRandomBytes(seed, 1024 * 1024);
  yield tarHeader('data.bin', size);
  for (let at = 0, i = 0; at < size; at += block.length, i++) {
    const b = Buffer.from(block.subarray(0, Math.min(block.length, size - at)));
    if (b.length >= 8) b.writeBigUInt64BE(BigInt(i));
    yield b;
  }
  yield Buffer.alloc((512 - (size % 512)) % 512 + 1024); // pad the file to a record, then the end-of-archive blocks
}

/**
 * Builds `layout:tag` without umoci, fast enough for GB layers: one layer per size in `fileBytes`,
 * each an uncompressed tar of one file `data.bin` of that size. Its content is a pseudo-random
 * 1 MiB block (from `seed` and the layer's index) repeated, each copy carrying its number in its
 * first 8 bytes: gzip finds nothing to compress (its window is 32 KiB) and no two blocks are alike.
 * pushImage keeps these layers as they are (--preserve-digests).
 */
export async function buildTarImage(layoutDir: string, tag: string, fileBytes: number[], seed: string): Promise<TestImage> {
  mkdirSync(join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  const indexFile = join(layoutDir, 'index.json');
  if (!existsSync(indexFile)) {
    writeFileSync(join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
    writeFileSync(indexFile, JSON.stringify({ schemaVersion: 2, manifests: [] }));
  }
  const put = async (mediaType: string, chunks: Iterable<Buffer>): Promise<Descriptor> => {
    const tmp = join(layoutDir, 'blobs', 'sha256', `.tmp-${process.pid}-${Date.now()}`);
    const { digest, size } = await writeHashed(tmp, chunks);
    renameSync(tmp, blobPath(layoutDir, digest));
    return { mediaType, digest, size };
  };
  const layers: Descriptor[] = [];
  for (const [i, size] of fileBytes.entries()) layers.push(await put('application/vnd.oci.image.layer.v1.tar', numberedBlockTar(`${seed}/${tag}/${i}`, size)));
  const json = (value: unknown, mediaType: string) => put(mediaType, [Buffer.from(JSON.stringify(value))]);
  const config = await json(
    { architecture: 'amd64', os: 'linux', config: { Labels: { 'cove.e2e': seed } }, rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } },
    'application/vnd.oci.image.config.v1+json',
  );
  const manifest = await json({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers }, 'application/vnd.oci.image.manifest.v1+json');
  const index = JSON.parse(readFileSync(indexFile, 'utf8')) as { manifests: Array<Descriptor & { annotations?: Record<string, string> }> };
  index.manifests = index.manifests.filter((m) => m.annotations?.['org.opencontainers.image.ref.name'] !== tag);
  index.manifests.push({ ...manifest, annotations: { 'org.opencontainers.image.ref.name': tag } });
  writeFileSync(indexFile, JSON.stringify(index));
  return readImage(layoutDir, tag);
}

/**
 * Pushes an image from its OCI layout to `registry` as `repo:tag` with skopeo, with `creds` when
 * given (a token-auth registry: a user the token server grants push), else the registry's htpasswd ones.
 */
export async function pushImage(image: TestImage, registry: Registry, repoTag: string, creds?: { username: string; password: string }): Promise<void> {
  const as = creds ?? registry.auth;
  const credArgs = as ? ['--dest-creds', `${as.username}:${as.password}`] : [];
  // Uncompressed layers (buildTarImage's) would be gzipped on the way, giving the registry other digests.
  const keep = image.layers.some((l) => l.mediaType.endsWith('.tar')) ? ['--preserve-digests'] : [];
  await run('skopeo', ['copy', '-q', '--dest-tls-verify=false', ...keep, ...credArgs, `oci:${image.layout}:${image.tag}`, `docker://${registry.hostPort}/${repoTag}`], {
    timeoutMs: 300_000,
  });
}

/** `skopeo copy docker://REF dir:OUT` (plain HTTP), timed. */
export async function skopeoPull(ref: string, outDir: string, creds?: string, timeoutMs = 300_000): Promise<number> {
  rmSync(outDir, { recursive: true, force: true });
  const extra = creds ? ['--src-creds', creds] : [];
  const r = await run('skopeo', ['copy', '-q', '--src-tls-verify=false', ...extra, `docker://${ref}`, `dir:${outDir}`], { timeoutMs });
  return r.ms;
}

/** Checks a skopeo `dir:` copy: every blob file hashes to its name and the manifest lists them all. */
export function verifyDirCopy(outDir: string): { problems: string[]; manifest: { config: Descriptor; layers: Descriptor[] }; files: string[] } {
  const problems: string[] = [];
  const manifest = JSON.parse(readFileSync(join(outDir, 'manifest.json'), 'utf8')) as { config: Descriptor; layers: Descriptor[] };
  const files = readdirSync(outDir).filter((f) => /^[0-9a-f]{64}$/.test(f));
  for (const f of files) {
    const h = createHash('sha256').update(readFileSync(join(outDir, f))).digest('hex');
    if (h !== f) problems.push(`${f} hashes to ${h}`);
  }
  for (const d of [manifest.config, ...manifest.layers]) {
    const f = d.digest.replace(/^sha256:/, '');
    if (!files.includes(f)) problems.push(`manifest lists ${d.digest}, not in ${outDir}`);
    else if (readFileSync(join(outDir, f)).length !== d.size) problems.push(`${d.digest}: size differs from the manifest's ${d.size}`);
  }
  if (files.length !== 1 + manifest.layers.length) problems.push(`${files.length} blob files for ${1 + manifest.layers.length} descriptors`);
  return { problems, manifest, files };
}

// ------------------------------------------------------------------------------------------ cove

/** Cove running as `node dist/src/cli.js serve`. */
export class CoveProc {
  constructor(
    readonly proc: Proc,
    readonly port: number,
    readonly dataDir: string,
  ) {}
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  get hostPort(): string {
    return `127.0.0.1:${this.port}`;
  }
  /** The admin socket the `cove` command uses (in the data directory outside systemd). */
  get adminSocket(): string {
    return join(this.dataDir, 'admin.sock');
  }
  get pid(): number {
    return this.proc.pid;
  }
  /** Cove's JSON log lines (non-JSON lines skipped). */
  logLines(): Array<Record<string, unknown>> {
    const out: Array<Record<string, unknown>> = [];
    for (const line of this.proc.log().split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a line cut by a kill; ignore
      }
    }
    return out;
  }
  /** Whether some log line satisfies `pred` within `timeoutMs` (Cove's log writes are asynchronous). */
  async logged(pred: (line: Record<string, unknown>) => boolean, timeoutMs = 3000): Promise<boolean> {
    return waitFor('a Cove log line', () => this.logLines().some(pred), timeoutMs).then(
      () => true,
      () => false,
    );
  }
}

/**
 * Starts Cove in front of `upstream` with extra COVE_* env; waits for /healthz; stopped on cleanup.
 * `opts.port` listens on a port chosen beforehand (a site's nodes must know each other's URLs up
 * front); without it a free port is picked. `opts.dataDir` reuses the data dir of a Cove stopped
 * before (a restart: pass its `dataDir` and `port`); without it the data dir is new.
 */
export async function startCove(
  cleanup: Cleanup,
  upstream: string,
  env: Record<string, string> = {},
  opts: {
    port?: number;
    dataDir?: string;
    /** Whether Cove is up, asked until it says so: by default GET /healthz on the plain port (a TLS listener needs its own). */
    ready?: (port: number) => Promise<boolean>;
  } = {},
): Promise<CoveProc> {
  if (!existsSync(COVE_CLI)) throw new Error(`${COVE_CLI} is missing: run npx tsc -p . first`);
  const dir = tempDir(cleanup, 'cove-d-');
  const dataDir = opts.dataDir ?? join(dir, 'data');
  const port = opts.port ?? (await freePort());
  // Node flags as systemd/cove.service and `npm start` run Cove.
  const proc = startProc(cleanup, 'cove', process.execPath, ['--max-semi-space-size=1', COVE_CLI, 'serve'], {
    logFile: join(dir, 'cove.log'),
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: process.env.HOME ?? dir,
      COVE_LISTEN: `127.0.0.1:${port}`,
      COVE_DATA_DIR: dataDir,
      COVE_UPSTREAM: upstream,
      COVE_LOG_LEVEL: 'info',
      COVE_SHUTDOWN_GRACE: '2s',
      ...env,
    },
    graceMs: 8000,
  });
  const cove = new CoveProc(proc, port, dataDir);
  await waitFor(
    `Cove /healthz on ${cove.url} (log: ${proc.logFile})`,
    async () => {
      if (!proc.running) throw new Error(`Cove exited at start (code ${proc.exitCode}):\n${proc.tail()}`);
      return opts.ready ? opts.ready(port).catch(() => false) : answers200(`${cove.url}/healthz`);
    },
    20_000,
  );
  return cove;
}

// ------------------------------------------------------------------------------------------ containerd / dockerd

/** containerd with its own root, state and sockets under a temp dir (CRI off; native snapshotter). */
export async function startContainerd(cleanup: Cleanup): Promise<{ proc: Proc; socket: string; dir: string }> {
  const dir = tempDir(cleanup, 'cove-ctd-');
  const socket = join(dir, 'c.sock');
  const config = `version = 2
root = "${dir}/root"
state = "${dir}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "${socket}"
[ttrpc]
  address = "${socket}.ttrpc"
[debug]
  address = "${dir}/debug.sock"
  level = "info"
[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/opt"
`;
  writeFileSync(join(dir, 'config.toml'), config);
  const proc = startProc(cleanup, 'containerd', 'containerd', ['--config', join(dir, 'config.toml')], { logFile: join(dir, 'containerd.log'), graceMs: 10_000 });
  await waitFor(
    `containerd socket ${socket}`,
    async () => {
      if (!proc.running) throw new Error(`containerd exited at start:\n${proc.tail()}`);
      if (!existsSync(socket)) return false;
      return (await run('ctr', ['-a', socket, 'version'], { allowFail: true, timeoutMs: 5000 })).code === 0;
    },
    20_000,
    200,
  );
  return { proc, socket, dir };
}

/**
 * dockerd 20.10 with data-root, exec-root, pidfile and socket in a temp dir, no iptables, no bridge,
 * vfs storage, using the given containerd (so it does not start its own in /opt/containerd).
 * dockerd also writes /etc/docker/key.json and /run/docker/plugins; they are removed afterwards
 * when they did not exist before.
 */
export async function startDockerd(
  cleanup: Cleanup,
  containerdSocket: string,
  daemonJson: Record<string, unknown>,
): Promise<{ proc: Proc; docker: (args: string[], timeoutMs?: number) => ReturnType<typeof run>; dir: string }> {
  const dir = tempDir(cleanup, 'cove-dkr-');
  const cli = dockerCli();
  if (!cli) throw new Error('no docker CLI found');
  const sideEffects = ['/etc/docker/key.json', '/run/docker'].filter((p) => !existsSync(p));
  cleanup.add(() => {
    for (const p of sideEffects) rmSync(p, { recursive: true, force: true });
  });
  writeFileSync(join(dir, 'daemon.json'), JSON.stringify(daemonJson, null, 2));
  mkdirSync(join(dir, 'data'));
  mkdirSync(join(dir, 'exec'));
  const socket = join(dir, 'docker.sock');
  const proc = startProc(
    cleanup,
    'dockerd',
    'dockerd',
    [
      '--config-file', join(dir, 'daemon.json'),
      '--iptables=false', '--ip6tables=false', '--bridge=none', '--storage-driver=vfs',
      '--data-root', join(dir, 'data'),
      '--exec-root', join(dir, 'exec'),
      '--pidfile', join(dir, 'exec', 'dockerd.pid'),
      '--containerd', containerdSocket,
      '-H', `unix://${socket}`,
    ],
    {
      logFile: join(dir, 'dockerd.log'),
      graceMs: 15_000,
      // Should a pull ever fall back from the mirror to Docker Hub, it goes to a closed loopback
      // port instead of the internet (tests talk to loopback only).
      env: { ...process.env, HTTPS_PROXY: 'http://127.0.0.1:9', HTTP_PROXY: 'http://127.0.0.1:9', NO_PROXY: '127.0.0.1,localhost' },
    },
  );
  const docker = (args: string[], timeoutMs = 120_000) => run(cli, ['-H', `unix://${socket}`, ...args], { timeoutMs });
  await waitFor(
    `dockerd on ${socket}`,
    async () => {
      if (!proc.running) throw new Error(`dockerd exited at start:\n${proc.tail()}`);
      if (!existsSync(socket)) return false;
      return (await run(cli, ['-H', `unix://${socket}`, 'version'], { allowFail: true, timeoutMs: 5000 })).code === 0;
    },
    40_000,
    250,
  );
  return { proc, docker, dir };
}

// ------------------------------------------------------------------------------------------ counting proxy

/** A TCP relay on 127.0.0.1 that counts the bytes flowing back from `target` (what a mirror fetched). */
export class CountingProxy {
  bytesFromTarget = 0;
  bytesToTarget = 0;
  connections = 0;
  private readonly sockets = new Set<Socket>();
  private constructor(
    private readonly server: Server,
    readonly port: number,
  ) {}
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  reset(): void {
    this.bytesFromTarget = 0;
    this.bytesToTarget = 0;
    this.connections = 0;
  }
  /** Cuts every open connection and from now on accepts connections without ever answering (a dead link). */
  blackhole(): void {
    this.holding = true;
    for (const s of this.sockets) s.destroy();
  }
  private holding = false;
  static async start(targetPort: number): Promise<CountingProxy> {
    let self: CountingProxy | null = null;
    const server = createServer((client) => {
      const p = self!;
      if (p.holding) {
        p.sockets.add(client);
        client.on('error', () => client.destroy()).on('close', () => p.sockets.delete(client));
        return;
      }
      const upstream = connect(targetPort, '127.0.0.1');
      p.connections++;
      p.sockets.add(client).add(upstream);
      upstream.on('data', (c: Buffer) => (p.bytesFromTarget += c.length));
      client.on('data', (c: Buffer) => (p.bytesToTarget += c.length));
      client.pipe(upstream);
      upstream.pipe(client);
      const end = () => {
        client.destroy();
        upstream.destroy();
        p.sockets.delete(client);
        p.sockets.delete(upstream);
      };
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const addr = server.address();
    self = new CountingProxy(server, typeof addr === 'object' && addr ? addr.port : 0);
    return self;
  }
  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

/** What a SwitchableRelay does with the link: pass bytes, swallow them, or refuse connections. */
export type RelayMode = 'up' | 'blackhole' | 'refuse';

/**
 * A TCP relay on 127.0.0.1 to `target` whose link can be switched while connections are open, as
 * a real outage behaves:
 * - 'up': bytes flow both ways; connections held or frozen during a black hole carry on (what they
 *   sent meanwhile is delivered, as TCP retransmits once the link is back).
 * - 'blackhole': new connections are accepted and never answered (nothing reaches the target
 *   until the link is up again); open ones freeze: no byte moves either way and no close crosses.
 * - 'refuse': the port stops listening (a connect gets ECONNREFUSED) and open connections are cut.
 */
export class SwitchableRelay {
  /** Connections accepted, switches made, and bytes the target sent through, since start. */
  accepted = 0;
  switches = 0;
  bytesFromTarget = 0;
  private current: RelayMode = 'up';
  private server: Server;
  private readonly pairs = new Set<RelayPair>();
  private constructor(
    readonly port: number,
    private readonly targetPort: number,
  ) {
    this.server = this.listener();
  }
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }
  get mode(): RelayMode {
    return this.current;
  }
  static async start(targetPort: number): Promise<SwitchableRelay> {
    const port = await freePort();
    const relay = new SwitchableRelay(port, targetPort);
    await relay.listen();
    return relay;
  }
  async setMode(mode: RelayMode): Promise<void> {
    if (mode === this.current) return;
    const was = this.current;
    this.current = mode;
    this.switches++;
    if (mode === 'refuse') {
      for (const p of this.pairs) p.cut();
      await new Promise<void>((resolve) => this.server.close(() => resolve()));
      return;
    }
    if (was === 'refuse') {
      this.server = this.listener();
      await this.listen();
    }
    for (const p of this.pairs) {
      if (mode === 'up') p.thaw();
      else p.freeze();
    }
  }
  async close(): Promise<void> {
    for (const p of this.pairs) p.cut();
    if (this.current !== 'refuse') await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.current = 'refuse';
  }
  private listener(): Server {
    return createServer((client) => {
      this.accepted++;
      const pair = new RelayPair(client, this.targetPort, () => this.pairs.delete(pair), (n) => (this.bytesFromTarget += n));
      this.pairs.add(pair);
      if (this.current === 'up') pair.thaw();
    });
  }
  private listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.port, '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve();
      });
    });
  }
}

/** One client connection of a SwitchableRelay and its connection to the target (made when first thawed). */
class RelayPair {
  private upstream: Socket | null = null;
  private frozen = true;
  /** Bytes and ends read while frozen, per direction, delivered at the next thaw. */
  private readonly held = new Map<Socket, Array<Buffer | null>>();
  private closedWhileFrozen = false;
  private done = false;
  constructor(
    private readonly client: Socket,
    private readonly targetPort: number,
    private readonly onDone: () => void,
    private readonly countFromTarget: (bytes: number) => void,
  ) {
    // No 'data' listener yet: what the client sends stays in its buffers until the first thaw.
    client.on('error', () => this.cut());
    client.on('close', () => this.cut());
  }
  /** The link is up: connect on first use, deliver what was held, let bytes flow. */
  thaw(): void {
    if (this.done) return;
    this.frozen = false;
    if (this.upstream === null) {
      const upstream = connect(this.targetPort, '127.0.0.1');
      this.upstream = upstream;
      upstream.on('error', () => this.cut());
      // The target closing is passed on once the link carries it (the client's close then ends the pair).
      upstream.on('close', () => (this.frozen ? (this.closedWhileFrozen = true) : this.client.end()));
      this.forward(this.client, upstream);
      this.forward(upstream, this.client);
    }
    if (this.closedWhileFrozen) {
      this.flush(this.upstream, this.client);
      this.client.end();
      return;
    }
    this.flush(this.client, this.upstream);
    this.flush(this.upstream, this.client);
    this.client.resume();
    this.upstream.resume();
  }
  /** The link goes dark: nothing moves until the next thaw. */
  freeze(): void {
    this.frozen = true;
  }
  cut(): void {
    if (this.done) return;
    this.done = true;
    this.client.destroy();
    this.upstream?.destroy();
    this.onDone();
  }
  private forward(from: Socket, to: Socket): void {
    from.on('data', (chunk: Buffer) => {
      if (from === this.upstream) this.countFromTarget(chunk.length);
      if (this.frozen) {
        from.pause();
        this.hold(from, chunk);
      } else if (!to.write(chunk)) {
        from.pause();
        to.once('drain', () => this.frozen || from.resume());
      }
    });
    from.on('end', () => (this.frozen ? this.hold(from, null) : to.end()));
  }
  private hold(from: Socket, chunk: Buffer | null): void {
    const list = this.held.get(from) ?? [];
    list.push(chunk);
    this.held.set(from, list);
  }
  private flush(from: Socket, to: Socket): void {
    for (const chunk of this.held.get(from) ?? []) {
      if (chunk === null) to.end();
      else to.write(chunk);
    }
    this.held.delete(from);
  }
}

// ------------------------------------------------------------------------------------------ blob serving baselines

/** What curl reports of one transfer (its -w variables), and how curl exited (28: --max-time reached). */
export interface CurlTransfer {
  status: number;
  bytes: number;
  /** Seconds from the start to the first body byte (time_starttransfer) and to the end (time_total). */
  startTransferS: number;
  totalS: number;
  httpVersion: string;
  exitCode: number | null;
}

/**
 * `curl -s -o /dev/null URL`, timed by curl itself (its process start is not in the times).
 * `range` asks for bytes (-r FIRST-LAST); `http2` asks for HTTP/2 (by ALPN over TLS); an https:
 * URL skips the certificate check (-k: loopback test certificates); `maxTimeS` caps the transfer,
 * which then shows in `exitCode`, not as a throw.
 */
export async function curlGet(url: string, opts: { range?: string; http2?: boolean; maxTimeS?: number } = {}): Promise<CurlTransfer> {
  const maxS = opts.maxTimeS ?? 120;
  const args = ['-s', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{time_starttransfer} %{time_total} %{http_version}', '--max-time', String(maxS)];
  if (opts.range) args.push('-r', opts.range);
  if (opts.http2) args.push('--http2');
  if (url.startsWith('https:')) args.push('-k');
  const r = await run('curl', [...args, url], { allowFail: true, timeoutMs: (maxS + 10) * 1000 });
  const [status, bytes, start, total, version] = r.stdout.trim().split(' ');
  return { status: Number(status), bytes: Number(bytes), startTransferS: Number(start), totalS: Number(total), httpVersion: version ?? '', exitCode: r.code };
}

/**
 * nginx serving an OCI layout's `blobs/sha256` directory under the paths a registry uses
 * (GET /v2/<repo>/blobs/sha256:<hex>), with sendfile on: plain file serving, as a baseline for
 * blob throughput. Config, pid, logs and temp paths live in its own temp dir; it listens on
 * 127.0.0.1 only; the master (the PID started here) is stopped on cleanup and takes its workers along.
 */
export async function startNginx(cleanup: Cleanup, blobDir: string): Promise<{ proc: Proc; url: string }> {
  const dir = tempDir(cleanup, 'cove-ngx-');
  const port = await freePort();
  const errorLog = join(dir, 'error.log');
  const conf = [
    'daemon off;',
    'master_process on;',
    'worker_processes auto;',
    `pid ${join(dir, 'nginx.pid')};`,
    `error_log ${errorLog} warn;`,
    // Workers run as nobody otherwise, who cannot read files under a root-owned temp dir.
    ...(process.getuid?.() === 0 ? ['user root root;'] : []),
    'events { worker_connections 1024; }',
    'http {',
    '  access_log off;',
    '  sendfile on;',
    '  default_type application/octet-stream;',
    ...['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `  ${t}_temp_path ${join(dir, t)};`),
    '  server {',
    `    listen 127.0.0.1:${port};`,
    `    location ~ "^/v2/.+/blobs/sha256:([0-9a-f]{64})$" { alias ${blobDir}/$1; }`,
    '  }',
    '}',
  ];
  writeFileSync(join(dir, 'nginx.conf'), conf.join('\n') + '\n');
  const proc = startProc(cleanup, 'nginx', 'nginx', ['-p', dir, '-c', join(dir, 'nginx.conf'), '-e', errorLog], { logFile: join(dir, 'nginx.log'), graceMs: 5000 });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`nginx on ${url} (log: ${errorLog})`, async () => {
    if (!proc.running) throw new Error(`nginx exited at start:\n${proc.tail()}\n${existsSync(errorLog) ? readFileSync(errorLog, 'utf8') : ''}`);
    return httpGet(`${url}/`, { timeoutMs: 1000 }).then(
      () => true,
      () => false,
    );
  });
  return { proc, url };
}

/** The machine a benchmark ran on, for its results file. */
export function machineInfo(): Record<string, string | number> {
  const cpu = cpus();
  return { platform: platform(), arch: arch(), kernel: release(), cpus: cpu.length, cpuModel: cpu[0]?.model ?? 'unknown', memoryBytes: totalmem(), node: process.version };
}

/** Bytes a live process has written so far, to files and sockets alike (/proc/PID/io wchar, sendfile included); 0 when unreadable. */
export function bytesWritten(pid: number): number {
  try {
    const m = /^wchar:\s+(\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** Waits until `read()` has not changed for `quietMs` (polled every 100 ms), at most `maxMs`: e.g. a proxy's background fill is over. */
export async function steady(read: () => number, quietMs = 1000, maxMs = 60_000): Promise<void> {
  const end = Date.now() + maxMs;
  let last = read();
  let since = Date.now();
  while (Date.now() < end) {
    await sleep(100);
    const now = read();
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
  }
}

/** Peak resident set size (VmHWM) of a live process, in bytes; 0 when unreadable. */
export function peakRss(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

/** Resets a process's VmHWM to its current RSS (Linux: /proc/PID/clear_refs), so a later peak is that phase's own. */
export function resetPeakRss(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, '5');
}

/** Synchronous check that a command runs (used for version lines in reports). */
export function versionOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  return (r.stdout || r.stderr || '').trim().split('\n')[0] ?? '';
}
