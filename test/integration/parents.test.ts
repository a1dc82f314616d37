// Parent tiers: edge → regional Cove → origin over the normal registry API. The regional tier
// fetches once for all its edges; Via stops loops; a parent's stale answers stay flagged at the
// edge; a parent that 404s blob HEADs (a Harbor proxy project) does not fool the edge.
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { ACCEPT_ALL, freePort, health, pullImage } from '../helpers/site.js';
import { startTestCove } from '../helpers/cove.js';

const DEAD = 'http://127.0.0.1:9';

t.test('two edges behind one regional Cove: the origin sends each blob once', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [600_000, 900_000], seed: 'regional' });
  origin.putImage('proj/app', '1', image);
  const regional = await startTestCove(t, origin.url, { COVE_NODE_ID: 'regional' });
  const parentName = `parent:${new URL(regional.url).host}`;
  // The edges' own origin link is dead: everything must come through the regional tier.
  const edge1 = await startTestCove(t, DEAD, { COVE_NODE_ID: 'edge-1', COVE_PARENTS: regional.url });
  const edge2 = await startTestCove(t, DEAD, { COVE_NODE_ID: 'edge-2', COVE_PARENTS: regional.url });

  const first = await pullImage(edge1.url, 'proj/app', '1', image);
  t.equal(first.manifest.cache, 'cove; fwd=miss; stored');
  await regional.fillsDone();
  await pullImage(edge2.url, 'proj/app', '1', image);
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 3, 'one origin GET per blob for both edges');
  t.equal((await health(edge1)).bytesFetched[parentName], image.totalBytes, 'edge 1 took every byte from the regional tier');
  t.equal((await health(edge2)).bytesFetched[parentName], image.totalBytes, 'so did edge 2');
  const r = await health(regional);
  t.equal(r.bytesFetched.origin, image.totalBytes, 'the regional tier fetched the image once');
});

t.test('Via: a request that comes back to a Cove is refused, and a parent loop still ends', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100_000], seed: 'loop' });
  origin.putImage('proj/app', '1', image);
  const digest = image.layers[0]!.digest;
  const [px, py] = [await freePort(), await freePort()];
  // Two Coves configured as each other's parent: a mistake an operator can make.
  const x = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-x', COVE_LISTEN: `127.0.0.1:${px}`, COVE_PARENTS: `http://127.0.0.1:${py}` });
  const y = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-y', COVE_LISTEN: `127.0.0.1:${py}`, COVE_PARENTS: `http://127.0.0.1:${px}` });

  const back = await fetchAll(`${x.url}/v2/proj/app/blobs/${digest}`, { headers: { via: '1.1 node-y (cove), 1.1 node-x (cove)' } });
  t.equal(back.status, 508);
  t.match(JSON.parse(back.body.toString()), { errors: [{ code: 'LOOP_DETECTED' }] });
  const hops = Array.from({ length: 8 }, (_, i) => `1.1 hop-${i} (cove)`).join(', ');
  const far = await fetchAll(`${x.url}/v2/proj/app/blobs/${digest}`, { headers: { via: hops } });
  t.equal(far.status, 508, 'eight hops are too many');

  const got = await fetchAll(`${x.url}/v2/proj/app/blobs/${digest}`);
  t.equal(sha256(got.body), digest, 'the pull through the loop still ends, from the origin');
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 1, 'the origin was asked once');
  t.ok((await fetchAll(`${y.url}/healthz`)).status === 200);
});

t.test("a parent's stale answer is flagged stale at the edge, and asked again next time", async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [50_000], seed: 'parent-stale' });
  origin.putImage('proj/app', '1', image);
  const regional = await startTestCove(t, origin.url, { COVE_NODE_ID: 'regional', COVE_TAG_TTL: '0s' });
  await pullImage(regional.url, 'proj/app', '1', image);
  await origin.stop();
  const edge = await startTestCove(t, DEAD, { COVE_NODE_ID: 'edge-1', COVE_PARENTS: regional.url, COVE_TAG_TTL: '1h' });

  const m = await fetchAll(`${edge.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT_ALL } });
  t.equal(m.status, 200);
  t.equal(sha256(m.body), image.manifestDigest);
  t.match(m.headers['cache-status'], /detail=stale/, 'the edge says the answer is stale');
  t.equal(m.headers.warning, '110 - "Response is Stale"');
  const again = await fetchAll(`${edge.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT_ALL } });
  t.match(again.headers['cache-status'], /detail=stale/, 'a stale tag is not taken as fresh for the edge TTL');

  await origin.restart();
  const fresh = await fetchAll(`${edge.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT_ALL } });
  t.equal(fresh.headers['cache-status'], 'cove; hit; detail=revalidated', 'once the origin is back the edge revalidates through the parent');
  t.notOk(fresh.headers.warning);
});

t.test('a parent that 404s blob HEADs (Harbor proxy projects) does not fool the edge', async (t) => {
  const parent = await OriginRegistry.start();
  t.teardown(() => parent.close());
  const image = makeImage({ layers: [80_000], seed: 'head-404' });
  parent.putImage('proj/app', '1', image);
  parent.setFault({ kind: 'blob' }, { type: 'head-404' });
  const edge = await startTestCove(t, DEAD, { COVE_NODE_ID: 'edge-1', COVE_PARENTS: parent.url });
  const layer = image.layers[0]!;
  const head = await fetchAll(`${edge.url}/v2/proj/app/blobs/${layer.digest}`, { method: 'HEAD' });
  t.equal(head.status, 200, 'the edge confirmed with a GET');
  t.equal(head.headers['content-length'], String(layer.bytes.length));
  const got = await fetchAll(`${edge.url}/v2/proj/app/blobs/${layer.digest}`);
  t.equal(sha256(got.body), layer.digest);
  t.equal(parent.count({ method: 'GET', kind: 'blob' }), 1, 'one GET served both the HEAD and the pull');
});
