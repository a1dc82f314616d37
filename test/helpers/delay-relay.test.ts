// Self-test of the delaying relay the site chaos test stands on: bytes pass intact and in order,
// an answer comes no sooner than two delays after the question, and closing drops its connections.
import t from 'tap';
import { DelayRelay } from './delay-relay.js';
import { fetchAll, sha256 } from './http.js';
import { makeImage } from './images.js';
import { OriginRegistry } from './origin-registry.js';

t.test('relays a blob intact, each round trip two delays late', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [3_000_000], seed: 'delay-relay' });
  origin.putImage('proj/app', '1', image);
  const relay = await DelayRelay.start({ port: origin.port }, 150);
  t.teardown(() => relay.close());

  const t0 = performance.now();
  const blob = await fetchAll(`${relay.url()}/v2/proj/app/blobs/${image.layers[0]!.digest}`);
  const ms = performance.now() - t0;
  t.equal(blob.status, 200);
  t.equal(sha256(blob.body), image.layers[0]!.digest, 'every byte relayed, in order');
  t.ok(ms >= 290, `the answer came two delays after the question at the earliest (${ms.toFixed(0)} ms)`);
  t.equal(origin.count({ kind: 'blob' }), 1, 'one request reached the origin');
  t.equal(relay.accepted, 1);

  // Several at once on their own connections: each intact.
  const many = await Promise.all([1, 2, 3].map(() => fetchAll(`${relay.url()}/v2/proj/app/manifests/1`, { headers: { accept: image.mediaType } })));
  t.same(
    many.map((r) => sha256(r.body)),
    [image.manifestDigest, image.manifestDigest, image.manifestDigest],
    'concurrent connections each get their own bytes',
  );
});

t.test('a connection the target breaks is broken for the client too, late', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1_000_000], seed: 'delay-relay-cut' });
  origin.putImage('proj/app', '1', image);
  origin.setFault({ kind: 'blob' }, { type: 'truncate', afterBytes: 100_000 });
  const relay = await DelayRelay.start({ port: origin.port }, 100);
  t.teardown(() => relay.close());
  await t.rejects(fetchAll(`${relay.url()}/v2/proj/app/blobs/${image.layers[0]!.digest}`), /cut off|closed|broke/, 'the client sees the cut, not a short body that looks complete');
});
