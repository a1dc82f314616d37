// The fill path: one upstream fetch however many clients, Range on a miss, broken and wrong
// transfers, and what a client disconnect does (see CLIENT_DISCONNECT_POLICY).
import { existsSync } from 'node:fs';
import { request } from 'node:http';
import t from 'tap';
import { CLIENT_DISCONNECT_POLICY } from '../../src/resolve/fill.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

function blobPath(dataDir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return `${dataDir}/blobs/sha256/${hex.slice(0, 2)}/${hex}`;
}

t.test('20 concurrent cold clients of one blob: one upstream fetch, every client correct', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [8_000_000], seed: 'twenty' });
  origin.putImage('proj/big', '1', image);
  const layer = image.layers[0]!;
  // Slow enough that all 20 arrive while the fill is under way.
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 16_000_000 });
  const cove = await startTestCove(t, origin.url);

  const results = await Promise.all(Array.from({ length: 20 }, () => fetchAll(`${cove.url}/v2/proj/big/blobs/${layer.digest}`)));
  for (const [i, r] of results.entries()) {
    t.equal(r.status, 200, `client ${i} status`);
    t.equal(sha256(r.body), layer.digest, `client ${i} bytes`);
  }
  t.equal(origin.count({ method: 'GET', kind: 'blob', digest: layer.digest }), 1, 'one upstream GET');
  t.equal(origin.blobBytesServed, layer.bytes.length, 'the blob crossed the uplink once');
  const statuses = results.map((r) => r.headers['cache-status']);
  t.ok(statuses.filter((s) => s === 'cove; fwd=miss; stored; detail=joined').length >= 1, 'late clients joined the fill');
  await cove.fillsDone();
  t.ok(existsSync(blobPath(cove.dataDir, layer.digest)), 'blob committed to the store');
});

t.test('a Range request on a miss is answered 206 with the right bytes', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [2_000_000], seed: 'range' });
  origin.putImage('proj/range', '1', image);
  const layer = image.layers[0]!;
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/range/blobs/${layer.digest}`;

  const cold = await fetchAll(url, { headers: { range: 'bytes=1000000-' } });
  t.equal(cold.status, 206);
  t.equal(cold.headers['content-range'], `bytes 1000000-1999999/2000000`);
  t.ok(cold.body.equals(layer.bytes.subarray(1_000_000)), 'cold range bytes');

  const warm = await fetchAll(url, { headers: { range: 'bytes=10-19' } });
  t.equal(warm.status, 206);
  t.equal(warm.headers['content-range'], 'bytes 10-19/2000000');
  t.ok(warm.body.equals(layer.bytes.subarray(10, 20)), 'warm range bytes');

  const suffix = await fetchAll(url, { headers: { range: 'bytes=-5' } });
  t.ok(suffix.body.equals(layer.bytes.subarray(-5)), 'suffix range');

  const past = await fetchAll(url, { headers: { range: 'bytes=2000000-' } });
  t.equal(past.status, 416);
  t.equal(past.headers['content-range'], 'bytes */2000000');
  t.equal(JSON.parse(past.body.toString()).errors[0].code, 'RANGE_INVALID');
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 1, 'one upstream fetch for all of it');
});

t.test('wrong bytes from the origin never enter the store and break the client connection', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [500_000], seed: 'wrong' });
  origin.putImage('proj/wrong', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'wrong-bytes' }, 1);
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/wrong/blobs/${layer.digest}`;

  await t.rejects(fetchAll(url), 'the client sees a broken transfer, not a complete wrong body');
  t.notOk(existsSync(blobPath(cove.dataDir, layer.digest)), 'nothing stored under the digest');
  t.equal(cove.counters.digestMismatches, 1, 'mismatch counted');

  const again = await fetchAll(url);
  t.equal(again.status, 200);
  t.equal(sha256(again.body), layer.digest, 'the next request fetches good bytes');
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 2);
});

t.test('a transfer cut mid-blob resumes with Range from the next byte', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [3_000_000], seed: 'resume' });
  origin.putImage('proj/cut', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'truncate', afterBytes: 1_000_000 }, 1);
  const cove = await startTestCove(t, origin.url);

  const r = await fetchAll(`${cove.url}/v2/proj/cut/blobs/${layer.digest}`);
  t.equal(r.status, 200);
  t.equal(sha256(r.body), layer.digest, 'client gets the whole, correct blob');
  const gets = origin.requests.filter((q) => q.method === 'GET' && q.path.includes('/blobs/'));
  t.equal(gets.length, 2, 'one resume');
  t.match(gets[1]!.range ?? '', /^bytes=\d+-$/, 'resume asked for the rest with Range');
  await cove.fillsDone();
  t.ok(existsSync(blobPath(cove.dataDir, layer.digest)));
});

t.test('a transfer that keeps breaking fails the client and leaves nothing behind', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1_000_000], seed: 'broken' });
  origin.putImage('proj/broken', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'truncate', afterBytes: 100 });
  const cove = await startTestCove(t, origin.url);

  await t.rejects(fetchAll(`${cove.url}/v2/proj/broken/blobs/${layer.digest}`), 'never a short 200 that looks complete');
  t.notOk(existsSync(blobPath(cove.dataDir, layer.digest)), 'no partial blob stored');
  t.ok(origin.count({ method: 'GET', kind: 'blob' }) <= 4, 'bounded attempts');
});

t.test(`client disconnect policy "${CLIENT_DISCONNECT_POLICY}": a fill that ends within the grace after its client left completes for the cache`, async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [4_000_000], seed: 'disconnect' });
  origin.putImage('proj/dc', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 8_000_000 });
  const cove = await startTestCove(t, origin.url);

  await new Promise<void>((resolve, reject) => {
    const req = request(`${cove.url}/v2/proj/dc/blobs/${layer.digest}`, (res) => {
      res.once('data', () => {
        req.destroy(); // the only client goes away after the first bytes
        resolve();
      });
    });
    req.on('error', () => {});
    req.end();
    setTimeout(() => reject(new Error('no bytes arrived')), 5000).unref();
  });
  const deadline = Date.now() + 5000;
  while (!existsSync(blobPath(cove.dataDir, layer.digest)) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  t.ok(existsSync(blobPath(cove.dataDir, layer.digest)), 'blob committed although its client left');
  // The file is renamed into place a moment before the index records it and the fill retires.
  await cove.fillsDone();
  const hit = await fetchAll(`${cove.url}/v2/proj/dc/blobs/${layer.digest}`);
  t.equal(hit.headers['cache-status'], 'cove; hit');
  t.equal(sha256(hit.body), layer.digest);
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 1, 'fetched once');
});

t.test('an origin 404 to a blob HEAD is confirmed with a GET (distribution#4747)', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [50_000], seed: 'head404' });
  origin.putImage('proj/h', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'head-404' });
  const cove = await startTestCove(t, origin.url);

  const head = await fetchAll(`${cove.url}/v2/proj/h/blobs/${layer.digest}`, { method: 'HEAD' });
  t.equal(head.status, 200, 'HEAD succeeds although the origin HEAD said 404');
  t.equal(head.headers['content-length'], String(layer.bytes.length));
  const get = await fetchAll(`${cove.url}/v2/proj/h/blobs/${layer.digest}`);
  t.equal(sha256(get.body), layer.digest);
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 1, 'the confirming GET filled the cache');

  const missing = await fetchAll(`${cove.url}/v2/proj/h/blobs/sha256:${'1'.repeat(64)}`, { method: 'HEAD' });
  t.equal(missing.status, 404, 'a blob the GET cannot find either is 404');
});

t.test('a body that breaks before its first byte, again and again: every client fails fast, none hangs', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const cove = await startTestCove(t, origin.url);
  for (let i = 0; i < 20; i++) {
    const image = makeImage({ layers: [200_000], seed: `instant-${i}` });
    origin.putImage('proj/instant', '1', image);
    const layer = image.layers[0]!;
    origin.setFault({ digest: layer.digest }, { type: 'truncate', afterBytes: 0 });
    const outcome = await fetchAll(`${cove.url}/v2/proj/instant/blobs/${layer.digest}`, { timeoutMs: 10_000 }).then(
      (r) => `status ${r.status}`,
      (err: Error) => (/in time/.test(err.message) ? 'hang' : 'broken'),
    );
    t.not(outcome, 'hang', `client ${i} got an answer`);
    t.not(outcome, 'status 200', `client ${i} got no complete-looking body`);
  }
  await cove.fillsDone();
  t.equal(cove.counters.digestMismatches, 0);
});
