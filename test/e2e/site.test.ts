// A site of three Coves (real `cove serve` processes, LAN peers on loopback) in front of Debian's
// docker-registry as origin, pulled with skopeo:
//  (a) a pull through node-2 gives the pushed image, byte for byte;
//  (b) with the origin stopped, a pull of the same image through node-3 (which never saw the tag)
//      still succeeds, its blobs streamed from its peers;
//  (c) after the origin is back, a second, cold image pulled through all three nodes at the same
//      moment costs the origin about one copy of its blobs, not three.
// Origin bytes are counted from the registry's own access log (body bytes of every blob GET, as
// the registry wrote them), not with a relay.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  Cleanup,
  Registry,
  buildImage,
  httpGet,
  isBlobPath,
  pushImage,
  requireTools,
  skopeoPull,
  startRegistry,
  tempDir,
  verifyDirCopy,
  waitFor,
  type CoveProc,
  type TestImage,
} from './real.js';
import { fetchedFrom, fetchedFromPeers, healthOf, startSite, waitSiteLive, type Health } from './site-harness.js';

const MiB = 1024 * 1024;
const sha256File = (file: string) => `sha256:${createHash('sha256').update(readFileSync(file)).digest('hex')}`;

/** The skopeo `dir:` copy in `out` is exactly `image`. */
function checkCopy(t: Test, out: string, image: TestImage, what: string): void {
  const copy = verifyDirCopy(out);
  t.same(copy.problems, [], `${what}: every blob file hashes to its name and matches the manifest`);
  t.equal(sha256File(join(out, 'manifest.json')), image.manifestDigest, `${what}: manifest bytes are exactly the pushed ones`);
  t.equal(copy.manifest.config.digest, image.config.digest, `${what}: the pushed config`);
  t.same(
    copy.manifest.layers.map((l) => l.digest),
    image.layers.map((l) => l.digest),
    `${what}: the pushed layers`,
  );
}

/** bytesFetched of every node, by node id, for the comment lines. */
const fetchedTable = (healths: Health[]) => healths.map((h, i) => `node-${i + 1} ${JSON.stringify(h.bytesFetched ?? {})}`).join('; ');

t.test('a site of three Coves: pull through one node, through another with the origin down, and all three at once', async (t) => {
  if (!requireTools(t, ['docker-registry', 'skopeo', 'umoci'])) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup, 'cove-site-');
  const origin = await startRegistry(cleanup);
  const app1 = await buildImage(join(work, 'layout'), 'app1', [10 * MiB, 7 * MiB, 4 * MiB], 'site-app1');
  const app2 = await buildImage(join(work, 'layout'), 'app2', [11 * MiB, 8 * MiB, 5 * MiB], 'site-app2');
  await pushImage(app1, origin, 'proj/app:1');
  await pushImage(app2, origin, 'proj/other:2');

  // A long tag TTL: (b) must be answered by the site, not by a tag revalidation that happens to
  // find the origin gone. COVE_UPSTREAM_TIMEOUT bounds (b)'s attempts at the stopped origin.
  // The site key: a tag is taken from a sibling only over the keyed channel.
  const nodes = await startSite(cleanup, origin.url, 3, { COVE_TAG_TTL: '1h', COVE_UPSTREAM_TIMEOUT: '2s', COVE_PEER_KEY: 'e2e-site-key-0123456789' });
  const [, nodeB, nodeC] = nodes as [CoveProc, CoveProc, CoveProc];
  t.pass(`three nodes see each other live: ${nodes.map((n) => n.url).join(', ')}`);

  // (a) one pull through node-2.
  origin.markNow();
  const aMs = await skopeoPull(`${nodeB.hostPort}/proj/app:1`, join(work, 'a'));
  checkCopy(t, join(work, 'a'), app1, '(a) through node-2');
  const aOrigin = Registry.blobGets(origin.since());
  const blobBytes = app1.layers.reduce((n, l) => n + l.size, app1.config.size);
  t.ok(
    aOrigin.bytes >= blobBytes && aOrigin.bytes <= 1.05 * app1.totalBytes,
    `(a) the origin sent the image's blobs once (${aOrigin.bytes} bytes in ${aOrigin.requests} blob GETs; blobs ${blobBytes}, image ${app1.totalBytes})`,
  );
  t.comment(`(a) ${aMs.toFixed(0)} ms; ${fetchedTable(await Promise.all(nodes.map(healthOf)))}`);

  // (b) the origin stops; node-3 never pulled this tag, so the manifest comes from a sibling
  // (served stale) and every blob from a peer or its own store (what it owned in (a)).
  const cBefore = await healthOf(nodeC);
  await origin.stop();
  t.notOk(await httpGet(`${origin.url}/v2/`, { timeoutMs: 1000 }).then(() => true, () => false), '(b) the origin is stopped');
  const bMs = await skopeoPull(`${nodeC.hostPort}/proj/app:1`, join(work, 'b'), undefined, 120_000);
  checkCopy(t, join(work, 'b'), app1, '(b) through node-3, origin stopped');
  const cAfter = await healthOf(nodeC);
  const cFromOrigin = fetchedFrom(cAfter, 'origin') - fetchedFrom(cBefore, 'origin');
  const cFromPeers = fetchedFromPeers(cAfter) - fetchedFromPeers(cBefore);
  t.equal(cFromOrigin, 0, '(b) node-3 fetched nothing from the origin');
  t.ok(cFromPeers > 0, `(b) node-3 took bytes from its peers (${cFromPeers} bytes; ${JSON.stringify(cAfter.bytesFetched)})`);
  const ownedBefore = fetchedFrom(cBefore, 'origin'); // blobs node-3 owned in (a) are already in its store
  t.ok(cFromPeers + ownedBefore >= blobBytes, `(b) peers plus node-3's own store cover every blob (${cFromPeers} + ${ownedBefore} >= ${blobBytes})`);
  t.comment(`(b) ${bMs.toFixed(0)} ms`);

  // The origin comes back; wait until each node has seen it again (node-3's breaker may be open).
  await origin.restart(cleanup);
  await waitFor(
    'every node to see the origin again',
    async () => (await Promise.all(nodes.map((n) => healthOf(n).catch(() => null)))).every((h) => h?.upstreams?.origin?.state !== 'open'),
    70_000,
    250,
  );
  await waitSiteLive(nodes);

  // (c) a cold image through all three nodes at the same moment.
  const before = await Promise.all(nodes.map(healthOf));
  origin.markNow();
  const t0 = performance.now();
  const times = await Promise.all(nodes.map((n, i) => skopeoPull(`${n.hostPort}/proj/other:2`, join(work, `c${i + 1}`), undefined, 180_000)));
  const cMs = performance.now() - t0;
  for (const i of [0, 1, 2]) checkCopy(t, join(work, `c${i + 1}`), app2, `(c) through node-${i + 1}`);
  const cOrigin = origin.since();
  const cBlobs = Registry.blobGets(cOrigin);
  const healths = await Promise.all(nodes.map(healthOf));
  t.ok(
    cBlobs.bytes <= 1.05 * app2.totalBytes,
    `(c) origin blob bytes ${cBlobs.bytes} (${cBlobs.requests} GETs) <= 1.05 x image size ${app2.totalBytes} (${(cBlobs.bytes / app2.totalBytes).toFixed(3)}x)`,
  );
  t.ok(cBlobs.bytes >= app2.layers.reduce((n, l) => n + l.size, 0), '(c) and at least every layer once (the count is real)');
  const perDigest = new Map<string, number>();
  for (const e of cOrigin.filter((e) => e.method === 'GET' && isBlobPath(e.path) && e.status === 200)) {
    const d = /blobs\/(sha256:[0-9a-f]+)/.exec(e.path)![1]!;
    perDigest.set(d, (perDigest.get(d) ?? 0) + 1);
  }
  t.same(
    [...perDigest.entries()].filter(([, n]) => n > 1),
    [],
    `(c) no blob was sent in full twice by the origin (${JSON.stringify(Object.fromEntries(perDigest))})`,
  );
  t.ok(
    healths.reduce((n, h, i) => n + fetchedFromPeers(h) - fetchedFromPeers(before[i]!), 0) > 0,
    '(c) nodes streamed blobs from their peers',
  );
  t.comment(`(c) all three in ${cMs.toFixed(0)} ms (each: ${times.map((x) => x.toFixed(0)).join(', ')} ms); origin ${(cBlobs.bytes / MiB).toFixed(1)} MiB for a ${(app2.totalBytes / MiB).toFixed(1)} MiB image; ${fetchedTable(healths)}`);
});
