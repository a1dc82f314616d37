// Catalog: round trips, batched access times, and surviving the loss of the index.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino, type Logger } from 'pino';
import t from 'tap';
import { BlobStore } from '../../src/store/blobs.js';
import { Catalog, TOUCH_FLUSH_MS, type TagKey, type TagRecord } from '../../src/store/catalog.js';
import { reindexDataDir } from '../../src/store/offline-reindex.js';

const digestOf = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';

function tempDir(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'cove-catalog-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A logger that keeps its lines, for asserting on warnings. */
function captureLog(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

async function put(store: BlobStore, bytes: Buffer): Promise<string> {
  const digest = digestOf(bytes);
  const writer = await store.createWriter(digest, bytes.length);
  await writer.write(bytes);
  await writer.commit();
  return digest;
}

/** A store holding one small image: config, layer, manifest. */
async function seedImage(store: BlobStore) {
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }));
  const layer = Buffer.concat([Buffer.from([0x1f, 0x8b]), Buffer.alloc(5000, 3)]);
  const configDigest = await put(store, config);
  const layerDigest = await put(store, layer);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: configDigest, size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layerDigest, size: layer.length }],
    }),
  );
  const manifestDigest = await put(store, manifest);
  return { configDigest, layerDigest, manifestDigest, manifest, bytes: config.length + layer.length + manifest.length };
}

async function openAll(t: { teardown(fn: () => unknown): void }, dir: string, log: Logger = pino({ level: 'silent' })) {
  const store = new BlobStore(dir);
  await store.open();
  const catalog = await Catalog.open(dir, store, log);
  t.teardown(() => catalog.close());
  return { store, catalog };
}

const key: TagKey = { upstream: 'harbor', repo: 'proj/app', tag: 'v1' };
const record = (digest: string, at = 1000): TagRecord => ({ digest, mediaType: OCI_MANIFEST, size: 123, fetchedAt: at, validatedAt: at });

t.test('tags: put, get, touch, list, delete', async (t) => {
  const { catalog } = await openAll(t, tempDir(t));
  const d = `sha256:${'a'.repeat(64)}`;
  t.equal(await catalog.getTag(key), null);
  await catalog.putTag(key, record(d));
  t.same(await catalog.getTag(key), record(d));
  await catalog.touchTag(key, 5000);
  t.same(await catalog.getTag(key), { ...record(d), validatedAt: 5000 });
  await catalog.touchTag({ ...key, tag: 'absent' }, 5000);
  t.equal(await catalog.getTag({ ...key, tag: 'absent' }), null, 'touching an unknown tag creates nothing');

  // Keys that would collide under a naive separator stay apart.
  await catalog.putTag({ upstream: 'harbor', repo: 'proj/app', tag: 'v2' }, record(d, 2));
  await catalog.putTag({ upstream: 'harbor', repo: 'proj', tag: 'app' }, record(d, 3));
  await catalog.putTag({ upstream: 'harbor2', repo: 'proj/app', tag: 'v1' }, record(d, 4));
  await catalog.putTag({ upstream: 'harb', repo: 'or', tag: 'v1' }, record(d, 5));
  t.equal((await catalog.listTags()).length, 5);
  t.same((await catalog.listTags('harbor')).map((e) => e.key.tag).sort(), ['app', 'v1', 'v2']);
  t.same((await catalog.listTags('harbor', 'proj/app')).map((e) => e.key.tag).sort(), ['v1', 'v2']);
  t.same((await catalog.listTags('harbor', 'proj')).map((e) => e.record.fetchedAt), [3]);
  t.same((await catalog.listTags('harb')).map((e) => e.key), [{ upstream: 'harb', repo: 'or', tag: 'v1' }]);

  await catalog.deleteTag(key);
  t.equal(await catalog.getTag(key), null);
  await catalog.deleteTag(key); // again: fine
  await t.rejects(catalog.getTag({ upstream: 'a\0b', repo: 'r', tag: 't' }), TypeError);
});

t.test('blobs and manifest refs round trip', async (t) => {
  const { catalog } = await openAll(t, tempDir(t));
  const d = `sha256:${'b'.repeat(64)}`;
  t.equal(await catalog.getBlob(d), null);
  await catalog.putBlob(d, { size: 10, mediaType: null, lastAccess: 1, pinned: false });
  t.same(await catalog.getBlob(d), { size: 10, mediaType: null, lastAccess: 1, pinned: false });
  await catalog.putBlob(d, { size: 10, mediaType: OCI_MANIFEST, lastAccess: 2, pinned: true });
  t.same(await catalog.getBlob(d), { size: 10, mediaType: OCI_MANIFEST, lastAccess: 2, pinned: true });
  t.equal(await catalog.manifestRefs(d), null);
  await catalog.putManifestRefs(d, ['sha256:' + 'c'.repeat(64)]);
  t.same(await catalog.manifestRefs(d), ['sha256:' + 'c'.repeat(64)]);
  await catalog.deleteBlob(d);
  t.equal(await catalog.getBlob(d), null);
  t.equal(await catalog.manifestRefs(d), null, 'refs go with the blob');
});

t.test('touchBlob is batched in memory and persists across close and reopen', async (t) => {
  const dir = tempDir(t);
  const first = await openAll(t, dir);
  const d = await put(first.store, Buffer.from('touched'));
  await first.catalog.putBlob(d, { size: 7, mediaType: null, lastAccess: 1, pinned: false });
  const before = Date.now();
  first.catalog.touchBlob(d);
  first.catalog.touchBlob(d);
  first.catalog.touchBlob(`sha256:${'e'.repeat(64)}`); // no record, no file: dropped quietly
  const seen = await first.catalog.getBlob(d);
  t.ok(seen!.lastAccess >= before, 'getBlob sees the pending touch');
  await first.catalog.close();
  await first.catalog.close(); // idempotent
  first.catalog.touchBlob(d); // after close: ignored, never throws

  const second = await openAll(t, dir);
  const after = await second.catalog.getBlob(d);
  t.ok(after!.lastAccess >= before, 'the touch reached the index on close');
  t.equal(await second.catalog.getBlob(`sha256:${'e'.repeat(64)}`), null);
});

t.test('touchBlob flushes on its own within a few seconds', async (t) => {
  const dir = tempDir(t);
  const { store, catalog } = await openAll(t, dir);
  const d = await put(store, Buffer.from('self-flushing'));
  // No record yet: the flush recreates one from the file.
  catalog.touchBlob(d);
  await new Promise((r) => setTimeout(r, TOUCH_FLUSH_MS + 500));
  const got = await catalog.getBlob(d);
  t.equal(got?.size, 13, 'record recreated from the blob file');
});

t.test('a missing index is rebuilt from blob files and the tag journal', async (t) => {
  const dir = tempDir(t);
  const first = await openAll(t, dir);
  const image = await seedImage(first.store);
  await first.catalog.putTag(key, record(image.manifestDigest));
  await first.catalog.putTag({ ...key, tag: 'gone' }, record(`sha256:${'f'.repeat(64)}`));
  await first.catalog.putTag({ ...key, tag: 'deleted' }, record(image.manifestDigest));
  await first.catalog.deleteTag({ ...key, tag: 'deleted' });
  await first.catalog.close();

  rmSync(join(dir, 'index'), { recursive: true, force: true });
  const { log, lines } = captureLog();
  const { catalog } = await openAll(t, dir, log);
  t.same(await catalog.getTag(key), record(image.manifestDigest), 'tag restored from the journal');
  t.equal(await catalog.getTag({ ...key, tag: 'gone' }), null, 'tag whose manifest is not stored: not restored');
  t.equal(await catalog.getTag({ ...key, tag: 'deleted' }), null, 'deleted tag stays deleted');
  const m = await catalog.getBlob(image.manifestDigest);
  t.equal(m?.mediaType, OCI_MANIFEST, 'manifest media type sniffed');
  t.equal(m?.size, image.manifest.length);
  t.same((await catalog.manifestRefs(image.manifestDigest))?.sort(), [image.configDigest, image.layerDigest].sort());
  t.equal((await catalog.getBlob(image.layerDigest))?.mediaType, null);
  t.equal((await catalog.getBlob(image.configDigest))?.mediaType, null, 'a config is not a manifest');
  t.equal(await catalog.manifestRefs(image.layerDigest), null);
  const warn = lines.find((l) => l.msg === 'index rebuilt from blob files and tag journal');
  t.ok(warn, 'a warning was logged');
  t.equal(warn?.blobs, 3);
  t.equal(warn?.tags, 1);
  t.equal(warn?.bytes, image.bytes);
});

t.test('a garbage index dir is set aside and rebuilt, no crash', async (t) => {
  const dir = tempDir(t);
  const first = await openAll(t, dir);
  const image = await seedImage(first.store);
  await first.catalog.putTag(key, record(image.manifestDigest));
  await first.catalog.close();

  const index = join(dir, 'index');
  for (const name of readdirSync(index)) writeFileSync(join(index, name), 'garbage '.repeat(100));
  writeFileSync(join(index, 'JUNK'), 'junk');
  const { log, lines } = captureLog();
  const { catalog } = await openAll(t, dir, log);
  t.same(await catalog.getTag(key), record(image.manifestDigest));
  t.equal((await catalog.getBlob(image.layerDigest))?.size, 5002);
  t.ok(lines.some((l) => l.level === 40 && l.msg === 'index rebuilt from blob files and tag journal'));
  await catalog.close();

  // And it opens cleanly next time, without another rebuild.
  const again = captureLog();
  const reopened = await openAll(t, dir, again.log);
  t.same(await reopened.catalog.getTag(key), record(image.manifestDigest));
  t.notOk(again.lines.some((l) => l.msg === 'index rebuilt from blob files and tag journal'), 'no second rebuild');
});

t.test('an index dir that is only junk files (no database) is rebuilt', async (t) => {
  const dir = tempDir(t);
  const store = new BlobStore(dir);
  await store.open();
  const image = await seedImage(store);
  mkdirSync(join(dir, 'index'));
  writeFileSync(join(dir, 'index', 'CURRENT'), 'MANIFEST-nonsense\n');
  writeFileSync(join(dir, 'index', 'MANIFEST-nonsense'), Buffer.alloc(100, 0xff));
  const catalog = await Catalog.open(dir, store, pino({ level: 'silent' }));
  t.teardown(() => catalog.close());
  t.equal((await catalog.getBlob(image.manifestDigest))?.mediaType, OCI_MANIFEST);
});

t.test('a fresh data dir opens quietly', async (t) => {
  const { log, lines } = captureLog();
  const { catalog } = await openAll(t, tempDir(t), log);
  t.equal(await catalog.getBlob(`sha256:${'a'.repeat(64)}`), null);
  t.same(lines.filter((l) => (l.level as number) >= 40), []);
});

t.test('reindexDataDir removes corrupted blobs and temp files, restores tags', async (t) => {
  const dir = tempDir(t);
  const first = await openAll(t, dir);
  const image = await seedImage(first.store);
  await first.catalog.putTag(key, record(image.manifestDigest));
  const bad = await put(first.store, Buffer.from('will be corrupted'));
  await first.catalog.putBlob(bad, { size: 17, mediaType: null, lastAccess: 1, pinned: false });
  await first.catalog.close();
  writeFileSync(first.store.pathOf(bad), 'corrupted content');
  const w = await first.store.createWriter(digestOf(Buffer.from('partial')), null);
  await w.write(Buffer.from('part'));

  const counts = await reindexDataDir(dir, pino({ level: 'silent' }));
  t.same(counts, { blobs: 3, bytes: image.bytes, removed: 1, tags: 1 });
  t.notOk(existsSync(first.store.pathOf(bad)), 'corrupted file removed');
  t.same(readdirSync(join(dir, 'blobs', 'tmp')), [], 'temp files removed');

  const { catalog } = await openAll(t, dir);
  t.equal(await catalog.getBlob(bad), null, 'no record of the corrupted blob');
  t.same(await catalog.getTag(key), record(image.manifestDigest));
  t.equal((await catalog.getBlob(image.manifestDigest))?.mediaType, OCI_MANIFEST);
});

t.test('reindexDataDir refuses an index held open by a running Cove', async (t) => {
  const dir = tempDir(t);
  await openAll(t, dir);
  await t.rejects(reindexDataDir(dir, pino({ level: 'silent' })), { code: 'INDEX_LOCKED' });
});
