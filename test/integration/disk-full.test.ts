// The disk fills up mid-blob (a 4 MiB tmpfs as the data directory): the clients' transfers go on
// as a pass-through and end whole and verified, the partial file is removed, the event is counted
// and logged, eviction makes room, and cached images keep being served.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { requireRoot } from '../e2e/real.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { pullImage } from '../helpers/site.js';
import { startTestCove } from '../helpers/cove.js';

t.test('ENOSPC during a fill: clients get the whole blob, nothing partial stays, hits go on', async (t) => {
  if (!requireRoot(t, 'mounting a small tmpfs as the data directory')) return;
  const dir = mkdtempSync(join(tmpdir(), 'cove-diskfull-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'cove-diskfull', dir]);
  t.teardown(() => {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const small = makeImage({ layers: [300_000], seed: 'full-small' });
  const old = makeImage({ layers: [1_000_000], seed: 'full-old' });
  const big = makeImage({ layers: [6_000_000], seed: 'full-big' });
  origin.putImage('proj/small', '1', small);
  origin.putImage('proj/old', '1', old);
  origin.putImage('proj/big', '1', big);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h' }, { dataDir: join(dir, 'data'), keepData: true });

  await pullImage(cove.url, 'proj/old', '1', old);
  await pullImage(cove.url, 'proj/small', '1', small);
  await cove.adminFetch('/admin/pin?repo=proj/small&ref=1', { method: 'POST' });
  await cove.fillsDone();

  // Slow enough that both clients are reading before the disk runs out.
  const layer = big.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 20_000_000 }, 1);
  const [a, b] = await Promise.all([fetchAll(`${cove.url}/v2/proj/big/blobs/${layer.digest}`), fetchAll(`${cove.url}/v2/proj/big/blobs/${layer.digest}`)]);
  t.equal(sha256(a.body), layer.digest, 'the first client got the whole blob, verified');
  t.equal(sha256(b.body), layer.digest, 'so did the client that joined it');
  const gets = origin.requests.filter((r) => r.method === 'GET' && r.digest === layer.digest);
  // Bytes in flight when the write failed are asked for again: a few MiB at most, never a second copy.
  const sent = origin.blobBytesByDigest.get(layer.digest) ?? 0;
  t.ok(sent >= layer.bytes.length && sent < layer.bytes.length + 4 * 1024 * 1024, `the origin sent the blob about once for both clients (${sent} bytes)`);
  t.ok(gets.length <= 2 && (gets.length === 1 || /^bytes=[1-9]/.test(gets[1]!.range ?? '')), 'the pass-through went on from the byte where the disk filled');
  await cove.fillsDone();

  const health = (await (await fetch(`${cove.url}/healthz`)).json()) as { diskFull: number; evictions: number };
  t.equal(health.diskFull, 1, 'the disk-full event is counted');
  t.ok(health.evictions > 0, 'eviction ran to make room');
  t.same(readdirSync(join(dir, 'data', 'blobs', 'tmp')), [], 'no partial file is left');
  const local = await fetchAll(`${cove.url}/v2/proj/big/blobs/${layer.digest}`, { headers: { 'cove-peer': 'local' } });
  t.equal(local.status, 404, 'the blob was not stored');

  const hit = await fetchAll(`${cove.url}/v2/proj/small/blobs/${small.layers[0]!.digest}`);
  t.equal(hit.headers['cache-status'], 'cove; hit', 'a cached (pinned) image is still served from the disk');
  t.equal(sha256(hit.body), small.layers[0]!.digest);
  const images = (await (await cove.adminFetch('/admin/images')).json()) as { images: Array<{ repo: string }> };
  t.notOk(images.images.some((i) => i.repo === 'proj/old'), 'the least recently pulled unpinned image made room');
});
