// A cached tag's revalidation has a deadline of its own (COVE_REVALIDATE_DEADLINE), shorter than
// the upstream timeouts: past it the client gets the cached answer, stale, the revalidation goes
// on (and moves the tag if the origin says so), and the silent origin is marked down at once, so
// later pulls do not wait at all. Concurrent pulls of one tag share one revalidation.
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json';
const manifestHeads = (origin: OriginRegistry) => origin.count({ method: 'HEAD', kind: 'manifest' });

t.test('black hole: the first pull of a cached tag gets it stale at the deadline, later pulls at once, with no new origin request', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1000], seed: 'deadline-hole' });
  origin.putImage('proj/app', '1', image);
  // An upstream timeout far longer than the deadline: before, each of the first pulls waited it out.
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_TIMEOUT: '30s', COVE_TAG_TTL: '0s', COVE_REVALIDATE_DEADLINE: '300ms' });
  const url = `${cove.url}/v2/proj/app/manifests/1`;
  t.equal((await fetchAll(url, { headers: { accept: ACCEPT } })).status, 200, 'cached while the origin is up');

  origin.setFault({}, { type: 'blackhole' });
  const heads = manifestHeads(origin);
  const started = Date.now();
  const first = await fetchAll(url, { headers: { accept: ACCEPT } });
  const firstMs = Date.now() - started;
  t.equal(first.status, 200);
  t.equal(sha256(first.body), image.manifestDigest, 'the cached manifest');
  t.equal(first.headers['cache-status'], 'cove; hit; detail=stale');
  t.ok(firstMs < 10_000, `answered at the deadline, not the 30 s upstream timeout (${firstMs} ms)`);
  t.equal(manifestHeads(origin), heads + 1, 'one revalidation went out (and still hangs)');

  for (let i = 0; i < 5; i++) {
    const again = await fetchAll(url, { headers: { accept: ACCEPT } });
    t.equal(again.headers['cache-status'], 'cove; hit; detail=stale', `pull ${i + 2} stale`);
    t.equal(sha256(again.body), image.manifestDigest);
  }
  t.equal(manifestHeads(origin), heads + 1, 'the origin is marked down: later pulls send nothing and wait for nothing');

  const uncached = await fetchAll(`${cove.url}/v2/proj/app/manifests/2`, { headers: { accept: ACCEPT } });
  t.equal(uncached.status, 503, 'an uncached tag fails within a deadline during the known outage (it waits for one probe)');
  t.match(JSON.parse(uncached.body.toString()).errors[0].message, /marked down/);
  t.notMatch(uncached.body.toString(), /127\.0\.0\.1/, 'and names no address');
  const health = (await (await fetch(`${cove.url}/healthz`)).json()) as { upstreams: Record<string, { state: string }> };
  t.equal(health.upstreams.origin!.state, 'open', '/healthz shows the origin marked down');
});

t.test('a slow origin: stale at the deadline, the revalidation goes on and moves the tag for the next pull', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const v1 = makeImage({ layers: [1000], seed: 'deadline-v1' });
  const v2 = makeImage({ layers: [1200], seed: 'deadline-v2' });
  origin.putImage('proj/app', '1', v1);
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_TIMEOUT: '30s', COVE_TAG_TTL: '0s', COVE_REVALIDATE_DEADLINE: '200ms' });
  const url = `${cove.url}/v2/proj/app/manifests/1`;
  t.equal(sha256((await fetchAll(url, { headers: { accept: ACCEPT } })).body), v1.manifestDigest);

  // The tag moves upstream; the origin's next manifest answer comes after 1.5 s.
  origin.putImage('proj/app', '1', v2);
  origin.setFault({ kind: 'manifest' }, { type: 'delay', ms: 1500 }, 1);
  const early = await fetchAll(url, { headers: { accept: ACCEPT } });
  t.equal(early.headers['cache-status'], 'cove; hit; detail=stale', 'stale at the deadline');
  t.equal(sha256(early.body), v1.manifestDigest, 'the cached digest meanwhile');

  // The revalidation finishes in the background: the origin answers, the breaker closes, the
  // new manifest is fetched and the tag moves.
  for (let i = 0; i < 100 && origin.count({ method: 'GET', kind: 'manifest', digest: v2.manifestDigest }) === 0; i++) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 200));
  const later = await fetchAll(url, { headers: { accept: ACCEPT } });
  t.equal(later.status, 200);
  t.equal(sha256(later.body), v2.manifestDigest, 'the next pull gets the tag as the origin moved it');
});

t.test('concurrent pulls of one tag share one revalidation', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1000], seed: 'deadline-merge' });
  origin.putImage('proj/app', '1', image);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '0s', COVE_REVALIDATE_DEADLINE: '5s' });
  const url = `${cove.url}/v2/proj/app/manifests/1`;
  await fetchAll(url, { headers: { accept: ACCEPT } });
  const heads = manifestHeads(origin);
  origin.setFault({ kind: 'manifest' }, { type: 'delay', ms: 400 }, 1);
  const answers = await Promise.all(Array.from({ length: 10 }, () => fetchAll(url, { headers: { accept: ACCEPT } })));
  t.ok(answers.every((a) => a.status === 200 && sha256(a.body) === image.manifestDigest), 'every pull served the right manifest');
  t.ok(answers.every((a) => a.headers['cache-status'] === 'cove; hit; detail=revalidated'), 'revalidated, within the deadline');
  t.equal(manifestHeads(origin) - heads, 1, 'ten pulls, one HEAD to the origin');
});

t.test('COVE_REVALIDATE_DEADLINE=0 keeps waiting for the upstream, as before', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const v1 = makeImage({ layers: [1000], seed: 'deadline-off-v1' });
  const v2 = makeImage({ layers: [1000], seed: 'deadline-off-v2' });
  origin.putImage('proj/app', '1', v1);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '0s', COVE_REVALIDATE_DEADLINE: '0' });
  const url = `${cove.url}/v2/proj/app/manifests/1`;
  await fetchAll(url, { headers: { accept: ACCEPT } });
  origin.putImage('proj/app', '1', v2);
  origin.setFault({ kind: 'manifest' }, { type: 'delay', ms: 600 }, 1);
  const r = await fetchAll(url, { headers: { accept: ACCEPT } });
  t.equal(sha256(r.body), v2.manifestDigest, 'the pull waited for the slow origin and got the moved tag');
});

t.test('an upstream that answered something meanwhile is slow, not down: it is not marked down', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1000], seed: 'deadline-alive' });
  const other = makeImage({ layers: [1500], seed: 'deadline-alive-other' });
  origin.putImage('proj/app', '1', image);
  origin.putImage('proj/other', '1', other);
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_TIMEOUT: '30s', COVE_TAG_TTL: '0s', COVE_REVALIDATE_DEADLINE: '300ms' });
  const url = `${cove.url}/v2/proj/app/manifests/1`;
  await fetchAll(url, { headers: { accept: ACCEPT } });
  origin.setFault({ kind: 'manifest', repo: 'proj/app' }, { type: 'delay', ms: 1500 }, 1);
  const slow = fetchAll(url, { headers: { accept: ACCEPT } });
  // Meanwhile the origin answers another request at once.
  await new Promise((r) => setTimeout(r, 50));
  const blob = await fetchAll(`${cove.url}/v2/proj/other/blobs/${other.layers[0]!.digest}`);
  t.equal(blob.status, 200, 'the origin answers other requests');
  const answer = await slow;
  t.equal(answer.headers['cache-status'], 'cove; hit; detail=stale', 'the slow revalidation still gives way at the deadline');
  const health = (await (await fetch(`${cove.url}/healthz`)).json()) as { upstreams: Record<string, { state: string }> };
  t.equal(health.upstreams.origin!.state, 'closed', 'but the origin is not marked down');
  const uncached = await fetchAll(`${cove.url}/v2/proj/other/manifests/1`, { headers: { accept: ACCEPT } });
  t.equal(uncached.status, 200, 'and an uncached tag is still fetched');
});
