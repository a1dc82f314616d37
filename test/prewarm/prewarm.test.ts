// Prewarm against an in-process origin: platform filtering on multi-arch indexes (skipped
// platforms cost no request), warm re-runs that ask the origin nothing, tag / digest / host
// references, per-reference errors, bounded concurrency, abort, and webhook-style tag refresh.
import t from 'tap';
import { makeImage, makeIndex, type Image } from '../helpers/images.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { parsePlatforms } from '../../src/prewarm/platforms.js';
import { prewarm, type PrewarmEvent } from '../../src/prewarm/prewarm.js';
import { startHarness } from './harness.js';

function blobsOf(image: Image): string[] {
  return [image.configDigest, ...image.layers.map((l) => l.digest)];
}

function bytesOf(image: Image): number {
  return image.config.length + image.layers.reduce((n, l) => n + l.bytes.length, 0);
}

async function stored(store: { stat(d: string): Promise<unknown> }, digests: string[]): Promise<boolean[]> {
  return Promise.all(digests.map(async (d) => (await store.stat(d)) !== null));
}

t.test('multi-arch index, filter linux/arm64: only the arm64 child and its blobs are fetched; a second run asks nothing', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const amd = makeImage({ layers: [30_000, 20_000], seed: 'pw-amd', architecture: 'amd64' });
  const arm = makeImage({ layers: [25_000, 15_000, 5_000], seed: 'pw-arm', architecture: 'arm64' });
  const armv7 = makeImage({ layers: [10_000], seed: 'pw-armv7', architecture: 'arm' });
  const index = makeIndex(
    [
      { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { image: arm, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
      { image: armv7, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
    ],
    'oci',
  );
  origin.putIndex('proj/multi', '1', index, [amd, arm, armv7]);
  const h = await startHarness(t, origin.url);

  const events: PrewarmEvent[] = [];
  const result = await prewarm(['proj/multi:1'], h.deps, { platforms: parsePlatforms('linux/arm64'), onProgress: (e) => events.push(e) });
  t.ok(result.ok, 'prewarm succeeded');
  t.same(result.errors, []);
  const r = result.refs[0]!;
  t.equal(r.digest, index.digest);
  t.same(r.platforms, ['linux/arm64/v8']);
  t.same(r.skipped.sort(), ['linux/amd64', 'linux/arm/v7']);
  t.same(r.manifests, { total: 2, cached: 0 });
  t.same(r.blobs, { total: 4, cached: 0, fetched: 4, joined: 0, failed: 0 });
  t.equal(r.bytes.total, bytesOf(arm));
  t.equal(r.bytes.fetched, bytesOf(arm));

  // The origin proves it: one GET for the tag, one for the arm64 child, one per arm64 blob.
  t.equal(origin.count({ kind: 'manifest', digest: '1' }), 1, 'the tag was asked once');
  t.equal(origin.count({ kind: 'manifest', digest: arm.manifestDigest }), 1, 'the arm64 child was fetched');
  t.equal(origin.count({ kind: 'manifest', digest: amd.manifestDigest }), 0, 'the amd64 child was never asked for');
  t.equal(origin.count({ kind: 'manifest', digest: armv7.manifestDigest }), 0, 'the arm/v7 child was never asked for');
  for (const d of blobsOf(arm)) t.equal(origin.count({ kind: 'blob', digest: d }), 1, `arm64 blob ${d.slice(7, 19)} fetched once`);
  for (const d of [...blobsOf(amd), ...blobsOf(armv7)]) t.equal(origin.count({ kind: 'blob', digest: d }), 0, `skipped blob ${d.slice(7, 19)} never asked for`);
  t.same(await stored(h.store, blobsOf(arm)), [true, true, true, true], 'arm64 blobs are in the store');
  t.same(await stored(h.store, blobsOf(amd)), [false, false, false], 'amd64 blobs are not');

  // Progress: a plan with the totals, then one event per blob, the last one complete.
  const plan = events.find((e) => e.type === 'plan');
  t.same(plan, { type: 'plan', ref: 'proj/multi:1', blobs: 4, bytes: bytesOf(arm) });
  const blobEvents = events.filter((e): e is Extract<PrewarmEvent, { type: 'blob' }> => e.type === 'blob');
  t.equal(blobEvents.length, 4);
  const last = blobEvents[blobEvents.length - 1]!;
  t.equal(last.bytesDone, last.bytesTotal);
  t.equal(last.blobsDone, 4);
  t.equal(events.filter((e) => e.type === 'platform-skipped').length, 2);
  t.equal(events[events.length - 1]!.type, 'ref-done');

  // Second run: everything is local, the origin hears nothing.
  const before = origin.requests.length;
  const again = await prewarm(['proj/multi:1'], h.deps, { platforms: parsePlatforms('linux/arm64') });
  t.ok(again.ok);
  t.equal(origin.requests.length, before, 'a warm prewarm sends no request to the origin');
  t.same(again.refs[0]!.blobs, { total: 4, cached: 4, fetched: 0, joined: 0, failed: 0 });
  t.same(again.refs[0]!.manifests, { total: 2, cached: 2 });
  t.equal(again.refs[0]!.bytes.fetched, 0);
  t.equal(again.refs[0]!.bytes.cached, bytesOf(arm));

  // Widening the filter later fetches only what is new.
  const amdRun = await prewarm(['proj/multi:1'], h.deps, { platforms: parsePlatforms('linux/amd64,linux/arm64') });
  t.ok(amdRun.ok);
  t.same(amdRun.refs[0]!.platforms.sort(), ['linux/amd64', 'linux/arm64/v8']);
  t.equal(amdRun.refs[0]!.blobs.fetched, 3, 'the three amd64 blobs');
  t.equal(amdRun.refs[0]!.blobs.cached, 4);
  t.equal(origin.count({ kind: 'manifest', digest: armv7.manifestDigest }), 0, 'arm/v7 still never asked for');
});

t.test('empty filter takes every platform but skips attestation manifests; a filter matching nothing warns', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const amd = makeImage({ layers: [4000], seed: 'all-amd', architecture: 'amd64' });
  const arm = makeImage({ layers: [4000], seed: 'all-arm', architecture: 'arm64' });
  const att = makeImage({ layers: [300], seed: 'all-att', mediaType: 'oci' });
  const index = makeIndex(
    [
      { image: amd, platform: { os: 'linux', architecture: 'amd64' } },
      { image: arm, platform: { os: 'linux', architecture: 'arm64' } },
      { image: att, platform: { os: 'unknown', architecture: 'unknown' } },
    ],
    'oci',
  );
  origin.putIndex('proj/all', '1', index, [amd, arm, att]);
  const h = await startHarness(t, origin.url);

  const none = await prewarm(['proj/all:1'], h.deps, { platforms: parsePlatforms('linux/s390x') });
  t.ok(none.ok, 'no matching platform is not an error');
  t.same(none.refs[0]!.platforms, []);
  t.match(none.refs[0]!.warnings[0], /no platform matches the filter linux\/s390x/);
  t.equal(origin.count({ kind: 'blob' }), 0, 'nothing fetched');

  const all = await prewarm(['proj/all:1'], h.deps, { platforms: [] });
  t.ok(all.ok);
  t.same(all.refs[0]!.platforms.sort(), ['linux/amd64', 'linux/arm64']);
  t.same(all.refs[0]!.skipped, ['unknown/unknown']);
  t.equal(origin.count({ kind: 'manifest', digest: att.manifestDigest }), 0, 'the attestation manifest was not fetched');
  t.equal(all.refs[0]!.blobs.fetched, 4);
});

t.test('a single image: by tag, by digest, with a registry host; the filter reads its config', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const app = makeImage({ layers: [12_000, 8_000], seed: 'single-app', architecture: 'amd64' });
  const pinned = makeImage({ layers: [9_000], seed: 'single-pinned', architecture: 'arm64', mediaType: 'oci' });
  const hosted = makeImage({ layers: [7_000], seed: 'single-hosted', architecture: 'amd64' });
  origin.putImage('proj/app', '1', app);
  origin.putImage('proj/pinned', null, pinned);
  origin.putImage('proj/hosted', '2', hosted);
  const h = await startHarness(t, origin.url);

  const result = await prewarm(['proj/app:1', `proj/pinned@${pinned.manifestDigest}`, 'harbor.example.com/proj/hosted:2'], h.deps, { platforms: [] });
  t.ok(result.ok, JSON.stringify(result.errors));
  const [byTag, byDigest, byHost] = result.refs;
  t.equal(byTag!.digest, app.manifestDigest);
  t.same(byTag!.blobs, { total: 3, cached: 0, fetched: 3, joined: 0, failed: 0 });
  t.equal(byTag!.bytes.fetched, bytesOf(app));
  t.equal(byDigest!.digest, pinned.manifestDigest);
  t.equal(byDigest!.blobs.fetched, 2);
  t.equal(origin.count({ kind: 'manifest', repo: 'proj/pinned' }), 1, 'the digest reference took one manifest request');
  t.same(byHost!.target, { upstream: 'origin', repo: 'proj/hosted', ns: null }, 'an unrouted host is stripped');
  t.equal(byHost!.blobs.fetched, 2);
  t.same(await stored(h.store, [...blobsOf(app), ...blobsOf(pinned), ...blobsOf(hosted)]), Array(7).fill(true));

  // Under a filter a single image's platform comes from its config: fetched, then judged.
  const other = makeImage({ layers: [6_000, 6_000], seed: 'single-other', architecture: 'amd64' });
  origin.putImage('proj/other', '1', other);
  const skipped = await prewarm(['proj/other:1'], h.deps, { platforms: parsePlatforms('linux/arm64') });
  t.ok(skipped.ok);
  t.same(skipped.refs[0]!.platforms, []);
  t.same(skipped.refs[0]!.skipped, ['linux/amd64']);
  t.equal(origin.count({ kind: 'blob', digest: other.configDigest }), 1, 'the config was read');
  for (const l of other.layers) t.equal(origin.count({ kind: 'blob', digest: l.digest }), 0, 'a layer of the wrong platform is not fetched');
  const taken = await prewarm(['proj/other:1'], h.deps, { platforms: parsePlatforms('linux/amd64') });
  t.same(taken.refs[0]!.platforms, ['linux/amd64']);
  t.same(taken.refs[0]!.blobs, { total: 3, cached: 1, fetched: 2, joined: 0, failed: 0 });
});

t.test('a routed host and the ns option select the route', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const nginx = makeImage({ layers: [3000], seed: 'routed-nginx' });
  origin.putImage('dockerhub/library/nginx', '1.27', nginx);
  const h = await startHarness(t, origin.url, { COVE_ROUTES: 'docker.io=dockerhub/' });
  const result = await prewarm(['docker.io/nginx:1.27', 'nginx:1.27'], h.deps, { platforms: [], ns: 'docker.io' });
  t.ok(result.ok, JSON.stringify(result.errors));
  t.same(result.refs[0]!.target, { upstream: 'origin', repo: 'dockerhub/library/nginx', ns: 'docker.io' });
  t.same(result.refs[1]!.target, { upstream: 'origin', repo: 'dockerhub/library/nginx', ns: 'docker.io' });
  t.equal(result.refs[1]!.blobs.cached, 2, 'the second reference found everything cached');
  const unrouted = await prewarm(['nginx:1.27'], h.deps, { platforms: [], ns: 'quay.io' });
  t.notOk(unrouted.ok);
  t.match(unrouted.errors[0]!.message, /no route for registry "quay.io"/);
});

t.test('a failing reference is reported and the others still prewarm', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const good = makeImage({ layers: [5000], seed: 'err-good' });
  const broken = makeImage({ layers: [5000, 5000], seed: 'err-broken' });
  origin.putImage('proj/good', '1', good);
  origin.putImage('proj/broken', '1', broken);
  origin.setFault({ digest: broken.layers[0]!.digest }, { type: 'status', status: 404 });
  const h = await startHarness(t, origin.url);
  const unknownDigest = `sha256:${'0'.repeat(64)}`;

  const result = await prewarm(['proj/missing:1', 'proj/good:1', 'Bad//Ref', `proj/good@${unknownDigest}`, 'proj/broken:1'], h.deps, { platforms: [] });
  t.notOk(result.ok);
  t.equal(result.refs.length, 5);
  t.same(
    result.refs.map((r) => r.ok),
    [false, true, false, false, false],
  );
  t.same(result.errors.map((e) => e.ref), ['proj/missing:1', 'Bad//Ref', `proj/good@${unknownDigest}`, 'proj/broken:1']);
  t.match(result.errors[0]!.message, /manifest unknown: proj\/missing:1/);
  t.match(result.errors[1]!.message, /invalid reference "Bad\/\/Ref"/);
  t.match(result.errors[2]!.message, /manifest unknown/);
  t.match(result.errors[3]!.message, new RegExp(`1 of 3 blobs failed; first: blob ${broken.layers[0]!.digest}`));
  t.same(await stored(h.store, blobsOf(good)), [true, true], 'the good image is cached');
  const brokenRef = result.refs[4]!;
  t.equal(brokenRef.blobs.failed, 1);
  t.equal(brokenRef.blobs.fetched, 2, 'the other blobs of the failing image were still fetched');
});

t.test('blobs are fetched at most `concurrency` at once', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: Array(8).fill(20_000), seed: 'conc' });
  origin.putImage('proj/conc', '1', image);
  origin.setFault({ kind: 'blob' }, { type: 'slow', bytesPerSecond: 200_000 });
  const h = await startHarness(t, origin.url);
  let max = 0;
  const timer = setInterval(() => (max = Math.max(max, h.deps.blobs.activeFills)), 5);
  t.teardown(() => clearInterval(timer));
  const result = await prewarm(['proj/conc:1'], h.deps, { platforms: [], concurrency: 3 });
  clearInterval(timer);
  t.ok(result.ok, JSON.stringify(result.errors));
  t.equal(result.refs[0]!.blobs.fetched, 9);
  t.ok(max <= 3, `at most 3 fills at once (saw ${max})`);
  t.ok(max >= 2, `fills overlap (saw ${max})`);
});

t.test('an aborted prewarm stops and says so', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [4000], seed: 'abort' });
  origin.putImage('proj/abort', '1', image);
  const h = await startHarness(t, origin.url);
  const controller = new AbortController();
  controller.abort();
  const result = await prewarm(['proj/abort:1', 'proj/abort:2'], h.deps, { platforms: [], signal: controller.signal });
  t.notOk(result.ok);
  t.same(result.errors.map((e) => e.message), ['prewarm aborted', 'prewarm aborted']);
  t.equal(origin.requests.length, 0, 'nothing was asked');

  // Aborted while a blob arrives: the prewarm answers at once; the fill (the cache's) goes on.
  const slow = makeImage({ layers: [80_000], seed: 'abort-slow' });
  origin.putImage('proj/slow', '1', slow);
  origin.setFault({ digest: slow.layers[0]!.digest }, { type: 'slow', bytesPerSecond: 100_000 });
  const midway = new AbortController();
  const started = Date.now();
  const pending = prewarm(['proj/slow:1', 'proj/abort:1'], h.deps, {
    platforms: [],
    signal: midway.signal,
    onProgress: (e) => {
      if (e.type === 'plan') setTimeout(() => midway.abort(), 50);
    },
  });
  const aborted = await pending;
  t.ok(Date.now() - started < 600, 'answered before the slow blob was complete');
  t.same(aborted.errors.map((e) => [e.ref, e.message]), [['proj/slow:1', 'prewarm aborted'], ['proj/abort:1', 'prewarm aborted']]);
  await h.deps.blobs.settled();
  t.ok(await h.store.stat(slow.layers[0]!.digest), 'the fill completed for the cache');
});

t.test('a tag with a digest (a push webhook) moves the cached tag and fetches the pushed digest', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const v1 = makeImage({ layers: [3000], seed: 'hook-v1' });
  const v2 = makeImage({ layers: [3000], seed: 'hook-v2' });
  origin.putImage('proj/app', '1', v1);
  const h = await startHarness(t, origin.url);
  t.ok((await prewarm(['proj/app:1'], h.deps, { platforms: [] })).ok);

  origin.moveTag('proj/app', '1', v2);
  const result = await prewarm([`proj/app:1@${v2.manifestDigest}`], h.deps, { platforms: [], names: 'upstream' });
  t.ok(result.ok, JSON.stringify(result.errors));
  t.equal(result.refs[0]!.digest, v2.manifestDigest);
  t.same(result.refs[0]!.warnings, []);
  t.equal(result.refs[0]!.blobs.fetched, 2);
  // The tag was revalidated now: the next pull of proj/app:1 is a hit on v2, no request.
  const before = origin.requests.length;
  const target = h.deps.routes.resolve('proj/app', null);
  const answer = await h.deps.manifests.byTag(target, '1', ['application/vnd.docker.distribution.manifest.v2+json']);
  t.equal(answer.digest, v2.manifestDigest);
  t.equal(answer.cache, 'hit');
  t.equal(origin.requests.length, before);

  // A webhook that arrives after the tag moved on still prewarms the digest it names.
  const v3 = makeImage({ layers: [3000], seed: 'hook-v3' });
  origin.putImage('proj/app', null, v1);
  origin.moveTag('proj/app', '1', v3);
  const late = await prewarm([`proj/app:1@${v1.manifestDigest}`], h.deps, { platforms: [], names: 'upstream' });
  t.ok(late.ok);
  t.equal(late.refs[0]!.digest, v1.manifestDigest);
  t.match(late.refs[0]!.warnings[0], /tag 1 now points to/);
});

t.test('a blob already arriving for a client is joined, not fetched twice', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [60_000, 2_000], seed: 'joined' });
  origin.putImage('proj/joined', '1', image);
  const big = image.layers[0]!.digest;
  origin.setFault({ digest: big }, { type: 'slow', bytesPerSecond: 300_000 });
  const h = await startHarness(t, origin.url);
  const target = h.deps.routes.resolve('proj/joined', null);
  const client = await h.deps.blobs.lookup(target, big);
  t.equal(client.kind, 'fill', 'a client started the fill');
  const result = await prewarm(['proj/joined:1'], h.deps, { platforms: [] });
  t.ok(result.ok, JSON.stringify(result.errors));
  t.same(result.refs[0]!.blobs, { total: 3, cached: 0, fetched: 2, joined: 1, failed: 0 });
  t.equal(result.refs[0]!.bytes.joined, 60_000);
  t.equal(origin.count({ kind: 'blob', digest: big }), 1, 'the origin sent the blob once');
});
