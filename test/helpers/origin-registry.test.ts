// Self-test of the in-process origin registry and the image generator the integration tests stand
// on: if these lie, every Cove test above them proves nothing.
import { request } from 'node:http';
import { gzipSync } from 'node:zlib';
import t from 'tap';
import { OriginRegistry } from './origin-registry.js';
import { makeImage, makeIndex } from './images.js';
import { fetchAll, sha256 } from './http.js';

const V2 = 'application/vnd.docker.distribution.manifest.v2+json';
const LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const ALL = `${V2}, ${LIST}, ${OCI_MANIFEST}, ${OCI_INDEX}`;

function errorCode(body: Buffer): string {
  return (JSON.parse(body.toString()) as { errors: Array<{ code: string }> }).errors[0]!.code;
}

t.test('images are deterministic, incompressible and self-consistent', async (t) => {
  const a = makeImage({ layers: [100_000, 10], seed: 's' });
  const b = makeImage({ layers: [100_000, 10], seed: 's' });
  const c = makeImage({ layers: [100_000, 10], seed: 'other' });
  t.equal(a.manifestDigest, b.manifestDigest, 'same seed, same image');
  t.not(a.layers[0]!.digest, c.layers[0]!.digest, 'other seed, other bytes');
  t.not(a.layers[0]!.digest, a.layers[1]!.digest, 'layers differ from each other');
  t.ok(gzipSync(a.layers[0]!.bytes).length > 99_000, 'layer bytes do not compress');
  t.equal(sha256(a.manifest), a.manifestDigest);
  t.equal(sha256(a.config), a.configDigest);
  const manifest = JSON.parse(a.manifest.toString());
  t.equal(manifest.mediaType, V2);
  t.same(
    manifest.layers.map((l: { digest: string; size: number }) => [l.digest, l.size]),
    a.layers.map((l) => [l.digest, l.bytes.length]),
  );
  t.equal(a.totalBytes, a.manifest.length + a.config.length + 100_010);
  const oci = makeImage({ layers: [1], seed: 'o', mediaType: 'oci', architecture: 'arm64' });
  t.equal(oci.mediaType, OCI_MANIFEST);
  t.equal(JSON.parse(oci.config.toString()).architecture, 'arm64');
  const index = makeIndex([{ image: a, platform: { architecture: 'amd64', os: 'linux' } }, { image: oci }], 'oci');
  t.equal(index.mediaType, OCI_INDEX);
  t.equal(sha256(index.bytes), index.digest);
  t.same(
    JSON.parse(index.bytes.toString()).manifests.map((m: { platform: unknown }) => m.platform),
    [{ architecture: 'amd64', os: 'linux' }, { architecture: 'arm64', os: 'linux' }],
    'platform read from the child config when not given',
  );
});

t.test('a pull by tag: exact bytes and headers, counters', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [50_000, 70_000], seed: 'pull' });
  origin.putImage('proj/app', '1', image);

  const base = await fetchAll(`${origin.url}/v2/`);
  t.equal(base.status, 200);
  t.equal(base.headers['docker-distribution-api-version'], 'registry/2.0');

  const m = await fetchAll(`${origin.url}/v2/proj/app/manifests/1?ns=docker.io`, { headers: { accept: ALL } });
  t.equal(m.status, 200);
  t.ok(m.body.equals(image.manifest));
  t.equal(m.headers['content-type'], V2);
  t.equal(m.headers['content-length'], String(image.manifest.length));
  t.equal(m.headers['docker-content-digest'], image.manifestDigest);
  const head = await fetchAll(`${origin.url}/v2/proj/app/manifests/${image.manifestDigest}`, { method: 'HEAD', headers: { accept: ALL } });
  t.equal(head.status, 200);
  t.equal(head.headers['content-type'], V2, 'HEAD by digest has the true type');
  t.equal(head.body.length, 0);

  for (const blob of [{ digest: image.configDigest, bytes: image.config }, ...image.layers]) {
    const b = await fetchAll(`${origin.url}/v2/proj/app/blobs/${blob.digest}`);
    t.equal(b.status, 200);
    t.equal(sha256(b.body), blob.digest);
    t.equal(b.headers['docker-content-digest'], blob.digest);
  }
  const blobHead = await fetchAll(`${origin.url}/v2/proj/app/blobs/${image.layers[1]!.digest}`, { method: 'HEAD' });
  t.equal(blobHead.headers['content-length'], '70000');

  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 3);
  t.equal(origin.count({ kind: 'blob' }), 4);
  t.equal(origin.count({ kind: 'manifest', repo: 'proj/app' }), 2);
  t.equal(origin.count({ kind: 'base' }), 1);
  t.equal(origin.count({ digest: image.layers[0]!.digest }), 1);
  t.equal(origin.blobBytesServed, image.totalBytes - image.manifest.length, 'HEADs move no bytes');
  t.equal(origin.blobBytesByDigest.get(image.layers[1]!.digest), 70_000);
  const recorded = origin.requests[1]!;
  t.match(recorded, { method: 'GET', path: '/v2/proj/app/manifests/1', status: 200, ns: 'docker.io', accept: ALL, range: null, authorization: null });

  const unknownManifest = await fetchAll(`${origin.url}/v2/proj/app/manifests/nope`);
  t.equal(unknownManifest.status, 404);
  t.equal(unknownManifest.headers['content-type'], 'application/json');
  t.equal(errorCode(unknownManifest.body), 'MANIFEST_UNKNOWN');
  const unknownBlob = await fetchAll(`${origin.url}/v2/proj/app/blobs/sha256:${'0'.repeat(64)}`);
  t.equal(errorCode(unknownBlob.body), 'BLOB_UNKNOWN');
  const write = await fetchAll(`${origin.url}/v2/proj/app/manifests/1`, { method: 'PUT' });
  t.equal(write.status, 405);

  origin.resetCounters();
  t.equal(origin.requests.length, 0);
  t.equal(origin.blobBytesServed, 0);
  t.equal(origin.blobBytesByDigest.size, 0);
});

t.test('Range: 206 with Content-Range, suffix ranges, 416', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1000], seed: 'range' });
  origin.putImage('proj/r', '1', image);
  const layer = image.layers[0]!;
  const url = `${origin.url}/v2/proj/r/blobs/${layer.digest}`;

  const open = await fetchAll(url, { headers: { range: 'bytes=100-' } });
  t.equal(open.status, 206);
  t.equal(open.headers['content-range'], 'bytes 100-999/1000');
  t.equal(open.headers['content-length'], '900');
  t.ok(open.body.equals(layer.bytes.subarray(100)));
  const closed = await fetchAll(url, { headers: { range: 'bytes=10-19' } });
  t.ok(closed.body.equals(layer.bytes.subarray(10, 20)));
  const suffix = await fetchAll(url, { headers: { range: 'bytes=-5' } });
  t.equal(suffix.headers['content-range'], 'bytes 995-999/1000');
  t.ok(suffix.body.equals(layer.bytes.subarray(995)));
  const past = await fetchAll(url, { headers: { range: 'bytes=1000-' } });
  t.equal(past.status, 416);
  t.equal(past.headers['content-range'], 'bytes */1000');
  t.equal(origin.blobBytesServed, 900 + 10 + 5);
  t.equal(origin.requests[0]!.range, 'bytes=100-');
});

t.test('content negotiation like distribution', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const amd = makeImage({ layers: [10], seed: 'amd', architecture: 'amd64' });
  const arm = makeImage({ layers: [10], seed: 'arm', architecture: 'arm64' });
  const list = makeIndex([{ image: arm, platform: { architecture: 'arm64', os: 'linux' } }, { image: amd, platform: { architecture: 'amd64', os: 'linux' } }], 'docker');
  origin.putIndex('proj/multi', 'list', list, [amd, arm]);
  const ociAmd = makeImage({ layers: [10], seed: 'oci-amd', mediaType: 'oci' });
  const index = makeIndex([{ image: ociAmd }], 'oci');
  origin.putIndex('proj/multi', 'index', index, [ociAmd]);

  const full = await fetchAll(`${origin.url}/v2/proj/multi/manifests/list`, { headers: { accept: ALL } });
  t.equal(full.headers['content-type'], LIST);
  t.equal(sha256(full.body), list.digest);
  const perType = await fetchAll(`${origin.url}/v2/proj/multi/manifests/list`, { headers: { accept: [V2, LIST] } });
  t.equal(perType.headers['content-type'], LIST, 'one Accept header per type is understood');
  const old = await fetchAll(`${origin.url}/v2/proj/multi/manifests/list`, { headers: { accept: V2 } });
  t.equal(old.headers['content-type'], V2, 'a schema2-only client gets the linux/amd64 child');
  t.equal(old.headers['docker-content-digest'], amd.manifestDigest);
  t.equal(sha256(old.body), amd.manifestDigest);

  const ociFull = await fetchAll(`${origin.url}/v2/proj/multi/manifests/index`, { headers: { accept: ALL } });
  t.equal(ociFull.headers['content-type'], OCI_INDEX);
  t.equal(sha256(ociFull.body), index.digest);
  const ociOld = await fetchAll(`${origin.url}/v2/proj/multi/manifests/index`, { headers: { accept: `${V2}, ${LIST}` } });
  t.equal(ociOld.status, 404, 'an OCI index without OCI index support is a 404');
  t.equal(errorCode(ociOld.body), 'MANIFEST_UNKNOWN');
  const child = await fetchAll(`${origin.url}/v2/proj/multi/manifests/${ociAmd.manifestDigest}`, { headers: { accept: ALL } });
  t.equal(sha256(child.body), ociAmd.manifestDigest, 'children are stored by digest');

  const raw = Buffer.from('{"schemaVersion":2}');
  origin.putManifest('proj/raw', 'sha256:' + 'e'.repeat(64), raw, V2);
  const lying = await fetchAll(`${origin.url}/v2/proj/raw/manifests/sha256:${'e'.repeat(64)}`);
  t.ok(lying.body.equals(raw), 'putManifest with a digest key serves the bytes as given');
});

t.test('tag moves and deletes', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const v1 = makeImage({ layers: [10], seed: 'v1' });
  const v2 = makeImage({ layers: [10], seed: 'v2' });
  origin.putImage('proj/t', 'latest', v1);
  origin.moveTag('proj/t', 'latest', v2);
  t.equal((await fetchAll(`${origin.url}/v2/proj/t/manifests/latest`, { method: 'HEAD', headers: { accept: ALL } })).headers['docker-content-digest'], v2.manifestDigest);
  origin.moveTag('proj/t', 'latest', v1.manifestDigest);
  t.equal((await fetchAll(`${origin.url}/v2/proj/t/manifests/latest`, { method: 'HEAD', headers: { accept: ALL } })).headers['docker-content-digest'], v1.manifestDigest);
  origin.deleteTag('proj/t', 'latest');
  t.equal((await fetchAll(`${origin.url}/v2/proj/t/manifests/latest`, { headers: { accept: ALL } })).status, 404);
});

t.test('tags/list pages with Link; referrers with artifactType filtering', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [10], seed: 'tags' });
  for (const tag of ['c', 'a', 'b', 'd']) origin.putImage('proj/x', tag, image);

  const first = await fetchAll(`${origin.url}/v2/proj/x/tags/list?n=2`);
  t.same(JSON.parse(first.body.toString()), { name: 'proj/x', tags: ['a', 'b'] });
  t.equal(first.headers['link'], '</v2/proj/x/tags/list?n=2&last=b>; rel="next"');
  const second = await fetchAll(`${origin.url}/v2/proj/x/tags/list?n=2&last=b`);
  t.same(JSON.parse(second.body.toString()).tags, ['c', 'd']);
  t.notOk(second.headers['link'], 'no next page after the last one');
  const all = await fetchAll(`${origin.url}/v2/proj/x/tags/list`);
  t.same(JSON.parse(all.body.toString()).tags, ['a', 'b', 'c', 'd']);
  t.equal((await fetchAll(`${origin.url}/v2/proj/x/tags/list?n=abc`)).status, 400);
  t.equal(errorCode((await fetchAll(`${origin.url}/v2/proj/none/tags/list`)).body), 'NAME_UNKNOWN');
  t.equal(origin.count({ kind: 'tags' }), 5);

  const empty = await fetchAll(`${origin.url}/v2/proj/x/referrers/${image.manifestDigest}`);
  t.equal(empty.status, 200);
  t.equal(empty.headers['content-type'], OCI_INDEX);
  t.same(JSON.parse(empty.body.toString()), { schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] });

  const artifact = (type: string) =>
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: type,
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(Buffer.from('{}')), size: 2 },
        layers: [],
        subject: { mediaType: V2, digest: image.manifestDigest, size: image.manifest.length },
      }),
    );
  const sbom = artifact('application/spdx+json');
  const sig = artifact('application/vnd.dev.cosign.artifact.sig.v1+json');
  origin.putManifest('proj/x', sha256(sbom), sbom, OCI_MANIFEST);
  origin.putManifest('proj/x', sha256(sig), sig, OCI_MANIFEST);
  const both = await fetchAll(`${origin.url}/v2/proj/x/referrers/${image.manifestDigest}`);
  t.same(JSON.parse(both.body.toString()).manifests.map((m: { digest: string }) => m.digest).sort(), [sha256(sbom), sha256(sig)].sort());
  const filtered = await fetchAll(`${origin.url}/v2/proj/x/referrers/${image.manifestDigest}?artifactType=application/spdx%2Bjson`);
  t.same(JSON.parse(filtered.body.toString()).manifests, [{ mediaType: OCI_MANIFEST, digest: sha256(sbom), size: sbom.length, artifactType: 'application/spdx+json' }]);
  t.equal(filtered.headers['oci-filters-applied'], 'artifactType');
  t.equal(origin.count({ kind: 'referrers' }), 3);
});

t.test('bearer auth: challenge, token with Basic credentials, scope, Basic challenge for a bad token', async (t) => {
  const origin = await OriginRegistry.start({ auth: 'bearer', username: 'robot$edge', password: 's3cret' });
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [10], seed: 'bearer' });
  origin.putImage('proj/app', '1', image);
  origin.putImage('proj/other', '1', image);
  const manifestUrl = `${origin.url}/v2/proj/app/manifests/1`;

  const anon = await fetchAll(manifestUrl, { headers: { accept: ALL } });
  t.equal(anon.status, 401);
  t.equal(errorCode(anon.body), 'UNAUTHORIZED');
  t.equal(anon.headers['www-authenticate'], `Bearer realm="${origin.url}/token",service="origin",scope="repository:proj/app:pull"`);
  const baseAnon = await fetchAll(`${origin.url}/v2/`);
  t.equal(baseAnon.status, 401);
  t.equal(baseAnon.headers['www-authenticate'], `Bearer realm="${origin.url}/token",service="origin"`);

  const tokenUrl = `${origin.url}/token?service=origin&scope=repository:proj/app:pull`;
  const wrong = await fetchAll(tokenUrl, { headers: { authorization: `Basic ${Buffer.from('robot$edge:nope').toString('base64')}` } });
  t.equal(wrong.status, 401, 'wrong credentials get no token');
  const basic = `Basic ${Buffer.from('robot$edge:s3cret').toString('base64')}`;
  const issued = await fetchAll(tokenUrl, { headers: { authorization: basic } });
  t.equal(issued.status, 200);
  const { token, expires_in } = JSON.parse(issued.body.toString()) as { token: string; expires_in: number };
  t.type(token, 'string');
  t.type(expires_in, 'number');

  const authed = await fetchAll(manifestUrl, { headers: { accept: ALL, authorization: `Bearer ${token}` } });
  t.equal(authed.status, 200);
  t.equal(sha256(authed.body), image.manifestDigest);
  const otherRepo = await fetchAll(`${origin.url}/v2/proj/other/manifests/1`, { headers: { accept: ALL, authorization: `Bearer ${token}` } });
  t.equal(otherRepo.status, 401, 'a token is good for its scope only');
  t.match(otherRepo.headers['www-authenticate'], /^Basic /, 'Harbor answers a bad token with a Basic challenge');
  const forged = await fetchAll(manifestUrl, { headers: { accept: ALL, authorization: 'Bearer forged' } });
  t.equal(forged.status, 401);
  t.equal((await fetchAll(`${origin.url}/v2/`, { headers: { authorization: basic } })).status, 200, 'Basic works on /v2/');
  t.equal(origin.count({ kind: 'token' }), 2);
  t.equal(origin.requests.find((r) => r.kind === 'token' && r.status === 200)!.authorization, basic);
});

t.test('bearer tokens expire', async (t) => {
  const origin = await OriginRegistry.start({ auth: 'bearer', tokenExpiresIn: 0.2 });
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', makeImage({ layers: [10], seed: 'expiry' }));
  const { token } = JSON.parse((await fetchAll(`${origin.url}/token?service=origin&scope=repository:proj/app:pull`)).body.toString());
  const get = () => fetchAll(`${origin.url}/v2/proj/app/manifests/1`, { headers: { accept: ALL, authorization: `Bearer ${token}` } });
  t.equal((await get()).status, 200, 'anonymous token (no credentials configured)');
  await new Promise((r) => setTimeout(r, 300));
  t.equal((await get()).status, 401, 'expired');
});

t.test('basic auth', async (t) => {
  const origin = await OriginRegistry.start({ auth: 'basic', username: 'edge', password: 'pw' });
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [10], seed: 'basic' });
  origin.putImage('proj/app', '1', image);
  const url = `${origin.url}/v2/proj/app/blobs/${image.layers[0]!.digest}`;
  const anon = await fetchAll(url);
  t.equal(anon.status, 401);
  t.match(anon.headers['www-authenticate'], /^Basic realm="/);
  const wrong = await fetchAll(url, { headers: { authorization: `Basic ${Buffer.from('edge:x').toString('base64')}` } });
  t.equal(wrong.status, 401);
  const ok = await fetchAll(url, { headers: { authorization: `Basic ${Buffer.from('edge:pw').toString('base64')}` } });
  t.equal(ok.status, 200);
  t.equal(sha256(ok.body), image.layers[0]!.digest);
});

t.test('blob redirects to a second host, which counts Authorization headers', async (t) => {
  const origin = await OriginRegistry.start({ redirectBlobs: true });
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [5000], seed: 'redirect' });
  origin.putImage('proj/app', '1', image);
  const layer = image.layers[0]!;
  const r = await fetchAll(`${origin.url}/v2/proj/app/blobs/${layer.digest}`);
  t.equal(r.status, 307);
  const location = r.headers['location']!;
  t.match(location, /^http:\/\/127\.0\.0\.2:\d+\//);
  const head = await fetchAll(`${origin.url}/v2/proj/app/blobs/${layer.digest}`, { method: 'HEAD' });
  t.equal(head.status, 200, 'HEAD is answered by the registry itself');

  const clean = await fetchAll(location, { headers: { range: 'bytes=1000-' } });
  t.equal(clean.status, 206);
  t.ok(clean.body.equals(layer.bytes.subarray(1000)));
  t.equal(origin.redirectAuthHeadersSeen, 0);
  await fetchAll(location, { headers: { authorization: 'Bearer leaked' } });
  t.equal(origin.redirectAuthHeadersSeen, 1, 'a leaked credential is seen');
  t.equal(origin.blobBytesServed, 4000 + 5000, 'bytes counted where they are served');
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 1, 'count() is about the registry host');
});

t.test('faults', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [400_000, 1000], seed: 'faults' });
  origin.putImage('proj/f', '1', image);
  const layer = image.layers[0]!;
  const url = `${origin.url}/v2/proj/f/blobs/${layer.digest}`;

  t.test('status with Retry-After, limited times, by kind', async (t) => {
    origin.setFault({ kind: 'manifest' }, { type: 'status', status: 429, retryAfter: 7 }, 1);
    const limited = await fetchAll(`${origin.url}/v2/proj/f/manifests/1`, { headers: { accept: ALL } });
    t.equal(limited.status, 429);
    t.equal(limited.headers['retry-after'], '7');
    t.equal(errorCode(limited.body), 'TOOMANYREQUESTS');
    t.equal((await fetchAll(`${origin.url}/v2/proj/f/manifests/1`, { headers: { accept: ALL } })).status, 200, 'used up after one');
    origin.setFault({ digest: layer.digest }, { type: 'status', status: 500 });
    t.equal((await fetchAll(url)).status, 500);
    t.equal((await fetchAll(url, { method: 'HEAD' })).status, 500, 'until cleared');
    t.equal((await fetchAll(`${origin.url}/v2/proj/f/blobs/${image.layers[1]!.digest}`)).status, 200, 'other digests unaffected');
    origin.setFault({ repo: 'proj/other' }, { type: 'status', status: 503 });
    t.equal((await fetchAll(url)).status, 500, 'repo match does not hit other repos');
    origin.clearFaults();
    t.equal((await fetchAll(url)).status, 200);
  });

  t.test('slow: paced by timers', async (t) => {
    origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 1_000_000 }, 1);
    const started = Date.now();
    const r = await fetchAll(url);
    const ms = Date.now() - started;
    t.equal(sha256(r.body), layer.digest, 'bytes intact');
    t.ok(ms >= 300, `400 kB at 1 MB/s takes a while (${ms} ms)`);
    t.ok(ms < 2000, `but not forever (${ms} ms)`);
  });

  t.test('truncate: full Content-Length, then the socket is cut', async (t) => {
    origin.resetCounters();
    origin.setFault({ digest: layer.digest }, { type: 'truncate', afterBytes: 100_000 }, 1);
    await t.rejects(fetchAll(url), 'the client sees a broken transfer');
    t.equal(origin.blobBytesServed, 100_000);
    const partial = await fetchAll(url, { headers: { range: 'bytes=100000-' } });
    t.equal(partial.status, 206, 'resume works after the cut');
    t.ok(partial.body.equals(layer.bytes.subarray(100_000)));
    origin.setFault({ digest: layer.digest }, { type: 'truncate', afterBytes: 0 }, 1);
    await t.rejects(fetchAll(url), 'cut right after the headers');
  });

  t.test('reset: headers and some bytes, then a TCP RST', async (t) => {
    origin.resetCounters();
    origin.setFault({ digest: layer.digest }, { type: 'reset', afterBytes: 50_000 }, 1);
    const err = await fetchAll(url).then(
      () => null,
      (e: Error) => e,
    );
    t.ok(err, 'the client sees a broken transfer');
    t.match(String(err?.message), /ECONNRESET|aborted|closed before|cut off|broke/, `reset, not a clean end (${err?.message})`);
    t.equal(origin.requests.at(-1)!.status, 200, 'the headers went out');
    t.equal(origin.blobBytesServed, 50_000);
    t.equal(sha256((await fetchAll(url)).body), layer.digest, 'good bytes afterwards');
  });

  t.test('slow below 20 bytes a second: a byte at a time', async (t) => {
    origin.setFault({ kind: 'manifest' }, { type: 'slow', bytesPerSecond: 5 }, 1);
    const seen = await new Promise<{ status: number; bytes: number }>((resolve) => {
      const req = request(`${origin.url}/v2/proj/f/manifests/1`, { headers: { accept: ALL }, agent: false }, (res) => {
        let bytes = 0;
        res.on('data', (c: Buffer) => (bytes += c.length));
        res.on('error', () => {});
        setTimeout(() => {
          req.destroy();
          resolve({ status: res.statusCode ?? 0, bytes });
        }, 1000);
      });
      req.on('error', () => {});
      req.end();
    });
    t.equal(seen.status, 200, 'the headers came at once');
    t.ok(seen.bytes >= 3 && seen.bytes <= 8, `about 5 body bytes in a second (${seen.bytes})`);
  });

  t.test('wrong-bytes: same length, other digest', async (t) => {
    origin.setFault({ digest: layer.digest }, { type: 'wrong-bytes' }, 1);
    const r = await fetchAll(url);
    t.equal(r.status, 200);
    t.equal(r.body.length, layer.bytes.length);
    t.not(sha256(r.body), layer.digest);
    t.equal(sha256((await fetchAll(url)).body), layer.digest, 'good bytes afterwards');
  });

  t.test('stall: headers and some bytes, then silence', async (t) => {
    origin.setFault({ digest: layer.digest }, { type: 'stall', afterBytes: 1000 }, 1);
    const started = Date.now();
    await t.rejects(fetchAll(url, { timeoutMs: 300 }), /no answer/);
    t.ok(Date.now() - started >= 250);
    const stalled = origin.requests.at(-1)!;
    t.equal(stalled.status, 200, 'the headers went out');
  });

  t.test('blackhole: accepted, never answered', async (t) => {
    origin.setFault({ kind: 'manifest' }, { type: 'blackhole' }, 1);
    await t.rejects(fetchAll(`${origin.url}/v2/proj/f/manifests/1`, { timeoutMs: 300 }), /no answer/);
    t.equal(origin.requests.at(-1)!.status, 0, 'recorded without a status');
    t.equal((await fetchAll(`${origin.url}/v2/proj/f/manifests/1`, { headers: { accept: ALL } })).status, 200);
  });

  t.test('endless: no length, the blob and then more bytes', async (t) => {
    origin.resetCounters();
    origin.setFault({ digest: layer.digest }, { type: 'endless', extraBytes: 1_000_000 }, 1);
    const r = await fetchAll(url);
    t.equal(r.status, 200);
    t.equal(r.headers['content-length'], undefined, 'no length');
    t.equal(r.body.length, layer.bytes.length + 1_000_000);
    t.ok(r.body.subarray(0, layer.bytes.length).equals(layer.bytes), 'the blob comes first');
    t.equal(origin.blobBytesServed, layer.bytes.length + 1_000_000, 'every byte counted');
    t.equal(sha256((await fetchAll(url)).body), layer.digest, 'good bytes afterwards');
  });

  t.test('head-404: HEAD says unknown, GET has it', async (t) => {
    origin.setFault({ digest: layer.digest }, { type: 'head-404' });
    const head = await fetchAll(url, { method: 'HEAD' });
    t.equal(head.status, 404);
    t.equal((await fetchAll(url)).status, 200);
    origin.clearFaults();
  });
});

t.test('faults survive a Bearer 401 round', async (t) => {
  const origin = await OriginRegistry.start({ auth: 'bearer' });
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', makeImage({ layers: [10], seed: 'auth-fault' }));
  origin.setFault({ kind: 'manifest' }, { type: 'status', status: 429 }, 1);
  const url = `${origin.url}/v2/proj/app/manifests/1`;
  t.equal((await fetchAll(url, { headers: { accept: ALL } })).status, 401);
  const { token } = JSON.parse((await fetchAll(`${origin.url}/token?scope=repository:proj/app:pull`)).body.toString());
  t.equal((await fetchAll(url, { headers: { accept: ALL, authorization: `Bearer ${token}` } })).status, 429, 'the authenticated retry meets the fault');
});

t.test('stop and restart on the same port keep the content', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [10], seed: 'restart' });
  origin.putImage('proj/app', '1', image);
  const url = origin.url;
  origin.setFault({ kind: 'blob' }, { type: 'stall' });
  const stalled = fetchAll(`${url}/v2/proj/app/blobs/${image.layers[0]!.digest}`);
  await new Promise((r) => setTimeout(r, 50));
  await origin.stop();
  await t.rejects(stalled, 'open transfers are cut by stop()');
  await t.rejects(fetchAll(`${url}/v2/`), /ECONNREFUSED/);
  await origin.restart();
  origin.clearFaults();
  t.equal(origin.url, url);
  const m = await fetchAll(`${url}/v2/proj/app/manifests/1`, { headers: { accept: ALL } });
  t.equal(sha256(m.body), image.manifestDigest);
});

t.test('paced: a client that stops reading holds the pace back, and the count with it', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [32 * 1024 * 1024], seed: 'paced' });
  origin.putImage('proj/p', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'paced', bytesPerSecond: 32 * 1024 * 1024 });
  const body = await new Promise<{ counted: number; bytes: Buffer }>((resolve, reject) => {
    const req = request(`${origin.url}/v2/proj/p/blobs/${layer.digest}`, { agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.pause();
      // At the pace, the whole blob would be out in a second; a paused reader takes only what
      // the sockets between hold.
      setTimeout(() => {
        const counted = origin.blobBytesServed;
        res.on('end', () => resolve({ counted, bytes: Buffer.concat(chunks) }));
        res.resume();
      }, 1500);
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
  t.ok(body.counted < layer.bytes.length / 2, `while the client read nothing, ${body.counted} of ${layer.bytes.length} bytes were counted`);
  t.equal(sha256(body.bytes), layer.digest, 'then the rest came, bytes intact');
  t.equal(origin.blobBytesServed, layer.bytes.length, 'and the count is the blob');
});
