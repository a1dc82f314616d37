// One origin copy per site, whatever the timing: nodes that start one after another and pull at
// once agree on every owner, and when an owner dies in the middle of a blob the nodes reading from
// it go on from the byte they had — from the next owner, which resumes from the origin where its
// own copy stood — rather than from byte 0, and no pull fails.
import t from 'tap';
import { request } from 'undici';
import { rankOwners } from '../../src/peers/protocol.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { makeImage } from '../helpers/images.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';
import { freePort, health, pullImage, startSite } from '../helpers/site.js';

t.test('five nodes started one after another pull at once: one origin GET per blob', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1_500_000, 800_000, 2_500_000, 400_000, 1_200_000], seed: 'boot-storm' });
  origin.putImage('proj/boot', '1', image);
  for (const layer of image.layers) origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 6_000_000 }, 1);
  const ports: number[] = [];
  for (let i = 0; i < 5; i++) ports.push(await freePort());
  const peers = ports.map((p) => `http://127.0.0.1:${p}`).join(',');
  // No wait for the nodes to see each other: each pulls the moment the last one is listening.
  const nodes: TestCove[] = [];
  for (let i = 0; i < 5; i++) {
    nodes.push(await startTestCove(t, origin.url, { COVE_NODE_ID: `node-${i + 1}`, COVE_LISTEN: `127.0.0.1:${ports[i]}`, COVE_PEERS: peers, COVE_TAG_TTL: '1h' }));
  }
  await Promise.all(nodes.map((n) => pullImage(n.url, 'proj/boot', '1', image)));
  await Promise.all(nodes.map((n) => n.fillsDone()));
  const blobs = [image.configDigest, ...image.layers.map((l) => l.digest)];
  const perBlob = blobs.map((d) => origin.count({ method: 'GET', kind: 'blob', digest: d }));
  t.same(perBlob, blobs.map(() => 1), `one origin GET per blob (${perBlob.join(', ')})`);
  const blobBytes = image.totalBytes - image.manifest.length;
  t.equal(origin.blobBytesServed, blobBytes, `origin sent ${(origin.blobBytesServed / blobBytes).toFixed(2)}× the image's blob bytes`);
});

t.test('the owner dies mid-blob: its readers go on from their byte through the next owner, and the origin sends the rest once', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [6_000_000], seed: 'owner-dies' });
  origin.putImage('proj/die', '1', image);
  const layer = image.layers[0]!;
  // The first transfer takes about three seconds: long enough to lose its owner half-way.
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 2_000_000 }, 1);
  const nodes = await startSite(t, origin.url, 3, { COVE_SHUTDOWN_GRACE: '100ms' });
  const ranked = rankOwners(nodes.map((n) => n.id), layer.digest);
  const owner = nodes.find((n) => n.id === ranked[0])!;
  const next = nodes.find((n) => n.id === ranked[1])!;
  const readers = nodes.filter((n) => n !== owner);

  const pulls = readers.map((n) => fetchAll(`${n.url}/v2/proj/die/blobs/${layer.digest}`));
  for (let i = 0; i < 400 && origin.blobBytesServed < 2_000_000; i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(origin.blobBytesServed >= 2_000_000 && origin.blobBytesServed < layer.bytes.length, `the owner is part-way (${origin.blobBytesServed} of ${layer.bytes.length} bytes)`);

  // Mid-blob, only the node fetching from above answers "what do you hold": a reader fed by a
  // sibling would, after a break, be asked by the very sibling now reading from it.
  const local = (n: TestCove) => request(`${n.url}/v2/proj/die/blobs/${layer.digest}`, { method: 'HEAD', headers: { 'cove-peer': 'local', 'cove-node': 'node-x' } }).then((r) => r.statusCode);
  t.equal(await local(owner), 200, 'the owner, fed from the origin, answers a peer that it has the blob');
  t.equal(await local(next), 404, 'a reader fed by the owner does not');

  await owner.stop();
  const got = await Promise.all(pulls);
  for (const [i, g] of got.entries()) {
    t.equal(g.status, 200, `${readers[i]!.id}'s pull did not fail`);
    t.equal(sha256(g.body), layer.digest, `${readers[i]!.id} got the whole blob, verified`);
  }
  await Promise.all(readers.map((n) => n.fillsDone()));
  const gets = origin.requests.filter((r) => r.kind === 'blob' && r.method === 'GET');
  t.equal(gets.length, 2, `two origin GETs: the owner's and the next owner's resume (${gets.map((g) => g.range ?? 'whole').join(', ')})`);
  t.equal(gets[1]?.range?.match(/^bytes=([1-9]\d*)-$/) !== null, true, `the resume asked from the byte the next owner had (${gets[1]?.range})`);
  const overlap = origin.blobBytesServed - layer.bytes.length;
  t.ok(overlap < layer.bytes.length / 2, `origin sent ${(origin.blobBytesServed / layer.bytes.length).toFixed(2)}× the blob (the owner's lead over its readers: ${overlap} bytes)`);
  const h = await health(next);
  t.ok((h.bytesFetched.origin ?? 0) > 0 && (h.bytesFetched[`peer:${owner.id}`] ?? 0) > 0, 'the next owner took the first part from the owner, the rest from the origin');
  const other = readers.find((n) => n !== next)!;
  const o = await health(other);
  t.equal(o.bytesFetched.origin ?? 0, 0, 'the other reader never went to the origin');
  t.equal((o.bytesFetched[`peer:${owner.id}`] ?? 0) + (o.bytesFetched[`peer:${next.id}`] ?? 0), layer.bytes.length, 'it took every byte once: from the owner, then from the next owner');
});
