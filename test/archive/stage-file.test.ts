// StageFile, the temp file an archive entry streams into: the bytes land in order whatever the
// chunk sizes (batches written while the next gathers), synced() says when they are on disk,
// and discard() leaves nothing behind, also in the middle of a write.
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { StageFile } from '../../src/archive/stage-file.js';
import { randomBytes, sha256Of } from '../helpers/images.js';

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'cove-stage-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Feeds `bytes` in chunks of the sizes given (cycled), waiting when the file asks. */
async function feed(file: StageFile, bytes: Buffer, sizes: number[]): Promise<number> {
  let waits = 0;
  for (let at = 0, i = 0; at < bytes.length; i++) {
    const n = Math.min(sizes[i % sizes.length]!, bytes.length - at);
    const wait = file.add(bytes.subarray(at, at + n));
    at += n;
    if (wait) {
      waits++;
      await wait;
    }
  }
  return waits;
}

t.test('bytes land in order, whatever the chunk sizes; synced() resolves once they are on disk', async (t) => {
  const dir = tempDir(t);
  const bytes = randomBytes('stage-order', 9 * 1024 * 1024 + 4321);
  for (const sizes of [[65_536], [1, 7_919, 300_000, 2_000_000], [5 * 1024 * 1024]]) {
    const file = await StageFile.create(dir);
    t.match(file.path, /\/import-[0-9a-f]{16}\.part$/);
    t.equal(statSync(file.path).mode & 0o777, 0o600, 'owner-only');
    await feed(file, bytes, sizes);
    await file.end();
    t.equal(file.size, bytes.length);
    await file.synced();
    t.equal(sha256Of(readFileSync(file.path)), sha256Of(bytes), `chunks of ${sizes.join(', ')}: the file holds the bytes in order`);
    await file.discard();
    t.notOk(existsSync(file.path), 'discard removes it');
  }
  t.same(readdirSync(dir), []);
});

t.test('an empty entry is an empty file', async (t) => {
  const dir = tempDir(t);
  const file = await StageFile.create(dir);
  await file.end();
  await file.synced();
  t.equal(file.size, 0);
  t.equal(statSync(file.path).size, 0);
  await file.discard();
  t.same(readdirSync(dir), []);
});

t.test('synced() before end() is an error; discard() mid-write waits for the write and removes the file', async (t) => {
  const dir = tempDir(t);
  const file = await StageFile.create(dir);
  await t.rejects(file.synced(), /was not ended/);
  // Two full batches: the first is being written when the second asks to wait.
  const waited = await feed(file, randomBytes('stage-discard', 3 * 1024 * 1024), [1024 * 1024]);
  t.ok(waited >= 1, 'the file asked the caller to wait for a write under way');
  await file.discard();
  t.notOk(existsSync(file.path));
  t.same(readdirSync(dir), []);
  await file.discard();
  t.pass('discard twice is fine');
});

t.test('a temp dir that is gone: create fails with the reason', async (t) => {
  await t.rejects(StageFile.create(join(tempDir(t), 'absent')), { code: 'ENOENT' });
});
