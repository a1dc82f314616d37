// BlobWriter: what reaches the store, and what never does.
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { DigestMismatchError } from '../../src/errors.js';
import { BlobStore } from '../../src/store/blobs.js';
import { endHashThread, hashThreadStats, OFF_THREAD_HASH_MIN_BYTES } from '../../src/store/file-digest.js';

function digestOf(bytes: Buffer, alg: 'sha256' | 'sha512' = 'sha256'): string {
  return `${alg}:${createHash(alg).update(bytes).digest('hex')}`;
}

async function freshStore(t: { teardown(fn: () => unknown): void }): Promise<{ dir: string; store: BlobStore }> {
  const dir = mkdtempSync(join(tmpdir(), 'cove-writer-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const store = new BlobStore(dir);
  await store.open();
  return { dir, store };
}

t.test('commit publishes the bytes under the digest and removes the temp file', async (t) => {
  const { dir, store } = await freshStore(t);
  const bytes = Buffer.from('hello, cove '.repeat(1000));
  const digest = digestOf(bytes);
  const writer = await store.createWriter(digest, bytes.length);
  t.ok(writer.tempPath.startsWith(join(dir, 'blobs', 'tmp')), 'temp file under blobs/tmp');
  await writer.write(bytes.subarray(0, 5000));
  t.equal(writer.written, 5000);
  await writer.write(bytes.subarray(5000));
  await writer.commit();
  const hex = digest.slice(7);
  const path = join(dir, 'blobs', 'sha256', hex.slice(0, 2), hex);
  t.equal(store.pathOf(digest), path);
  t.same(readFileSync(path), bytes, 'committed bytes');
  t.same(readdirSync(join(dir, 'blobs', 'tmp')), [], 'temp file gone');
  t.same(await store.stat(digest), { size: bytes.length });
  await writer.abort(); // after a commit: a no-op, the blob stays
  t.ok(existsSync(path), 'abort after commit leaves the blob');
});

t.test('sha512 digests and unknown sizes', async (t) => {
  const { store } = await freshStore(t);
  const bytes = Buffer.from('sha512 content');
  const digest = digestOf(bytes, 'sha512');
  const writer = await store.createWriter(digest, null);
  await writer.write(bytes);
  await writer.commit();
  t.same(await store.readAll(digest), bytes);
  t.match(store.pathOf(digest), /blobs\/sha512\/[0-9a-f]{2}\/[0-9a-f]{128}$/);
});

t.test('empty blob', async (t) => {
  const { store } = await freshStore(t);
  const digest = digestOf(Buffer.alloc(0));
  const writer = await store.createWriter(digest, 0);
  await writer.commit();
  t.same(await store.stat(digest), { size: 0 });
});

t.test('digest mismatch: DigestMismatchError, nothing stored, temp removed', async (t) => {
  const { dir, store } = await freshStore(t);
  const wanted = Buffer.from('the right bytes');
  const digest = digestOf(wanted);
  const writer = await store.createWriter(digest, wanted.length);
  await writer.write(Buffer.from('the wrong bytes'));
  const err = await writer.commit().then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof DigestMismatchError, 'DigestMismatchError');
  t.match((err as Error).message, digest, 'names the expected digest');
  t.match((err as Error).message, digestOf(Buffer.from('the wrong bytes')), 'names the actual digest');
  t.equal(await store.stat(digest), null, 'nothing under the digest');
  t.notOk(existsSync(writer.tempPath), 'temp file removed');
  t.same(readdirSync(join(dir, 'blobs', 'tmp')), []);
  await writer.abort(); // idempotent after a failed commit
});

t.test('short body: commit rejects on length', async (t) => {
  const { store } = await freshStore(t);
  const bytes = Buffer.from('0123456789');
  const writer = await store.createWriter(digestOf(bytes), bytes.length);
  await writer.write(bytes.subarray(0, 4));
  await t.rejects(writer.commit(), DigestMismatchError);
  t.notOk(existsSync(writer.tempPath));
});

t.test('more bytes than expected: write rejects and writes nothing more', async (t) => {
  const { store } = await freshStore(t);
  const bytes = Buffer.from('0123456789');
  const writer = await store.createWriter(digestOf(bytes), 8);
  await writer.write(bytes.subarray(0, 6));
  await t.rejects(writer.write(bytes.subarray(6)), DigestMismatchError);
  t.equal(writer.written, 6);
  await writer.abort();
  await writer.abort();
  t.notOk(existsSync(writer.tempPath), 'abort removed the temp file');
  t.equal(await store.stat(digestOf(bytes)), null);
});

t.test('abort removes the temp file and is idempotent', async (t) => {
  const { dir, store } = await freshStore(t);
  const bytes = Buffer.from('abc');
  const writer = await store.createWriter(digestOf(bytes), 3);
  await writer.write(bytes.subarray(0, 2));
  await Promise.all([writer.abort(), writer.abort()]);
  t.same(readdirSync(join(dir, 'blobs', 'tmp')), []);
  await t.rejects(writer.write(bytes.subarray(2)), 'no writes after abort');
  await t.rejects(writer.commit(), 'no commit after abort');
  t.equal(await store.stat(digestOf(bytes)), null);
});

t.test('two concurrent writers of one digest both commit', async (t) => {
  const { dir, store } = await freshStore(t);
  const bytes = Buffer.alloc(300_000, 7);
  const digest = digestOf(bytes);
  const a = await store.createWriter(digest, bytes.length);
  const b = await store.createWriter(digest, bytes.length);
  t.not(a.tempPath, b.tempPath, 'separate temp files');
  for (let i = 0; i < bytes.length; i += 50_000) {
    await Promise.all([a.write(bytes.subarray(i, i + 50_000)), b.write(bytes.subarray(i, i + 50_000))]);
  }
  await Promise.all([a.commit(), b.commit()]);
  t.same(readFileSync(store.pathOf(digest)), bytes);
  t.same(readdirSync(join(dir, 'blobs', 'tmp')), [], 'no temp file left');
  // A third writer finding the blob already there commits fine too.
  const c = await store.createWriter(digest, bytes.length);
  await c.write(bytes);
  await c.commit();
  t.same(readdirSync(join(dir, 'blobs', 'tmp')), []);
});

t.test('a reader sees bytes in the temp file as soon as write() resolves', async (t) => {
  const { store } = await freshStore(t);
  const bytes = Buffer.from(Array.from({ length: 100 }, (_, i) => `chunk ${i};`).join(''));
  const digest = digestOf(bytes);
  const writer = await store.createWriter(digest, bytes.length);
  const reader = await open(writer.tempPath, 'r');
  t.teardown(() => reader.close());
  const got: Buffer[] = [];
  let pos = 0;
  for (let i = 0; i < bytes.length; i += 97) {
    await writer.write(bytes.subarray(i, i + 97));
    const want = writer.written - pos;
    const buf = Buffer.alloc(want);
    const { bytesRead } = await reader.read(buf, 0, want, pos);
    t.equal(bytesRead, want, `all ${writer.written} bytes readable`);
    got.push(buf);
    pos += bytesRead;
  }
  await writer.commit();
  t.same(Buffer.concat(got), bytes, 'the growing file held the right bytes');
  // The reader's handle stays valid across the rename into the store.
  const again = Buffer.alloc(5);
  await reader.read(again, 0, 5, 0);
  t.same(again, bytes.subarray(0, 5));
});

t.test('writes queued without awaiting land in order', async (t) => {
  const { store } = await freshStore(t);
  const parts = Array.from({ length: 50 }, (_, i) => Buffer.from(`part-${i}|`));
  const bytes = Buffer.concat(parts);
  const writer = await store.createWriter(digestOf(bytes), bytes.length);
  await Promise.all(parts.map((p) => writer.write(p)));
  await writer.commit();
  t.same(await store.readAll(digestOf(bytes)), bytes);
});

t.test('bad digests are refused before any file exists', async (t) => {
  const { dir, store } = await freshStore(t);
  await t.rejects(async () => store.createWriter('sha256:nothex', null));
  await t.rejects(async () => store.createWriter('md5:' + 'a'.repeat(32), null));
  t.same(readdirSync(join(dir, 'blobs', 'tmp')), []);
});

// Large blobs are hashed by a worker thread reading the temp file (store/file-digest.ts).
const LARGE = OFF_THREAD_HASH_MIN_BYTES + 1024 * 1024 + 7;

function largeBytes(seed: number): Buffer {
  const bytes = Buffer.allocUnsafe(LARGE);
  for (let i = 0; i < LARGE; i += 4) bytes.writeUInt32LE((i * 2654435761 + seed) >>> 0, Math.min(i, LARGE - 4));
  return bytes;
}

async function writeInChunks(writer: { write(b: Buffer): Promise<void> }, bytes: Buffer, chunk = 300_000): Promise<void> {
  for (let i = 0; i < bytes.length; i += chunk) await writer.write(bytes.subarray(i, i + chunk));
}

t.test('a large blob is hashed off the event loop and published when right', async (t) => {
  const { store } = await freshStore(t);
  const bytes = largeBytes(1);
  const digest = digestOf(bytes);
  const jobs = hashThreadStats.jobs;
  const writer = await store.createWriter(digest, bytes.length);
  await writeInChunks(writer, bytes);
  t.equal(await writer.commit(), true, 'added');
  t.equal(hashThreadStats.jobs, jobs + 1, 'the hash thread took the job');
  t.same(createHash('sha256').update(await store.readAll(digest)).digest('hex'), digest.slice(7), 'stored bytes are the blob');
});

t.test('a large blob with one wrong byte is refused, naming what it hashed to, and nothing is stored', async (t) => {
  const { dir, store } = await freshStore(t);
  const bytes = largeBytes(2);
  const digest = digestOf(bytes);
  const wrong = Buffer.from(bytes);
  wrong[LARGE - 100] ^= 0xff;
  const writer = await store.createWriter(digest, bytes.length);
  await writeInChunks(writer, wrong);
  const err = await writer.commit().then(() => null, (e: unknown) => e);
  t.ok(err instanceof DigestMismatchError, 'DigestMismatchError');
  t.match((err as Error).message, digestOf(wrong));
  t.equal(await store.stat(digest), null, 'not in the store');
  t.same(readdirSync(join(dir, 'blobs', 'tmp')), [], 'temp file removed');
});

t.test('the hash thread gone mid-blob: the digest is computed on the event loop instead, still exact', async (t) => {
  const { store } = await freshStore(t);
  const good = largeBytes(3);
  const wrong = Buffer.from(good);
  wrong[5] ^= 1;
  const fallbacks = hashThreadStats.fallbacks;
  const ok = await store.createWriter(digestOf(good), good.length);
  const bad = await store.createWriter(digestOf(good), good.length);
  await writeInChunks(ok, good.subarray(0, LARGE >> 1));
  await writeInChunks(bad, wrong.subarray(0, LARGE >> 1));
  await endHashThread();
  await writeInChunks(ok, good.subarray(LARGE >> 1));
  await writeInChunks(bad, wrong.subarray(LARGE >> 1));
  t.equal(await ok.commit(), true, 'the right blob commits');
  await t.rejects(bad.commit(), DigestMismatchError, 'the wrong one is still refused');
  t.equal(hashThreadStats.fallbacks, fallbacks + 2, 'both hashed on the event loop');
  t.same(await store.readAll(digestOf(good)), good);
  // The next large blob starts a new thread.
  const again = largeBytes(4);
  const jobs = hashThreadStats.jobs;
  const w = await store.createWriter(digestOf(again), again.length);
  await writeInChunks(w, again);
  await w.commit();
  t.equal(hashThreadStats.jobs, jobs + 1);
  t.equal(hashThreadStats.fallbacks, fallbacks + 2, 'no fallback for it');
});

t.test('an aborted large writer leaves no temp file and does not hold the thread', async (t) => {
  const { dir, store } = await freshStore(t);
  const bytes = largeBytes(5);
  const writer = await store.createWriter(digestOf(bytes), bytes.length);
  await writeInChunks(writer, bytes.subarray(0, 3_000_000));
  await writer.abort();
  t.same(readdirSync(join(dir, 'blobs', 'tmp')), []);
  await t.rejects(writer.commit(), /aborted/);
});
