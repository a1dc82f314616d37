// Regression tests for a full disk (a small tmpfs as the data directory) when nobody, or nobody
// any more, reads the blob: the fill used to stall for ever on a full pass-through window, holding
// the upstream connection; and a HEAD during a pass-through used to start a second full fill.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { requireRoot } from '../e2e/real.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';

/** A 4 MiB tmpfs for the data directory, unmounted at teardown; null when this run cannot mount. */
function smallDisk(t: Test): string | null {
  if (!requireRoot(t, 'mounting a small tmpfs as the data directory')) return null;
  const dir = mkdtempSync(join(tmpdir(), 'cove-diskfull-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'cove-diskfull', dir]);
  t.teardown(() => {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

async function activeFills(cove: TestCove): Promise<number> {
  return ((await (await fetch(`${cove.url}/healthz`)).json()) as { activeFills: number }).activeFills;
}

/** Polls until `check` holds, at most `ms`. */
async function until(ms: number, check: () => Promise<boolean> | boolean): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return check();
}

t.test('disk full during a prewarm (no reader): the fill ends at once and the prewarm says the blob was not stored', async (t) => {
  const dir = smallDisk(t);
  if (dir === null) return;
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  // Three times the disk: the rest after the disk fills is more than the pass-through window.
  const big = makeImage({ layers: [12_000_000], seed: 'full-prewarm' });
  origin.putImage('proj/big', '1', big);
  const layer = big.layers[0]!;
  // At 8 MB/s the origin's byte count tells whether the transfer stopped when the disk filled.
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 8_000_000 }, 1);
  const cove = await startTestCove(t, origin.url, {}, { dataDir: join(dir, 'data'), keepData: true });

  const body = await new Promise<string>((resolve, reject) => {
    const req = request({ socketPath: cove.adminSocket!, path: '/admin/prewarm', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(Buffer.concat(chunks).toString()));
      res.on('error', reject);
    });
    req.setTimeout(20_000, () => req.destroy(new Error('the prewarm did not answer in 20 s: the fill stalled')));
    req.on('error', reject);
    req.end(JSON.stringify({ refs: ['proj/big:1'] }));
  });
  t.match(body, /not stored: the disk is full/, 'the prewarm result says why the blob is not there');
  t.ok(await until(5000, async () => (await activeFills(cove)) === 0), 'no fill is left running');
  const sent = origin.blobBytesByDigest.get(layer.digest) ?? 0;
  t.ok(sent < layer.bytes.length, `the upstream transfer stopped when the disk filled (${sent} of ${layer.bytes.length} bytes)`);
  t.equal(cove.counters.diskFull, 1, 'the disk-full event is counted');
  t.same(readdirSync(join(dir, 'data', 'blobs', 'tmp')), [], 'no partial file is left');
});

t.test('disk full after the only client left: the fill ends instead of stalling on the upstream', async (t) => {
  const dir = smallDisk(t);
  if (dir === null) return;
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const big = makeImage({ layers: [12_000_000], seed: 'full-left' });
  origin.putImage('proj/big', '1', big);
  const layer = big.layers[0]!;
  // Slow enough that the client is gone well before the disk fills.
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 8_000_000 }, 1);
  const cove = await startTestCove(t, origin.url, {}, { dataDir: join(dir, 'data'), keepData: true });

  await new Promise<void>((resolve, reject) => {
    const req = request(`${cove.url}/v2/proj/big/blobs/${layer.digest}`, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', () => {});
    req.end();
    setTimeout(() => reject(new Error('no bytes arrived')), 5000).unref();
  });
  t.ok(await until(10_000, () => cove.counters.diskFull === 1), 'the disk filled');
  t.ok(await until(3000, async () => (await activeFills(cove)) === 0), 'the fill ended soon after, not holding the upstream');
  const sent = origin.blobBytesByDigest.get(layer.digest) ?? 0;
  t.ok(sent < layer.bytes.length, `the rest of the blob was not fetched for no one (${sent} of ${layer.bytes.length} bytes)`);
  t.same(readdirSync(join(dir, 'data', 'blobs', 'tmp')), [], 'no partial file is left');
});

t.test('a HEAD during a disk-full pass-through answers from it and starts no second fill', async (t) => {
  const dir = smallDisk(t);
  if (dir === null) return;
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const big = makeImage({ layers: [12_000_000], seed: 'full-head' });
  origin.putImage('proj/big', '1', big);
  const layer = big.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 4_000_000 }, 1);
  const cove = await startTestCove(t, origin.url, {}, { dataDir: join(dir, 'data'), keepData: true });
  const url = `${cove.url}/v2/proj/big/blobs/${layer.digest}`;

  const get = fetchAll(url, { timeoutMs: 20_000 });
  t.ok(await until(10_000, () => cove.counters.diskFull === 1), 'the disk filled: the blob is passing through');
  const head = await fetchAll(url, { method: 'HEAD', timeoutMs: 5000 });
  t.equal(head.status, 200);
  t.equal(head.headers['content-length'], String(layer.bytes.length));
  t.equal(sha256((await get).body), layer.digest, 'the client got the whole blob');
  const fullGets = origin.requests.filter((r) => r.method === 'GET' && r.digest === layer.digest && r.range === null);
  t.equal(fullGets.length, 1, 'one full upstream GET: the HEAD started no second fill');
});
