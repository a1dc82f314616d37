// `node dist/scripts/bench-scale.js [--runs R] [--max-blobs N]`: what Cove's costs do as the cache
// grows (issue 15). At each size — 100, 1k, 10k and 100k cached blobs with 10, 100, 1k and 10k
// cached tags — a temp data dir is filled by bench-startup.ts's writeBlobs (images of 100 blobs)
// and its index built by the start-up rebuild; the tags are recorded through Catalog.putTag, as
// the manifest resolver records a pulled tag (index and tag journal), ten repositories, several
// tags per image. Then:
//   - the real daemon (`node --max-semi-space-size=1 dist/src/cli.js serve`, as systemd runs it)
//     is started R times: ms until GET /v2/ answers, its RSS (and heap) a moment after, its peak;
//   - an in-process Cove over the same data dir, in front of an in-process origin
//     (test/helpers/origin-registry.ts, which counts requests), pulls one image cold, then warm
//     (tag fresh), then once more after the tag TTL (revalidation): origin requests of each;
//   - one eviction pass (src/store/eviction.ts) with a cap 10% under what is cached: the plan
//     (dry run) and the real pass, timed.
// Each figure is printed per size with its growth per 10x of the cache (linear: ~10x). Results:
// a table on stdout and bench/scale.json. scaleScenario() is the same for scripts/bench.ts.
// Loopback only; every temp dir, server and process is removed or stopped at the end.
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { ORIGIN } from '../src/config.js';
import { Counters } from '../src/metrics.js';
import { BlobStore } from '../src/store/blobs.js';
import { Catalog } from '../src/store/catalog.js';
import { Evictor } from '../src/store/eviction.js';
import { Leases } from '../src/store/leases.js';
import { PinStore } from '../src/store/pins.js';
import { startTestCove } from '../test/helpers/cove.js';
import { makeImage, type Image } from '../test/helpers/images.js';
import { OriginRegistry } from '../test/helpers/origin-registry.js';
import { freePort } from '../test/helpers/process.js';
import { positiveIntArg } from './args.js';
import { writeBlobs } from './bench-startup.js';

const SELF = fileURLToPath(import.meta.url);
const ROOT = join(dirname(SELF), '..', '..');
const CLI = join(ROOT, 'dist', 'src', 'cli.js');
/** Repositories the cached tags are spread over; the pulled image goes in the first. */
const REPOS = 10;
/** Share of the cached bytes the eviction pass must free. */
const EVICT_SHARE = 0.1;
/** Tag TTL of the in-process Cove: long enough for a warm pull to find the tag fresh. */
const TAG_TTL_MS = 2000;

export const SCALE_SIZES: ReadonlyArray<{ blobs: number; tags: number }> = [
  { blobs: 100, tags: 10 },
  { blobs: 1_000, tags: 100 },
  { blobs: 10_000, tags: 1_000 },
  { blobs: 100_000, tags: 10_000 },
];

export interface ScaleRow {
  blobs: number;
  tags: number;
  bytes: number;
  setupMs: number;
  /** Median over the runs: spawn to the first answer of GET /v2/. */
  startMs: number;
  /** Median RSS, its anonymous part (heap, malloc; the rest is mapped files: node itself, LevelDB tables), V8 heap used, and peak RSS (VmHWM) of the daemon, MiB, a moment after it answered. */
  rssMiB: number;
  anonRssMiB: number;
  heapUsedMiB: number;
  peakRssMiB: number;
  /** Origin requests of one pull (manifest by tag, config, layers) through Cove. */
  originRequests: { cold: number; warm: number; revalidate: number };
  eviction: { planMs: number; passMs: number; evicted: number; tagsRemoved: number; bytesFreed: number };
}

export interface ScaleResult {
  node: string;
  cpus: number;
  cpu: string | null;
  at: string;
  runs: number;
  rows: ScaleRow[];
  /** Each figure at a size over the same figure one size (10x) smaller. */
  growthPer10x: Array<{ from: number; to: number; startMs: number; rssMiB: number; anonRssMiB: number; peakRssMiB: number; planMs: number; passMs: number }>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const round = (x: number, digits = 1) => Math.round(x * 10 ** digits) / 10 ** digits;

/** Fills `dataDir` with `blobs` blob files, their index records, and `tags` tags on the images. */
async function buildCatalog(dataDir: string, blobs: number, tags: number): Promise<{ bytes: number }> {
  const { bytes, manifests } = writeBlobs(dataDir, blobs);
  const store = new BlobStore(dataDir);
  await store.open();
  const { catalog, rebuilt } = await Catalog.openWith(dataDir, store, pino({ level: 'silent' }));
  try {
    if (rebuilt?.blobs !== blobs) throw new Error(`expected ${blobs} records after the rebuild, got ${rebuilt?.blobs}`);
    const now = Date.now();
    const puts: Array<Promise<void>> = [];
    for (let i = 0; i < tags; i++) {
      const m = manifests[i % manifests.length]!;
      puts.push(catalog.putTag({ upstream: ORIGIN, repo: `scale/r${i % REPOS}`, tag: `t${i}` }, { digest: m.digest, mediaType: m.mediaType, size: m.size, fetchedAt: now, validatedAt: now }));
    }
    await Promise.all(puts);
    if ((await catalog.listTags()).length !== tags) throw new Error(`expected ${tags} tags in the index`);
  } finally {
    await catalog.close();
  }
  return { bytes };
}

function get(url: string, timeoutMs = 2000): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no answer from ${url} in ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

function procStatusKiB(pid: number, field: 'VmRSS' | 'VmHWM' | 'RssAnon'): number {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no ${field} for pid ${pid}`);
  return Number(m[1]);
}

/** One start of the real daemon on `dataDir`: time to /v2/, then its memory once settled; stopped again. */
async function daemonStart(dataDir: string, logFile: string): Promise<{ ms: number; rssMiB: number; anonRssMiB: number; heapUsedMiB: number; peakRssMiB: number }> {
  const port = await freePort();
  const log = openSync(logFile, 'a');
  const started = process.hrtime.bigint();
  const child = spawn(process.execPath, ['--max-semi-space-size=1', CLI, 'serve'], {
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: dirname(logFile),
      COVE_LISTEN: `127.0.0.1:${port}`,
      COVE_DATA_DIR: dataDir,
      // Never asked at start; a refused loopback port, should anything try.
      COVE_UPSTREAM: 'http://127.0.0.1:9',
      COVE_LOG_LEVEL: 'warn',
      COVE_SHUTDOWN_GRACE: '1s',
    },
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  try {
    let ms = -1;
    for (let i = 0; i < 6000 && ms < 0; i++) {
      if (child.exitCode !== null) throw new Error(`cove serve exited at start (code ${child.exitCode}); log: ${logFile}`);
      const answered = await get(`http://127.0.0.1:${port}/v2/`, 500).then(
        () => true,
        () => false,
      );
      if (answered) ms = Number(process.hrtime.bigint() - started) / 1e6;
      else await sleep(5);
    }
    if (ms < 0) throw new Error(`cove serve did not answer /v2/ in time; log: ${logFile}`);
    // What it holds once start-up is over, not a moment mid-collection.
    await sleep(1000);
    const health = JSON.parse((await get(`http://127.0.0.1:${port}/healthz`)).body.toString()) as { memory: { heapUsed: number } };
    return { ms, rssMiB: procStatusKiB(child.pid!, 'VmRSS') / 1024, anonRssMiB: procStatusKiB(child.pid!, 'RssAnon') / 1024, heapUsedMiB: health.memory.heapUsed, peakRssMiB: procStatusKiB(child.pid!, 'VmHWM') / 1024 };
  } finally {
    child.kill('SIGTERM');
    const code = await Promise.race([exited, sleep(10_000).then(() => 'timeout' as const)]);
    if (code === 'timeout') {
      child.kill('SIGKILL');
      await exited;
    }
  }
}

/** GET with the manifest types a pull accepts; checks the status. */
async function pullImage(base: string, repo: string, tag: string): Promise<void> {
  const accept = 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json';
  const manifest = await new Promise<Buffer>((resolve, reject) => {
    const req = request(`${base}/v2/${repo}/manifests/${tag}`, { agent: false, headers: { accept } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => (res.statusCode === 200 ? resolve(Buffer.concat(chunks)) : reject(new Error(`manifest ${repo}:${tag}: ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end();
  });
  const m = JSON.parse(manifest.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> };
  for (const d of [m.config.digest, ...m.layers.map((l) => l.digest)]) {
    const r = await get(`${base}/v2/${repo}/blobs/${d}`, 10_000);
    if (r.status !== 200) throw new Error(`blob ${d}: ${r.status}`);
  }
}

/** Origin requests of a cold, a warm and a revalidating pull through an in-process Cove over `dataDir`. */
async function originRequests(dataDir: string, image: Image): Promise<ScaleRow['originRequests']> {
  const origin = await OriginRegistry.start();
  const teardowns: Array<() => unknown> = [];
  try {
    const repo = 'scale/r0';
    const tag = `pulled-${Date.now()}`;
    origin.putImage(repo, tag, image);
    const cove = await startTestCove({ teardown: (fn) => teardowns.push(fn) }, origin.url, { COVE_TAG_TTL: `${TAG_TTL_MS}ms`, COVE_ADMIN_SOCKET: 'off' }, { dataDir, keepData: true });
    const measure = async () => {
      origin.resetCounters();
      await pullImage(cove.url, repo, tag);
      await cove.fillsDone();
      return origin.requests.length;
    };
    const cold = await measure();
    const warm = await measure();
    await sleep(TAG_TTL_MS + 200);
    const revalidate = await measure();
    return { cold, warm, revalidate };
  } finally {
    for (const fn of teardowns.reverse()) await fn();
    await origin.close();
  }
}

/** One eviction pass asked to free EVICT_SHARE of the cache: the plan (dry run) and the pass, timed. */
async function evictionPass(dataDir: string, bytes: number): Promise<ScaleRow['eviction']> {
  const log = pino({ level: 'silent' });
  const store = new BlobStore(dataDir);
  await store.open();
  const { catalog } = await Catalog.openWith(dataDir, store, log, { reconcile: false });
  try {
    const evictor = new Evictor({
      store,
      catalog,
      pins: await PinStore.open(dataDir),
      leases: new Leases(),
      filling: () => [],
      // The cap is what is cached now: nothing runs by itself at start (high water 1), a
      // requested pass goes down to the low water mark.
      limits: { maxBytes: bytes, highWater: 1, lowWater: 1 - EVICT_SHARE, maxIdleMs: null },
      log,
      counters: new Counters(),
    });
    await evictor.start();
    let t = process.hrtime.bigint();
    await evictor.run({ dryRun: true });
    const planMs = Number(process.hrtime.bigint() - t) / 1e6;
    t = process.hrtime.bigint();
    const report = await evictor.run();
    const passMs = Number(process.hrtime.bigint() - t) / 1e6;
    await evictor.stop();
    return { planMs: round(planMs), passMs: round(passMs), evicted: report.evicted.length, tagsRemoved: report.tagsRemoved.length, bytesFreed: report.bytesBefore - report.bytesAfter };
  } finally {
    await catalog.close();
  }
}

/** Measures every size up to `maxBlobs`; `say` prints progress and the table. */
export async function scaleScenario(say: (line?: string) => void, options: { runs?: number; maxBlobs?: number } = {}): Promise<ScaleResult> {
  const runs = options.runs ?? 3;
  const sizes = SCALE_SIZES.filter((s) => s.blobs <= (options.maxBlobs ?? Number.POSITIVE_INFINITY));
  const work = mkdtempSync(join(tmpdir(), 'cove-bench-scale-'));
  const image = makeImage({ layers: [4096, 8192], seed: 'bench-scale' });
  const rows: ScaleRow[] = [];
  try {
    for (const { blobs, tags } of sizes) {
      const dataDir = join(work, `data-${blobs}`);
      mkdirSync(dataDir);
      const t0 = Date.now();
      const { bytes } = await buildCatalog(dataDir, blobs, tags);
      const setupMs = Date.now() - t0;
      say(`${blobs} blobs, ${tags} tags: set up in ${setupMs} ms; starting the daemon ${runs} times ...`);
      const starts = [];
      for (let i = 0; i < runs; i++) starts.push(await daemonStart(dataDir, join(work, `cove-${blobs}.log`)));
      const originRequestsRow = await originRequests(dataDir, image);
      const eviction = await evictionPass(dataDir, bytes);
      rows.push({
        blobs,
        tags,
        bytes,
        setupMs,
        startMs: round(median(starts.map((s) => s.ms))),
        rssMiB: round(median(starts.map((s) => s.rssMiB))),
        anonRssMiB: round(median(starts.map((s) => s.anonRssMiB))),
        heapUsedMiB: round(median(starts.map((s) => s.heapUsedMiB))),
        peakRssMiB: round(median(starts.map((s) => s.peakRssMiB))),
        originRequests: originRequestsRow,
        eviction,
      });
      rmSync(dataDir, { recursive: true, force: true });
    }
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  const growthPer10x = rows.slice(1).map((r, i) => {
    const p = rows[i]!;
    return {
      from: p.blobs,
      to: r.blobs,
      startMs: round(r.startMs / p.startMs, 2),
      rssMiB: round(r.rssMiB / p.rssMiB, 2),
      anonRssMiB: round(r.anonRssMiB / p.anonRssMiB, 2),
      peakRssMiB: round(r.peakRssMiB / p.peakRssMiB, 2),
      planMs: round(r.eviction.planMs / p.eviction.planMs, 2),
      passMs: round(r.eviction.passMs / p.eviction.passMs, 2),
    };
  });
  const result: ScaleResult = { node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model ?? null, at: new Date().toISOString(), runs, rows, growthPer10x };
  printTable(result, say);
  return result;
}

function printTable(r: ScaleResult, say: (line?: string) => void): void {
  const cols = ['blobs / tags', 'start ms', 'RSS MiB', 'anon MiB', 'heap MiB', 'peak MiB', 'evict plan ms', 'evict pass ms', 'evicted', 'origin req cold/warm/reval'];
  const row = (cells: string[]) => say(cells.map((c, i) => (i === 0 ? c.padEnd(16) : c.padStart(i === cols.length - 1 ? 28 : 14))).join(''));
  say();
  say(`cost as the cache grows: daemon start-up (median of ${r.runs}), one eviction pass freeing ${EVICT_SHARE * 100}%, origin requests per pull`);
  row(cols);
  for (const x of r.rows) {
    const o = x.originRequests;
    row([`${x.blobs} / ${x.tags}`, x.startMs.toFixed(0), x.rssMiB.toFixed(1), x.anonRssMiB.toFixed(1), x.heapUsedMiB.toFixed(1), x.peakRssMiB.toFixed(1), x.eviction.planMs.toFixed(1), x.eviction.passMs.toFixed(1), String(x.eviction.evicted), `${o.cold}/${o.warm}/${o.revalidate}`]);
  }
  say('growth per 10x (linear ≈ 10x or less; start-up RSS should stay near flat)');
  for (const g of r.growthPer10x) {
    row([`${g.from} -> ${g.to}`, `${g.startMs.toFixed(2)}x`, `${g.rssMiB.toFixed(2)}x`, `${g.anonRssMiB.toFixed(2)}x`, '', `${g.peakRssMiB.toFixed(2)}x`, `${g.planMs.toFixed(2)}x`, `${g.passMs.toFixed(2)}x`, '', '']);
  }
}

async function main(): Promise<void> {
  const say = (line = '') => process.stdout.write(`${line}\n`);
  const result = await scaleScenario(say, { runs: positiveIntArg('runs', 3), maxBlobs: positiveIntArg('max-blobs', 100_000) });
  const out = join(ROOT, 'bench', 'scale.json');
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  say(`\nresults: ${out}`);
}

if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === SELF) await main();
