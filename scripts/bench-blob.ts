// The "blob" scenario of `npm run bench` (issue 15: serving one large blob fast, from little
// memory), Cove against the distribution registry in proxy mode (Debian's docker-registry with
// proxy.remoteurl) and against nginx serving the same bytes from disk with sendfile on, all in one
// run. A docker-registry origin holds proj/app:1, one 200,001,536-byte layer (an uncompressed tar of
// one file of 200,000,000 incompressible bytes), and proj/big:1, one 1,000,001,536-byte layer made
// the same way (for Range requests). The client is curl (-s -o /dev/null, timed by its -w
// variables); every transfer's status and size are checked. MB = 10^6 bytes.
//
// Per run (BENCH_RUNS, default 5; medians; the contenders' order reversed every other run):
//   - the origin read directly ("origin direct": what a cold fetch could reach at best);
//   - per mirror, a fresh one (empty cache) in front of the origin: its RSS right after start; one
//     cold GET (MB/s; then, once the origin and the mirror have stopped writing, the blob bytes the
//     origin's access log shows it sent / blob size); one warm GET (MB/s); its peak RSS so far
//     (VmHWM: the fill); then, the high-water mark reset, 8 warm GETs at once and the peak RSS
//     over them; then one cold GET of a second 200 MB blob ("serving already": a daemon's first
//     request after start also pays for loading and compiling its code); nginx gets the warm GET
//     too. The mirrors reach the origin directly: a counting relay in this process (test/e2e/real.ts
//     CountingProxy) carries only ~150-200 MB/s on this kind of machine and would be what a cold
//     fetch measures;
//   - one warm GET over TLS with HTTP/2 (curl --http2 -k) from a TLS Cove and a TLS distribution
//     registry, both started and filled once (the protocol each spoke is reported);
//   - a Range of the first and of the last 64 KiB of the 1 GB blob, each from a fresh Cove (cold
//     blob; the Cove has fetched one small blob, the image's config, first) and from the origin
//     itself: time to the first byte (curl caps it at BENCH_BLOB_RANGE_CAP_S).
// Then, per contender, warm GETs by 1, 4, 16 and 64 curls at once from a mirror filled once
// (aggregate MB/s = their bytes / the time from the first transfer's start to the last one's end),
// in BENCH_BLOB_LEVEL_RUNS runs (default 2): the 64-client step alone moves 12.8 GB per server.
// Runs stop early when another would take the measuring past BENCH_BLOB_BUDGET_S (default 330 s;
// the first 1-64 clients run always happens); the table says so. Only loopback; everything
// started here is stopped by PID and every temp dir removed.
import { join } from 'node:path';
import {
  COVE_CLI,
  Cleanup,
  Registry,
  buildTarImage,
  bytesWritten,
  curlGet,
  httpGet,
  machineInfo,
  peakRss,
  resetPeakRss,
  pushImage,
  run,
  startCove,
  startNginx,
  startRegistry,
  steady,
  tempDir,
  versionOf,
  which,
  type CurlTransfer,
} from '../test/e2e/real.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 5);
const BUDGET_MS = Number(process.env.BENCH_BLOB_BUDGET_S ?? 330) * 1000;
const RANGE_CAP_S = Number(process.env.BENCH_BLOB_RANGE_CAP_S ?? 20);
/** Runs of the 1-64 clients steps, after the main runs (each moves ~17 GB per server). */
const LEVEL_RUNS = Number(process.env.BENCH_BLOB_LEVEL_RUNS ?? 2);
const SEED = process.env.BENCH_SEED ?? '15';
const MB = 1e6;
/** The bytes of the file inside each layer's tar. */
const BLOB_FILE_BYTES = 200 * MB;
const BIG_FILE_BYTES = 1000 * MB;
const RSS_CLIENTS = 8;
const LEVELS = [1, 4, 16, 64] as const;
const RANGE_BYTES = 65536;

/** Issue 15's targets: ratios are Cove over the baseline, RSS in MB, the Range's first byte in ms over the origin's. */
export const BLOB_TARGETS = {
  warmVsDistribution: 1.2,
  warmVsNginx: 0.9,
  coldVsDistribution: 1.5,
  peakRss8ClientsMB: 80,
  rangeTtfbOverOriginMs: 50,
} as const;

type Kind = 'cove' | 'distribution';
type Server = Kind | 'nginx';
type RangePart = 'head' | 'tail';

/** What was measured in each run, one entry per run. */
export interface BlobSamples {
  warmMBps: Record<Server, number[]>;
  coldMBps: Record<Kind | 'originDirect', number[]>;
  coldServingMBps: Record<Kind, number[]>;
  /** Blob body bytes the origin sent (its access log) for one cold GET through the mirror / blob size. */
  coldOriginBytesPerBlobByte: Record<Kind, number[]>;
  /** Blob GETs that reached the origin while the mirror served its warm GETs (0: all from its cache). */
  warmOriginRequests: Record<Kind, number[]>;
  rssAtStartMB: Record<Kind, number[]>;
  peakRssFillMB: Record<Kind, number[]>;
  peakRss8ClientsMB: Record<Kind, number[]>;
  tlsMBps: Record<Kind, number[]>;
  /**
   * Time to the first byte of the Range (ms), and Cove's minus the origin's of the same run (the two
   * asked back to back, so a busy moment of the machine weighs on both); Cove's is RANGE_CAP_S when
   * it sent nothing within it.
   */
  rangeTtfbMs: Record<RangePart, { cove: number[]; origin: number[]; overOrigin: number[]; coveCapped: number }>;
  /** Aggregate MB/s of N clients at once, per N. */
  concurrentMBps: Record<string, Record<Server, number[]>>;
}

export interface BlobResult {
  machine: Record<string, string | number>;
  versions: { distribution: string; nginx: string | null; curl: string };
  nginxSkipped: string | null;
  blobBytes: number;
  bigBlobBytes: number;
  runsPlanned: number;
  runs: number;
  /** Runs that timed 1, 4, 16 and 64 clients at once, of those planned. */
  levelRuns: number;
  levelRunsPlanned: number;
  targets: typeof BLOB_TARGETS;
  /** The HTTP version curl spoke to each TLS server. */
  tlsProtocols: Record<Kind, string>;
  samples: BlobSamples;
  median: {
    warmMBps: Record<Server, number | null>;
    coldMBps: Record<Kind | 'originDirect', number>;
    coldServingMBps: Record<Kind, number>;
    coldOriginBytesPerBlobByte: Record<Kind, number>;
    rssAtStartMB: Record<Kind, number>;
    peakRssFillMB: Record<Kind, number>;
    peakRss8ClientsMB: Record<Kind, number>;
    tlsMBps: Record<Kind, number>;
    rangeTtfbMs: Record<RangePart, { cove: number; origin: number; overOriginMs: number }>;
    /** Null where not measured (nginx absent, or BENCH_BLOB_LEVEL_RUNS=0). */
    concurrentMBps: Record<string, Record<Server, number | null>>;
  };
  ratios: {
    warmVsDistribution: number;
    warmVsNginx: number | null;
    coldVsDistribution: number;
    tlsVsDistribution: number;
    concurrentVsDistribution: Record<string, number | null>;
    concurrentVsNginx: Record<string, number | null>;
  };
  pass: { warmVsDistribution: boolean; warmVsNginx: boolean | null; coldVsDistribution: boolean; peakRss8ClientsMB: boolean; rangeHead: boolean; rangeTail: boolean };
  /** In the full bench: Cove's import figures from the archive scenario of the same run. */
  importFromArchive: Array<{ measure: string; coveMBps: number; ratio: number }> | null;
  notes: string;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const mbps = (t: CurlTransfer) => t.bytes / MB / t.totalS;
const perServer = <T>(f: (server: Server) => T): Record<Server, T> => ({ cove: f('cove'), distribution: f('distribution'), nginx: f('nginx') });
const perKind = <T>(f: (kind: Kind) => T): Record<Kind, T> => ({ cove: f('cove'), distribution: f('distribution') });

/** Throws unless curl finished with `status` and `bytes`: every figure rests on a checked transfer. */
function checked(what: string, t: CurlTransfer, status: number, bytes: number): CurlTransfer {
  if (t.exitCode !== 0 || t.status !== status || t.bytes !== bytes) {
    throw new Error(`blob: ${what}: curl exit ${t.exitCode}, HTTP ${t.status}, ${t.bytes} bytes (wanted HTTP ${status}, ${bytes} bytes)`);
  }
  return t;
}

/**
 * `n` curls of `url` started together, each checked: their bytes (MB) / the wall time from the
 * first transfer's start to the last one's end. A transfer ends when its curl exits and started
 * curl's time_total before that, so curl's process start is not counted, but curls that start
 * late (64 processes take a while to spawn) stretch the wall time.
 */
async function concurrentMBps(what: string, url: string, n: number, size: number): Promise<number> {
  const got = await Promise.all(Array.from({ length: n }, () => curlGet(url).then((t) => ({ t, end: performance.now() }))));
  got.forEach((g, i) => checked(`${what}, client ${i + 1} of ${n}`, g.t, 200, size));
  const first = Math.min(...got.map((g) => g.end - g.t.totalS * 1000));
  const last = Math.max(...got.map((g) => g.end));
  return (n * size) / MB / ((last - first) / 1000);
}

interface Mirror {
  url: string;
  pid: number;
  stop: () => Promise<void>;
}

interface TlsFiles {
  cert: string;
  key: string;
}

/** A fresh mirror of `kind` (empty cache) in front of `origin`; with `tls`, it listens with TLS. */
async function startMirror(kind: Kind, origin: Registry, tls?: TlsFiles): Promise<Mirror> {
  const c = new Cleanup();
  try {
    if (kind === 'cove') {
      const env = { COVE_TAG_TTL: '1h', ...(tls ? { COVE_TLS_CERT: tls.cert, COVE_TLS_KEY: tls.key } : {}) };
      // A TLS listener answers plain HTTP with 400: readiness is asked over TLS.
      const ready = tls ? { ready: async (p: number) => (await httpGet(`https://127.0.0.1:${p}/healthz`, { timeoutMs: 1000 })).status === 200 } : {};
      const cove = await startCove(c, origin.url, env, ready);
      return { url: tls ? `https://127.0.0.1:${cove.port}` : cove.url, pid: cove.pid, stop: () => c.run() };
    }
    const r = await startRegistry(c, { proxyRemote: origin.url, name: tls ? 'distribution-tls' : 'distribution', ...(tls ? { tls: { certificate: tls.cert, key: tls.key } } : {}) });
    return { url: r.url, pid: r.proc.pid, stop: () => c.run() };
  } catch (err) {
    await c.run();
    throw err;
  }
}

/**
 * Builds the images, starts the origin, nginx and the TLS mirrors, measures, prints the table;
 * stops and removes everything it made before it returns. `archive`: the archive scenario's
 * result of the same bench run, for the import line.
 */
export async function blobScenario(say: (line?: string) => void, archive?: { measures: Array<{ measure: string; coveMBps: number; ratio: number }> }): Promise<BlobResult> {
  const c = new Cleanup();
  try {
    const work = tempDir(c, 'cove-blob-');
    const layout = join(work, 'layout');
    let t0 = performance.now();
    const app = await buildTarImage(layout, 'app', [BLOB_FILE_BYTES], `blob-${SEED}`);
    const app2 = await buildTarImage(layout, 'app2', [BLOB_FILE_BYTES], `blob2-${SEED}`);
    const big = await buildTarImage(layout, 'big', [BIG_FILE_BYTES], `blob-${SEED}`);
    const blob = app.layers[0]!;
    const blob2 = app2.layers[0]!;
    const bigBlob = big.layers[0]!;
    const origin = await startRegistry(c, { name: 'origin' });
    await pushImage(app, origin, 'proj/app:1');
    await pushImage(app2, origin, 'proj/app2:1');
    await pushImage(big, origin, 'proj/big:1');
    say(`blob: ${blob.size} and ${bigBlob.size} byte layers written and pushed to the origin in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const blobUrl = (base: string) => `${base}/v2/proj/app/blobs/${blob.digest}`;
    const bigUrl = (base: string) => `${base}/v2/proj/big/blobs/${bigBlob.digest}`;
    const blob2Url = (base: string) => `${base}/v2/proj/app2/blobs/${blob2.digest}`;
    /** Waits until the origin and `m` have written nothing for a second: the mirror's fill (the registry's runs in the background) is over. */
    const filled = (m: Mirror) => steady(() => bytesWritten(origin.proc.pid) + bytesWritten(m.pid));

    // nginx serves the layout's own blob files (the bytes the origin holds).
    let nginxUrl: string | null = null;
    let nginxSkipped: string | null = null;
    if (which('nginx') === null) nginxSkipped = 'nginx is not installed (apt-get install nginx)';
    else {
      nginxUrl = (await startNginx(c, join(layout, 'blobs', 'sha256'))).url;
      checked('nginx serving the blob', await curlGet(blobUrl(nginxUrl)), 200, blob.size);
    }
    if (nginxSkipped) say(`blob: nginx column skipped: ${nginxSkipped}`);

    // One certificate for both TLS servers (curl does not check it: -k).
    const tlsDir = join(work, 'tls');
    await run(process.execPath, [COVE_CLI, 'cert', '--ip', '127.0.0.1', '--out', tlsDir, '--days', '2']);
    const tls = { cert: join(tlsDir, 'server.crt'), key: join(tlsDir, 'server.key') };
    const tlsMirrors = {} as Record<Kind, Mirror>;
    const tlsProtocols = perKind(() => '');
    for (const kind of ['cove', 'distribution'] as const) {
      const m = await startMirror(kind, origin, tls);
      c.add(() => m.stop());
      checked(`${kind} TLS fill`, await curlGet(blobUrl(m.url), { http2: true }), 200, blob.size);
      await filled(m);
      tlsMirrors[kind] = m;
    }

    const s: BlobSamples = {
      warmMBps: perServer(() => []),
      coldMBps: { cove: [], distribution: [], originDirect: [] },
      coldServingMBps: perKind(() => []),
      coldOriginBytesPerBlobByte: perKind(() => []),
      warmOriginRequests: perKind(() => []),
      rssAtStartMB: perKind(() => []),
      peakRssFillMB: perKind(() => []),
      peakRss8ClientsMB: perKind(() => []),
      tlsMBps: perKind(() => []),
      rangeTtfbMs: { head: { cove: [], origin: [], overOrigin: [], coveCapped: 0 }, tail: { cove: [], origin: [], overOrigin: [], coveCapped: 0 } },
      concurrentMBps: Object.fromEntries(LEVELS.map((n) => [String(n), perServer(() => [] as number[])])),
    };

    /** The warm GETs by 1, 4, 16, 64 clients at once. */
    const levels = async (server: Server, url: string) => {
      for (const n of LEVELS) s.concurrentMBps[String(n)]![server].push(await concurrentMBps(`${server}, ${n} warm clients`, url, n, blob.size));
    };

    /** Everything a fresh mirror is measured for in a main run, from its start to its stop. */
    const measureMirror = async (kind: Kind) => {
      const m = await startMirror(kind, origin);
      try {
        s.rssAtStartMB[kind].push(peakRss(m.pid) / MB);
        origin.markNow();
        const cold = checked(`${kind} cold GET`, await curlGet(blobUrl(m.url)), 200, blob.size);
        s.coldMBps[kind].push(mbps(cold));
        await filled(m);
        s.coldOriginBytesPerBlobByte[kind].push(Registry.blobGets(origin.since()).bytes / blob.size);
        origin.markNow();
        s.warmMBps[kind].push(mbps(checked(`${kind} warm GET`, await curlGet(blobUrl(m.url)), 200, blob.size)));
        // The 8 clients' peak alone: the high-water mark so far (the cold fill) is reported apart.
        s.peakRssFillMB[kind].push(peakRss(m.pid) / MB);
        resetPeakRss(m.pid);
        await concurrentMBps(`${kind}, ${RSS_CLIENTS} warm clients`, blobUrl(m.url), RSS_CLIENTS, blob.size);
        s.peakRss8ClientsMB[kind].push(peakRss(m.pid) / MB);
        s.warmOriginRequests[kind].push(Registry.blobGets(origin.since()).requests);
        // A second cold blob from the same mirror, now serving: a daemon's first request after
        // start also pays for loading and compiling its code, which a running one does not.
        s.coldServingMBps[kind].push(mbps(checked(`${kind} cold GET, serving`, await curlGet(blob2Url(m.url)), 200, blob2.size)));
        await filled(m);
      } finally {
        await m.stop();
      }
    };

    /** A Range of the 1 GB blob from a fresh Cove and from the origin, in `order`. */
    const rangeTtfb = async (part: RangePart, order: Array<'cove' | 'origin'>) => {
      const range = part === 'head' ? `0-${RANGE_BYTES - 1}` : `${bigBlob.size - RANGE_BYTES}-${bigBlob.size - 1}`;
      const rc = new Cleanup();
      try {
        const cove = await startCove(rc, origin.url, { COVE_TAG_TTL: '1h' });
        // Serving already, as a running node is: one small cold blob (the image's config) first.
        checked('cove warm-up GET', await curlGet(`${cove.url}/v2/proj/app/blobs/${app.config.digest}`), 200, app.config.size);
        for (const who of order) {
          const t = await curlGet(bigUrl(who === 'cove' ? cove.url : origin.url), { range, maxTimeS: RANGE_CAP_S });
          if (who === 'cove' && t.exitCode === 28 && t.bytes === 0) {
            s.rangeTtfbMs[part].cove.push(RANGE_CAP_S * 1000);
            s.rangeTtfbMs[part].coveCapped++;
            continue;
          }
          s.rangeTtfbMs[part][who].push(checked(`${who} Range ${part} (${range})`, t, 206, RANGE_BYTES).startTransferS * 1000);
        }
        const r = s.rangeTtfbMs[part];
        r.overOrigin.push(r.cove.at(-1)! - r.origin.at(-1)!);
      } finally {
        await rc.run();
      }
    };

    /** The contenders in their order for run `i`: as listed, or reversed every other run. */
    const inOrder = <T>(i: number, xs: T[]) => (i % 2 === 1 ? [...xs].reverse() : xs);
    const last = (xs: number[]) => (xs.length ? xs.at(-1)!.toFixed(0) : '-');
    /** Whether another step as long as `stepMs` still fits the budget. */
    const fits = (stepMs: number) => performance.now() - t0 + stepMs <= BUDGET_MS;

    let runs = 0;
    t0 = performance.now();
    for (let i = 0; i < RUNS; i++) {
      const runStart = performance.now();
      s.coldMBps.originDirect.push(mbps(checked('origin GET', await curlGet(blobUrl(origin.url)), 200, blob.size)));
      for (const server of inOrder(i, ['cove', 'distribution', 'nginx'] as const)) {
        if (server !== 'nginx') await measureMirror(server);
        else if (nginxUrl) s.warmMBps.nginx.push(mbps(checked('nginx warm GET', await curlGet(blobUrl(nginxUrl)), 200, blob.size)));
      }
      for (const kind of inOrder(i, ['cove', 'distribution'] as const)) {
        const t = checked(`${kind} warm GET over TLS`, await curlGet(blobUrl(tlsMirrors[kind].url), { http2: true }), 200, blob.size);
        s.tlsMBps[kind].push(mbps(t));
        tlsProtocols[kind] = t.httpVersion === '2' ? 'HTTP/2' : `HTTP/${t.httpVersion}`;
      }
      for (const part of inOrder(i, ['head', 'tail'] as const)) await rangeTtfb(part, inOrder(i, ['cove', 'origin']));
      runs++;
      const runMs = performance.now() - runStart;
      say(
        `  run ${i + 1} (${(runMs / 1000).toFixed(0)} s): warm MB/s cove ${last(s.warmMBps.cove)}, distribution ${last(s.warmMBps.distribution)}, nginx ${last(s.warmMBps.nginx)}; ` +
          `cold MB/s cove ${last(s.coldMBps.cove)}, distribution ${last(s.coldMBps.distribution)}, origin ${last(s.coldMBps.originDirect)}; ` +
          `peak RSS MB cove ${last(s.peakRss8ClientsMB.cove)}, distribution ${last(s.peakRss8ClientsMB.distribution)}; ` +
          `TLS MB/s cove ${last(s.tlsMBps.cove)}, distribution ${last(s.tlsMBps.distribution)}; ` +
          `Range TTFB ms head ${last(s.rangeTtfbMs.head.cove)}/${last(s.rangeTtfbMs.head.origin)}, tail ${last(s.rangeTtfbMs.tail.cove)}/${last(s.rangeTtfbMs.tail.origin)} (cove/origin)`,
      );
      if (i + 1 < RUNS && !fits(runMs)) {
        say(`  stopping after ${runs} of ${RUNS} runs: another would take the scenario past ${BUDGET_MS / 1000} s (${((performance.now() - t0) / 1000).toFixed(0)} s so far)`);
        break;
      }
    }

    // 1-64 clients: per contender and run, a mirror filled once (as above); the first run always, more while the budget lasts.
    for (let i = 0; i < LEVEL_RUNS; i++) {
      const runStart = performance.now();
      for (const server of inOrder(i, ['cove', 'distribution', 'nginx'] as const)) {
        if (server === 'nginx') {
          if (nginxUrl) await levels('nginx', blobUrl(nginxUrl));
          continue;
        }
        const m = await startMirror(server, origin);
        try {
          checked(`${server} fill`, await curlGet(blobUrl(m.url)), 200, blob.size);
          await filled(m);
          await levels(server, blobUrl(m.url));
        } finally {
          await m.stop();
        }
      }
      const runMs = performance.now() - runStart;
      const top = String(LEVELS.at(-1));
      say(
        `  1-${top} clients, run ${i + 1} (${(runMs / 1000).toFixed(0)} s): ` +
          LEVELS.map((n) => `${n}: ${(['cove', 'distribution', 'nginx'] as const).map((k) => last(s.concurrentMBps[String(n)]![k])).join('/')}`).join(', ') +
          ' MB/s (cove/distribution/nginx)',
      );
      if (i + 1 < LEVEL_RUNS && !fits(runMs)) {
        say(`  1-${top} clients: stopping after ${i + 1} of ${LEVEL_RUNS} runs: another would take the scenario past ${BUDGET_MS / 1000} s`);
        break;
      }
    }

    const result = summarize(s, {
      runs,
      blobBytes: blob.size,
      bigBlobBytes: bigBlob.size,
      nginxSkipped,
      tlsProtocols,
      importFromArchive: archive ? archive.measures.filter((m) => m.measure.startsWith('import')) : null,
    });
    printTable(result, say);
    return result;
  } finally {
    await c.run();
  }
}

function summarize(
  s: BlobSamples,
  r: Pick<BlobResult, 'runs' | 'blobBytes' | 'bigBlobBytes' | 'nginxSkipped' | 'tlsProtocols' | 'importFromArchive'>,
): BlobResult {
  const medOrNull = (xs: number[]) => (xs.length ? median(xs) : null);
  const range = (part: RangePart) => ({
    cove: median(s.rangeTtfbMs[part].cove),
    origin: median(s.rangeTtfbMs[part].origin),
    overOriginMs: median(s.rangeTtfbMs[part].overOrigin),
  });
  const med: BlobResult['median'] = {
    warmMBps: perServer((x) => medOrNull(s.warmMBps[x])),
    coldMBps: { cove: median(s.coldMBps.cove), distribution: median(s.coldMBps.distribution), originDirect: median(s.coldMBps.originDirect) },
    coldServingMBps: perKind((k) => median(s.coldServingMBps[k])),
    coldOriginBytesPerBlobByte: perKind((k) => median(s.coldOriginBytesPerBlobByte[k])),
    rssAtStartMB: perKind((k) => median(s.rssAtStartMB[k])),
    peakRssFillMB: perKind((k) => median(s.peakRssFillMB[k])),
    peakRss8ClientsMB: perKind((k) => median(s.peakRss8ClientsMB[k])),
    tlsMBps: perKind((k) => median(s.tlsMBps[k])),
    rangeTtfbMs: { head: range('head'), tail: range('tail') },
    concurrentMBps: Object.fromEntries(
      Object.entries(s.concurrentMBps).map(([n, v]) => [n, perServer((x) => medOrNull(v[x]))]),
    ),
  };
  const over = (a: number | null, b: number | null) => (a === null || b === null ? null : a / b);
  const ratios: BlobResult['ratios'] = {
    warmVsDistribution: med.warmMBps.cove! / med.warmMBps.distribution!, // both measured in every run
    warmVsNginx: over(med.warmMBps.cove, med.warmMBps.nginx),
    coldVsDistribution: med.coldMBps.cove / med.coldMBps.distribution,
    tlsVsDistribution: med.tlsMBps.cove / med.tlsMBps.distribution,
    concurrentVsDistribution: Object.fromEntries(Object.entries(med.concurrentMBps).map(([n, v]) => [n, over(v.cove, v.distribution)])),
    concurrentVsNginx: Object.fromEntries(Object.entries(med.concurrentMBps).map(([n, v]) => [n, over(v.cove, v.nginx)])),
  };
  const T = BLOB_TARGETS;
  return {
    machine: machineInfo(),
    versions: {
      distribution: versionOf('docker-registry', ['--version']),
      nginx: r.nginxSkipped ? null : versionOf('nginx', ['-v']),
      curl: versionOf('curl', ['-V']),
    },
    nginxSkipped: r.nginxSkipped,
    blobBytes: r.blobBytes,
    bigBlobBytes: r.bigBlobBytes,
    runsPlanned: RUNS,
    runs: r.runs,
    levelRuns: s.concurrentMBps[String(LEVELS[0])]!.cove.length,
    levelRunsPlanned: LEVEL_RUNS,
    targets: T,
    tlsProtocols: r.tlsProtocols,
    samples: s,
    median: med,
    ratios,
    pass: {
      warmVsDistribution: ratios.warmVsDistribution >= T.warmVsDistribution,
      warmVsNginx: ratios.warmVsNginx === null ? null : ratios.warmVsNginx >= T.warmVsNginx,
      coldVsDistribution: ratios.coldVsDistribution >= T.coldVsDistribution,
      peakRss8ClientsMB: med.peakRss8ClientsMB.cove <= T.peakRss8ClientsMB,
      rangeHead: med.rangeTtfbMs.head.overOriginMs <= T.rangeTtfbOverOriginMs,
      rangeTail: med.rangeTtfbMs.tail.overOriginMs <= T.rangeTtfbOverOriginMs,
    },
    importFromArchive: r.importFromArchive,
    notes:
      'MB = 10^6 bytes; MB/s of one client = body bytes / curl time_total; of N clients = N x blob bytes / wall time of N curl processes started together; ' +
      'ratios are Cove / baseline; peak RSS is VmHWM of the mirror process over 8 concurrent warm GETs (reset through /proc/PID/clear_refs after the fill and one warm GET, whose own peak is reported apart); origin bytes are the blob body bytes in the origin\'s access log; ' +
      'Range TTFB is curl time_starttransfer of a 64 KiB Range of the cold 1 GB blob from a fresh Cove that fetched one small blob first, against the same Range from the origin itself right before or after; overOriginMs is the median of the per-run differences',
  };
}

function printTable(r: BlobResult, say: (line?: string) => void): void {
  const m = r.median;
  const T = r.targets;
  const f0 = (x: number | null | undefined) => (x === null || x === undefined ? '-' : x.toFixed(0));
  const x2 = (x: number | null | undefined) => (x === null || x === undefined ? '-' : `${x.toFixed(2)}x`);
  const verdict = (ok: boolean | null) => (ok === null ? 'n/a' : ok ? 'pass' : 'FAIL');
  const row = (cells: string[]) => say(cells.map((c, i) => (i === 0 ? c.padEnd(46) : c.padStart(i >= 6 ? 16 : 13))).join(' '));
  const capped = (part: RangePart) => (r.samples.rangeTtfbMs[part].coveCapped ? ` (${r.samples.rangeTtfbMs[part].coveCapped} capped at ${RANGE_CAP_S} s)` : '');
  say();
  say(
    `blob, median of ${r.runs} run${r.runs === 1 ? '' : 's'}${r.runs < r.runsPlanned ? ` (fewer than ${r.runsPlanned}: the ${BUDGET_MS / 1000} s budget)` : ''}; ` +
      `blob ${r.blobBytes} bytes (a tar of one ${BLOB_FILE_BYTES}-byte incompressible file), Range blob ${r.bigBlobBytes} bytes; MB = 10^6 bytes; client ${r.versions.curl.split(' ').slice(0, 2).join(' ')}`,
  );
  say(`distribution = ${r.versions.distribution} in proxy mode; nginx = ${r.versions.nginx ?? `skipped: ${r.nginxSkipped}`}, sendfile on`);
  row(['measure', 'cove', 'distribution', 'nginx', 'cove/distrib.', 'cove/nginx', 'target', 'verdict']);
  row([
    'warm, 1 client (MB/s)',
    f0(m.warmMBps.cove),
    f0(m.warmMBps.distribution),
    f0(m.warmMBps.nginx),
    x2(r.ratios.warmVsDistribution),
    x2(r.ratios.warmVsNginx),
    `≥${T.warmVsDistribution}x / ≥${T.warmVsNginx}x`,
    `${verdict(r.pass.warmVsDistribution)} / ${verdict(r.pass.warmVsNginx)}`,
  ]);
  row(['cold, 1 client (MB/s)', f0(m.coldMBps.cove), f0(m.coldMBps.distribution), '-', x2(r.ratios.coldVsDistribution), '-', `≥${T.coldVsDistribution}x`, verdict(r.pass.coldVsDistribution)]);
  row(['  origin direct (MB/s)', '', f0(m.coldMBps.originDirect), '', '', '', '', '']);
  row(['cold, 1 client, mirror serving already (MB/s)', f0(m.coldServingMBps.cove), f0(m.coldServingMBps.distribution), '-', x2(m.coldServingMBps.cove / m.coldServingMBps.distribution), '-', 'reported', '']);
  row(['  origin bytes per cold GET / blob size', m.coldOriginBytesPerBlobByte.cove.toFixed(3), m.coldOriginBytesPerBlobByte.distribution.toFixed(3), '', '', '', '1.0x', '']);
  row(['RSS right after start (MB)', f0(m.rssAtStartMB.cove), f0(m.rssAtStartMB.distribution), '', '', '', '', '']);
  row(['peak RSS over the cold fill and one warm GET (MB)', f0(m.peakRssFillMB.cove), f0(m.peakRssFillMB.distribution), '', '', '', '', '']);
  row([`peak RSS, ${RSS_CLIENTS} warm clients at once (MB)`, f0(m.peakRss8ClientsMB.cove), f0(m.peakRss8ClientsMB.distribution), '', '', '', `≤${T.peakRss8ClientsMB} MB`, verdict(r.pass.peakRss8ClientsMB)]);
  row([
    `warm over TLS, curl --http2 (MB/s)`,
    f0(m.tlsMBps.cove),
    f0(m.tlsMBps.distribution),
    '-',
    x2(r.ratios.tlsVsDistribution),
    '-',
    'reported',
    '',
  ]);
  say(`  TLS protocol spoken: cove ${r.tlsProtocols.cove}, distribution ${r.tlsProtocols.distribution}`);
  for (const part of ['head', 'tail'] as const) {
    const x = m.rangeTtfbMs[part];
    row([`Range ${part} 64 KiB, 1 GB cold: TTFB (ms)`, f0(x.cove), `origin ${f0(x.origin)}`, '', `${x.overOriginMs >= 0 ? '+' : ''}${f0(x.overOriginMs)} ms`, '', `≤ origin+${T.rangeTtfbOverOriginMs}`, verdict(part === 'head' ? r.pass.rangeHead : r.pass.rangeTail)]);
    if (capped(part)) say(`  Range ${part}:${capped(part)}`);
  }
  say('  Range rows: the origin (a docker-registry serving the blob itself) in the distribution column; +ms = median over runs of Cove TTFB - origin TTFB, asked back to back');
  if (r.levelRuns === 0) say('  1-64 clients at once: not measured (BENCH_BLOB_LEVEL_RUNS=0)');
  for (const n of r.levelRuns > 0 ? LEVELS : []) {
    const c = m.concurrentMBps[String(n)]!;
    const runs = r.levelRuns < r.levelRunsPlanned ? `${r.levelRuns} of ${r.levelRunsPlanned} runs` : `${r.levelRuns} run${r.levelRuns === 1 ? '' : 's'}`;
    const label = `warm, ${n} client${n === 1 ? '' : 's'} at once (MB/s, ${runs})`;
    row([label, f0(c.cove), f0(c.distribution), f0(c.nginx), x2(r.ratios.concurrentVsDistribution[String(n)]), x2(r.ratios.concurrentVsNginx[String(n)]), 'reported', '']);
  }
  if (r.importFromArchive) {
    for (const i of r.importFromArchive) say(`  ${i.measure} (archive scenario, this run): cove ${i.coveMBps.toFixed(0)} MB/s, ${i.ratio.toFixed(2)}x skopeo`);
  } else say('  import speed: measured by the archive scenario (npm run bench -- --only archive)');
  const warmFromOrigin = (['cove', 'distribution'] as const).filter((k) => r.samples.warmOriginRequests[k].some((n) => n > 0));
  for (const k of warmFromOrigin) say(`  note: ${k} sent ${r.samples.warmOriginRequests[k].join(', ')} blob GETs to the origin during its warm GETs (runs in order)`);
}
