// Manifests: Accept negotiation against the tag cache, routes (ns, Docker Hub mirror), tag TTL
// and revalidation, and tags/list + referrers passed through.
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage, makeIndex } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

const LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const V2 = 'application/vnd.docker.distribution.manifest.v2+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const CONTAINERD_ACCEPT = `${V2}, ${LIST}, ${OCI_MANIFEST}, ${OCI_INDEX}, */*`;

t.test('a manifest list is served from cache only to clients that accept it', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const amd = makeImage({ layers: [1000], seed: 'amd', architecture: 'amd64' });
  const arm = makeImage({ layers: [1000], seed: 'arm', architecture: 'arm64' });
  const list = makeIndex([{ image: amd, platform: { architecture: 'amd64', os: 'linux' } }, { image: arm, platform: { architecture: 'arm64', os: 'linux' } }], 'docker');
  origin.putIndex('proj/multi', '1', list, [amd, arm]);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h' });
  const url = `${cove.url}/v2/proj/multi/manifests/1`;

  const full = await fetchAll(url, { headers: { accept: CONTAINERD_ACCEPT } });
  t.equal(full.headers['content-type'], LIST);
  t.equal(sha256(full.body), list.digest);
  const again = await fetchAll(url, { headers: { accept: CONTAINERD_ACCEPT } });
  t.equal(again.headers['cache-status'], 'cove; hit');

  // An old client without list support: forwarded with its own Accept; the origin rewrites to amd64.
  const before = origin.count({ kind: 'manifest' });
  const old = await fetchAll(url, { headers: { accept: V2 } });
  t.equal(old.headers['content-type'], V2);
  t.equal(sha256(old.body), amd.manifestDigest, 'the old client gets the amd64 child');
  t.equal(old.headers['cache-status'], 'cove; fwd=vary-miss; stored');
  t.equal(origin.count({ kind: 'manifest' }), before + 1);

  const afterOld = await fetchAll(url, { headers: { accept: CONTAINERD_ACCEPT } });
  t.equal(sha256(afterOld.body), list.digest, 'the tag still means the list for everyone else');
  t.equal(afterOld.headers['cache-status'], 'cove; hit');
});

t.test('Docker-style Accept headers (one per type) are understood', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1000], seed: 'docker-accept', mediaType: 'oci' });
  origin.putImage('proj/oci', '1', image);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h' });
  const url = `${cove.url}/v2/proj/oci/manifests/1`;
  await fetchAll(url, { headers: { accept: CONTAINERD_ACCEPT } });
  const r = await fetchAll(url, { headers: { accept: [LIST, OCI_MANIFEST, V2, OCI_INDEX] } });
  t.equal(r.headers['cache-status'], 'cove; hit');
  t.equal(r.headers['content-type'], OCI_MANIFEST);
});

t.test('tag TTL: fresh tags are not revalidated; stale ones take one HEAD; a moved tag is followed', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const v1 = makeImage({ layers: [1000], seed: 'ttl-1' });
  const v2 = makeImage({ layers: [1000], seed: 'ttl-2' });
  origin.putImage('proj/ttl', 'latest', v1);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '300ms' });
  const url = `${cove.url}/v2/proj/ttl/manifests/latest`;
  const get = () => fetchAll(url, { headers: { accept: CONTAINERD_ACCEPT } });

  t.equal(sha256((await get()).body), v1.manifestDigest);
  const fresh = await get();
  t.equal(fresh.headers['cache-status'], 'cove; hit');
  t.equal(origin.count({ method: 'HEAD', kind: 'manifest' }), 0, 'within the TTL nobody is asked');

  await new Promise((r) => setTimeout(r, 350));
  const revalidated = await get();
  t.equal(revalidated.headers['cache-status'], 'cove; hit; detail=revalidated');
  t.equal(origin.count({ method: 'HEAD', kind: 'manifest' }), 1, 'one HEAD revalidates');
  t.equal(origin.count({ method: 'GET', kind: 'manifest' }), 1, 'no GET for an unchanged tag');

  origin.moveTag('proj/ttl', 'latest', v2);
  await new Promise((r) => setTimeout(r, 350));
  const moved = await get();
  t.equal(sha256(moved.body), v2.manifestDigest, 'the new digest is served after the TTL');
  t.equal(moved.headers['docker-content-digest'], v2.manifestDigest);
});

t.test('origin down: a cached tag is served stale and marked; an uncached one fails fast', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1000], seed: 'stale' });
  origin.putImage('proj/stale', '1', image);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1ms' });
  await fetchAll(`${cove.url}/v2/proj/stale/manifests/1`, { headers: { accept: CONTAINERD_ACCEPT } });
  await origin.stop();

  const stale = await fetchAll(`${cove.url}/v2/proj/stale/manifests/1`, { headers: { accept: CONTAINERD_ACCEPT } });
  t.equal(stale.status, 200);
  t.equal(sha256(stale.body), image.manifestDigest);
  t.equal(stale.headers['cache-status'], 'cove; hit; detail=stale');
  t.equal(stale.headers['warning'], '110 - "Response is Stale"');

  const started = Date.now();
  const missing = await fetchAll(`${cove.url}/v2/proj/stale/manifests/2`, { headers: { accept: CONTAINERD_ACCEPT } });
  t.equal(missing.status, 503);
  const error = JSON.parse(missing.body.toString()).errors[0];
  t.equal(error.code, 'UPSTREAM_UNAVAILABLE');
  t.match(error.message, /^upstream origin is unreachable/, 'the message says the origin is unreachable');
  t.notMatch(missing.body.toString(), new URL(origin.url).host, 'and does not say where it is (error-privacy.test.ts)');
  t.ok(Date.now() - started < 2500, 'answered within the upstream timeout');
});

t.test('routes: containerd ns, Docker Hub library prefix, OCI-Namespace echo', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [2000], seed: 'routes' });
  origin.putImage('dockerhub/library/nginx', '1.27', image);
  origin.putImage('harbor/proj/app', '1', image);
  const cove = await startTestCove(t, origin.url, { COVE_ROUTES: 'docker.io=dockerhub/,harbor.example.com=harbor/' });

  const ns = await fetchAll(`${cove.url}/v2/library/nginx/manifests/1.27?ns=docker.io`, { headers: { accept: CONTAINERD_ACCEPT } });
  t.equal(ns.status, 200);
  t.equal(ns.headers['oci-namespace'], 'docker.io');
  const oneComponent = await fetchAll(`${cove.url}/v2/nginx/manifests/1.27?ns=docker.io`, { headers: { accept: CONTAINERD_ACCEPT } });
  t.equal(oneComponent.status, 200, 'library/ added to one-component Docker Hub names');
  const blob = await fetchAll(`${cove.url}/v2/library/nginx/blobs/${image.layers[0]!.digest}?ns=docker.io`);
  t.equal(sha256(blob.body), image.layers[0]!.digest);
  const harbor = await fetchAll(`${cove.url}/v2/proj/app/manifests/1?ns=harbor.example.com`, { headers: { accept: CONTAINERD_ACCEPT } });
  t.equal(harbor.status, 200);
  const portMode = await fetchAll(`${cove.url}/v2/dockerhub/library/nginx/manifests/1.27`, { headers: { accept: CONTAINERD_ACCEPT } });
  t.equal(portMode.status, 200, 'port mode maps the path 1:1');
  t.equal(portMode.headers['cache-status'], 'cove; hit', 'port mode and ns share one cached tag');
  t.notOk(portMode.headers['oci-namespace']);
  const unknown = await fetchAll(`${cove.url}/v2/x/manifests/1?ns=quay.io`);
  t.equal(unknown.status, 404);
  t.equal(JSON.parse(unknown.body.toString()).errors[0].code, 'NAME_UNKNOWN');
  t.ok(origin.requests.every((r) => r.path.startsWith('/v2/dockerhub/library/nginx/') || r.path.startsWith('/v2/harbor/proj/app/')), 'upstream paths carry the route prefix');
});

t.test('a dockerd registry-mirrors listener: COVE_DEFAULT_NS=docker.io', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [2000], seed: 'default-ns' });
  origin.putImage('dockerhub/library/alpine', '3', image);
  const cove = await startTestCove(t, origin.url, { COVE_ROUTES: 'docker.io=dockerhub/', COVE_DEFAULT_NS: 'docker.io' });
  const r = await fetchAll(`${cove.url}/v2/library/alpine/manifests/3`, { headers: { accept: CONTAINERD_ACCEPT } });
  t.equal(r.status, 200);
  t.equal(sha256(r.body), image.manifestDigest);
});

t.test('tags/list pages pass through with the client name; referrers pass through', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100], seed: 'tags' });
  for (const tag of ['a', 'b', 'c']) origin.putImage('dockerhub/library/x', tag, image);
  const cove = await startTestCove(t, origin.url, { COVE_ROUTES: 'docker.io=dockerhub/' });
  const page = await fetchAll(`${cove.url}/v2/library/x/tags/list?n=2&ns=docker.io`);
  t.equal(page.status, 200);
  t.same(JSON.parse(page.body.toString()), { name: 'library/x', tags: ['a', 'b'] });
  t.match(String(page.headers['link']), /^<\/v2\/library\/x\/tags\/list\?.*last=b.*>; rel="next"$/);
  t.match(String(page.headers['link']), /ns=docker\.io/);
  const bad = await fetchAll(`${cove.url}/v2/library/x/tags/list?n=abc&ns=docker.io`);
  t.equal(bad.status, 400);

  const referrers = await fetchAll(`${cove.url}/v2/library/x/referrers/${image.manifestDigest}?ns=docker.io`);
  t.equal(referrers.status, 200);
  t.equal(referrers.headers['content-type'], OCI_INDEX);
  t.same(JSON.parse(referrers.body.toString()).manifests, []);
});

t.test('an origin manifest whose bytes do not match the requested digest is refused', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100], seed: 'bad-manifest' });
  const fake = `sha256:${'e'.repeat(64)}`;
  origin.putManifest('proj/bad', fake, image.manifest, V2);
  const cove = await startTestCove(t, origin.url);
  const r = await fetchAll(`${cove.url}/v2/proj/bad/manifests/${fake}`);
  t.equal(r.status, 502);
  t.equal(r.headers['content-type'], 'application/json');
  t.equal(cove.counters.digestMismatches, 1);
});
