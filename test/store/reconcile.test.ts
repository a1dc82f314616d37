// Index and blob files agree after any crash: a file renamed into the store whose record was
// lost (kill -9 between rename and index write, or unsynced LevelDB writes dropped by a power
// cut), and a record whose file is gone (kill -9 between the index delete and the unlink of an
// eviction), are both put right when the catalog opens, so the cached-bytes figure is the bytes
// on disk and eviction can remove every unpinned blob.
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Level } from 'level';
import { pino, type Logger } from 'pino';
import t, { type Test } from 'tap';
import { Counters } from '../../src/metrics.js';
import { BlobStore, SHARD_PREFIXES, SHARD_READS } from '../../src/store/blobs.js';
import { Catalog } from '../../src/store/catalog.js';
import { Evictor } from '../../src/store/eviction.js';
import { Leases } from '../../src/store/leases.js';
import { PinStore } from '../../src/store/pins.js';
import { reconcileIndex, type ReconcileIndex } from '../../src/store/reconcile.js';
import type { BlobRecord } from '../../src/store/records.js';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const digestOf = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
const DAY = 86_400_000;

function captureLog(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

/** Every blob file under the store, with its size. */
function filesOnDisk(dir: string): Map<string, number> {
  const out = new Map<string, number>();
  const root = join(dir, 'blobs', 'sha256');
  for (const shard of readdirSync(root)) {
    if (!/^[0-9a-f]{2}$/.test(shard)) continue;
    for (const hex of readdirSync(join(root, shard))) out.set(`sha256:${hex}`, statSync(join(root, shard, hex)).size);
  }
  return out;
}

const sum = (m: Map<string, number>) => [...m.values()].reduce((a, b) => a + b, 0);

/** A data dir holding two images, `a` (pinned by tag) and `b`, written as Cove writes them. */
async function seed(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'cove-reconcile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = new BlobStore(dir);
  await store.open();
  const catalog = await Catalog.open(dir, store, pino({ level: 'silent' }));
  const put = async (bytes: Buffer, mediaType: string | null = null, refs: string[] | null = null) => {
    const digest = digestOf(bytes);
    const w = await store.createWriter(digest, bytes.length);
    await w.write(bytes);
    await w.commit();
    await catalog.putBlob(digest, { size: bytes.length, mediaType, lastAccess: Date.now(), pinned: false });
    if (refs) await catalog.putManifestRefs(digest, refs);
    return digest;
  };
  const image = async (name: string) => {
    const config = await put(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', name })));
    const layers = [await put(Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.alloc(3000, name.charCodeAt(0))])), await put(Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.alloc(2000, name.charCodeAt(0) + 1)]))];
    const manifestBytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: config, size: 10 },
        layers: layers.map((digest) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size: 10 })),
      }),
    );
    const manifest = await put(manifestBytes, OCI_MANIFEST, [config, ...layers]);
    await catalog.putTag({ upstream: 'origin', repo: `proj/${name}`, tag: '1' }, { digest: manifest, mediaType: OCI_MANIFEST, size: manifestBytes.length, fetchedAt: 0, validatedAt: 0 });
    return { config, layers, manifest };
  };
  const a = await image('a');
  const b = await image('b');
  await catalog.close();
  const pins = await PinStore.open(dir);
  await pins.add('origin', 'proj/a', '1');
  return { dir, store, a, b };
}

/** What a lost index write leaves: the file, no record (and, for a manifest, no references). */
async function loseRecords(dir: string, digests: string[]): Promise<void> {
  const db = new Level<string, unknown>(join(dir, 'index'), { valueEncoding: 'json' });
  await db.open();
  try {
    await db.batch(digests.flatMap((d) => [{ type: 'del' as const, key: `blob\0${d}` }, { type: 'del' as const, key: `refs\0${d}` }]));
  } finally {
    await db.close();
  }
}

/** Opens the data dir as main.ts does: catalog (with its reconcile), then eviction's count. */
async function reopen(t: Test, dir: string, store: BlobStore, log: Logger) {
  const catalog = await Catalog.open(dir, store, log);
  t.teardown(() => catalog.close());
  const evictor = new Evictor({
    store,
    catalog,
    pins: await PinStore.open(dir),
    leases: new Leases(),
    filling: () => [],
    // Everything is idle by this clock: a run removes every image that is not pinned.
    limits: { maxBytes: null, highWater: 0.9, lowWater: 0.8, maxIdleMs: DAY },
    log,
    counters: new Counters(),
    now: () => Date.now() + 10 * DAY,
  });
  await evictor.start();
  t.teardown(() => evictor.stop());
  return { catalog, evictor };
}

t.test('file renamed into the store, record lost: counted and evictable after a restart', async (t) => {
  const { dir, store, a, b } = await seed(t);
  // A layer of b and b's manifest lost their records; so did a layer of the pinned image.
  await loseRecords(dir, [b.layers[0]!, b.manifest, a.layers[1]!]);
  const { log, lines } = captureLog();
  const { catalog, evictor } = await reopen(t, dir, store, log);

  const disk = filesOnDisk(dir);
  t.equal(evictor.bytes, sum(disk), 'cached-bytes figure = bytes of the blob files on disk');
  t.same(new Set((await catalog.listBlobs()).map((x) => x.digest)), new Set(disk.keys()), 'a record for every file, a file for every record');
  t.same(await catalog.manifestRefs(b.manifest), [b.config, ...b.layers], "the lost manifest's references are read back from its bytes");
  t.equal((await catalog.getBlob(b.manifest))?.mediaType, OCI_MANIFEST);
  const fixed = lines.find((l) => l.msg === 'index reconciled with the blob files');
  t.match(fixed, { added: 3, dropped: 0 }, 'the reconcile logs what it fixed');

  const report = await evictor.run();
  const left = filesOnDisk(dir);
  t.same(new Set(left.keys()), new Set([a.manifest, a.config, ...a.layers]), 'every unpinned blob removed; the pinned image whole');
  t.equal(evictor.bytes, sum(left), 'the figure follows the removal');
  t.equal(report.bytesAfter, sum(left));
});

t.test('record present, file gone: the record goes, the figure is the bytes on disk', async (t) => {
  const { dir, store, a, b } = await seed(t);
  // An eviction killed between the index write and the unlink leaves the opposite: here the
  // files of a whole image and one layer of the pinned one are gone with their records kept.
  for (const d of [b.manifest, b.config, ...b.layers, a.layers[0]!]) unlinkSync(store.pathOf(d));
  const { log, lines } = captureLog();
  const { catalog, evictor } = await reopen(t, dir, store, log);

  const disk = filesOnDisk(dir);
  t.equal(evictor.bytes, sum(disk), 'cached-bytes figure = bytes of the blob files on disk');
  t.same(new Set((await catalog.listBlobs()).map((x) => x.digest)), new Set(disk.keys()));
  t.equal(await catalog.getBlob(b.manifest), null, 'no record left for a file that is gone');
  t.match(lines.find((l) => l.msg === 'index reconciled with the blob files'), { added: 0, dropped: 5 });

  await evictor.run();
  t.same(new Set(filesOnDisk(dir).keys()), new Set([a.manifest, a.config, a.layers[1]!]), 'the pinned image stays; nothing else was left');
});

t.test("manifest record kept, its references lost: read back, so a pin still protects the image's layers", async (t) => {
  const { dir, store, a } = await seed(t);
  const db = new Level<string, unknown>(join(dir, 'index'), { valueEncoding: 'json' });
  await db.open();
  await db.del(`refs\0${a.manifest}`);
  await db.close();
  const { log, lines } = captureLog();
  const { catalog, evictor } = await reopen(t, dir, store, log);
  t.same(await catalog.manifestRefs(a.manifest), [a.config, ...a.layers]);
  t.match(lines.find((l) => l.msg === 'index reconciled with the blob files'), { added: 0, dropped: 0, refsRestored: 1 });
  await evictor.run();
  for (const d of [a.manifest, a.config, ...a.layers]) t.ok(await store.stat(d), `${d.slice(7, 15)} of the pinned image kept`);
});

t.test('index and files agree: the reconcile changes nothing and logs nothing', async (t) => {
  const { dir, store } = await seed(t);
  const before = filesOnDisk(dir);
  const { log, lines } = captureLog();
  const { catalog, evictor } = await reopen(t, dir, store, log);
  t.equal(evictor.bytes, sum(before));
  t.equal((await catalog.listBlobs()).length, before.size);
  t.equal(lines.filter((l) => l.msg === 'index reconciled with the blob files').length, 0);
});

/** `count` small blob files written as Cove writes them (their digests spread over the shards). */
async function writeFiles(store: BlobStore, count: number, seed: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (let i = 0; i < count; i++) {
    const bytes = Buffer.from(`${seed} blob ${i} ${'x'.repeat(i % 50)}`);
    const digest = digestOf(bytes);
    const w = await store.createWriter(digest, bytes.length);
    await w.write(bytes);
    await w.commit();
    out.set(digest, bytes.length);
  }
  return out;
}

t.test('the reconcile reads the index a few shards at a time, and still sees every record and file once', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cove-reconcile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = new BlobStore(dir);
  await store.open();
  const files = await writeFiles(store, 800, 'ranges');
  const digests = [...files.keys()];
  // The index knows all but 40 files, and 20 records whose files are gone: one in the first
  // shard, one of sha512 in the last (where no file is), the rest anywhere.
  const lost = new Set(digests.slice(0, 40));
  const index = new Map<string, BlobRecord>();
  for (const d of digests) if (!lost.has(d)) index.set(d, { size: files.get(d)!, mediaType: null, lastAccess: 1, pinned: false });
  const stale = [
    `sha256:${'0'.repeat(64)}`,
    `sha512:${'f'.repeat(128)}`,
    ...Array.from({ length: 18 }, (_, i) => digestOf(Buffer.from(`never stored ${i}`))),
  ];
  for (const d of stale) index.set(d, { size: 7, mediaType: null, lastAccess: 1, pinned: false });
  const total = index.size;

  const ranges: Array<{ from: string; to: string | null; records: number }> = [];
  const fake: ReconcileIndex = {
    async records(from, to) {
      const inRange = [...index.keys()].filter((d) => d >= from && (to === null || d < to));
      ranges.push({ from, to, records: inRange.length });
      return { digests: new Set(inRange), manifestsWithoutRefs: [] };
    },
    async add(entries) {
      for (const e of entries) index.set(e.digest, e.record);
    },
    async drop(gone) {
      for (const d of gone) index.delete(d);
    },
    async setRefs() {},
  };
  const counts = await reconcileIndex(fake, store);

  t.same(counts, { files: 800, added: 40, addedBytes: [...lost].reduce((n, d) => n + files.get(d)!, 0), dropped: 20, refsRestored: 0 });
  t.same(new Set(index.keys()), new Set(digests), 'a record for every file, a file for every record');
  t.equal(ranges.length, SHARD_PREFIXES.length / SHARD_READS, 'one index range per SHARD_READS shards');
  t.equal(ranges[0]!.from, '', 'the first range starts at the first key');
  t.equal(ranges.at(-1)!.to, null, 'the last range runs to the last key');
  t.ok(ranges.every((r, i) => i === 0 || r.from === ranges[i - 1]!.to), 'each range starts where the one before ended');
  t.equal(ranges.reduce((n, r) => n + r.records, 0), total, 'every record handed over once');
  // 800 digests over 32 ranges: about 25 each; never the whole index at once.
  const most = Math.max(...ranges.map((r) => r.records));
  t.ok(most < total / 8, `at most ${most} of ${total} records held at once`);
});

t.test('records lost and files gone across many shards: all put right through the real index', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cove-reconcile-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = new BlobStore(dir);
  await store.open();
  const silent = pino({ level: 'silent' });
  const first = await Catalog.open(dir, store, silent);
  const files = await writeFiles(store, 400, 'many');
  for (const [digest, size] of files) await first.putBlob(digest, { size, mediaType: null, lastAccess: 1, pinned: false });
  await first.close();
  const digests = [...files.keys()];
  await loseRecords(dir, digests.slice(0, 50));
  for (const d of digests.slice(50, 80)) {
    unlinkSync(store.pathOf(d));
    files.delete(d);
  }

  const { log, lines } = captureLog();
  const { catalog, evictor } = await reopen(t, dir, store, log);
  t.match(lines.find((l) => l.msg === 'index reconciled with the blob files'), { files: 370, added: 50, dropped: 30 });
  t.same(new Set((await catalog.listBlobs()).map((x) => x.digest)), new Set(files.keys()), 'a record for every file, a file for every record');
  t.equal(evictor.bytes, sum(files), 'cached-bytes figure = bytes of the blob files on disk');
});
