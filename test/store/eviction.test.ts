// The eviction plan on a real store and index with a chosen clock: images idle past the limit
// go, shared layers stay while an image that stays needs them, pins and leases protect, and an
// index (multi-arch) goes with its children.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { pino } from 'pino';
import { Counters } from '../../src/metrics.js';
import { digestOf } from '../../src/oci/digest.js';
import { BlobStore } from '../../src/store/blobs.js';
import { Catalog } from '../../src/store/catalog.js';
import { Evictor, type EvictionLimits } from '../../src/store/eviction.js';
import { Leases } from '../../src/store/leases.js';
import { PinStore } from '../../src/store/pins.js';

const DAY = 86_400_000;
const NOW = 100 * DAY;

async function setup(t: Test, limits: Partial<EvictionLimits>) {
  const dir = mkdtempSync(join(tmpdir(), 'cove-evict-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = new BlobStore(dir);
  await store.open();
  const log = pino({ level: 'silent' });
  const catalog = await Catalog.open(dir, store, log);
  t.teardown(() => catalog.close());
  const pins = await PinStore.open(dir);
  const leases = new Leases();
  const counters = new Counters();
  const evictor = new Evictor({
    store,
    catalog,
    pins,
    leases,
    filling: () => [],
    limits: { maxBytes: null, highWater: 0.9, lowWater: 0.8, maxIdleMs: null, ...limits },
    log,
    counters,
    now: () => NOW,
  });
  const put = async (bytes: Buffer, lastAccess: number, mediaType: string | null = null, refs: string[] | null = null) => {
    const digest = digestOf(bytes);
    const w = await store.createWriter(digest, bytes.length);
    await w.write(bytes);
    await w.commit();
    await catalog.putBlob(digest, { size: bytes.length, mediaType, lastAccess, pinned: false });
    if (refs) await catalog.putManifestRefs(digest, refs);
    return digest;
  };
  const image = async (name: string, lastAccess: number, layers: string[]) => {
    const config = await put(Buffer.from(`config of ${name}`), lastAccess);
    const manifest = await put(Buffer.from(JSON.stringify({ name, layers })), lastAccess, 'application/vnd.oci.image.manifest.v1+json', [config, ...layers]);
    await catalog.putTag({ upstream: 'origin', repo: `proj/${name}`, tag: '1' }, { digest: manifest, mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 10, fetchedAt: 0, validatedAt: 0 });
    return { config, manifest };
  };
  return { store, catalog, pins, leases, counters, evictor, put, image };
}

t.test('idle images go; a layer shared with an image that stays is kept', async (t) => {
  const s = await setup(t, { maxIdleMs: 14 * DAY });
  const shared = await s.put(Buffer.from('shared layer'), NOW - 30 * DAY);
  const oldOnly = await s.put(Buffer.from('old layer'), NOW - 30 * DAY);
  const old = await s.image('old', NOW - 30 * DAY, [shared, oldOnly]);
  const fresh = await s.image('fresh', NOW - 1 * DAY, [shared]);
  await s.evictor.start();

  const dry = await s.evictor.run({ dryRun: true });
  t.same(dry.evicted.map((e) => e.digest).sort(), [old.manifest, old.config, oldOnly].sort(), 'plan: the idle image, not the shared layer');
  t.ok(await s.store.stat(old.manifest), 'a dry run removes nothing');

  const report = await s.evictor.run();
  t.ok(report.evicted.every((e) => e.why === 'idle'));
  t.same(report.tagsRemoved.map((x) => x.repo), ['proj/old'], "the idle image's tag went with it");
  for (const d of [old.manifest, old.config, oldOnly]) t.equal(await s.store.stat(d), null, `${d.slice(7, 15)} removed from disk`);
  for (const d of [fresh.manifest, fresh.config, shared]) t.ok(await s.store.stat(d), `${d.slice(7, 15)} kept`);
  t.equal(await s.catalog.getTag({ upstream: 'origin', repo: 'proj/old', tag: '1' }), null);
  t.equal(s.counters.evictions, 3);
});

t.test('over the cap: oldest first down to the low watermark; pins and leases protect', async (t) => {
  const layer = (name: string) => Buffer.alloc(1000, name);
  const s = await setup(t, { maxBytes: 10_000 });
  const a = await s.image('a', NOW - 5 * DAY, [await s.put(layer('a'), NOW - 5 * DAY)]);
  const bLayer = await s.put(layer('b'), NOW - 4 * DAY);
  const b = await s.image('b', NOW - 4 * DAY, [bLayer]);
  const c = await s.image('c', NOW - 3 * DAY, [await s.put(layer('c'), NOW - 3 * DAY)]);
  const d = await s.image('d', NOW - 2 * DAY, [await s.put(layer('d'), NOW - 2 * DAY)]);
  const e = await s.image('e', NOW - 1 * DAY, [await s.put(layer('e'), NOW - 1 * DAY)]);
  await s.evictor.start();
  t.ok(s.evictor.bytes > 5000);
  await s.pins.add('origin', 'proj/a', '1');
  const release = s.leases.acquire(bLayer);
  // Push the cache over: 2 KiB more than the high watermark allows.
  const filler = await s.image('f', NOW, [await s.put(Buffer.alloc(4000, 'f'), NOW)]);
  const total = s.evictor.bytes;
  const report = await s.evictor.run({ reason: 'requested' });
  release();
  t.ok(report.bytesAfter <= 8000, `under the low watermark (${total} -> ${report.bytesAfter})`);
  t.equal(report.keptPinned, 1, 'a is pinned');
  t.equal(report.keptInUse, 1, 'b is being read');
  t.ok(await s.store.stat(a.manifest), 'pinned image kept');
  t.ok(await s.store.stat(b.manifest), 'image being read kept');
  t.equal(await s.store.stat(c.manifest), null, 'the oldest unprotected image went first');
  t.ok(await s.store.stat(filler.manifest), 'the newest image stayed');
  t.ok(report.evicted.every((x) => x.why === 'size'));
  const order = report.evicted.filter((x) => x.kind === 'manifest').map((x) => x.digest);
  t.same(order.slice(0, 1), [c.manifest], 'least recently pulled first');
  t.ok(!report.evicted.some((x) => [d.manifest, e.manifest].includes(x.digest)) || report.bytesAfter <= 8000);
});

t.test('an index goes with its children; a child shared by two indexes stays', async (t) => {
  const s = await setup(t, { maxIdleMs: 14 * DAY });
  const amd = await s.put(Buffer.from('{"child":"amd64"}'), NOW - 30 * DAY, 'application/vnd.oci.image.manifest.v1+json', []);
  const arm = await s.put(Buffer.from('{"child":"arm64"}'), NOW - 30 * DAY, 'application/vnd.oci.image.manifest.v1+json', []);
  const oldIndex = await s.put(Buffer.from('{"index":"old"}'), NOW - 30 * DAY, 'application/vnd.oci.image.index.v1+json', [amd, arm]);
  const newIndex = await s.put(Buffer.from('{"index":"new"}'), NOW, 'application/vnd.oci.image.index.v1+json', [arm]);
  await s.evictor.start();
  const report = await s.evictor.run();
  t.same(report.evicted.map((x) => x.digest).sort(), [oldIndex, amd].sort(), 'the idle index and its own child');
  t.ok(await s.store.stat(arm), 'the child the new index still needs stayed');
  t.ok(await s.store.stat(newIndex));
});

t.test('regression: a record whose file is already gone does not lower the cached-bytes figure (found by the chaos test)', async (t) => {
  const s = await setup(t, { maxIdleMs: 14 * DAY });
  const kept = await s.image('kept', NOW, [await s.put(Buffer.alloc(2000, 'k'), NOW)]);
  const ghostBytes = Buffer.from('{"manifest":"ghost"}');
  const ghost = await s.put(ghostBytes, NOW - 30 * DAY, 'application/vnd.oci.image.manifest.v1+json', []);
  await s.evictor.start();
  const onDisk = async () => {
    let n = 0;
    for await (const b of s.store.list()) n += b.size;
    return n;
  };
  await s.evictor.run();
  t.equal(await s.store.stat(ghost), null, 'the idle manifest went');
  t.equal(s.evictor.bytes, await onDisk(), 'figure = bytes on disk');
  // A request that raced that eviction records the manifest again, without its file.
  await s.catalog.putBlob(ghost, { size: ghostBytes.length, mediaType: 'application/vnd.oci.image.manifest.v1+json', lastAccess: NOW - 30 * DAY, pinned: false });
  const report = await s.evictor.run();
  t.ok(report.evicted.some((e) => e.digest === ghost), 'the stale record is cleared');
  t.equal(s.evictor.bytes, await onDisk(), 'and the figure still equals the bytes on disk');
  t.ok(await s.store.stat(kept.manifest));
});

t.test('start-up counts the cached bytes as the records stream by, and a pass reads them once, without listing every blob', async (t) => {
  const s = await setup(t, {});
  await s.image('a', NOW, [await s.put(Buffer.from('layer a'), NOW)]);
  await s.image('b', NOW, [await s.put(Buffer.from('layer b, longer'), NOW)]);
  const expected = (await s.catalog.listBlobs()).reduce((n, b) => n + b.record.size, 0);
  let listed = 0;
  const listBlobs = s.catalog.listBlobs.bind(s.catalog);
  s.catalog.listBlobs = () => {
    listed++;
    return listBlobs();
  };
  await s.evictor.start();
  t.equal(s.evictor.bytes, expected, 'the figure is the sum of the records');
  t.equal(listed, 0, 'no list of every blob was built');
  // A pass reads the records once, as the maps it plans on, not as a list copied into them.
  const report = await s.evictor.run({ dryRun: true });
  t.equal(report.bytesBefore, expected);
  t.equal(listed, 0, 'nor by a pass');
  await s.evictor.stop();
});
