// Regression tests for the fill path's edge cases (issue 11, "Right bytes for every client"): a
// tier that declares a wrong length, an upstream that cuts every response, a HEAD during a fill of
// unknown size, a hit whose file is evicted before it is opened, and many concurrent fills on one
// shutdown signal. Each is named after the bug it pins.
import { existsSync, unlinkSync } from 'node:fs';
import t from 'tap';
import { BlobStore } from '../../src/store/blobs.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

function blobPath(dataDir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return `${dataDir}/blobs/sha256/${hex.slice(0, 2)}/${hex}`;
}

/** "complete <status> <sha>" for a response that ended normally, "broken" for a cut transfer. */
async function outcome(url: string, options: Parameters<typeof fetchAll>[1] = {}): Promise<string> {
  return fetchAll(url, { timeoutMs: 15_000, ...options }).then(
    (r) => `complete ${r.status} ${r.body.length === 0 ? 'empty' : sha256(r.body)}`,
    (err: Error) => (/in time/.test(err.message) ? 'hang' : 'broken'),
  );
}

t.test('a tier answering 200 Content-Length: 0 for a non-empty blob never gives the client a clean empty 200', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100_000], seed: 'zero-length' });
  origin.putImage('proj/zero', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'zero-length' }, 1);
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/zero/blobs/${layer.digest}`;

  const first = await outcome(url);
  t.notMatch(first, /^complete 200/, `no complete-looking 200 from an empty body (${first})`);
  t.not(first, 'hang');
  await cove.fillsDone();
  t.notOk(existsSync(blobPath(cove.dataDir, layer.digest)), 'nothing stored under the digest');
  t.equal(await outcome(url), `complete 200 ${layer.digest}`, 'the next request fetches the real blob');
});

t.test('a Range past a tier\'s false zero length is not refused with 416 (found by the chaos test)', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100_000], seed: 'zero-length-range' });
  origin.putImage('proj/zero', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'zero-length' }, 1);
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/zero/blobs/${layer.digest}`;
  const first = await fetchAll(url, { headers: { range: 'bytes=10-99' } }).catch(() => null);
  t.not(first?.status, 416, 'the tier\'s word on the size is not enough for a 416');
  await cove.fillsDone();
  const next = await fetchAll(url, { headers: { range: 'bytes=10-99' } });
  t.equal(next.status, 206);
  t.ok(next.body.equals(layer.bytes.subarray(10, 100)), 'the span of the real blob');
});

t.test('a HEAD beside a fill whose tier declares a non-empty blob empty never answers length 0 (found by the chaos test)', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100_000], seed: 'zero-length-head' });
  origin.putImage('proj/zero', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'zero-length' }, 5);
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/zero/blobs/${layer.digest}`;
  const lengths: string[] = [];
  for (let i = 0; i < 5; i++) {
    const [, head] = await Promise.all([outcome(url), fetchAll(url, { method: 'HEAD' })]);
    lengths.push(`${head.status}:${head.headers['content-length'] ?? ''}`);
    await cove.fillsDone();
  }
  // An error is an honest answer (the fill failed); a 200 must carry the real length.
  t.ok(lengths.every((l) => !l.startsWith('200:') || l === `200:${layer.bytes.length}`), `no HEAD said a false length (${lengths.join(', ')})`);
});

t.test('an empty blob whose digest is right is still served as a complete empty 200', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const digest = origin.putBlob('proj/empty', Buffer.alloc(0));
  const cove = await startTestCove(t, origin.url);
  const r = await fetchAll(`${cove.url}/v2/proj/empty/blobs/${digest}`);
  t.equal(r.status, 200);
  t.equal(r.body.length, 0);
  t.equal(r.headers['content-length'], '0');
});

for (const [name, declared] of [
  ['short', 60_000],
  ['long', 140_000],
] as const) {
  t.test(`a Content-Length that lies ${name} never yields a complete-looking wrong body`, async (t) => {
    const origin = await OriginRegistry.start();
    t.teardown(() => origin.close());
    const image = makeImage({ layers: [100_000], seed: `lie-${name}` });
    origin.putImage('proj/lie', '1', image);
    const layer = image.layers[0]!;
    origin.setFault({ digest: layer.digest }, { type: 'length-lie', contentLength: declared });
    const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_BODY_TIMEOUT: '1s' });
    const url = `${cove.url}/v2/proj/lie/blobs/${layer.digest}`;
    const got = await outcome(url);
    t.ok(got === 'broken' || /^complete (4|5)\d\d/.test(got), `a broken transfer or an error status (${got})`);
    await cove.fillsDone();
    t.notOk(existsSync(blobPath(cove.dataDir, layer.digest)), 'nothing stored');
  });
}

t.test('an upstream that cuts every response after 300 KB still delivers an 8 MiB blob, fetching it about once', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [8 * 1024 * 1024], seed: 'cut-every' });
  origin.putImage('proj/cut', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'cut-every', afterBytes: 300_000 });
  const cove = await startTestCove(t, origin.url);

  const r = await fetchAll(`${cove.url}/v2/proj/cut/blobs/${layer.digest}`, { timeoutMs: 60_000 });
  t.equal(r.status, 200);
  t.equal(sha256(r.body), layer.digest, 'the whole, correct blob');
  const gets = origin.count({ method: 'GET', kind: 'blob', digest: layer.digest });
  t.equal(gets, Math.ceil(layer.bytes.length / 300_000), 'one request per 300 KB piece, no restarts');
  const sent = origin.blobBytesByDigest.get(layer.digest) ?? 0;
  t.ok(sent <= layer.bytes.length * 1.05, `the origin sent the blob about once (${sent} of ${layer.bytes.length} bytes)`);
  await cove.fillsDone();
  t.ok(existsSync(blobPath(cove.dataDir, layer.digest)), 'stored');
});

t.test('a transfer that makes no progress still fails after a few attempts', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1_000_000], seed: 'no-progress' });
  origin.putImage('proj/stuck', '1', image);
  const layer = image.layers[0]!;
  // The first answer brings 200 KB; every resume after it breaks before its first byte.
  origin.setFault({ digest: layer.digest }, { type: 'truncate', afterBytes: 200_000 }, 1);
  origin.setFault({ digest: layer.digest }, { type: 'truncate', afterBytes: 0 });
  const cove = await startTestCove(t, origin.url);
  t.equal(await outcome(`${cove.url}/v2/proj/stuck/blobs/${layer.digest}`), 'broken', 'the client sees a broken transfer');
  const gets = origin.count({ method: 'GET', kind: 'blob', digest: layer.digest });
  t.ok(gets >= 2 && gets <= 6, `bounded attempts without progress (${gets})`);
  await cove.fillsDone();
  t.notOk(existsSync(blobPath(cove.dataDir, layer.digest)));
});

t.test('a HEAD during a fill whose size the tier did not send answers at once, not after the fill', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [3_000_000], seed: 'head-no-length' });
  origin.putImage('proj/nolen', '1', image);
  const layer = image.layers[0]!;
  // Chunked at 1 MB/s: the fill takes about 3 s and learns the size only at its end.
  origin.setFault({ digest: layer.digest }, { type: 'no-length', bytesPerSecond: 1_000_000 }, 1);
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/nolen/blobs/${layer.digest}`;

  const get = fetchAll(url, { timeoutMs: 20_000 });
  for (let i = 0; i < 100 && cove.counters.fills === 0; i++) await new Promise((r) => setTimeout(r, 10));
  await new Promise((r) => setTimeout(r, 200));
  const started = Date.now();
  const head = await fetchAll(url, { method: 'HEAD', timeoutMs: 10_000 });
  const ms = Date.now() - started;
  t.equal(head.status, 200);
  t.equal(head.headers['content-length'], String(layer.bytes.length));
  t.ok(ms < 1000, `answered in ${ms} ms, within a peer's 1 s HEAD timeout`);
  const health = (await (await fetch(`${cove.url}/healthz`)).json()) as { activeFills: number };
  t.equal(health.activeFills, 1, 'the fill was still running when the HEAD was answered');
  t.equal(sha256((await get).body), layer.digest);
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 1, 'the HEAD started no second fill');
});

t.test('a hit whose file is evicted between lookup and open becomes a miss, never a broken response', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [2_000_000], seed: 'evict-race' });
  origin.putImage('proj/evict', '1', image);
  const layer = image.layers[0]!;
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/evict/blobs/${layer.digest}`;
  t.equal(sha256((await fetchAll(url)).body), layer.digest);
  await cove.fillsDone();

  // Eviction strikes right after the lookup saw the file: the unlink lands in the window between
  // the store's stat and the first read.
  const stat = BlobStore.prototype.stat;
  let armed = true;
  BlobStore.prototype.stat = async function (this: BlobStore, digest: string) {
    const found = await stat.call(this, digest);
    if (armed && digest === layer.digest && found) {
      armed = false;
      unlinkSync(blobPath(cove.dataDir, layer.digest));
    }
    return found;
  };
  t.teardown(() => {
    BlobStore.prototype.stat = stat;
  });

  t.equal(await outcome(url), `complete 200 ${layer.digest}`, 'a complete, correct answer');
  t.notOk(armed, 'the file was removed after the lookup saw it');
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 2, 'the vanished hit was fetched again');
});

t.test('a hit keeps its bytes when the file is unlinked while a slow client reads', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [6_000_000], seed: 'evict-reading' });
  origin.putImage('proj/evict', '1', image);
  const layer = image.layers[0]!;
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/evict/blobs/${layer.digest}`;
  t.equal(sha256((await fetchAll(url)).body), layer.digest);
  await cove.fillsDone();

  const stat = BlobStore.prototype.stat;
  BlobStore.prototype.stat = async function (this: BlobStore, digest: string) {
    const found = await stat.call(this, digest);
    // The unlink comes a moment after the lookup, before or after the headers: either way the bytes stay right.
    if (digest === layer.digest && found) setTimeout(() => unlinkSync(blobPath(cove.dataDir, layer.digest)), 1);
    return found;
  };
  t.teardown(() => {
    BlobStore.prototype.stat = stat;
  });
  const got = await outcome(url);
  t.equal(got, `complete 200 ${layer.digest}`, 'whole and correct');
});

t.test('15 concurrent cold fills add no MaxListenersExceededWarning on the shutdown signal', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: Array.from({ length: 15 }, () => 400_000), seed: 'listeners' });
  origin.putImage('proj/many', '1', image);
  for (const layer of image.layers) origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 1_000_000 }, 1);
  const cove = await startTestCove(t, origin.url);
  const warnings: string[] = [];
  const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
  process.on('warning', onWarning);
  t.teardown(() => {
    process.off('warning', onWarning);
  });

  const results = await Promise.all(image.layers.map((layer) => fetchAll(`${cove.url}/v2/proj/many/blobs/${layer.digest}`)));
  for (const [i, r] of results.entries()) t.equal(sha256(r.body), image.layers[i]!.digest, `blob ${i}`);
  await cove.fillsDone();
  // Warnings are emitted on the next tick.
  await new Promise((r) => setImmediate(r));
  t.same(warnings.filter((w) => w.startsWith('MaxListenersExceededWarning')), [], 'no listener leak warning');
});
