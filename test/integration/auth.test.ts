// Cove authenticating to its origin: Basic, the Bearer token flow, blob redirects to another host.
import t, { type Test } from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json, */*';

async function pullAll(url: string, repo: string, image: ReturnType<typeof makeImage>, t: Test): Promise<void> {
  const m = await fetchAll(`${url}/v2/${repo}/manifests/1`, { headers: { accept: ACCEPT } });
  t.equal(m.status, 200, 'manifest');
  t.equal(sha256(m.body), image.manifestDigest);
  for (const layer of image.layers) {
    const b = await fetchAll(`${url}/v2/${repo}/blobs/${layer.digest}`);
    t.equal(sha256(b.body), layer.digest, 'layer');
  }
}

t.test('Bearer origin: tokens fetched with the configured credentials and reused per scope', async (t) => {
  const origin = await OriginRegistry.start({ auth: 'bearer', username: 'robot$edge', password: 's3cret' });
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [10_000, 20_000], seed: 'bearer' });
  origin.putImage('proj/app', '1', image);
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_USERNAME: 'robot$edge', COVE_UPSTREAM_PASSWORD: 's3cret' });
  await pullAll(cove.url, 'proj/app', image, t);
  t.equal(origin.count({ kind: 'token' }), 1, 'one token for the whole pull');
});

t.test('Basic origin', async (t) => {
  const origin = await OriginRegistry.start({ auth: 'basic', username: 'edge', password: 'pw' });
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [10_000], seed: 'basic' });
  origin.putImage('proj/app', '1', image);
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_USERNAME: 'edge', COVE_UPSTREAM_PASSWORD: 'pw' });
  await pullAll(cove.url, 'proj/app', image, t);
});

t.test('wrong credentials: a clear error naming the origin, quickly', async (t) => {
  const origin = await OriginRegistry.start({ auth: 'bearer', username: 'edge', password: 'right' });
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', makeImage({ layers: [100], seed: 'wrongpw' }));
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_USERNAME: 'edge', COVE_UPSTREAM_PASSWORD: 'wrong' });
  const r = await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } });
  t.equal(r.status, 502);
  t.equal(r.headers['content-type'], 'application/json');
  const error = JSON.parse(r.body.toString()).errors[0];
  t.match(error.message, /token|credentials|401/i);
  t.notMatch(r.body.toString(), /at .*\.js:\d+/, 'no stack trace');
});

t.test('307 blob redirect to another host: followed without sending Authorization there', async (t) => {
  const origin = await OriginRegistry.start({ auth: 'bearer', username: 'edge', password: 'pw', redirectBlobs: true });
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [50_000], seed: 'redirect' });
  origin.putImage('proj/app', '1', image);
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_USERNAME: 'edge', COVE_UPSTREAM_PASSWORD: 'pw' });
  await pullAll(cove.url, 'proj/app', image, t);
  t.equal(origin.redirectAuthHeadersSeen, 0, 'the storage host never saw the credentials');
});
