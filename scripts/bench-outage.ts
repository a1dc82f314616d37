// The "outage" scenario of `npm run bench` (issue 14: outages at their worst), Cove against the
// distribution registry in proxy mode (Debian's docker-registry with proxy.remoteurl) in the same
// run. A real docker-registry origin holds a small image (proj/app:1, 3 MiB) and a second one no
// mirror ever pulls (proj/other:1). Each mirror reaches the origin through its own switchable TCP
// relay on loopback (test/e2e/real.ts SwitchableRelay): 'up', 'blackhole' (connections accepted
// and never answered, open ones frozen) or 'refuse'. Per mirror, one after the other:
//   1. the image is pulled through it (cached), and pulled again (the warm pull);
//   2. past the 1 s tag TTL the relay black-holes; 4 consecutive pulls of the cached tag are timed,
//      then a pull of the uncached image during the now-known outage (status, error, time);
//   3. the relay refuses connections: one cached and one uncached pull (for comparison);
//   4. the relay is up again; Cove's breaker is given time to close (time reported);
//   5. flapping: BENCH_FLAP_MS (default 60 s) of the relay switching up / blackhole every 2–5 s
//      (seeded, the same schedule for both mirrors), while one client pulls the cached tag and,
//      at random, tags the mirror has never seen (all on the origin); cached-pull failures,
//      p50/p99/max of cached pulls and what the uncached pulls met are reported.
// A "pull" is what a registry client does, over HTTP from this process: GET /v2/, the manifest by
// tag (Accept: OCI and Docker manifests and indexes), then the config and every layer, each body
// hashed against its digest. Its time includes no client process start (a skopeo pull of this
// image takes ~0.1 s of its own). Every pull is capped at BENCH_OUTAGE_CAP_MS (default 20 s): a
// capped pull is aborted, reported as "> 20 s", and counts as a failure.
// Cove runs with COVE_TAG_TTL=1s and defaults otherwise. Only loopback; everything started here is
// stopped by PID and every temp dir removed.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { join } from 'node:path';
import {
  Cleanup,
  SwitchableRelay,
  buildImage,
  httpGet,
  pushImage,
  startCove,
  startRegistry,
  tempDir,
  versionOf,
  type RelayMode,
  type TestImage,
} from '../test/e2e/real.js';

const MiB = 1024 * 1024;
const FLAP_MS = Number(process.env.BENCH_FLAP_MS ?? 60_000);
const CAP_MS = Number(process.env.BENCH_OUTAGE_CAP_MS ?? 20_000);
const SEED = Number(process.env.BENCH_SEED ?? 14);
const COVE_ENV = { COVE_TAG_TTL: '1s' };
/** Consecutive pulls of the cached tag once the link is black-holed. */
const BLACKHOLE_PULLS = 4;
/** Flapping: the link stays in one state this long (uniform, seeded). */
const FLAP_STATE_MS = [2000, 5000] as const;
/** Flapping: the client's pause between pulls (uniform, seeded), and its share of uncached tags. */
const FLAP_PAUSE_MS = [50, 250] as const;
const FLAP_UNCACHED_SHARE = 0.25;
/** Flapping: never more pulls than this, whatever the clock says. */
const FLAP_MAX_PULLS = 5000;

/** The issue's targets. */
export const OUTAGE_TARGETS = {
  firstCachedPullMs: 1500,
  laterCachedPullMs: 300,
  uncachedFailMs: 1500,
  flapCachedFailures: 0,
} as const;

const ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

type Kind = 'baseline' | 'cove';

/** One timed pull. */
export interface PullRecord {
  ok: boolean;
  ms: number;
  /** Aborted at the cap: took longer than `ms`. */
  capped: boolean;
  /** HTTP status of the request that failed (0 for a network error or the cap), 200 when ok. */
  status: number;
  /** The failure: the registry error's code and message, or the network error. */
  error: string | null;
  retryAfter: string | null;
  /** The manifest answer's Cache-Status (Cove's; empty for the baseline). */
  cacheStatus: string;
}

export interface FlapSummary {
  durationMs: number;
  switches: number;
  cached: { pulls: number; failed: number; stale: number; p50Ms: number | null; p99Ms: number | null; maxMs: number | null };
  uncached: { pulls: number; ok: number; okSlowerThan1500Ms: number; failedWithin1500Ms: number; failedSlower: number; capped: number; failedWithLinkUpThroughout: number; failures: Record<string, number>; p50Ms: number | null; maxMs: number | null };
}

export interface OutageKindResult {
  /** The pull that filled the cache, and the warm pull after it (link up). */
  coldPullMs: number;
  warmPullMs: number;
  blackhole: { cached: PullRecord[]; uncachedKnownOutage: PullRecord };
  refused: { cached: PullRecord; uncached: PullRecord };
  /** Cove: from the link coming back to /healthz saying the upstream's breaker closed (null: not within 90 s; the baseline has no breaker). */
  recoveryMs: number | null;
  /** Cove: its /_cove/status.json `upstreams` right after the black-hole pulls (what an operator sees); null for the baseline. */
  upstreamsAfterBlackhole: unknown;
  flap: FlapSummary;
}

export interface OutageResult {
  pullMethod: string;
  imageBytes: number;
  pullCapMs: number;
  coveEnv: Record<string, string>;
  seed: number;
  flapMs: number;
  /** When the relay switched during flapping: [ms from its start, mode], the same for both mirrors. */
  flapSchedule: Array<[number, RelayMode]>;
  baselineVersion: string;
  targets: typeof OUTAGE_TARGETS;
  baseline: OutageKindResult;
  cove: OutageKindResult;
  /** Cove time / baseline time (a capped baseline pull counts as the cap: the ratio is then an upper bound). */
  ratios: { firstCachedPull: number; laterCachedPullsMax: number; uncachedKnownOutage: number; flapCachedP99: number | null };
  /** Per target and system: met or not. */
  pass: Record<keyof typeof OUTAGE_TARGETS, { baseline: boolean; cove: boolean }>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** mulberry32: a small seeded generator, so the schedule and the client's choices repeat per seed. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const between = (rnd: () => number, [lo, hi]: readonly [number, number]) => lo + rnd() * (hi - lo);

function quantile(xs: number[], q: number): number | null {
  if (xs.length === 0) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil(q * s.length) - 1)]!;
}

interface Got {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  digest: string;
}

/** One GET through `agent`, aborted with `signal`; the body is hashed, and kept when `keep`. */
function get(url: string, agent: Agent, signal: AbortSignal, headers: Record<string, string> = {}, keep = false): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, signal, headers }, (res) => {
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => {
        hash.update(c);
        if (keep) chunks.push(c);
      });
      res.on('end', () => {
        if (!res.complete) return reject(new Error(`${url}: body cut short`));
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), digest: `sha256:${hash.digest('hex')}` });
      });
      res.on('error', reject);
      res.on('close', () => res.complete || reject(new Error(`${url}: connection closed mid-body`)));
    });
    req.on('error', reject);
    req.end();
  });
}

/** The registry error in a failed answer: "CODE: message", or the start of the body. */
function errorText(got: Got): string {
  try {
    const e = (JSON.parse(got.body.toString('utf8')) as { errors?: Array<{ code?: string; message?: string }> }).errors?.[0];
    if (e) return `${e.code ?? '?'}: ${e.message ?? ''}`;
  } catch {
    // not JSON
  }
  return got.body.toString('utf8').slice(0, 160) || '(empty body)';
}

/**
 * A full pull of `repo:tag` from `base`: /v2/, the manifest by tag, config and layers (3 at a
 * time), every body checked against its digest, and the manifest against `manifestDigest` when
 * given. Aborted after CAP_MS.
 */
async function pull(base: string, agent: Agent, repo: string, tag: string, manifestDigest?: string): Promise<PullRecord> {
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), CAP_MS);
  const t0 = performance.now();
  const rec = (ok: boolean, status: number, error: string | null, extra: Partial<PullRecord> = {}): PullRecord => ({
    ok,
    ms: performance.now() - t0,
    capped: abort.signal.aborted,
    status,
    error,
    retryAfter: null,
    cacheStatus: '',
    ...extra,
  });
  try {
    const ping = await get(`${base}/v2/`, agent, abort.signal);
    if (ping.status !== 200 && ping.status !== 401) return rec(false, ping.status, `GET /v2/: ${errorText(ping)}`);
    const m = await get(`${base}/v2/${repo}/manifests/${tag}`, agent, abort.signal, { accept: ACCEPT }, true);
    const cacheStatus = String(m.headers['cache-status'] ?? '');
    if (m.status !== 200) {
      const retryAfter = m.headers['retry-after'];
      return rec(false, m.status, errorText(m), { cacheStatus, retryAfter: retryAfter === undefined ? null : String(retryAfter) });
    }
    if (manifestDigest && m.digest !== manifestDigest) return rec(false, m.status, `manifest hashes to ${m.digest}, not ${manifestDigest}`, { cacheStatus });
    const manifest = JSON.parse(m.body.toString('utf8')) as { config: { digest: string }; layers: Array<{ digest: string }> };
    const wanted = [manifest.config.digest, ...manifest.layers.map((l) => l.digest)];
    let next = 0;
    let failure: PullRecord | null = null;
    const worker = async () => {
      while (next < wanted.length && failure === null) {
        const digest = wanted[next++]!;
        const b = await get(`${base}/v2/${repo}/blobs/${digest}`, agent, abort.signal);
        if (b.status !== 200) failure = rec(false, b.status, `blob ${digest.slice(0, 19)}: ${errorText(b)}`, { cacheStatus });
        else if (b.digest !== digest) failure = rec(false, b.status, `blob ${digest.slice(0, 19)} hashes to ${b.digest}`, { cacheStatus });
      }
    };
    await Promise.all([worker(), worker(), worker()]);
    return failure ?? rec(true, 200, null, { cacheStatus });
  } catch (err) {
    if (abort.signal.aborted) return rec(false, 0, `no answer within ${CAP_MS / 1000} s`);
    return rec(false, 0, err instanceof Error ? err.message : String(err));
  } finally {
    clearTimeout(timer);
  }
}

/** Waits until `relay` has carried nothing from the origin for `quietMs` (a proxy fills its cache after answering). */
async function settle(relay: SwitchableRelay, quietMs = 1000, maxMs = 30_000): Promise<void> {
  const end = Date.now() + maxMs;
  let last = -1;
  let since = Date.now();
  while (Date.now() < end) {
    if (relay.bytesFromTarget !== last) {
      last = relay.bytesFromTarget;
      since = Date.now();
    } else if (Date.now() - since >= quietMs) return;
    await sleep(100);
  }
}

/** Whether Cove's /healthz says every upstream's breaker is closed. */
async function coveUpstreamsClosed(url: string): Promise<boolean> {
  try {
    const h = await httpGet(`${url}/healthz`, { keep: true, timeoutMs: 2000 });
    const body = JSON.parse(h.body.toString('utf8')) as { upstreams?: Record<string, { state: string }> };
    return Object.values(body.upstreams ?? {}).every((u) => u.state === 'closed');
  } catch {
    return false;
  }
}

/** Cove's /_cove/status.json `upstreams`, or the error that kept it. */
async function coveUpstreams(url: string): Promise<unknown> {
  try {
    const s = await httpGet(`${url}/_cove/status.json`, { keep: true, timeoutMs: 2000 });
    return s.status === 200 ? (JSON.parse(s.body.toString('utf8')) as { upstreams?: unknown }).upstreams ?? null : `HTTP ${s.status}`;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

/** The flapping schedule: [ms from start, mode] pairs, starting up, alternating, each state 2–5 s. */
function flapSchedule(): Array<[number, RelayMode]> {
  const rnd = seeded(SEED);
  const out: Array<[number, RelayMode]> = [];
  let at = 0;
  let mode: RelayMode = 'up';
  while (at < FLAP_MS) {
    out.push([at, mode]);
    at += between(rnd, FLAP_STATE_MS);
    mode = mode === 'up' ? 'blackhole' : 'up';
  }
  return out;
}

/** Flapping on one mirror: the relay follows the schedule while one client pulls, bounded in time and count. */
async function flap(base: string, agent: Agent, relay: SwitchableRelay, image: TestImage, flapTags: string[], say: (l?: string) => void, kind: Kind): Promise<FlapSummary> {
  const schedule = flapSchedule();
  const rnd = seeded(SEED + 1);
  const switchesBefore = relay.switches;
  const t0 = performance.now();
  const timers = schedule.map(([at, mode]) => setTimeout(() => void relay.setMode(mode), at));
  const cached: PullRecord[] = [];
  const uncached: PullRecord[] = [];
  /** Uncached pulls that failed although the link was up from their start to their end. */
  let failedWithLinkUp = 0;
  let tags = 0;
  try {
    for (let i = 0; i < FLAP_MAX_PULLS && performance.now() - t0 < FLAP_MS; i++) {
      if (rnd() < FLAP_UNCACHED_SHARE && tags < flapTags.length) {
        const [mode, switches] = [relay.mode, relay.switches];
        const p = await pull(base, agent, 'proj/app', flapTags[tags++]!, image.manifestDigest);
        if (!p.ok && mode === 'up' && relay.switches === switches) failedWithLinkUp++;
        uncached.push(p);
      } else cached.push(await pull(base, agent, 'proj/app', '1', image.manifestDigest));
      await sleep(between(rnd, FLAP_PAUSE_MS));
    }
  } finally {
    for (const t of timers) clearTimeout(t);
  }
  const durationMs = performance.now() - t0;
  await relay.setMode('up');
  const cachedMs = cached.map((p) => p.ms);
  const failedUncached = uncached.filter((p) => !p.ok);
  const failures: Record<string, number> = {};
  for (const p of failedUncached) {
    const key = p.capped ? 'capped' : `${p.status} ${(p.error ?? '').split(':')[0]}`;
    failures[key] = (failures[key] ?? 0) + 1;
  }
  const s: FlapSummary = {
    durationMs,
    switches: relay.switches - switchesBefore,
    cached: {
      pulls: cached.length,
      failed: cached.filter((p) => !p.ok).length,
      stale: cached.filter((p) => /stale/.test(p.cacheStatus)).length,
      p50Ms: quantile(cachedMs, 0.5),
      p99Ms: quantile(cachedMs, 0.99),
      maxMs: quantile(cachedMs, 1),
    },
    uncached: {
      pulls: uncached.length,
      ok: uncached.length - failedUncached.length,
      okSlowerThan1500Ms: uncached.filter((p) => p.ok && p.ms > OUTAGE_TARGETS.uncachedFailMs).length,
      failedWithin1500Ms: failedUncached.filter((p) => !p.capped && p.ms <= OUTAGE_TARGETS.uncachedFailMs).length,
      failedSlower: failedUncached.filter((p) => !p.capped && p.ms > OUTAGE_TARGETS.uncachedFailMs).length,
      capped: failedUncached.filter((p) => p.capped).length,
      failedWithLinkUpThroughout: failedWithLinkUp,
      failures,
      p50Ms: quantile(uncached.map((p) => p.ms), 0.5),
      maxMs: quantile(uncached.map((p) => p.ms), 1),
    },
  };
  const f = (x: number | null) => (x === null ? '-' : x.toFixed(0));
  say(
    `  ${kind} flapping ${(durationMs / 1000).toFixed(0)} s, ${s.switches} switches: cached ${s.cached.pulls} pulls, ${s.cached.failed} failed, ` +
      `p50 ${f(s.cached.p50Ms)} / p99 ${f(s.cached.p99Ms)} / max ${f(s.cached.maxMs)} ms; uncached ${s.uncached.pulls}: ${s.uncached.ok} ok (${s.uncached.okSlowerThan1500Ms} after > 1.5 s), ` +
      `${s.uncached.failedWithin1500Ms} failed ≤ 1.5 s, ${s.uncached.failedSlower} failed slower, ${s.uncached.capped} capped; ${s.uncached.failedWithLinkUpThroughout} failed with the link up all along`,
  );
  return s;
}

const describe = (p: PullRecord) =>
  p.ok ? `${p.ms.toFixed(0)} ms${p.cacheStatus ? ` (${p.cacheStatus})` : ''}` : p.capped ? `> ${CAP_MS / 1000} s (capped)` : `${p.ms.toFixed(0)} ms, failed: ${p.status} ${p.error}${p.retryAfter ? `, Retry-After ${p.retryAfter}` : ''}`;

/** The whole scenario for one mirror kind, behind its own relay; everything it starts is stopped before it returns. */
async function measureKind(kind: Kind, originPort: number, image: TestImage, flapTags: string[], say: (l?: string) => void): Promise<OutageKindResult> {
  const c = new Cleanup();
  const agent = new Agent({ keepAlive: true });
  c.add(() => agent.destroy());
  try {
    const relay = await SwitchableRelay.start(originPort);
    c.add(() => relay.close());
    let base: string;
    if (kind === 'cove') base = (await startCove(c, relay.url, COVE_ENV)).url;
    else base = (await startRegistry(c, { proxyRemote: relay.url, name: 'baseline' })).url;

    const cold = await pull(base, agent, 'proj/app', '1', image.manifestDigest);
    if (!cold.ok) throw new Error(`outage: ${kind} could not pull the image with the link up: ${describe(cold)}`);
    await settle(relay);
    const warm = await pull(base, agent, 'proj/app', '1', image.manifestDigest);
    if (!warm.ok) throw new Error(`outage: ${kind} warm pull failed: ${describe(warm)}`);
    say(`  ${kind}: cold pull ${cold.ms.toFixed(0)} ms, warm ${warm.ms.toFixed(0)} ms`);
    await sleep(1500); // past Cove's 1 s tag TTL: every pull from now on must revalidate the tag

    await relay.setMode('blackhole');
    const cachedPulls: PullRecord[] = [];
    for (let i = 0; i < BLACKHOLE_PULLS; i++) cachedPulls.push(await pull(base, agent, 'proj/app', '1', image.manifestDigest));
    const uncachedKnown = await pull(base, agent, 'proj/other', '1');
    say(`  ${kind} black hole: cached tag ${cachedPulls.map(describe).join('; ')}`);
    say(`  ${kind} black hole: uncached image ${describe(uncachedKnown)}`);
    const upstreamsAfterBlackhole = kind === 'cove' ? await coveUpstreams(base) : null;
    if (Array.isArray(upstreamsAfterBlackhole)) {
      for (const u of upstreamsAfterBlackhole as Array<Record<string, unknown>>) {
        const fields = ['state', 'lastErrorClass', 'staleWhileDown', 'since'].filter((f) => f in u).map((f) => `${f} ${JSON.stringify(u[f])}`);
        say(`  cove status page, upstream ${String(u.name)}: ${fields.join(', ')}`);
      }
    }

    await relay.setMode('refuse');
    const refusedCached = await pull(base, agent, 'proj/app', '1', image.manifestDigest);
    const refusedUncached = await pull(base, agent, 'proj/other', '1');
    say(`  ${kind} refused: cached tag ${describe(refusedCached)}; uncached image ${describe(refusedUncached)}`);

    await relay.setMode('up');
    const back = performance.now();
    let recoveryMs: number | null = null;
    // Flapping starts from a healthy mirror: Cove's breaker closes at its next probe (bounded wait).
    if (kind === 'cove') {
      const end = Date.now() + 90_000;
      while (recoveryMs === null && Date.now() < end) {
        if (await coveUpstreamsClosed(base)) recoveryMs = performance.now() - back;
        else await sleep(100);
      }
      say(`  cove: link up again; ${recoveryMs === null ? 'breaker still open after 90 s' : `breaker closed after ${recoveryMs.toFixed(0)} ms`}`);
    }

    const flapped = await flap(base, agent, relay, image, flapTags, say, kind);
    return {
      coldPullMs: cold.ms,
      warmPullMs: warm.ms,
      blackhole: { cached: cachedPulls, uncachedKnownOutage: uncachedKnown },
      refused: { cached: refusedCached, uncached: refusedUncached },
      recoveryMs,
      upstreamsAfterBlackhole,
      flap: flapped,
    };
  } finally {
    await c.run();
  }
}

/** PUTs `image`'s manifest under each of `tags` in proj/app on the origin (its blobs are there already). */
async function tagOnOrigin(originUrl: string, image: TestImage, tags: string[]): Promise<void> {
  const [alg, hex] = image.manifestDigest.split(':');
  const body = readFileSync(join(image.layout, 'blobs', alg!, hex!));
  for (const tag of tags) {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${originUrl}/v2/proj/app/manifests/${tag}`, { method: 'PUT', headers: { 'content-type': image.manifestMediaType, 'content-length': body.length } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end(body);
    });
    if (status !== 201) throw new Error(`outage: PUT proj/app:${tag} on the origin answered ${status}`);
  }
}

/** Builds the images, starts the origin, measures the baseline then Cove, prints the table; cleans up after itself. */
export async function outageScenario(say: (line?: string) => void): Promise<OutageResult> {
  const c = new Cleanup();
  try {
    const work = tempDir(c, 'cove-outage-');
    const layout = join(work, 'layout');
    const image = await buildImage(layout, 'app', [2 * MiB, 1 * MiB], `outage-app-${SEED}`);
    const other = await buildImage(layout, 'other', [1 * MiB], `outage-other-${SEED}`);
    const origin = await startRegistry(c, { name: 'origin' });
    await pushImage(image, origin, 'proj/app:1');
    await pushImage(other, origin, 'proj/other:1');
    // Tags the flapping client pulls once each; enough for the client's pace (one pull per ≥ 50 ms pause, 1 in 4 uncached).
    const flapTags = Array.from({ length: Math.ceil(FLAP_MS / 400) }, (_, i) => `f${i + 1}`);
    await tagOnOrigin(origin.url, image, flapTags);
    say(
      `outage: ${(image.totalBytes / MiB).toFixed(1)} MiB image cached through each mirror, link to the origin switched by a relay; ` +
        `pulls capped at ${CAP_MS / 1000} s; flapping ${FLAP_MS / 1000} s, seed ${SEED}; Cove env ${Object.entries(COVE_ENV).map(([k, v]) => `${k}=${v}`).join(' ')}`,
    );
    const baseline = await measureKind('baseline', origin.port, image, flapTags, say);
    const cove = await measureKind('cove', origin.port, image, flapTags, say);

    const T = OUTAGE_TARGETS;
    const capOr = (p: PullRecord) => (p.capped ? CAP_MS : p.ms);
    const laterMax = (k: OutageKindResult) => Math.max(...k.blackhole.cached.slice(1).map(capOr));
    const firstOk = (k: OutageKindResult) => k.blackhole.cached[0]!.ok && k.blackhole.cached[0]!.ms <= T.firstCachedPullMs;
    const laterOk = (k: OutageKindResult) => k.blackhole.cached.slice(1).every((p) => p.ok && p.ms <= T.laterCachedPullMs);
    const u = (k: OutageKindResult) => k.blackhole.uncachedKnownOutage;
    const uncachedOk = (k: OutageKindResult) => !u(k).ok && !u(k).capped && u(k).status >= 400 && u(k).ms <= T.uncachedFailMs && !!u(k).error;
    const flapOk = (k: OutageKindResult) => k.flap.cached.failed <= T.flapCachedFailures;
    const result: OutageResult = {
      pullMethod: 'HTTP from the bench process, as a registry client pulls: GET /v2/, manifest by tag (Accept: OCI/Docker manifest and index), config and layers 3 at a time, every body checked against its digest; no client process start',
      imageBytes: image.totalBytes,
      pullCapMs: CAP_MS,
      coveEnv: COVE_ENV,
      seed: SEED,
      flapMs: FLAP_MS,
      flapSchedule: flapSchedule().map(([at, mode]) => [Math.round(at), mode]),
      baselineVersion: versionOf('docker-registry', ['--version']),
      targets: T,
      baseline,
      cove,
      ratios: {
        firstCachedPull: capOr(cove.blackhole.cached[0]!) / capOr(baseline.blackhole.cached[0]!),
        laterCachedPullsMax: laterMax(cove) / laterMax(baseline),
        uncachedKnownOutage: capOr(u(cove)) / capOr(u(baseline)),
        flapCachedP99: cove.flap.cached.p99Ms !== null && baseline.flap.cached.p99Ms !== null ? cove.flap.cached.p99Ms / baseline.flap.cached.p99Ms : null,
      },
      pass: {
        firstCachedPullMs: { baseline: firstOk(baseline), cove: firstOk(cove) },
        laterCachedPullMs: { baseline: laterOk(baseline), cove: laterOk(cove) },
        uncachedFailMs: { baseline: uncachedOk(baseline), cove: uncachedOk(cove) },
        flapCachedFailures: { baseline: flapOk(baseline), cove: flapOk(cove) },
      },
    };
    printTable(result, say);
    return result;
  } finally {
    await c.run();
  }
}

function printTable(r: OutageResult, say: (line?: string) => void): void {
  const b = r.baseline;
  const cv = r.cove;
  const cell = (p: PullRecord) => (p.capped ? `> ${CAP_MS / 1000} s` : `${p.ok ? '' : 'FAIL '}${p.ms.toFixed(0)} ms`);
  const ms = (x: number | null) => (x === null ? '-' : `${x.toFixed(0)} ms`);
  // A ratio against a capped baseline pull is an upper bound: the baseline took longer than the cap.
  const ratio = (x: number | null, baselineCapped = false) => (x === null ? '-' : `${baselineCapped ? '< ' : ''}${x < 0.01 ? x.toPrecision(2) : x.toFixed(2)}x`);
  // An uncached pull is meant to fail: its cell says how (status) and how fast.
  const failCell = (p: PullRecord) => (p.capped ? `> ${CAP_MS / 1000} s` : p.ok ? `ok ${p.ms.toFixed(0)} ms` : `${p.status || 'error'} in ${p.ms.toFixed(0)} ms`);
  const verdict = (k: keyof typeof OUTAGE_TARGETS) => `${r.pass[k].cove ? 'pass' : 'FAIL'} (baseline ${r.pass[k].baseline ? 'pass' : 'fail'})`;
  const row = (cells: string[]) => say(cells.map((x, i) => (i === 0 ? x.padEnd(40) : x.padStart(i === 5 ? 24 : 14))).join(' '));
  const later = (k: OutageKindResult) => k.blackhole.cached.slice(1);
  const laterCell = (k: OutageKindResult) => later(k).map((p) => (p.capped ? `>${CAP_MS / 1000}s` : `${p.ok ? '' : 'F'}${p.ms.toFixed(0)}`)).join('/');
  say();
  say(`outage: cached ${(r.imageBytes / MiB).toFixed(1)} MiB image, HTTP pulls (GET /v2/, manifest by tag, blobs, digests checked); baseline = ${r.baselineVersion} in proxy mode`);
  say(`ratios are Cove / baseline time; "< " where the baseline hit the ${CAP_MS / 1000} s cap; verdicts are Cove's against the issue's targets, the baseline's in brackets`);
  row(['measure', 'baseline', 'cove', 'cove/baseline', 'target', 'verdict']);
  row(['warm pull, link up', ms(b.warmPullMs), ms(cv.warmPullMs), ratio(cv.warmPullMs / b.warmPullMs), '', '']);
  row([
    'black hole: 1st pull of the cached tag',
    cell(b.blackhole.cached[0]!),
    cell(cv.blackhole.cached[0]!),
    ratio(r.ratios.firstCachedPull, b.blackhole.cached[0]!.capped),
    `≤ ${OUTAGE_TARGETS.firstCachedPullMs} ms`,
    verdict('firstCachedPullMs'),
  ]);
  row([
    `black hole: pulls 2-${BLACKHOLE_PULLS} (ms), max ratio`,
    laterCell(b),
    laterCell(cv),
    ratio(r.ratios.laterCachedPullsMax, later(b).some((p) => p.capped)),
    `≤ ${OUTAGE_TARGETS.laterCachedPullMs} ms`,
    verdict('laterCachedPullMs'),
  ]);
  const ub = b.blackhole.uncachedKnownOutage;
  const uc = cv.blackhole.uncachedKnownOutage;
  row(['black hole: uncached image, known outage', failCell(ub), failCell(uc), ratio(r.ratios.uncachedKnownOutage, ub.capped), `error ≤ ${OUTAGE_TARGETS.uncachedFailMs} ms`, verdict('uncachedFailMs')]);
  row(['refused: cached tag', cell(b.refused.cached), cell(cv.refused.cached), '', '', '']);
  row(['refused: uncached image', failCell(b.refused.uncached), failCell(cv.refused.uncached), '', '', '']);
  row(["link back: Cove's breaker closed after", '-', ms(cv.recoveryMs), '', '', '']);
  row([`flapping ${(r.flapMs / 1000).toFixed(0)} s: cached pulls failed`, `${b.flap.cached.failed}/${b.flap.cached.pulls}`, `${cv.flap.cached.failed}/${cv.flap.cached.pulls}`, '', `${OUTAGE_TARGETS.flapCachedFailures}`, verdict('flapCachedFailures')]);
  row(['  cached pull p50', ms(b.flap.cached.p50Ms), ms(cv.flap.cached.p50Ms), '', '', '']);
  row(['  cached pull p99', ms(b.flap.cached.p99Ms), ms(cv.flap.cached.p99Ms), ratio(r.ratios.flapCachedP99), 'reported', '']);
  row(['  cached pull max', ms(b.flap.cached.maxMs), ms(cv.flap.cached.maxMs), '', '', '']);
  const uf = (k: OutageKindResult) => `${k.flap.uncached.ok}/${k.flap.uncached.failedWithin1500Ms}/${k.flap.uncached.failedSlower}/${k.flap.uncached.capped}`;
  row(['  uncached: ok/fail≤1.5s/slower/capped', uf(b), uf(cv), '', '', '']);
  row(['  uncached pull max', ms(b.flap.uncached.maxMs), ms(cv.flap.uncached.maxMs), '', '', '']);
  row(['  uncached failed, link up all along', String(b.flap.uncached.failedWithLinkUpThroughout), String(cv.flap.uncached.failedWithLinkUpThroughout), '', '', '']);
  say(`  Cove's error for the uncached image: ${uc.status} ${uc.error}${uc.retryAfter ? ` (Retry-After: ${uc.retryAfter})` : ''}`);
  say(`  baseline's: ${ub.capped ? `no answer in ${CAP_MS / 1000} s` : `${ub.status} ${ub.error}`}`);
}
