// Operator switches for a cut-off site: offline mode (never contact an upstream) and what to do
// when the upstream 404s a tag Cove has cached (COVE_ON_UPSTREAM_NOT_FOUND).
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json';

t.test('COVE_OFFLINE=true: the cache answers, the origin hears nothing', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [5000], seed: 'offline' });
  origin.putImage('proj/app', '1', image);
  const online = await startTestCove(t, origin.url, {}, { keepData: true });
  const layer = image.layers[0]!;
  await fetchAll(`${online.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } });
  await fetchAll(`${online.url}/v2/proj/app/blobs/${layer.digest}`);
  await online.fillsDone();
  await online.stop();

  origin.resetCounters();
  const offline = await startTestCove(t, origin.url, { COVE_OFFLINE: 'true', COVE_TAG_TTL: '1ms' }, { dataDir: online.dataDir });
  const manifest = await fetchAll(`${offline.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } });
  t.equal(manifest.status, 200);
  t.equal(sha256(manifest.body), image.manifestDigest);
  t.equal(manifest.headers['cache-status'], 'cove; hit; detail=stale', 'not revalidated, and says so');
  const blob = await fetchAll(`${offline.url}/v2/proj/app/blobs/${layer.digest}`);
  t.equal(sha256(blob.body), layer.digest);
  const missing = await fetchAll(`${offline.url}/v2/proj/app/manifests/2`, { headers: { accept: ACCEPT } });
  t.equal(missing.status, 503);
  t.match(JSON.parse(missing.body.toString()).errors[0].message, /offline mode/);
  t.equal(origin.requests.length, 0, 'no request reached the origin');
});

t.test('a cached tag the origin deleted: 404 by default, the cached copy with serve-stale', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1000], seed: 'deleted' });
  origin.putImage('proj/app', '1', image);
  const strict = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1ms' });
  const lenient = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1ms', COVE_ON_UPSTREAM_NOT_FOUND: 'serve-stale' });
  for (const cove of [strict, lenient]) await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } });
  origin.deleteTag('proj/app', '1');
  await new Promise((r) => setTimeout(r, 5));

  const gone = await fetchAll(`${strict.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } });
  t.equal(gone.status, 404, 'default: the origin decides, as Harbor does');
  t.equal(JSON.parse(gone.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');

  const kept = await fetchAll(`${lenient.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } });
  t.equal(kept.status, 200, 'serve-stale keeps the cached copy');
  t.equal(sha256(kept.body), image.manifestDigest);
  t.equal(kept.headers['cache-status'], 'cove; hit; detail=stale');
});

t.test('stale-while-revalidate: a stale tag is answered at once and moved in the background', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const v1 = makeImage({ layers: [1000], seed: 'swr-1' });
  const v2 = makeImage({ layers: [1000], seed: 'swr-2' });
  origin.putImage('proj/app', 'latest', v1);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '50ms', COVE_STALE_WHILE_REVALIDATE: 'true', COVE_UPSTREAM_TIMEOUT: '1s' });
  const url = `${cove.url}/v2/proj/app/manifests/latest`;
  await fetchAll(url, { headers: { accept: ACCEPT } });

  origin.moveTag('proj/app', 'latest', v2);
  await new Promise((r) => setTimeout(r, 80));
  const stale = await fetchAll(url, { headers: { accept: ACCEPT } });
  t.equal(sha256(stale.body), v1.manifestDigest, 'the cached digest, at once');
  t.equal(stale.headers['cache-status'], 'cove; hit; detail=stale');

  let moved = '';
  for (let i = 0; i < 40 && moved !== v2.manifestDigest; i++) {
    await new Promise((r) => setTimeout(r, 25));
    moved = sha256((await fetchAll(url, { headers: { accept: ACCEPT } })).body);
  }
  t.equal(moved, v2.manifestDigest, 'the background revalidation moved the tag');

  origin.setFault({}, { type: 'blackhole' });
  await new Promise((r) => setTimeout(r, 80));
  const started = Date.now();
  const fast = await fetchAll(url, { headers: { accept: ACCEPT } });
  t.equal(fast.status, 200);
  t.ok(Date.now() - started < 300, `a black-holed origin costs the client nothing (${Date.now() - started} ms)`);
});

t.test('tags/list and referrers: the last answer is served stale while the origin is down', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100], seed: 'listing' });
  for (const tag of ['a', 'b', 'c']) origin.putImage('proj/app', tag, image);
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_TIMEOUT: '1s' });
  const tags = `${cove.url}/v2/proj/app/tags/list?n=2`;
  const referrers = `${cove.url}/v2/proj/app/referrers/${image.manifestDigest}`;
  const live = await fetchAll(tags);
  t.equal(live.headers['cache-status'], 'cove; fwd=bypass');
  await fetchAll(referrers);
  await origin.stop();

  const stale = await fetchAll(tags);
  t.equal(stale.status, 200);
  t.same(JSON.parse(stale.body.toString()), { name: 'proj/app', tags: ['a', 'b'] });
  t.equal(stale.headers['cache-status'], 'cove; hit; detail=stale');
  t.equal(stale.headers['warning'], '110 - "Response is Stale"');
  t.match(stale.headers['link'] ?? '', /last=b/, 'the paging link is kept');
  const staleRefs = await fetchAll(referrers);
  t.equal(staleRefs.status, 200);
  t.same(JSON.parse(staleRefs.body.toString()).manifests, []);

  const other = await fetchAll(`${cove.url}/v2/proj/app/tags/list?n=1`);
  t.equal(other.status, 503, 'a listing never fetched: a clear error');
});
