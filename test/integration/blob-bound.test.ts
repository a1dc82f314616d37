// No tier may send more bytes than the blob can have: a body without Content-Length that keeps
// growing stops at the size a cached manifest's descriptor or a HEAD gave, or at
// COVE_MAX_BLOB_BYTES when nothing told the size. Found as: a 2 MiB blob served with no length
// grew a temp file to 286 MB.
import { readdirSync, statSync } from 'node:fs';
import t, { type Test } from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage, type Image } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';

const MiB = 1024 * 1024;
const EXTRA = 300_000_000;

/** Samples the temp directory every millisecond; `stop()` answers the largest temp file seen. */
function watchTemp(dataDir: string): { stop: () => number } {
  const dir = `${dataDir}/blobs/tmp`;
  let largest = 0;
  const sample = () => {
    for (const name of readdirSync(dir)) {
      try {
        largest = Math.max(largest, statSync(`${dir}/${name}`).size);
      } catch {
        // Removed between the listing and the stat.
      }
    }
  };
  const timer = setInterval(sample, 1);
  return {
    stop: () => {
      clearInterval(timer);
      sample();
      return largest;
    },
  };
}

async function setup(t: Test, seed: string, env: Record<string, string> = {}): Promise<{ origin: OriginRegistry; cove: TestCove; image: Image; url: string }> {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [2 * MiB], seed });
  origin.putImage('proj/grow', '1', image);
  origin.setFault({ digest: image.layers[0]!.digest, kind: 'blob' }, { type: 'endless', extraBytes: EXTRA }, 1);
  const cove = await startTestCove(t, origin.url, env);
  return { origin, cove, image, url: `${cove.url}/v2/proj/grow/blobs/${image.layers[0]!.digest}` };
}

/** The GET's outcome: status and bytes received, or the bytes received before the transfer broke. */
async function attempt(url: string): Promise<{ status: number | 'broken'; bytes: number }> {
  return fetchAll(url, { timeoutMs: 20_000 }).then(
    (r) => ({ status: r.status, bytes: r.body.length }),
    () => ({ status: 'broken' as const, bytes: 0 }),
  );
}

async function checkBounded(t: Test, s: Awaited<ReturnType<typeof setup>>, bound: number): Promise<void> {
  const layer = s.image.layers[0]!;
  const watch = watchTemp(s.cove.dataDir);
  const first = await attempt(s.url);
  await s.cove.fillsDone();
  const largest = watch.stop();
  t.ok(largest <= bound, `no temp file grew past ${bound} bytes (largest ${largest})`);
  t.not(first.status, 200, `the client got no complete-looking 200 (${first.status})`);
  t.ok(first.bytes <= layer.bytes.length, 'and never more than the blob\'s bytes');
  t.ok(s.origin.blobBytesServed < bound + 64 * MiB, `the fill stopped reading (${s.origin.blobBytesServed} bytes left the origin of ${EXTRA})`);
  t.equal(s.cove.counters.digestMismatches, 1, 'counted as wrong bytes');
  t.same(readdirSync(`${s.cove.dataDir}/blobs/tmp`), [], 'temp file removed');
  const next = await fetchAll(s.url);
  t.equal(sha256(next.body), layer.digest, 'the next request fetches the real blob');
}

t.test('a body with no length that keeps growing stops at the size the cached manifest gave', async (t) => {
  const s = await setup(t, 'grow-manifest');
  const manifest = await fetchAll(`${s.cove.url}/v2/proj/grow/manifests/1`, { headers: { accept: s.image.mediaType } });
  t.equal(manifest.status, 200, 'the client read the manifest first, as pulls do');
  await checkBounded(t, s, 2 * MiB);
});

t.test('a body with no length that keeps growing stops at the size a HEAD gave', async (t) => {
  const s = await setup(t, 'grow-head');
  const head = await fetchAll(s.url, { method: 'HEAD' });
  t.equal(head.headers['content-length'], String(2 * MiB));
  await checkBounded(t, s, 2 * MiB);
});

t.test('a body with no length that keeps growing, nothing known of its size: COVE_MAX_BLOB_BYTES bounds it', async (t) => {
  const s = await setup(t, 'grow-unknown', { COVE_MAX_BLOB_BYTES: '4MiB' });
  await checkBounded(t, s, 4 * MiB);
});

t.test('a tier that declares more bytes than the manifest allows is refused before a byte is stored', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [MiB], seed: 'declares-more' });
  origin.putImage('proj/lie', '1', image);
  const layer = image.layers[0]!;
  const cove = await startTestCove(t, origin.url);
  await fetchAll(`${cove.url}/v2/proj/lie/manifests/1`, { headers: { accept: image.mediaType } });
  origin.setFault({ digest: layer.digest }, { type: 'length-lie', contentLength: 500 * MiB }, 1);
  const first = await attempt(`${cove.url}/v2/proj/lie/blobs/${layer.digest}`);
  t.not(first.status, 200);
  await cove.fillsDone();
  t.equal(cove.counters.digestMismatches, 1);
  const next = await fetchAll(`${cove.url}/v2/proj/lie/blobs/${layer.digest}`);
  t.equal(sha256(next.body), layer.digest);
});
