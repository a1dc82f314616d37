// Kept listings (tags/list, referrers answers) are bounded in number and bytes, oldest dropped
// first, survive a restart within their bounds, and count towards the cache cap: the evictor's
// figure includes them and eviction may drop them.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { Counters } from '../../src/metrics.js';
import { digestOf } from '../../src/oci/digest.js';
import { BlobStore } from '../../src/store/blobs.js';
import { Catalog, DEFAULT_LISTING_LIMITS, type ListingKey, type ListingLimits } from '../../src/store/catalog.js';
import { Evictor } from '../../src/store/eviction.js';
import { Leases } from '../../src/store/leases.js';
import { PinStore } from '../../src/store/pins.js';

const log = pino({ level: 'silent' });

async function open(t: Test, limits?: ListingLimits, dir = mkdtempSync(join(tmpdir(), 'cove-listings-'))) {
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = new BlobStore(dir);
  await store.open();
  const catalog = await Catalog.open(dir, store, log, limits ? { listingLimits: limits } : {});
  t.teardown(() => catalog.close());
  return { dir, store, catalog };
}

const key = (i: number): ListingKey => ({ upstream: 'origin', repo: 'proj/app', kind: 'tags', query: `n=${i}&last=` });
const answer = (i: number, fetchedAt = i) => ({
  status: 200,
  headers: { 'content-type': 'application/json' },
  body: Buffer.from(JSON.stringify({ name: 'proj/app', tags: Array.from({ length: 5 }, (_, j) => `t${i}-${j}`) })).toString('base64'),
  fetchedAt,
});

/** The listing keys and their bytes as they are in LevelDB, read with the index closed. */
async function inIndex(dir: string): Promise<{ count: number; bytes: number }> {
  const db = new Level<string, unknown>(join(dir, 'index'), { valueEncoding: 'json' });
  await db.open();
  let count = 0;
  let bytes = 0;
  for await (const [k, v] of db.iterator({ gte: 'list\0', lt: 'list\x01' })) {
    count++;
    bytes += Buffer.byteLength(k) + Buffer.byteLength(JSON.stringify(v));
  }
  await db.close();
  return { count, bytes };
}

t.test('defaults: 1,000 listings, 16 MiB', async (t) => {
  t.same({ ...DEFAULT_LISTING_LIMITS }, { maxCount: 1000, maxBytes: 16 * 1024 * 1024 });
});

t.test('2,000 distinct queries leave at most the count cap, the newest kept', async (t) => {
  const { dir, store, catalog } = await open(t, { maxCount: 100, maxBytes: 16 * 1024 * 1024 });
  for (let i = 0; i < 2000; i++) await catalog.putListing(key(i), answer(i));
  t.equal(catalog.listListings().length, 100);
  t.equal(await catalog.getListing(key(0)), null, 'the oldest went first');
  t.equal(await catalog.getListing(key(1899)), null);
  t.same(await catalog.getListing(key(1900)), answer(1900), 'the newest stayed');
  t.same(await catalog.getListing(key(1999)), answer(1999));
  const figure = catalog.listingBytes;
  await catalog.close();
  const held = await inIndex(dir);
  t.same(held, { count: 100, bytes: figure }, 'the index holds exactly what the figure says');

  // Reopened with a lower cap (an operator changed it): trimmed at once, oldest first.
  const again = await Catalog.open(dir, store, log, { listingLimits: { maxCount: 10, maxBytes: 16 * 1024 * 1024 } });
  t.teardown(() => again.close());
  t.equal(again.listListings().length, 10);
  t.same(await again.getListing(key(1990)), answer(1990));
  t.equal(await again.getListing(key(1989)), null);
});

t.test('the byte cap holds; a replaced answer is not counted twice; one bigger than the cap is not kept', async (t) => {
  const one = Buffer.byteLength(JSON.stringify(answer(1000))) + 40;
  const { catalog } = await open(t, { maxCount: 1000, maxBytes: one * 10 });
  for (let i = 1000; i < 1200; i++) await catalog.putListing(key(i), answer(i));
  t.ok(catalog.listingBytes <= one * 10, `${catalog.listingBytes} bytes kept, cap ${one * 10}`);
  t.ok(catalog.listListings().length >= 8, 'as many as fit');
  const before = catalog.listingBytes;
  await catalog.putListing(key(1199), answer(1199, 5000));
  t.equal(catalog.listingBytes, before, 'the same request answered again replaces its listing');
  t.equal(catalog.listListings().at(-1)?.fetchedAt, 5000, 'and is now the newest');
  const huge = { ...answer(1), body: Buffer.alloc(one * 20).toString('base64') };
  await catalog.putListing(key(1), huge);
  t.equal(await catalog.getListing(key(1)), null, 'an answer bigger than the whole shelf is not kept');
  t.equal(catalog.listingBytes, before, 'and pushed nothing out');
});

t.test('the cached-bytes figure includes listings, and eviction drops them oldest first', async (t) => {
  const { store, catalog } = await open(t);
  const blob = Buffer.from('a layer of some bytes');
  const digest = digestOf(blob);
  const w = await store.createWriter(digest, blob.length);
  await w.write(blob);
  await w.commit();
  // The layer was pulled at 3,000, between the old and the new listings.
  await catalog.putBlob(digest, { size: blob.length, mediaType: null, lastAccess: 3000, pinned: false });
  for (let i = 0; i < 40; i++) await catalog.putListing(key(i), answer(i, i < 20 ? 1000 + i : 5000 + i));
  const listingBytes = catalog.listingBytes;
  t.ok(listingBytes > 0);

  const limits = { maxBytes: null as number | null, highWater: 0.9, lowWater: 0.8, maxIdleMs: null };
  const evictor = new Evictor({ store, catalog, pins: await PinStore.open(store.dataDir), leases: new Leases(), filling: () => [], limits, log, counters: new Counters() });
  await evictor.start();
  t.teardown(() => evictor.stop());
  t.equal(evictor.bytes, blob.length + listingBytes, 'blobs and listings');

  // A cap the new listings alone fit under at the low watermark: the old listings go, the
  // layer (pulled after them) is kept.
  const newBytes = catalog.listListings().filter((l) => l.fetchedAt >= 5000).reduce((n, l) => n + l.bytes, 0);
  limits.maxBytes = Math.ceil((newBytes + blob.length) / 0.8) + 1;
  const report = await evictor.run();
  t.equal(report.listingsRemoved, 20, 'the 20 older listings');
  t.equal(report.evicted.length, 0, 'the layer stays');
  t.equal(await catalog.getListing(key(0)), null);
  t.ok(await catalog.getListing(key(39)));
  t.equal(evictor.bytes, blob.length + newBytes, 'the figure follows');
  t.equal(report.bytesAfter, evictor.bytes);
});
