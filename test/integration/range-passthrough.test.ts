// A Range on a cold blob answers at origin latency (lazy-pull snapshotters read a layer's end
// first): the span comes from the tier directly while the whole blob's fill goes on, or from the
// fill's temp file when it is there already. Regression tests for issue 11.
import { existsSync } from 'node:fs';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';

function blobPath(dataDir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return `${dataDir}/blobs/sha256/${hex.slice(0, 2)}/${hex}`;
}

async function activeFills(cove: TestCove): Promise<number> {
  return ((await (await fetch(`${cove.url}/healthz`)).json()) as { activeFills: number }).activeFills;
}

t.test('a Range for the tail of a cold blob on a slow origin answers long before the fill ends, with the right bytes', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [8_000_000], seed: 'range-tail' });
  origin.putImage('proj/lazy', '1', image);
  const layer = image.layers[0]!;
  // The whole blob takes about 4 s; only the fill's request is slowed.
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 2_000_000 }, 1);
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/lazy/blobs/${layer.digest}`;

  const started = Date.now();
  const tail = await fetchAll(url, { headers: { range: 'bytes=-1000' }, timeoutMs: 20_000 });
  const ms = Date.now() - started;
  t.equal(await activeFills(cove), 1, 'the fill was still running when the range answer completed');
  t.equal(tail.status, 206);
  t.equal(tail.headers['content-range'], `bytes ${layer.bytes.length - 1000}-${layer.bytes.length - 1}/${layer.bytes.length}`);
  t.ok(tail.body.equals(layer.bytes.subarray(-1000)), "the bytes are the blob's tail");
  t.equal(tail.headers['cache-status'], 'cove; fwd=miss; detail=range-passthrough');
  t.ok(ms < 2000, `answered in ${ms} ms`);

  const whole = await fetchAll(url, { timeoutMs: 20_000 });
  t.equal(sha256(whole.body), layer.digest, 'the fill went on and delivers the whole blob');
  await cove.fillsDone();
  t.ok(existsSync(blobPath(cove.dataDir, layer.digest)), 'the blob is stored');
  const full = origin.requests.filter((r) => r.method === 'GET' && r.digest === layer.digest && r.range === null);
  t.equal(full.length, 1, 'one full upstream GET');
  t.equal(cove.counters.bytesFetched.get('origin'), layer.bytes.length + 1000, 'the span is counted in bytesFetched');
});

t.test('a span already in the temp file is served from there, without a request upstream', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [8_000_000], seed: 'range-in-file' });
  origin.putImage('proj/lazy', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 2_000_000 }, 1);
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/lazy/blobs/${layer.digest}`;

  const whole = fetchAll(url, { timeoutMs: 20_000 });
  // The first 500 KB are in the file within about a quarter of a second.
  for (let i = 0; i < 100 && (cove.counters.bytesFetched.get('origin') ?? 0) < 1_000_000; i++) await new Promise((r) => setTimeout(r, 20));
  const started = Date.now();
  const head = await fetchAll(url, { headers: { range: 'bytes=0-499999' }, timeoutMs: 20_000 });
  const ms = Date.now() - started;
  t.equal(await activeFills(cove), 1, 'the fill was still running');
  t.ok(ms < 1500, `answered in ${ms} ms, not after the whole blob (about 4 s)`);
  t.equal(head.status, 206);
  t.ok(head.body.equals(layer.bytes.subarray(0, 500_000)), 'the right bytes');
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 1, 'no request upstream for the span');
  t.equal(sha256((await whole).body), layer.digest);
});

t.test('a tier that ignores Range: the span is read from the fill instead', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [6_000_000], seed: 'range-ignored' });
  origin.putImage('proj/lazy', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 6_000_000 }, 1);
  origin.setFault({ digest: layer.digest }, { type: 'ignore-range' });
  const cove = await startTestCove(t, origin.url);
  const tail = await fetchAll(`${cove.url}/v2/proj/lazy/blobs/${layer.digest}`, { headers: { range: 'bytes=-1000' }, timeoutMs: 20_000 });
  t.equal(tail.status, 206);
  t.ok(tail.body.equals(layer.bytes.subarray(-1000)), 'the right bytes, from the fill');
  t.not(tail.headers['cache-status'], 'cove; fwd=miss; detail=range-passthrough');
});

t.test('a tier whose 206 does not match the asked span is not passed through', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [6_000_000], seed: 'range-wrong' });
  origin.putImage('proj/lazy', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 6_000_000 }, 1);
  // The span request gets a Content-Length that disagrees with its Content-Range.
  origin.setFault({ digest: layer.digest }, { type: 'length-lie', contentLength: 999 }, 1);
  const cove = await startTestCove(t, origin.url);
  const tail = await fetchAll(`${cove.url}/v2/proj/lazy/blobs/${layer.digest}`, { headers: { range: 'bytes=-1000' }, timeoutMs: 20_000 });
  t.equal(tail.status, 206);
  t.ok(tail.body.equals(layer.bytes.subarray(-1000)), 'the right bytes, from the fill');
});
