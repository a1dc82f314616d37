// Every shape an outage takes at an edge site, one by one, against a cached image (its tag cached
// while the origin worked, now past its TTL) and an uncached one. A cached image is served whole
// (right digest, right bytes) within the revalidation deadline and marked stale where the origin
// could not be asked; an uncached one gets a fast 503 UPSTREAM_UNAVAILABLE with a Retry-After, as
// OCI JSON and without a stack trace. For the unreachable shapes /_cove/status.json and /metrics
// say so, with the class of the last error, and a known outage costs the origin nothing.
import { rmSync } from 'node:fs';
import type { LookupFunction } from 'node:net';
import t, { type Test } from 'tap';
import { startTestCove, type TestCove } from '../helpers/cove.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { makeImage, type Image } from '../helpers/images.js';
import { Link } from '../helpers/link.js';
import { OriginRegistry, type Fault, type OriginOptions } from '../helpers/origin-registry.js';
import { ACCEPT_ALL } from '../helpers/site.js';

/** A cached pull: the revalidation deadline (1 s) and a generous margin for a noisy machine. */
const CACHED_BOUND_MS = 3000;
/** An uncached pull: the upstream timeout (2 s) or twice the deadline, and a generous margin. */
const UNCACHED_BOUND_MS = 4500;
/** An uncached pull while the outage is not yet known: the silence check, about 2 × the deadline. */
const SILENCE_BOUND_MS = 3500;
/**
 * An uncached pull during a known outage: at most the probe it waits for (the deadline, 1 s),
 * within the 1.5 s.
 */
const KNOWN_BOUND_MS = 1500;
const CREDS = { COVE_UPSTREAM_USERNAME: 'edge', COVE_UPSTREAM_PASSWORD: 'pw' };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Name resolution for origin.test, switchable between working and one failure code; counts lookups. */
class Resolver {
  failing: 'ENOTFOUND' | 'EAI_AGAIN' | null = null;
  lookups = 0;
  readonly lookup: LookupFunction = (hostname, options, callback) => {
    this.lookups++;
    const cb = callback as (err: NodeJS.ErrnoException | null, address: string | Array<{ address: string; family: number }>, family?: number) => void;
    if (this.failing !== null || hostname !== 'origin.test') {
      const code = this.failing ?? 'ENOTFOUND';
      setImmediate(() => cb(Object.assign(new Error(`getaddrinfo ${code} ${hostname}`), { code, hostname }), ''));
      return;
    }
    if ((options as { all?: boolean }).all) setImmediate(() => cb(null, [{ address: '127.0.0.1', family: 4 }]));
    else setImmediate(() => cb(null, '127.0.0.1', 4));
  };
}

interface World {
  t: Test;
  origin: OriginRegistry;
  link: Link | null;
  resolver: Resolver;
  cove: TestCove;
}

interface Shape {
  name: string;
  origin?: OriginOptions;
  /** Put the link relay between Cove and the origin. */
  viaLink?: boolean;
  /** Reach the origin as origin.test through the in-process resolver. */
  viaName?: boolean;
  env?: Record<string, string>;
  /** Breaks things after the image is cached; may return another Cove to ask. */
  breakIt: (w: World) => Promise<TestCove | void>;
  /** Cache-Status of the cached manifest: stale where the origin could not be asked. */
  cached: 'stale' | 'revalidated';
  /** The uncached pull first, while the outage is not yet known to Cove. */
  uncachedFirst?: boolean;
  uncachedBoundMs?: number;
  /** The Retry-After the client must get, when it is known exactly. */
  retryAfter?: string;
  /** The upstream is marked down with this class of last error (status.json and /metrics). */
  downWith?: string;
  /** Origin requests (besides /v2/ probes) the uncached pull may cost. */
  uncachedCost?: number;
}

const originFault = (f: Fault, kind?: 'manifest' | 'blob') => async (w: World) => w.origin.setFault(kind ? { kind } : {}, f);

/** Restarts the Cove on its data directory in front of `upstream` (a different upstream, same cache). */
async function restartOn(w: World, upstream: string): Promise<TestCove> {
  await w.cove.stop();
  return startTestCove(w.t, upstream, { COVE_TAG_TTL: '100ms' }, { dataDir: w.cove.dataDir, keepData: true });
}

const tlsBlackhole = async (w: World) => {
  const hole = await Link.blackhole();
  w.t.teardown(() => hole.close());
  return restartOn(w, hole.url('https'));
};

const shapes: Shape[] = [
  // Cached first: the revalidation's silence reveals the outage, so the uncached pull fails within one probe.
  { name: 'black hole on HTTP (link), cached first', viaLink: true, breakIt: async (w) => w.link!.setMode('blackhole'), cached: 'stale', uncachedBoundMs: KNOWN_BOUND_MS, downWith: 'timeout' },
  {
    name: 'black hole on HTTP (link), uncached first while the outage is not yet known',
    viaLink: true,
    breakIt: async (w) => w.link!.setMode('blackhole'),
    cached: 'stale',
    uncachedFirst: true,
    uncachedBoundMs: SILENCE_BOUND_MS,
    downWith: 'timeout',
  },
  { name: 'black hole on TLS (handshake never completes), cached first', breakIt: tlsBlackhole, cached: 'stale', uncachedBoundMs: KNOWN_BOUND_MS, downWith: 'timeout' },
  { name: 'black hole on TLS, uncached first while the outage is not yet known', breakIt: tlsBlackhole, cached: 'stale', uncachedFirst: true, uncachedBoundMs: SILENCE_BOUND_MS, downWith: 'timeout' },
  { name: 'black hole in the origin (accepts, never answers a request)', breakIt: originFault({ type: 'blackhole' }), cached: 'stale', downWith: 'timeout' },
  {
    // The revalidation is a HEAD (no body to drip): the cached image is revalidated, not stale.
    name: 'slow drip: headers at once, manifests and blobs at 5 bytes a second',
    breakIt: async (w) => {
      w.origin.setFault({ kind: 'manifest' }, { type: 'slow', bytesPerSecond: 5 });
      w.origin.setFault({ kind: 'blob' }, { type: 'slow', bytesPerSecond: 5 });
    },
    cached: 'revalidated',
  },
  { name: 'connection refused (link)', viaLink: true, breakIt: async (w) => w.link!.setMode('refuse'), cached: 'stale', downWith: 'refused' },
  { name: 'connection refused (origin stopped)', breakIt: async (w) => w.origin.stop(), cached: 'stale', downWith: 'refused' },
  // As with the drip, the revalidation HEAD has no body to cut.
  { name: 'reset mid-response (origin RSTs after 100 body bytes)', breakIt: originFault({ type: 'reset', afterBytes: 100 }), cached: 'revalidated' },
  { name: 'reset (link kills every connection)', viaLink: true, breakIt: async (w) => w.link!.setMode('reset'), cached: 'stale', downWith: 'reset' },
  ...[500, 502, 503, 504].map((status): Shape => ({ name: `origin ${status}`, breakIt: originFault({ type: 'status', status }, 'manifest'), cached: 'stale', retryAfter: '5', uncachedCost: 1 })),
  // The revalidation met the 429 first: Cove keeps away for the origin's Retry-After, so the uncached pull costs nothing.
  { name: 'origin 429 with Retry-After', breakIt: originFault({ type: 'status', status: 429, retryAfter: 30 }, 'manifest'), cached: 'stale', retryAfter: '30', uncachedCost: 0 },
  { name: 'origin 429 without Retry-After', breakIt: originFault({ type: 'status', status: 429 }, 'manifest'), cached: 'stale', retryAfter: '5', uncachedCost: 1 },
  { name: 'TLS failure (the origin does not speak TLS)', breakIt: async (w) => restartOn(w, w.origin.url.replace('http:', 'https:')), cached: 'stale', downWith: 'tls' },
  { name: 'name resolution fails (ENOTFOUND)', viaName: true, breakIt: async (w) => void (w.resolver.failing = 'ENOTFOUND'), cached: 'stale', downWith: 'dns' },
  { name: 'name resolution fails (EAI_AGAIN)', viaName: true, breakIt: async (w) => void (w.resolver.failing = 'EAI_AGAIN'), cached: 'stale', downWith: 'dns' },
];

interface UpstreamRow {
  name: string;
  state: string;
  since: number | null;
  staleWhileDown: number;
  lastErrorClass: string | null;
}

async function originRow(cove: TestCove): Promise<UpstreamRow | undefined> {
  const status = JSON.parse((await fetchAll(`${cove.url}/_cove/status.json`)).body.toString()) as { upstreams: UpstreamRow[] };
  return status.upstreams.find((u) => u.name === 'origin');
}

interface Metrics {
  samples: Map<string, number>;
}

async function scrape(url: string): Promise<Metrics> {
  const text = (await fetchAll(`${url}/metrics`)).body.toString();
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = /^([^\s#][^\s]*) (\S+)$/.exec(line);
    if (m) samples.set(m[1]!, Number(m[2]));
  }
  return { samples };
}

/** What a pull of the whole cached image gives: manifest by tag, then every blob. */
async function pullCached(t: Test, cove: TestCove, image: Image, expect: Shape['cached']): Promise<void> {
  const staleBefore = cove.counters.staleServed;
  const started = Date.now();
  const m = await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT_ALL }, timeoutMs: 20_000 });
  t.equal(m.status, 200, 'cached: the manifest is served');
  t.equal(sha256(m.body), image.manifestDigest, 'cached: the right manifest');
  if (expect === 'stale') {
    t.equal(m.headers['cache-status'], 'cove; hit; detail=stale', 'cached: marked stale');
    t.equal(m.headers['warning'], '110 - "Response is Stale"');
    t.equal(cove.counters.staleServed, staleBefore + 1, 'cached: counted as served stale');
  } else {
    t.equal(m.headers['cache-status'], 'cove; hit; detail=revalidated', 'cached: revalidated (the origin answered the HEAD)');
  }
  for (const blob of [{ digest: image.configDigest }, ...image.layers]) {
    const b = await fetchAll(`${cove.url}/v2/proj/app/blobs/${blob.digest}`, { timeoutMs: 20_000 });
    t.equal(b.status, 200, 'cached: blob served');
    t.equal(sha256(b.body), blob.digest, 'cached: blob bytes right');
  }
  const ms = Date.now() - started;
  t.ok(ms < CACHED_BOUND_MS, `cached image served within ${CACHED_BOUND_MS} ms (${ms} ms)`);
}

interface Cost {
  /** Origin requests other than GET /v2/ (a probe). */
  requests: number;
  /** New connections through the link plus name lookups (a probe's included). */
  reaches: number;
}

const reaches = (w: World) => (w.link?.accepted ?? 0) + w.resolver.lookups;
const imageRequests = (w: World) => w.origin.requests.filter((r) => r.kind !== 'base').length;

/** An uncached manifest: a fast, clear 503 with a Retry-After; returns what it cost upstream. */
async function pullUncached(t: Test, w: World, shape: Shape): Promise<Cost> {
  const before = { requests: imageRequests(w), reaches: reaches(w) };
  const started = Date.now();
  const r = await fetchAll(`${w.cove.url}/v2/proj/app/manifests/2`, { headers: { accept: ACCEPT_ALL }, timeoutMs: 20_000 });
  const ms = Date.now() - started;
  t.equal(r.status, 503, 'uncached: 503');
  t.equal(r.headers['content-type'], 'application/json', 'uncached: OCI JSON');
  const body = JSON.parse(r.body.toString()) as { errors: Array<{ code: string; message: string }> };
  t.equal(body.errors[0]?.code, 'UPSTREAM_UNAVAILABLE');
  t.notMatch(r.body.toString(), /at .*\.js:\d+|node:internal|goroutine/, 'uncached: no stack trace');
  const retryAfter = r.headers['retry-after'] ?? '';
  t.match(retryAfter, /^\d+$/, `uncached: a Retry-After in seconds (${retryAfter})`);
  t.ok(Number(retryAfter) >= 1, 'uncached: Retry-After at least 1');
  if (shape.retryAfter !== undefined) t.equal(retryAfter, shape.retryAfter, 'uncached: the Retry-After expected');
  const bound = shape.uncachedBoundMs ?? UNCACHED_BOUND_MS;
  t.ok(ms < bound, `uncached: answered within ${bound} ms (${ms} ms)`);
  t.comment(`${shape.name}: uncached 503 in ${ms} ms, Retry-After ${retryAfter}: ${body.errors[0]?.message}`);
  await sleep(20);
  return { requests: imageRequests(w) - before.requests, reaches: reaches(w) - before.reaches };
}

async function world(t: Test, shape: Pick<Shape, 'origin' | 'viaLink' | 'viaName' | 'env'>, creds: Record<string, string> = {}): Promise<World> {
  const origin = await OriginRegistry.start(shape.origin ?? {});
  t.teardown(() => origin.close());
  const link = shape.viaLink ? await Link.start({ port: origin.port }) : null;
  if (link) t.teardown(() => link.close());
  const resolver = new Resolver();
  const upstream = link ? link.url() : shape.viaName ? `http://origin.test:${origin.port}` : origin.url;
  const cove = await startTestCove(t, upstream, { COVE_TAG_TTL: '100ms', ...creds, ...shape.env }, { keepData: true, lookup: resolver.lookup });
  const world: World = { t, origin, link, resolver, cove };
  // The Cove in use (a restart replaces it) stops before its data goes: work still under way
  // (a background revalidation storing a moved tag) must not write into a removed directory.
  t.teardown(async () => {
    await world.cove.stop();
    rmSync(cove.dataDir, { recursive: true, force: true });
  });
  return world;
}

/** Pulls the image whole through the Cove while the origin works, then lets the tag's TTL pass. */
async function cache(t: Test, cove: TestCove, repo: string, tag: string, image: Image): Promise<void> {
  const m = await fetchAll(`${cove.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: ACCEPT_ALL } });
  t.equal(m.status, 200, `${repo}:${tag} pulled while the origin works`);
  for (const blob of [{ digest: image.configDigest }, ...image.layers]) {
    const b = await fetchAll(`${cove.url}/v2/${repo}/blobs/${blob.digest}`);
    t.equal(sha256(b.body), blob.digest);
  }
  await cove.fillsDone();
  await sleep(150);
}

for (const shape of shapes) {
  t.test(shape.name, async (t) => {
    const w = await world(t, shape);
    const cached = makeImage({ layers: [20_000, 3000], seed: `shape-${shape.name}` });
    const uncached = makeImage({ layers: [5000], seed: `shape-${shape.name}-new` });
    w.origin.putImage('proj/app', '1', cached);
    w.origin.putImage('proj/app', '2', uncached);
    await cache(t, w.cove, 'proj/app', '1', cached);

    w.cove = (await shape.breakIt(w)) ?? w.cove;
    if (shape.uncachedFirst) {
      await pullUncached(t, w, shape);
      await pullCached(t, w.cove, cached, shape.cached);
    } else {
      await pullCached(t, w.cove, cached, shape.cached);
      const cost = await pullUncached(t, w, shape);
      if (shape.uncachedCost !== undefined) t.equal(cost.requests, shape.uncachedCost, `the uncached pull cost the origin ${shape.uncachedCost} requests`);
    }
    if (shape.downWith !== undefined) {
      // Connection failures open the breaker after 3 in a row (a silence at once): pull until
      // it is marked down, a bounded few times.
      for (let i = 0; i < 3 && (await originRow(w.cove))?.state !== 'open'; i++) {
        const r = await fetchAll(`${w.cove.url}/v2/proj/app/manifests/2`, { headers: { accept: ACCEPT_ALL }, timeoutMs: 20_000 });
        t.equal(r.status, 503, `uncached again: 503 (${i + 1})`);
      }
      const row = await originRow(w.cove);
      t.equal(row?.state, 'open', 'status.json: the origin is marked down');
      t.equal(row?.lastErrorClass, shape.downWith, `status.json: last error class ${shape.downWith}`);
      t.ok(typeof row?.since === 'number' && row.since <= Date.now(), 'status.json: since when');
      const m = await scrape(w.cove.url);
      t.equal(m.samples.get('cove_upstream_reachable{upstream="origin"}'), 0, '/metrics: unreachable');
      t.equal(m.samples.get(`cove_upstream_last_error{upstream="origin",class="${shape.downWith}"}`), 1, `/metrics: last error ${shape.downWith}`);
      t.ok((m.samples.get('cove_upstream_stale_while_down{upstream="origin"}') ?? -1) >= 0, '/metrics: stale answers while down');

      // During the known outage an uncached pull costs the origin nothing (at most the one
      // background probe of /v2/ a request may start, one a second).
      const known = await pullUncached(t, w, { ...shape, uncachedBoundMs: KNOWN_BOUND_MS });
      t.equal(known.requests, 0, 'known outage: the uncached pull sent the origin no request');
      t.ok(known.reaches <= 1, `known outage: at most one probe's connection or lookup (${known.reaches})`);
    }
  });
}

t.test('half-broken origin: manifests answer, blob GETs fail 500 (Harbor with its storage down)', async (t) => {
  const w = await world(t, {});
  const cached = makeImage({ layers: [20_000, 3000], seed: 'half-broken' });
  const uncached = makeImage({ layers: [5000], seed: 'half-broken-new' });
  w.origin.putImage('proj/app', '1', cached);
  w.origin.putImage('proj/app', '2', uncached);
  await cache(t, w.cove, 'proj/app', '1', cached);
  w.origin.setFault({ kind: 'blob' }, { type: 'status', status: 500 });

  await pullCached(t, w.cove, cached, 'revalidated');
  const m = await fetchAll(`${w.cove.url}/v2/proj/app/manifests/2`, { headers: { accept: ACCEPT_ALL } });
  t.equal(m.status, 200, 'uncached: the manifest comes');
  t.equal(sha256(m.body), uncached.manifestDigest);
  const layer = uncached.layers[0]!;
  const started = Date.now();
  const b = await fetchAll(`${w.cove.url}/v2/proj/app/blobs/${layer.digest}`, { timeoutMs: 20_000 });
  t.ok(Date.now() - started < UNCACHED_BOUND_MS, `uncached blob: answered fast (${Date.now() - started} ms)`);
  t.equal(b.status, 503, 'uncached blob: 503');
  t.equal(JSON.parse(b.body.toString()).errors[0].code, 'UPSTREAM_UNAVAILABLE');
  t.match(b.headers['retry-after'] ?? '', /^[1-9]\d*$/, `uncached blob: Retry-After (${b.headers['retry-after']})`);
  t.notMatch(b.body.toString(), /at .*\.js:\d+/, 'no stack trace');

  // Nothing partial was kept: once storage is back the blob is fetched from the origin, whole.
  w.origin.clearFaults();
  const gets = w.origin.count({ method: 'GET', kind: 'blob', digest: layer.digest });
  const again = await fetchAll(`${w.cove.url}/v2/proj/app/blobs/${layer.digest}`);
  t.equal(again.status, 200);
  t.equal(sha256(again.body), layer.digest, 'the right bytes');
  t.equal(w.origin.count({ method: 'GET', kind: 'blob', digest: layer.digest }), gets + 1, 'fetched from the origin: nothing had been stored');
});

t.test('token service down while the registry is up', async (t) => {
  const w = await world(t, { origin: { auth: 'bearer', username: 'edge', password: 'pw', tokenExpiresIn: 4 } }, CREDS);
  const cached = makeImage({ layers: [20_000, 3000], seed: 'token-down' });
  const sameRepo = makeImage({ layers: [5000], seed: 'token-down-same' });
  const later = makeImage({ layers: [5000], seed: 'token-down-later' });
  const other = makeImage({ layers: [5000], seed: 'token-down-other' });
  w.origin.putImage('proj/app', '1', cached);
  w.origin.putImage('proj/app', '2', sameRepo);
  w.origin.putImage('proj/app', '3', later);
  w.origin.putImage('proj/other', '1', other);
  const issued = Date.now();
  await cache(t, w.cove, 'proj/app', '1', cached);
  w.origin.setFault({ kind: 'token' }, { type: 'status', status: 503 });

  t.test('while the cached token lives', async (t) => {
    await pullCached(t, w.cove, cached, 'revalidated');
    const m = await fetchAll(`${w.cove.url}/v2/proj/app/manifests/2`, { headers: { accept: ACCEPT_ALL } });
    t.equal(m.status, 200, 'an uncached tag in the same repository is served');
    t.equal(sha256(m.body), sameRepo.manifestDigest);
    const b = await fetchAll(`${w.cove.url}/v2/proj/app/blobs/${sameRepo.layers[0]!.digest}`);
    t.equal(sha256(b.body), sameRepo.layers[0]!.digest, 'and its blob');
    const o = await fetchAll(`${w.cove.url}/v2/proj/other/manifests/1`, { headers: { accept: ACCEPT_ALL }, timeoutMs: 20_000 });
    t.equal(o.status, 503, 'another repository (needs a new token): 503');
    t.equal(JSON.parse(o.body.toString()).errors[0].code, 'UPSTREAM_UNAVAILABLE');
    t.match(o.headers['retry-after'] ?? '', /^[1-9]\d*$/, 'with a Retry-After');
    t.ok(Date.now() - issued < 4000, 'all within the token life');
  });

  t.test('after the token expired', async (t) => {
    await sleep(Math.max(0, issued + 4300 - Date.now()));
    await pullCached(t, w.cove, cached, 'stale');
    const started = Date.now();
    const r = await fetchAll(`${w.cove.url}/v2/proj/app/manifests/3`, { headers: { accept: ACCEPT_ALL }, timeoutMs: 20_000 });
    t.equal(r.status, 503, 'uncached: 503');
    t.equal(JSON.parse(r.body.toString()).errors[0].code, 'UPSTREAM_UNAVAILABLE');
    t.match(r.headers['retry-after'] ?? '', /^[1-9]\d*$/, `with a Retry-After (${r.headers['retry-after']})`);
    t.ok(Date.now() - started < UNCACHED_BOUND_MS, `fast (${Date.now() - started} ms)`);
  });
});

t.test('black hole not yet known: concurrent uncached pulls are all released when the origin is marked down', async (t) => {
  const w = await world(t, { viaLink: true });
  const images = [0, 1, 2, 3].map((i) => makeImage({ layers: [1000], seed: `released-${i}` }));
  images.forEach((image, i) => w.origin.putImage('proj/app', `n${i}`, image));
  await fetchAll(`${w.cove.url}/v2/`);
  await w.link!.setMode('blackhole');
  const started = Date.now();
  const pulls = images.map(async (_, i) => {
    await sleep(i * 200); // a later request would reach its own silence check later
    const r = await fetchAll(`${w.cove.url}/v2/proj/app/manifests/n${i}`, { headers: { accept: ACCEPT_ALL }, timeoutMs: 20_000 });
    return { status: r.status, retryAfter: r.headers['retry-after'] ?? '', at: Date.now() - started };
  });
  const results = await Promise.all(pulls);
  t.same(
    results.map((r) => r.status),
    [503, 503, 503, 503],
    'every waiting pull: 503',
  );
  for (const r of results) t.match(r.retryAfter, /^[1-9]\d*$/, 'with a Retry-After');
  const ends = results.map((r) => r.at);
  t.ok(Math.max(...ends) < SILENCE_BOUND_MS, `all answered within ${SILENCE_BOUND_MS} ms (${ends.join(', ')} ms after the first went out)`);
  t.equal(w.origin.requests.length, 0, 'nothing reached the origin through the black hole');
});
