// Index and blob files agree after any crash, seen from outside: Cove is stopped, the data dir
// is left as a crash at each moment would leave it, and the restarted Cove's /healthz figure is
// the bytes of the blob files on disk, and eviction under the cap removes every unpinned blob.
import { readdirSync, statSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { Level } from 'level';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { pullImage } from '../helpers/site.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';

function diskBytes(dataDir: string): { files: number; bytes: number } {
  const root = join(dataDir, 'blobs', 'sha256');
  let files = 0;
  let bytes = 0;
  for (const shard of readdirSync(root)) {
    if (!/^[0-9a-f]{2}$/.test(shard)) continue;
    for (const hex of readdirSync(join(root, shard))) {
      files++;
      bytes += statSync(join(root, shard, hex)).size;
    }
  }
  return { files, bytes };
}

async function cachedBytes(cove: TestCove): Promise<number> {
  return ((await (await fetch(`${cove.url}/healthz`)).json()) as { cache: { bytes: number } }).cache.bytes;
}

/** A lost index write: the blob's record is not in LevelDB, its file is in the store. */
async function loseRecord(dataDir: string, digest: string): Promise<void> {
  const db = new Level<string, unknown>(join(dataDir, 'index'), { valueEncoding: 'json' });
  await db.open();
  await db.del(`blob\0${digest}`);
  await db.close();
}

t.test('crash leftovers in the data dir: /healthz counts the bytes on disk and eviction removes every unpinned blob', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const one = makeImage({ layers: [40_000, 30_000], seed: 'index-files-1' });
  const two = makeImage({ layers: [20_000], seed: 'index-files-2' });
  origin.putImage('proj/one', '1', one);
  origin.putImage('proj/two', '1', two);

  const first = await startTestCove(t, origin.url, {}, { keepData: true });
  const dataDir = first.dataDir;
  await pullImage(first.url, 'proj/one', '1', one);
  await pullImage(first.url, 'proj/two', '1', two);
  await first.fillsDone();
  await first.stop();

  // Killed between rename and index write: a layer's file without its record. Killed between
  // an eviction's index delete and unlink, reversed: a record without its file.
  await loseRecord(dataDir, one.layers[0]!.digest);
  const secondPath = join(dataDir, 'blobs', 'sha256', two.layers[0]!.digest.slice(7, 9), two.layers[0]!.digest.slice(7));
  unlinkSync(secondPath);

  const again = await startTestCove(t, origin.url, {}, { dataDir, keepData: true });
  const disk = diskBytes(dataDir);
  t.equal(await cachedBytes(again), disk.bytes, `/healthz cache bytes = ${disk.bytes} bytes of ${disk.files} blob files on disk`);
  await again.stop();

  // Another lost record, then a restart under a cap every image is over: eviction at start-up
  // must be able to take everything, the unindexed file included.
  await loseRecord(dataDir, one.layers[1]!.digest);
  const capped = await startTestCove(t, origin.url, { COVE_MAX_CACHE_BYTES: '1' }, { dataDir });
  let left = diskBytes(dataDir);
  for (let i = 0; i < 100 && left.files > 0; i++) {
    await new Promise((r) => setTimeout(r, 20));
    left = diskBytes(dataDir);
  }
  t.same(left, { files: 0, bytes: 0 }, 'no blob file left behind');
  t.equal(await cachedBytes(capped), 0, 'and the figure says so');
});
