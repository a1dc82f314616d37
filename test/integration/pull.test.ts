// A whole pull through Cove, cold then warm, against the in-process origin: bytes, headers and
// how many requests reached the origin.
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

const ACCEPT_ALL =
  'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, */*';

t.test('cold pull streams from the origin once; warm pull never asks it', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [300_000, 1_500_000], seed: 'pull' });
  origin.putImage('proj/app', '1', image);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h' });

  async function pull(): Promise<string[]> {
    const m = await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT_ALL } });
    t.equal(m.status, 200);
    t.equal(sha256(m.body), image.manifestDigest, 'manifest bytes are exact');
    t.equal(m.headers['content-type'], image.mediaType);
    t.equal(m.headers['docker-content-digest'], image.manifestDigest);
    const statuses = [String(m.headers['cache-status'])];
    for (const blob of [{ digest: image.configDigest, bytes: image.config }, ...image.layers]) {
      const b = await fetchAll(`${cove.url}/v2/proj/app/blobs/${blob.digest}`);
      t.equal(b.status, 200);
      t.equal(b.body.length, blob.bytes.length);
      t.equal(sha256(b.body), blob.digest, `blob ${blob.digest.slice(7, 19)} bytes are exact`);
      statuses.push(String(b.headers['cache-status']));
    }
    return statuses;
  }

  const cold = await pull();
  t.same(cold, ['cove; fwd=miss; stored', 'cove; fwd=miss; stored', 'cove; fwd=miss; stored', 'cove; fwd=miss; stored']);
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 3, 'each blob fetched from the origin once');
  t.equal(origin.blobBytesServed, image.totalBytes - image.manifest.length, 'origin served each blob byte once');
  const originRequests = origin.requests.length;

  const warm = await pull();
  t.same(warm, ['cove; hit', 'cove; hit', 'cove; hit', 'cove; hit']);
  t.equal(origin.requests.length, originRequests, 'warm pull sent nothing to the origin');
});

t.test('HEAD answers carry the true type, length and digest', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [10_000], seed: 'head', mediaType: 'oci' });
  origin.putImage('proj/head', 'v1', image);
  const cove = await startTestCove(t, origin.url);

  for (const round of ['cold', 'warm']) {
    const m = await fetchAll(`${cove.url}/v2/proj/head/manifests/v1`, { method: 'HEAD', headers: { accept: ACCEPT_ALL } });
    t.equal(m.status, 200, `${round} manifest HEAD`);
    t.equal(m.headers['content-type'], 'application/vnd.oci.image.manifest.v1+json');
    t.equal(m.headers['content-length'], String(image.manifest.length));
    t.equal(m.headers['docker-content-digest'], image.manifestDigest);
    t.equal(m.body.length, 0);
    const b = await fetchAll(`${cove.url}/v2/proj/head/blobs/${image.layers[0]!.digest}`, { method: 'HEAD' });
    t.equal(b.status, 200, `${round} blob HEAD`);
    t.equal(b.headers['content-length'], String(image.layers[0]!.bytes.length));
    t.equal(b.headers['docker-content-digest'], image.layers[0]!.digest);
  }
  const byDigest = await fetchAll(`${cove.url}/v2/proj/head/manifests/${image.manifestDigest}`, { method: 'HEAD' });
  t.equal(byDigest.headers['cache-status'], 'cove; hit', 'manifest by digest is served from the store');
});

t.test('base endpoint, health and writes', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const cove = await startTestCove(t, origin.url);

  const base = await fetchAll(`${cove.url}/v2/`);
  t.equal(base.status, 200);
  t.equal(base.headers['docker-distribution-api-version'], 'registry/2.0');
  t.equal(base.headers['content-type'], 'application/json');

  const health = await fetchAll(`${cove.url}/healthz`);
  t.equal(health.status, 200);
  t.equal(JSON.parse(health.body.toString()).status, 'ok');

  for (const [method, path] of [
    ['PUT', '/v2/proj/app/manifests/1'],
    ['POST', '/v2/proj/app/blobs/uploads/'],
    ['PATCH', '/v2/proj/app/blobs/uploads/x'],
    ['DELETE', '/v2/proj/app/manifests/1'],
  ] as const) {
    const r = await fetchAll(`${cove.url}${path}`, { method });
    t.equal(r.status, 405, `${method} ${path}`);
    t.equal(r.headers['content-type'], 'application/json');
    const body = JSON.parse(r.body.toString());
    t.equal(body.errors[0].code, 'UNSUPPORTED');
    t.match(body.errors[0].message, /push to the origin/);
  }
  t.equal(origin.requests.length, 0, 'nothing reached the origin');
});

t.test('invalid names, tags and digests are refused before any I/O', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const cove = await startTestCove(t, origin.url);
  const cases = [
    { name: 'uppercase name', path: '/v2/Proj/App/manifests/1', code: 'NAME_INVALID' },
    { name: 'double slash', path: '/v2/proj//app/manifests/1', code: 'NAME_INVALID' },
    { name: 'dot segment', path: '/v2/proj/../etc/manifests/1', code: 'NAME_INVALID' },
    { name: 'encoded dot segment', path: '/v2/proj/%2E%2e/etc/manifests/1', code: 'NAME_INVALID' },
    { name: 'tag too long', path: `/v2/proj/app/manifests/${'a'.repeat(129)}`, code: 'MANIFEST_INVALID' },
    { name: 'tag with bad char', path: '/v2/proj/app/manifests/-bad', code: 'MANIFEST_INVALID' },
    { name: 'short digest', path: '/v2/proj/app/blobs/sha256:abc', code: 'DIGEST_INVALID' },
    { name: 'uppercase hex', path: `/v2/proj/app/blobs/sha256:${'A'.repeat(64)}`, code: 'DIGEST_INVALID' },
    { name: 'unknown algorithm', path: `/v2/proj/app/blobs/md5:${'a'.repeat(32)}`, code: 'DIGEST_INVALID' },
    { name: 'manifest bad digest', path: `/v2/proj/app/manifests/sha256:${'g'.repeat(64)}`, code: 'DIGEST_INVALID' },
    { name: 'hostile long name', path: `/v2/${'a-'.repeat(3000)}a/manifests/1`, code: 'NAME_INVALID' },
  ];
  for (const c of cases) {
    const r = await fetchAll(`${cove.url}/`, { rawPath: c.path });
    t.equal(r.status, 400, c.name);
    t.equal(r.headers['content-type'], 'application/json', `${c.name}: JSON`);
    t.equal(JSON.parse(r.body.toString()).errors[0].code, c.code, `${c.name}: ${c.code}`);
  }
  t.equal(origin.requests.length, 0, 'no invalid request reached the origin');
});

t.test('unknown manifests and blobs are OCI 404s', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const cove = await startTestCove(t, origin.url);
  const m = await fetchAll(`${cove.url}/v2/proj/none/manifests/1`);
  t.equal(m.status, 404);
  t.equal(JSON.parse(m.body.toString()).errors[0].code, 'MANIFEST_UNKNOWN');
  const b = await fetchAll(`${cove.url}/v2/proj/none/blobs/sha256:${'0'.repeat(64)}`);
  t.equal(b.status, 404);
  t.equal(JSON.parse(b.body.toString()).errors[0].code, 'BLOB_UNKNOWN');
});
