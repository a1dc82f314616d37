// `npm run bench`: Cove against a named baseline, the distribution registry in proxy mode
// (Debian's docker-registry with proxy.remoteurl), both in front of the same docker-registry origin
// holding a ~200 MB image of incompressible layers. Each mirror reaches the origin through a
// counting TCP relay written here, so "bytes fetched from the origin" is measured on the wire.
// Timed runs are repeated and the median is reported. Only loopback; everything is cleaned up.
// Results: a table on stdout and bench/results.json.
//
// The "site" scenario: N Coves of one site (LAN peers, N = 1, 3, 5) pull the cold image at the
// same moment, one skopeo per node, against N independent distribution proxies pulled the same
// way; origin bytes / image size and the slowest node's pull time. `npm run bench -- --only site`
// (or BENCH_ONLY=site) runs just that scenario and prints its table without writing
// bench/results.json; the full bench stores it under the key `site`.
//
// The "archive" scenario (run last): offline `cove import` of a docker-archive and an oci-archive
// of the image (written by skopeo) into a fresh Cove with no origin, and `cove export` of it, in
// MB/s against skopeo reading the same archives into a dir: and writing an OCI archive. `--only
// archive` (or BENCH_ONLY=archive) runs just that, needs no registry, and writes no results.json;
// the full bench stores it under the key `archive`.
//
// The "outage" scenario (issue 14; scripts/bench-outage.ts): a small cached image while the link
// to the origin is black-holed, refused and flapping, Cove against the registry's proxy mode, each
// behind its own switchable relay, against the issue's targets. `--only outage` (or
// BENCH_ONLY=outage) runs just that, with its own small image and origin, and writes no
// results.json; the full bench stores it under the key `outage` (and the older 20 black-holed
// pulls of the 200 MiB image under `blackholedPulls`).
//
// The "blob" scenario (issue 15; scripts/bench-blob.ts): one 200 MB blob served warm and cold, to
// 1-64 clients, over TLS, and Ranges of a cold 1 GB blob, Cove against the registry's proxy mode and
// nginx with sendfile, against the issue's targets. `--only blob` (or BENCH_ONLY=blob) runs just
// that, with its own images and origin, and writes no results.json; the full bench stores it under
// the key `blob`.
//
// The "thin" scenario (issue 16; scripts/bench-thin.ts): the origin behind a 200 mbit/s tbf-shaped
// veth in a network namespace; one copy pulled straight from it, then a site of five Coves and
// then five distribution proxies, each mirror pulled by one client, all at once; the slowest pull
// against one copy, and origin bytes.
// The "fleet" scenario (issue 16; scripts/bench-fleet.ts): three sites of three Coves, each behind
// a shaped link to a regional parent Cove behind a shaped link to the origin; bytes per link and
// time, drawn into bench/fleet.svg. Both need root, network namespaces and tc; `--only thin` /
// `--only fleet` run just that and write no results.json (fleet still redraws bench/fleet.svg);
// the full bench stores them under the keys `thin` and `fleet` (or why they did not run).
//
// The "scale" scenario (issue 15; scripts/bench-scale.ts), run last: start-up time and RSS, one
// eviction pass, and origin requests per pull at 100 to 100,000 cached blobs (10 to 10,000 tags),
// with the growth per 10x. `--only scale` runs just that (no registry needed) and writes no
// results.json; the full bench stores it under the key `scale`.
import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  COVE_CLI,
  Cleanup,
  CountingProxy,
  ROOT,
  buildImage,
  httpGet,
  machineInfo,
  peakRss,
  pushImage,
  run,
  skopeoPull,
  startCove,
  startRegistry,
  tempDir,
  verifyDirCopy,
  versionOf,
  which,
  type TestImage,
} from '../test/e2e/real.js';
import { fetchedFrom, fetchedFromPeers, healthOf, startSite } from '../test/e2e/site-harness.js';
import { blobScenario } from './bench-blob.js';
import { scaleScenario } from './bench-scale.js';
import { outageScenario } from './bench-outage.js';
import { thinScenario } from './bench-thin.js';
import { fleetScenario } from './bench-fleet.js';
import { NetUnavailable } from '../test/helpers/shaped-net.js';

const MiB = 1024 * 1024;
const LAYERS = Number(process.env.BENCH_LAYERS ?? 4);
const LAYER_BYTES = Number(process.env.BENCH_LAYER_MIB ?? 50) * MiB;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const CLIENTS = 4;

const say = (line = '') => process.stdout.write(`${line}\n`);
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until the relay has been quiet for `quietMs` (the baseline fills its cache in the background). */
async function settle(proxy: CountingProxy, quietMs = 1500, maxMs = 60_000): Promise<void> {
  const deadline = Date.now() + maxMs;
  let last = -1;
  let since = Date.now();
  while (Date.now() < deadline) {
    const now = proxy.bytesFromTarget;
    if (now !== last) {
      last = now;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
    await sleep(100);
  }
}

interface Mirror {
  url: string;
  hostPort: string;
  pid: number;
}

type Kind = 'baseline' | 'cove';

/** A fresh mirror of `kind` (empty cache) behind its own counting relay; `stop` removes it all. */
async function freshMirror(
  kind: Kind,
  originPort: number,
  coveEnv: Record<string, string> = { COVE_TAG_TTL: '1h' },
): Promise<{ mirror: Mirror; proxy: CountingProxy; stop: () => Promise<void> }> {
  const c = new Cleanup();
  const proxy = await CountingProxy.start(originPort);
  c.add(() => proxy.close());
  let mirror: Mirror;
  if (kind === 'baseline') {
    const r = await startRegistry(c, { proxyRemote: proxy.url, name: 'baseline' });
    mirror = { url: r.url, hostPort: r.hostPort, pid: r.proc.pid };
  } else {
    const cove = await startCove(c, proxy.url, coveEnv);
    mirror = { url: cove.url, hostPort: cove.hostPort, pid: cove.pid };
  }
  proxy.reset(); // readiness probes are not part of any measurement
  return { mirror, proxy, stop: () => c.run() };
}

interface KindResult {
  coldPullMs: number[];
  warmPullMs: number[];
  warmBlobMs: number[];
  coldOriginBytes: number[];
  concurrentMs: number[];
  concurrentOriginBytes: number[];
  peakRssBytes: number;
}

async function measure(kind: Kind, image: TestImage, originPort: number, work: string): Promise<KindResult> {
  const ref = (m: Mirror) => `${m.hostPort}/proj/app:1`;
  const largest = image.layers.reduce((a, b) => (b.size > a.size ? b : a));
  const r: KindResult = { coldPullMs: [], warmPullMs: [], warmBlobMs: [], coldOriginBytes: [], concurrentMs: [], concurrentOriginBytes: [], peakRssBytes: 0 };
  const out = join(work, `out-${kind}`);
  for (let i = 0; i < RUNS; i++) {
    const { mirror, proxy, stop } = await freshMirror(kind, originPort);
    try {
      const cold = await skopeoPull(ref(mirror), out);
      const check = verifyDirCopy(out);
      if (check.problems.length > 0) throw new Error(`${kind} cold pull gave bad bytes: ${check.problems.join('; ')}`);
      await settle(proxy);
      r.coldPullMs.push(cold);
      r.coldOriginBytes.push(proxy.bytesFromTarget);
      r.warmPullMs.push(await skopeoPull(ref(mirror), out));
      const t0 = performance.now();
      const blob = await httpGet(`${mirror.url}/v2/proj/app/blobs/${largest.digest}`, { noHash: true, timeoutMs: 120_000 });
      r.warmBlobMs.push(performance.now() - t0);
      if (blob.status !== 200 || blob.bytes !== largest.size) throw new Error(`${kind} warm blob GET: ${blob.status}, ${blob.bytes} bytes`);
      r.peakRssBytes = Math.max(r.peakRssBytes, peakRss(mirror.pid));
      say(`  ${kind} run ${i + 1}: cold ${cold.toFixed(0)} ms, origin ${(proxy.bytesFromTarget / MiB).toFixed(1)} MiB; warm ${r.warmPullMs.at(-1)!.toFixed(0)} ms; blob ${r.warmBlobMs.at(-1)!.toFixed(0)} ms`);
    } finally {
      rmSync(out, { recursive: true, force: true });
      await stop();
    }
  }
  for (let i = 0; i < RUNS; i++) {
    const { mirror, proxy, stop } = await freshMirror(kind, originPort);
    try {
      const t0 = performance.now();
      const got = await Promise.all(
        Array.from({ length: CLIENTS }, () => httpGet(`${mirror.url}/v2/proj/app/blobs/${largest.digest}`, { timeoutMs: 120_000 })),
      );
      r.concurrentMs.push(performance.now() - t0);
      for (const g of got) if (g.status !== 200 || g.sha256 !== largest.digest) throw new Error(`${kind} concurrent client got ${g.status}, ${g.bytes} bytes, ${g.sha256}`);
      await settle(proxy);
      r.concurrentOriginBytes.push(proxy.bytesFromTarget);
      r.peakRssBytes = Math.max(r.peakRssBytes, peakRss(mirror.pid));
      say(`  ${kind} ${CLIENTS} concurrent cold clients, run ${i + 1}: ${r.concurrentMs.at(-1)!.toFixed(0)} ms, origin ${(proxy.bytesFromTarget / MiB).toFixed(1)} MiB`);
    } finally {
      await stop();
    }
  }
  return r;
}

interface OutageResult {
  pulls: number;
  completed: number;
  /** Time for all pulls, or null when one did not finish within OUTAGE_PULL_LIMIT_MS. */
  totalMs: number | null;
  firstMs: number | null;
  restMedianMs: number | null;
}

/** Longest one pull may take in the outage scenario before it counts as "did not finish". */
const OUTAGE_PULL_LIMIT_MS = 30_000;
const OUTAGE_PULLS = 20;

/**
 * The link to the origin dies (connections accepted, never answered) after the image was pulled
 * once; then OUTAGE_PULLS consecutive pulls of that cached image. Cove runs with a 1 s tag TTL
 * (every pull past it would revalidate) and a 2 s upstream timeout.
 */
async function outage(kind: Kind, originPort: number, work: string): Promise<OutageResult> {
  const { mirror, proxy, stop } = await freshMirror(kind, originPort, { COVE_TAG_TTL: '1s', COVE_UPSTREAM_TIMEOUT: '2s' });
  const out = join(work, `outage-${kind}`);
  const result: OutageResult = { pulls: OUTAGE_PULLS, completed: 0, totalMs: null, firstMs: null, restMedianMs: null };
  try {
    await skopeoPull(`${mirror.hostPort}/proj/app:1`, out);
    await settle(proxy);
    proxy.blackhole();
    await sleep(1100);
    const times: number[] = [];
    for (let i = 0; i < OUTAGE_PULLS; i++) {
      const t0 = performance.now();
      // A pull past the limit is killed (SIGKILL by the runner) and counts as not finished.
      const pulled = await skopeoPull(`${mirror.hostPort}/proj/app:1`, out, undefined, OUTAGE_PULL_LIMIT_MS).then(
        () => true,
        () => false,
      );
      if (!pulled) break;
      times.push(performance.now() - t0);
      result.completed++;
    }
    if (result.completed === OUTAGE_PULLS) {
      result.totalMs = times.reduce((a, b) => a + b, 0);
      result.firstMs = times[0]!;
      result.restMedianMs = median(times.slice(1));
    }
    say(
      result.totalMs === null
        ? `  ${kind} outage: pull ${result.completed + 1} did not finish in ${OUTAGE_PULL_LIMIT_MS / 1000} s`
        : `  ${kind} outage: ${OUTAGE_PULLS} pulls in ${result.totalMs.toFixed(0)} ms (first ${result.firstMs!.toFixed(0)} ms, then median ${result.restMedianMs!.toFixed(0)} ms)`,
    );
  } finally {
    rmSync(out, { recursive: true, force: true });
    await stop();
  }
  return result;
}

// ------------------------------------------------------------------------------------------ site

/** Site sizes for the site scenario (BENCH_SITE_NODES=1,3,5). */
const SITE_NODES = (process.env.BENCH_SITE_NODES ?? '1,3,5').split(',').map(Number).filter((n) => Number.isInteger(n) && n > 0);

interface SiteKindResult {
  /** Bytes from the origin, on the wire (the relay), headers included. */
  originBytes: number;
  originBytesPerImageByte: number;
  /** Each node's skopeo pull time (ms), all started at the same moment. */
  pullMs: number[];
  slowestMs: number;
  /** Cove only: blob and manifest bytes the nodes took from each other (their /healthz). */
  peerBytes?: number;
  /** Cove only: what the nodes' /healthz count as fetched from the origin (bodies only). */
  originBodyBytes?: number;
}

interface SiteResult {
  nodes: number;
  baseline: SiteKindResult;
  cove: SiteKindResult;
  ratios: { originBytes: number; slowestSpeedup: number };
}

/**
 * N mirrors of `kind` (a site of N Coves with one COVE_PEERS list, or N independent distribution
 * proxies), all behind one counting relay to the origin, pulled by N skopeo processes at once.
 */
async function sitePull(kind: Kind, n: number, image: TestImage, originPort: number, work: string): Promise<SiteKindResult> {
  const c = new Cleanup();
  const outs = Array.from({ length: n }, (_, i) => join(work, `site-${kind}-${i + 1}`));
  try {
    const proxy = await CountingProxy.start(originPort);
    c.add(() => proxy.close());
    let mirrors: Mirror[];
    let coves: Awaited<ReturnType<typeof startSite>> = [];
    if (kind === 'cove') {
      coves = await startSite(c, proxy.url, n, { COVE_TAG_TTL: '1h' });
      mirrors = coves.map((cv) => ({ url: cv.url, hostPort: cv.hostPort, pid: cv.pid }));
    } else {
      const regs = await Promise.all(Array.from({ length: n }, (_, i) => startRegistry(c, { proxyRemote: proxy.url, name: `baseline-${i + 1}` })));
      mirrors = regs.map((r) => ({ url: r.url, hostPort: r.hostPort, pid: r.proc.pid }));
    }
    proxy.reset(); // readiness probes are not part of the measurement
    const pullMs = await Promise.all(mirrors.map((m, i) => skopeoPull(`${m.hostPort}/proj/app:1`, outs[i]!)));
    for (const [i, out] of outs.entries()) {
      const check = verifyDirCopy(out);
      if (check.problems.length > 0) throw new Error(`site ${kind} x${n}: node ${i + 1} got bad bytes: ${check.problems.join('; ')}`);
      rmSync(out, { recursive: true, force: true });
    }
    await settle(proxy);
    const r: SiteKindResult = {
      originBytes: proxy.bytesFromTarget,
      originBytesPerImageByte: proxy.bytesFromTarget / image.totalBytes,
      pullMs,
      slowestMs: Math.max(...pullMs),
    };
    if (kind === 'cove') {
      const healths = await Promise.all(coves.map(healthOf));
      r.peerBytes = healths.reduce((sum, h) => sum + fetchedFromPeers(h), 0);
      r.originBodyBytes = healths.reduce((sum, h) => sum + fetchedFrom(h, 'origin'), 0);
    }
    say(
      `  ${kind} x${n}: slowest ${r.slowestMs.toFixed(0)} ms (${pullMs.map((x) => x.toFixed(0)).join(', ')}), origin ${(r.originBytes / MiB).toFixed(1)} MiB = ${r.originBytesPerImageByte.toFixed(2)}x the image` +
        (r.peerBytes !== undefined ? `, ${(r.peerBytes / MiB).toFixed(1)} MiB between peers` : ''),
    );
    return r;
  } finally {
    for (const out of outs) rmSync(out, { recursive: true, force: true });
    await c.run();
  }
}

/** The site scenario for every N in SITE_NODES, one run each; prints its table. */
async function siteScenario(image: TestImage, originPort: number, work: string): Promise<SiteResult[]> {
  say(`site: N mirrors pulled by N skopeo processes at once (N = ${SITE_NODES.join(', ')}; one run each)`);
  const out: SiteResult[] = [];
  for (const n of SITE_NODES) {
    const baseline = await sitePull('baseline', n, image, originPort, work);
    const cove = await sitePull('cove', n, image, originPort, work);
    out.push({
      nodes: n,
      baseline,
      cove,
      ratios: { originBytes: cove.originBytes / baseline.originBytes, slowestSpeedup: baseline.slowestMs / cove.slowestMs },
    });
  }
  const row = (cells: string[]) => say(cells.map((c, i) => (i === 0 ? c.padEnd(6) : c.padStart(i === 3 || i === 6 ? 15 : 13))).join(' '));
  say();
  say(`site of N, one cold ${(image.totalBytes / MiB).toFixed(0)} MiB image pulled through every node at once; baseline = N independent docker-registry proxies`);
  row(['nodes', 'origin/image', 'origin/image', 'origin bytes', 'slowest (ms)', 'slowest (ms)', 'slowest pull']);
  row(['', 'baseline', 'cove', 'cove/baseline', 'baseline', 'cove', 'baseline/cove']);
  for (const r of out) {
    row([
      String(r.nodes),
      r.baseline.originBytesPerImageByte.toFixed(2),
      r.cove.originBytesPerImageByte.toFixed(2),
      `${r.ratios.originBytes.toFixed(2)}x`,
      r.baseline.slowestMs.toFixed(0),
      r.cove.slowestMs.toFixed(0),
      `${r.ratios.slowestSpeedup.toFixed(2)}x`,
    ]);
  }
  return out;
}

// --------------------------------------------------------------------------------------- archive

/** No origin for the archive scenario: Cove's upstream is a closed loopback port. */
const NO_ORIGIN = 'http://127.0.0.1:9';
/** The archive scenario stops early (fewer runs, said so) when another run would take it past this. */
const ARCHIVE_BUDGET_MS = 180_000;

interface ArchiveMeasure {
  /** What is timed, for the table. */
  measure: string;
  /** The skopeo command it is compared with. */
  skopeo: string;
  /** Bytes per run: the archive read (import) or written (export). */
  bytes: number;
  skopeoMs: number[];
  coveMs: number[];
  skopeoMBps: number;
  coveMBps: number;
  /** Cove MB/s / skopeo MB/s. */
  ratio: number;
}

interface ArchiveResult {
  runsPlanned: number;
  runs: number;
  dockerArchiveBytes: number;
  ociArchiveBytes: number;
  exportBytes: number;
  measures: ArchiveMeasure[];
  /** Peak RSS (VmHWM) of the Cove process over an import (and, for the docker archive, the export after it). */
  covePeakRssBytes: { dockerArchive: number; ociArchive: number };
}

/** Runs the cove CLI to completion; the wall time includes its Node start, as skopeo's includes its own. */
async function coveCli(args: string[]): Promise<{ stdout: string; ms: number }> {
  const r = await run(process.execPath, [COVE_CLI, ...args], { timeoutMs: 300_000 });
  return { stdout: r.stdout, ms: r.ms };
}

/**
 * Offline import/export of the bench image against skopeo, RUNS times (fewer when the scenario would
 * pass ARCHIVE_BUDGET_MS). Each run: skopeo writes a docker-archive (uncompressed layers) and an
 * oci-archive (the layout's gzip layers) from the umoci layout; skopeo reads each into a fresh dir:
 * (the import baseline); a fresh Cove with no origin per archive takes `cove import`; the Cove that
 * imported the docker archive runs `cove export`, whose tar is read back by skopeo. The export
 * baseline is skopeo writing an OCI archive of the same image from the on-disk layout.
 */
async function archiveScenario(image: TestImage, work: string): Promise<ArchiveResult> {
  say(`archive: skopeo vs cove import/export of the ${(image.totalBytes / MiB).toFixed(0)} MiB image; no origin (Cove upstream ${NO_ORIGIN})`);
  const dir = join(work, 'archive');
  mkdirSync(dir, { recursive: true });
  const dockerTar = join(dir, 'docker.tar');
  const ociTar = join(dir, 'oci.tar');
  const exported = join(dir, 'export.tar');
  const copyDir = join(dir, 'copy');
  const ms = {
    skopeoDockerIn: [] as number[],
    skopeoOciIn: [] as number[],
    skopeoOciOut: [] as number[],
    coveDockerIn: [] as number[],
    coveOciIn: [] as number[],
    coveOut: [] as number[],
  };
  const sizes = { docker: 0, oci: 0, exported: 0 };
  const rss = { dockerArchive: 0, ociArchive: 0 };
  const t0 = performance.now();
  let runs = 0;
  const skopeo = async (src: string, dest: string) => (await run('skopeo', ['copy', '-q', src, dest], { timeoutMs: 300_000 })).ms;
  const sameSize = (what: 'docker' | 'oci' | 'exported', file: string) => {
    const size = statSync(file).size;
    if (sizes[what] !== 0 && sizes[what] !== size) throw new Error(`archive: ${file} is ${size} bytes this run, ${sizes[what]} before`);
    sizes[what] = size;
  };
  try {
    for (let i = 0; i < RUNS; i++) {
      for (const f of [dockerTar, ociTar, exported]) rmSync(f, { force: true });
      // 1. The archives (skopeo writing the OCI archive is the export baseline).
      await skopeo(`oci:${image.layout}:${image.tag}`, `docker-archive:${dockerTar}:proj/app:1`);
      ms.skopeoOciOut.push(await skopeo(`oci:${image.layout}:${image.tag}`, `oci-archive:${ociTar}:1`));
      sameSize('docker', dockerTar);
      sameSize('oci', ociTar);

      // 2. skopeo reads each archive into a fresh dir: (checked once).
      rmSync(copyDir, { recursive: true, force: true });
      ms.skopeoDockerIn.push(await skopeo(`docker-archive:${dockerTar}`, `dir:${copyDir}`));
      if (i === 0) {
        const check = verifyDirCopy(copyDir);
        if (check.problems.length > 0) throw new Error(`archive: skopeo read of the docker archive: ${check.problems.join('; ')}`);
      }
      rmSync(copyDir, { recursive: true, force: true });
      ms.skopeoOciIn.push(await skopeo(`oci-archive:${ociTar}:1`, `dir:${copyDir}`));
      if (i === 0) {
        const check = verifyDirCopy(copyDir);
        if (check.problems.length > 0) throw new Error(`archive: skopeo read of the OCI archive: ${check.problems.join('; ')}`);
      }
      rmSync(copyDir, { recursive: true, force: true });

      // 3 and 4. A fresh Cove imports the docker archive, then exports it.
      {
        const c = new Cleanup();
        try {
          const cove = await startCove(c, NO_ORIGIN, { COVE_TAG_TTL: '1h' });
          const imported = await coveCli(['import', dockerTar, '--socket', cove.adminSocket]);
          ms.coveDockerIn.push(imported.ms);
          const m = /^(\S+): (sha256:[0-9a-f]{64})$/m.exec(imported.stdout);
          if (!m) throw new Error(`archive: cove import of the docker archive said: ${imported.stdout}`);
          const manifestDigest = m[2]!;
          const out = await coveCli(['export', 'proj/app:1', '-o', exported, '--socket', cove.adminSocket]);
          ms.coveOut.push(out.ms);
          sameSize('exported', exported);
          rss.dockerArchive = Math.max(rss.dockerArchive, peakRss(cove.pid));
          // The export is readable: skopeo finds the image's config and the layers Cove stored in it.
          // (Its OCI-archive reader skips schema2 entries of index.json, so it reads the archive's
          // manifest.json, as docker load does, and describes the image in a manifest of its own.)
          const served = await httpGet(`${cove.url}/v2/proj/app/manifests/${manifestDigest}`, {
            keep: true,
            headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json' },
          });
          if (served.status !== 200 || served.sha256 !== manifestDigest) throw new Error(`archive: Cove serves ${served.status}, ${served.sha256} for ${manifestDigest}`);
          type Manifest = { config: { digest: string }; layers: Array<{ digest: string; size: number }> };
          const stored = JSON.parse(served.body.toString('utf8')) as Manifest;
          const read = JSON.parse((await run('skopeo', ['inspect', '--raw', `docker-archive:${exported}:proj/app:1`])).stdout) as Manifest;
          const shape = (x: Manifest) => JSON.stringify([x.config.digest, x.layers.map((l) => [l.digest, l.size])]);
          if (read.config.digest !== image.config.digest) throw new Error(`archive: exported config ${read.config.digest}, the image's is ${image.config.digest}`);
          if (shape(read) !== shape(stored)) throw new Error(`archive: skopeo reads ${shape(read)} from the export, Cove stored ${shape(stored)}`);
        } finally {
          rmSync(exported, { force: true });
          await c.run();
        }
      }
      // 3. Another fresh Cove imports the OCI archive (its ref name "1" has no repository: --tag).
      {
        const c = new Cleanup();
        try {
          const cove = await startCove(c, NO_ORIGIN, { COVE_TAG_TTL: '1h' });
          const imported = await coveCli(['import', ociTar, '--tag', 'proj/app:1', '--socket', cove.adminSocket]);
          ms.coveOciIn.push(imported.ms);
          if (!imported.stdout.includes(`proj/app:1: ${image.manifestDigest}`)) throw new Error(`archive: cove import of the OCI archive said: ${imported.stdout}`);
          rss.ociArchive = Math.max(rss.ociArchive, peakRss(cove.pid));
        } finally {
          await c.run();
        }
      }
      runs++;
      const mbps = (bytes: number, t: number) => (bytes / 1e6 / (t / 1000)).toFixed(0);
      say(
        `  run ${i + 1}: docker-archive in: skopeo ${mbps(sizes.docker, ms.skopeoDockerIn.at(-1)!)}, cove ${mbps(sizes.docker, ms.coveDockerIn.at(-1)!)} MB/s; ` +
          `oci-archive in: skopeo ${mbps(sizes.oci, ms.skopeoOciIn.at(-1)!)}, cove ${mbps(sizes.oci, ms.coveOciIn.at(-1)!)} MB/s; ` +
          `out: skopeo ${mbps(sizes.oci, ms.skopeoOciOut.at(-1)!)}, cove ${mbps(sizes.exported, ms.coveOut.at(-1)!)} MB/s`,
      );
      const elapsed = performance.now() - t0;
      if (i + 1 < RUNS && elapsed + elapsed / runs > ARCHIVE_BUDGET_MS) {
        say(`  stopping after ${runs} of ${RUNS} runs: another would take the scenario past ${ARCHIVE_BUDGET_MS / 1000} s (${(elapsed / 1000).toFixed(0)} s so far)`);
        break;
      }
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }

  const measureOf = (measure: string, skopeoCmd: string, skopeoBytes: number, skopeoMs: number[], coveBytes: number, coveMs: number[]): ArchiveMeasure => {
    const skopeoMBps = skopeoBytes / 1e6 / (median(skopeoMs) / 1000);
    const coveMBps = coveBytes / 1e6 / (median(coveMs) / 1000);
    return { measure, skopeo: skopeoCmd, bytes: coveBytes, skopeoMs, coveMs, skopeoMBps, coveMBps, ratio: coveMBps / skopeoMBps };
  };
  const measures = [
    measureOf('import docker-archive', 'skopeo copy docker-archive:FILE dir:DIR', sizes.docker, ms.skopeoDockerIn, sizes.docker, ms.coveDockerIn),
    measureOf('import oci-archive', 'skopeo copy oci-archive:FILE:1 dir:DIR', sizes.oci, ms.skopeoOciIn, sizes.oci, ms.coveOciIn),
    measureOf('export OCI layout tar', 'skopeo copy oci:LAYOUT:TAG oci-archive:FILE:1', sizes.oci, ms.skopeoOciOut, sizes.exported, ms.coveOut),
  ];
  const result: ArchiveResult = {
    runsPlanned: RUNS,
    runs,
    dockerArchiveBytes: sizes.docker,
    ociArchiveBytes: sizes.oci,
    exportBytes: sizes.exported,
    measures,
    covePeakRssBytes: rss,
  };

  const row = (cells: string[]) => say(cells.map((c, i) => (i === 0 ? c.padEnd(24) : c.padStart(12))).join(' '));
  say();
  say(
    `archive, median of ${runs} run${runs === 1 ? '' : 's'}${runs < RUNS ? ` (fewer than ${RUNS}: the ${ARCHIVE_BUDGET_MS / 1000} s budget)` : ''}; MB/s = archive bytes (10^6) / wall seconds, process start included`,
  );
  say(
    `sizes: docker-archive ${sizes.docker} bytes (uncompressed layers), oci-archive ${sizes.oci} bytes (gzip layers), Cove's export ${sizes.exported} bytes; image ${image.totalBytes} bytes`,
  );
  row(['measure', 'skopeo MB/s', 'cove MB/s', 'cove/skopeo']);
  for (const m of measures) row([m.measure, m.skopeoMBps.toFixed(0), m.coveMBps.toFixed(0), `${m.ratio.toFixed(2)}x`]);
  say('  import baselines: skopeo copy docker-archive:FILE / oci-archive:FILE:1 to a fresh dir:; cove import into a fresh Cove (the OCI archive with --tag proj/app:1)');
  say('  export baseline: skopeo copy oci:LAYOUT:TAG oci-archive:FILE:1 (the on-disk layout); cove export proj/app:1 of the imported docker archive, read back with skopeo');
  say(`  Cove peak RSS: ${(rss.dockerArchive / MiB).toFixed(0)} MiB (docker-archive import + export), ${(rss.ociArchive / MiB).toFixed(0)} MiB (oci-archive import)`);
  return result;
}

const ALONE = ['site', 'archive', 'outage', 'blob', 'scale', 'thin', 'fleet'] as const;
type Alone = (typeof ALONE)[number];

/** `--only site|archive|outage|blob|scale|thin|fleet` / `--only=...` / BENCH_ONLY=...: just that scenario, no results.json. */
function onlyScenario(): Alone | null {
  const argv = process.argv.slice(2);
  let only = process.env.BENCH_ONLY || null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--only') only = argv[++i] ?? '';
    else if (a.startsWith('--only=')) only = a.slice('--only='.length);
    else throw new Error(`unknown argument ${a} (usage: bench [--only ${ALONE.join('|')}])`);
  }
  if (only === null) return null;
  if (!(ALONE as readonly string[]).includes(only)) throw new Error(`--only ${only}: the scenarios that run alone are ${ALONE.map((n) => `"${n}"`).join(', ')}`);
  return only as Alone;
}

/**
 * The thin and fleet scenarios need root, network namespaces and tc; without them the full bench
 * goes on and records why they did not run.
 */
const notRun = (name: string) => (err: unknown) => {
  if (!(err instanceof NetUnavailable)) throw err;
  say(`${name}: not run: ${err.message}`);
  return { notRun: err.message };
};

async function main(): Promise<number> {
  const only = onlyScenario();
  const needs =
    only === 'scale'
      ? []
      : only === 'archive'
        ? ['skopeo', 'umoci']
        : only === 'blob'
          ? ['docker-registry', 'skopeo', 'curl', 'openssl']
          : only === 'thin' || only === 'fleet'
            ? ['docker-registry', 'skopeo', 'ip', 'tc']
            : ['docker-registry', 'skopeo', 'umoci', 'curl', 'openssl'];
  const missing = needs.filter((n) => which(n) === null);
  if (missing.length > 0) {
    process.stderr.write(`bench: ${missing.join(', ')} not installed (apt-get install ${missing.join(' ')})\n`);
    return 2;
  }
  const cleanup = new Cleanup();
  const onSignal = () => void cleanup.run().then(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    if (only === 'outage') {
      await outageScenario(say);
      say();
      say('--only outage: bench/results.json left as it was');
      return 0;
    }
    if (only === 'scale') {
      await scaleScenario(say);
      say();
      say('--only scale: bench/results.json left as it was (node dist/scripts/bench-scale.js writes bench/scale.json)');
      return 0;
    }
    if (only === 'blob') {
      await blobScenario(say);
      say();
      say('--only blob: bench/results.json left as it was');
      return 0;
    }
    if (only === 'thin') {
      await thinScenario(say);
      say();
      say('--only thin: bench/results.json left as it was');
      return 0;
    }
    if (only === 'fleet') {
      await fleetScenario(say);
      say();
      say('--only fleet: bench/results.json left as it was (bench/fleet.svg is redrawn from this run)');
      return 0;
    }
    const work = tempDir(cleanup, 'cove-bench-');
    say(`building a ${LAYERS} x ${LAYER_BYTES / MiB} MiB image with umoci ...`);
    const image = await buildImage(join(work, 'layout'), 'bench', Array(LAYERS).fill(LAYER_BYTES), `bench-${Date.now()}`);
    const largest = image.layers.reduce((a, b) => (b.size > a.size ? b : a));

    if (only === 'archive') {
      say(`image: ${(image.totalBytes / MiB).toFixed(1)} MiB in ${image.layers.length} layers`);
      await archiveScenario(image, work);
      say();
      say('--only archive: bench/results.json left as it was');
      return 0;
    }

    const origin = await startRegistry(cleanup, { name: 'origin' });
    await pushImage(image, origin, 'proj/app:1');
    say(`image: ${(image.totalBytes / MiB).toFixed(1)} MiB in ${image.layers.length} layers; largest blob ${(largest.size / MiB).toFixed(1)} MiB`);

    if (only === 'site') {
      await siteScenario(image, origin.port, work);
      say();
      say('--only site: bench/results.json left as it was');
      return 0;
    }

    const results = {} as Record<Kind, KindResult>;
    for (const kind of ['baseline', 'cove'] as const) {
      say(`${kind}:`);
      results[kind] = await measure(kind, image, origin.port, work);
    }

    say('origin black-holed after one pull:');
    const outages = {} as Record<Kind, OutageResult>;
    for (const kind of ['baseline', 'cove'] as const) outages[kind] = await outage(kind, origin.port, work);

    const b = results.baseline;
    const c = results.cove;
    const med = (k: KindResult) => ({
      coldPullMs: median(k.coldPullMs),
      warmPullMs: median(k.warmPullMs),
      warmBlobMs: median(k.warmBlobMs),
      warmBlobMBps: largest.size / 1e6 / (median(k.warmBlobMs) / 1000),
      coldOriginBytesPerImageByte: median(k.coldOriginBytes) / image.totalBytes,
      concurrentMs: median(k.concurrentMs),
      concurrentOriginBytesPerBlobByte: median(k.concurrentOriginBytes) / largest.size,
      peakRssMiB: k.peakRssBytes / MiB,
    });
    const mb = med(b);
    const mc = med(c);
    const ratios = {
      coldPullSpeedup: mb.coldPullMs / mc.coldPullMs,
      warmPullSpeedup: mb.warmPullMs / mc.warmPullMs,
      warmBlobSpeedup: mb.warmBlobMs / mc.warmBlobMs,
      concurrentSpeedup: mb.concurrentMs / mc.concurrentMs,
      coldOriginBytes: mc.coldOriginBytesPerImageByte / mb.coldOriginBytesPerImageByte,
      concurrentOriginBytes: mc.concurrentOriginBytesPerBlobByte / mb.concurrentOriginBytesPerBlobByte,
      peakRss: mc.peakRssMiB / mb.peakRssMiB,
    };

    const row = (name: string, bv: string, cv: string, ratio: string) => say(`${name.padEnd(44)} ${bv.padStart(12)} ${cv.padStart(12)} ${ratio.padStart(16)}`);
    say();
    say(`median of ${RUNS} runs; baseline = docker-registry ${versionOf('docker-registry', ['--version']).split(' ').pop()} in proxy mode`);
    row('metric', 'baseline', 'cove', 'cove vs baseline');
    row('cold pull, skopeo to dir: (ms)', mb.coldPullMs.toFixed(0), mc.coldPullMs.toFixed(0), `${ratios.coldPullSpeedup.toFixed(2)}x faster`);
    row('warm pull, skopeo to dir: (ms)', mb.warmPullMs.toFixed(0), mc.warmPullMs.toFixed(0), `${ratios.warmPullSpeedup.toFixed(2)}x faster`);
    row(`warm GET of largest blob (ms)`, mb.warmBlobMs.toFixed(0), mc.warmBlobMs.toFixed(0), `${ratios.warmBlobSpeedup.toFixed(2)}x faster`);
    row(`  (MB/s)`, mb.warmBlobMBps.toFixed(0), mc.warmBlobMBps.toFixed(0), '');
    row('origin bytes per cold pull / image size', mb.coldOriginBytesPerImageByte.toFixed(2), mc.coldOriginBytesPerImageByte.toFixed(2), `${ratios.coldOriginBytes.toFixed(2)}x the bytes`);
    row(`${CLIENTS} cold clients of one blob (ms)`, mb.concurrentMs.toFixed(0), mc.concurrentMs.toFixed(0), `${ratios.concurrentSpeedup.toFixed(2)}x faster`);
    row(`  origin bytes / blob size`, mb.concurrentOriginBytesPerBlobByte.toFixed(2), mc.concurrentOriginBytesPerBlobByte.toFixed(2), `${ratios.concurrentOriginBytes.toFixed(2)}x the bytes`);
    row('peak RSS of the mirror process (MiB)', mb.peakRssMiB.toFixed(0), mc.peakRssMiB.toFixed(0), `${ratios.peakRss.toFixed(2)}x`);
    const outageCell = (o: OutageResult) => (o.totalMs === null ? `DNF ${OUTAGE_PULL_LIMIT_MS / 1000}s` : o.totalMs.toFixed(0));
    const ob = outages.baseline;
    const oc = outages.cove;
    row(
      `${OUTAGE_PULLS} pulls, origin black-holed (ms)`,
      outageCell(ob),
      outageCell(oc),
      ob.totalMs !== null && oc.totalMs !== null ? `${(ob.totalMs / oc.totalMs).toFixed(2)}x faster` : ob.totalMs === null && oc.totalMs !== null ? 'baseline did not finish' : '',
    );

    say();
    const site = await siteScenario(image, origin.port, work);

    say();
    const archive = await archiveScenario(image, work);

    say();
    const outageResult = await outageScenario(say);

    say();
    const blob = await blobScenario(say, archive);

    say();
    const thin = await thinScenario(say).catch(notRun('thin'));

    say();
    const fleet = await fleetScenario(say).catch(notRun('fleet'));

    say();
    const scale = await scaleScenario(say);

    const file = join(ROOT, 'bench', 'results.json');
    mkdirSync(join(ROOT, 'bench'), { recursive: true });
    writeFileSync(
      file,
      JSON.stringify(
        {
          date: new Date().toISOString(),
          machine: machineInfo(),
          baseline: `docker-registry (${versionOf('docker-registry', ['--version'])}) in proxy mode`,
          tools: { skopeo: versionOf('skopeo', ['--version']), umoci: versionOf('umoci', ['--version']) },
          image: { totalBytes: image.totalBytes, layers: image.layers.map((l) => l.size), largestBlobBytes: largest.size },
          runs: RUNS,
          concurrentClients: CLIENTS,
          raw: results,
          median: { baseline: mb, cove: mc },
          ratios,
          blackholedPulls: { pulls: OUTAGE_PULLS, pullLimitMs: OUTAGE_PULL_LIMIT_MS, baseline: outages.baseline, cove: outages.cove },
          site: { runs: 1, results: site },
          archive,
          outage: outageResult,
          blob,
          thin,
          fleet,
          scale,
          notes: 'speed-ups are baseline time / Cove time; byte and RSS ratios are Cove / baseline; origin bytes are counted on the wire (headers included) by a TCP relay between each mirror and the origin (in the site scenario, one relay shared by the N mirrors); archive MB/s are 10^6 bytes of archive / wall seconds of the whole command, and the archive ratio is Cove MB/s / skopeo MB/s',
        },
        null,
        2,
      ) + '\n',
    );
    say();
    say(`wrote ${file}`);
    return 0;
  } finally {
    await cleanup.run();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
