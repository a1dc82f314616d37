// Byte-bounded eviction on a running Cove: the cap is reached while clients are reading; no
// reader breaks, the cache ends under the low watermark, pinned and in-use images stay, and
// the index and the blob files agree afterwards. Also `cove ls`, `cove pin`, `cove gc`.
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage, type Image } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { pullImage } from '../helpers/site.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';

const run = promisify(execFile);
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;
const MiB = 1024 * 1024;

function filesIn(dataDir: string): Set<string> {
  const out = new Set<string>();
  const root = join(dataDir, 'blobs', 'sha256');
  for (const dir of readdirSync(root)) {
    if (!/^[0-9a-f]{2}$/.test(dir)) continue;
    for (const f of readdirSync(join(root, dir))) out.add(`sha256:${f}`);
  }
  return out;
}

async function images(cove: TestCove): Promise<{ bytes: number; images: Array<{ repo: string; tag: string | null; digest: string; size: number; pinned: boolean }> }> {
  return (await (await cove.adminFetch('/admin/images')).json()) as never;
}

/** Starts a GET and reads only its first chunk, then waits: a client that is slow to read. */
function slowReader(url: string): { firstChunk: Promise<void>; finish: () => Promise<Buffer> } {
  const chunks: Buffer[] = [];
  let resume!: () => void;
  let done!: Promise<Buffer>;
  const firstChunk = new Promise<void>((resolveFirst, reject) => {
    done = new Promise<Buffer>((resolve, rejectDone) => {
      const req = request(url, (res) => {
        res.once('data', (c: Buffer) => {
          chunks.push(c);
          res.pause();
          resume = () => {
            res.on('data', (more: Buffer) => chunks.push(more));
            res.resume();
          };
          resolveFirst();
        });
        res.on('end', () => (res.complete ? resolve(Buffer.concat(chunks)) : rejectDone(new Error('cut off'))));
        res.on('error', rejectDone);
      });
      req.on('error', reject);
      req.end();
    });
  });
  return {
    firstChunk,
    finish: () => {
      resume();
      return done;
    },
  };
}

t.test('the cap is reached while clients read: readers finish, pins and in-use images stay, index = files', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const imgs: Image[] = [];
  for (let i = 1; i <= 8; i++) {
    const image = makeImage({ layers: [600_000, 400_000], seed: `evict-${i}` });
    origin.putImage(`proj/app${i}`, '1', image);
    imgs.push(image);
  }
  // Too big for the socket buffers: its readers hold their lease until they have read it all.
  const big = makeImage({ layers: [40 * MiB], seed: 'evict-big' });
  origin.putImage('proj/big', '1', big);
  // Eviction starts above 43.2 MiB and stops at 38.4 MiB.
  const cove = await startTestCove(t, origin.url, { COVE_MAX_CACHE_BYTES: '48MiB', COVE_TAG_TTL: '1h' });

  await pullImage(cove.url, 'proj/app1', '1', imgs[0]!);
  const pinned = await run(process.execPath, [CLI, 'pin', 'proj/app1:1', '--socket', cove.adminSocket!]);
  t.equal(pinned.stdout.trim(), 'proj/app1:1: pinned');
  await pullImage(cove.url, 'proj/big', '1', big);
  await cove.fillsDone();

  // Clients in the middle of reading the big layer: the least recently pulled unpinned image.
  const layer = big.layers[0]!;
  const readers = Array.from({ length: 4 }, () => slowReader(`${cove.url}/v2/proj/big/blobs/${layer.digest}`));
  await Promise.all(readers.map((r) => r.firstChunk));

  for (let i = 2; i <= 8; i++) {
    await pullImage(cove.url, `proj/app${i}`, '1', imgs[i - 1]!);
    await cove.fillsDone();
  }
  const first = (await (await cove.adminFetch('/admin/gc', { method: 'POST' })).json()) as { bytesAfter: number; keptPinned: number; keptInUse: number };
  const during = (await images(cove)).images.map((i) => i.repo);
  t.ok(during.includes('proj/big'), 'the image being read stayed, although it was the oldest unpinned one');
  t.ok(during.includes('proj/app1'), 'the pinned image stayed, although it was the oldest');
  t.ok(first.keptInUse >= 1 && first.keptPinned >= 1, 'the report says why they stayed');
  for (const [i, r] of readers.entries()) t.equal(sha256(await r.finish()), layer.digest, `reader ${i + 1} got the whole layer while eviction ran`);

  // Once its readers are done, the big image can go too.
  await cove.adminFetch('/admin/gc', { method: 'POST' });
  const after = await images(cove);
  t.ok(after.bytes <= 0.8 * 48 * MiB, `the cache ends under the low watermark (${after.bytes} bytes)`);
  const repos = after.images.map((i) => i.repo);
  t.notOk(repos.includes('proj/big'), 'the big image went once nobody read it');
  t.ok(repos.includes('proj/app1') && after.images.find((i) => i.repo === 'proj/app1')?.pinned, 'the pinned image is still there, listed as pinned');
  t.ok(((await (await fetch(`${cove.url}/healthz`)).json()) as { evictions: number }).evictions > 0, 'evictions are counted');

  // Index and files agree: every indexed blob has its file and no file is left unindexed.
  await cove.stop();
  const { Catalog } = await import('../../src/store/catalog.js');
  const { BlobStore } = await import('../../src/store/blobs.js');
  const { pino } = await import('pino');
  const store = new BlobStore(cove.dataDir);
  await store.open();
  const catalog = await Catalog.open(cove.dataDir, store, pino({ level: 'silent' }));
  const indexed = new Set((await catalog.listBlobs()).map((b) => b.digest));
  const tags = await catalog.listTags();
  await catalog.close();
  t.same([...filesIn(cove.dataDir)].sort(), [...indexed].sort(), 'index and blob files agree');
  for (const tag of tags) t.ok(indexed.has(tag.record.digest), `tag ${tag.key.repo}:${tag.key.tag} points to a stored manifest`);
});

t.test('an evicted image is fetched again on the next pull; dry runs change nothing', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const a = makeImage({ layers: [700_000, 300_000], seed: 'again-a' });
  const b = makeImage({ layers: [700_000, 300_000], seed: 'again-b' });
  const shared = makeImage({ layers: [200_000], seed: 'again-shared' });
  origin.putImage('proj/a', '1', a);
  origin.putImage('proj/b', '1', b);
  origin.putImage('proj/shared', '1', shared);
  const cove = await startTestCove(t, origin.url, { COVE_MAX_CACHE_BYTES: '1800KiB', COVE_TAG_TTL: '1h' });
  await pullImage(cove.url, 'proj/a', '1', a);
  await cove.fillsDone();
  await pullImage(cove.url, 'proj/b', '1', b);
  await cove.fillsDone();
  // Over the high watermark (1620 KiB) after b: a went in the background.
  for (let i = 0; i < 100 && (await images(cove)).images.some((x) => x.repo === 'proj/a'); i++) await new Promise((r) => setTimeout(r, 20));
  t.notOk((await images(cove)).images.some((x) => x.repo === 'proj/a'), 'the older image was evicted automatically');

  const dry = await run(process.execPath, [CLI, 'gc', '--dry-run', '--socket', cove.adminSocket!]);
  t.match(dry.stdout, /^would evict 0 blob\(s\)/, 'nothing more to evict');
  await pullImage(cove.url, 'proj/shared', '1', shared);
  const before = (await images(cove)).images.length;
  const dry2 = JSON.parse((await run(process.execPath, [CLI, 'gc', '--dry-run', '--json', '--socket', cove.adminSocket!])).stdout) as { dryRun: boolean; evicted: unknown[] };
  t.equal(dry2.dryRun, true);
  t.equal((await images(cove)).images.length, before, 'a dry run removes nothing');

  const gets = origin.count({ method: 'GET', kind: 'blob' });
  const again = await pullImage(cove.url, 'proj/a', '1', a);
  t.ok(again.blobs.every((x) => x.cache.includes('fwd=miss')), 'the evicted image comes from the origin again, whole and verified');
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), gets + 3);

  const ls = await run(process.execPath, [CLI, 'ls', '--socket', cove.adminSocket!]);
  t.match(ls.stdout, /^\d+ image\(s\), .* cached of 1\.8 MiB$/m);
  t.match(ls.stdout, /^REPOSITORY\s+TAG\s+DIGEST\s+SIZE\s+LAST PULL\s+PINNED$/m);
  t.match(ls.stdout, /^proj\/a\s+1\s+sha256:/m);
  const unpin = await run(process.execPath, [CLI, 'unpin', 'proj/a:1', '--socket', cove.adminSocket!]);
  t.equal(unpin.stdout.trim(), 'proj/a:1: was not pinned');
  const bad = await run(process.execPath, [CLI, 'pin', 'proj/a', '--socket', cove.adminSocket!]).catch((err: { code: number; stderr: string }) => err);
  t.equal((bad as { code: number }).code, 2);
  t.match((bad as { stderr: string }).stderr, /pin needs REPO:TAG or REPO@sha256/);
  const remote = await fetchAll(`${cove.url}/admin/gc`, { method: 'GET' });
  t.equal(remote.status, 405, 'gc is POST only');
});
