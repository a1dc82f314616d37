// BlobStore: layout, start-up cleanup, lookups, ranges, listing.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { BlobStore, SHARD_PREFIXES } from '../../src/store/blobs.js';

const digestOf = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

function tempDir(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'cove-blobs-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

async function put(store: BlobStore, bytes: Buffer): Promise<string> {
  const digest = digestOf(bytes);
  const writer = await store.createWriter(digest, bytes.length);
  await writer.write(bytes);
  await writer.commit();
  return digest;
}

const streamToBuffer = async (s: AsyncIterable<unknown>) => {
  const chunks: Buffer[] = [];
  for await (const c of s) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
};

t.test('open creates the layout and writes layout.json', async (t) => {
  const dir = tempDir(t);
  const store = new BlobStore(dir);
  t.same(await store.open(), { tempFilesRemoved: 0 });
  t.same(JSON.parse(readFileSync(join(dir, 'layout.json'), 'utf8')), { version: 1 });
  t.same(readdirSync(join(dir, 'blobs')).sort(), ['sha256', 'sha512', 'tmp']);
  t.same(await new BlobStore(dir).open(), { tempFilesRemoved: 0 }, 'opens again');
});

t.test('open refuses a layout of another version', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'layout.json'), JSON.stringify({ version: 99 }));
  await t.rejects(new BlobStore(dir).open(), { code: 'STORE_LAYOUT' });
  writeFileSync(join(dir, 'layout.json'), 'not json');
  await t.rejects(new BlobStore(dir).open(), { code: 'STORE_LAYOUT' });
});

t.test('open removes every leftover temp file and counts them', async (t) => {
  const dir = tempDir(t);
  const store = new BlobStore(dir);
  await store.open();
  // Writers left open, as a killed process leaves them.
  const a = await store.createWriter(digestOf(Buffer.from('a')), 1);
  await a.write(Buffer.from('a'));
  await store.createWriter(digestOf(Buffer.from('b')), null);
  writeFileSync(join(dir, 'blobs', 'tmp', 'stray'), 'x');
  mkdirSync(join(dir, 'blobs', 'tmp', 'straydir'));
  const kept = await put(store, Buffer.from('committed'));
  t.same(await new BlobStore(dir).open(), { tempFilesRemoved: 4 });
  t.same(readdirSync(join(dir, 'blobs', 'tmp')), []);
  t.ok(await store.stat(kept), 'committed blobs untouched');
});

t.test('stat, readAll, ranges, remove', async (t) => {
  const store = new BlobStore(tempDir(t));
  await store.open();
  const bytes = Buffer.from('0123456789abcdef');
  const digest = await put(store, bytes);
  t.same(await store.stat(digest), { size: 16 });
  t.same(await store.readAll(digest), bytes);
  t.same(await streamToBuffer(store.createReadStream(digest, 0, 15)), bytes);
  t.same(await streamToBuffer(store.createReadStream(digest, 3, 5)), Buffer.from('345'), 'end is inclusive');
  t.same(await streamToBuffer(store.createReadStream(digest, 15, 15)), Buffer.from('f'));
  t.equal(await store.remove(digest), true);
  t.equal(await store.remove(digest), false, 'second remove: not there');
  t.equal(await store.stat(digest), null);
  t.equal(await store.stat(`sha256:${'0'.repeat(64)}`), null);
  t.throws(() => store.pathOf('sha256:short'), { code: 'DIGEST_INVALID' });
});

t.test('list yields well-named blob files only', async (t) => {
  const dir = tempDir(t);
  const store = new BlobStore(dir);
  await store.open();
  const one = await put(store, Buffer.from('one'));
  const two = await put(store, Buffer.from('two two'));
  // Strays that are not blobs.
  const hex = one.slice(7);
  writeFileSync(join(dir, 'blobs', 'sha256', hex.slice(0, 2), 'README'), 'x');
  writeFileSync(join(dir, 'blobs', 'sha256', hex.slice(0, 2), hex.toUpperCase()), 'x');
  mkdirSync(join(dir, 'blobs', 'sha256', 'zz'));
  writeFileSync(join(dir, 'blobs', 'sha256', 'zz', 'a'.repeat(64)), 'x');
  mkdirSync(join(dir, 'blobs', 'sha256', 'ab'), { recursive: true });
  writeFileSync(join(dir, 'blobs', 'sha256', 'ab', 'cd' + 'a'.repeat(62)), 'wrong shard');
  const w = await store.createWriter(digestOf(Buffer.from('pending')), null);
  await w.write(Buffer.from('pending'));
  const listed = [];
  for await (const b of store.list()) listed.push(b);
  t.same(listed.map((b) => b.digest).sort(), [one, two].sort());
  const byDigest = new Map(listed.map((b) => [b.digest, b]));
  t.equal(byDigest.get(two)!.size, 7);
  t.equal(byDigest.get(one)!.path, store.pathOf(one));
  await w.abort();
});

t.test('shardDigests lists one shard\'s well-named files; the shard prefixes cover every digest in order', async (t) => {
  const dir = tempDir(t);
  const store = new BlobStore(dir);
  await store.open();
  const one = await put(store, Buffer.from('one'));
  const shard = one.slice(0, 9);
  const hex = one.slice(7);
  writeFileSync(join(dir, 'blobs', 'sha256', hex.slice(0, 2), 'README'), 'x');
  writeFileSync(join(dir, 'blobs', 'sha256', hex.slice(0, 2), hex.toUpperCase()), 'x');
  t.same(await store.shardDigests(shard), [one], 'the blob, not the strays beside it');
  t.same(await store.shardDigests(shard === 'sha256:00' ? 'sha256:01' : 'sha256:00'), [], 'a shard with no directory is empty');
  t.same(await store.shardDigests('sha512:ab'), []);
  for (const bad of ['sha256:zz', 'sha256:0', 'md5:00', 'sha256']) await t.rejects(store.shardDigests(bad), TypeError, `${bad} refused`);
  t.equal(SHARD_PREFIXES.length, 512);
  t.same([...SHARD_PREFIXES].sort(), SHARD_PREFIXES, 'in the order the index keeps digests');
  t.ok(SHARD_PREFIXES.includes(shard));
});
