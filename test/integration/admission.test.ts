// Load from one client cannot exhaust the node: fills nobody waits for are cancelled, fills are
// capped overall and per client (a bounded wait for a slot, then 429), and a pull of a many-layer
// image never meets those caps. Each test is named after the attack it pins.
import { readdirSync } from 'node:fs';
import { request, type IncomingMessage } from 'node:http';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';

const MiB = 1024 * 1024;

function storedBlobs(dataDir: string): string[] {
  const root = `${dataDir}/blobs/sha256`;
  return readdirSync(root).flatMap((dir) => readdirSync(`${root}/${dir}`));
}

function tempFiles(dataDir: string): string[] {
  return readdirSync(`${dataDir}/blobs/tmp`);
}

async function activeFills(cove: TestCove): Promise<number> {
  return ((await (await fetch(`${cove.url}/healthz`)).json()) as { activeFills: number }).activeFills;
}

async function until(what: string, check: () => Promise<boolean> | boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

/** A GET from a chosen loopback address, answered with status, headers and body (or 'broken'). */
function getFrom(url: string, localAddress: string, headers: Record<string, string> = {}): Promise<{ status: number; headers: IncomingMessage['headers']; body: Buffer } | 'broken'> {
  return new Promise((resolve) => {
    const req = request(url, { localAddress, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve(res.complete ? { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) } : 'broken'));
      res.on('error', () => resolve('broken'));
    });
    req.setTimeout(30_000, () => req.destroy());
    req.on('error', () => resolve('broken'));
    req.end();
  });
}

/** Opens a GET and returns once its response headers arrived (or it failed), with a way to cut it. */
function openGet(url: string, localAddress = '127.0.0.1'): { cut: () => void; answered: Promise<number> } {
  let cut = () => {};
  const answered = new Promise<number>((resolve) => {
    const req = request(url, { localAddress, agent: false }, (res) => {
      res.on('data', () => {});
      res.on('error', () => {});
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    cut = () => req.destroy();
    req.end();
  });
  return { cut: () => cut(), answered };
}

t.test('40 blob requests cut by their client within 50 ms: the fills are cancelled, nothing is stored', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: Array.from({ length: 40 }, () => 2 * MiB), seed: 'cut-40' });
  origin.putImage('proj/cut', '1', image);
  // Slow enough that no fill could finish within the grace: what arrives is what the cut cost.
  origin.setFault({ kind: 'blob' }, { type: 'slow', bytesPerSecond: 100_000 });
  const cove = await startTestCove(t, origin.url);

  const requests = image.layers.map((l) => openGet(`${cove.url}/v2/proj/cut/blobs/${l.digest}`));
  await new Promise((r) => setTimeout(r, 50));
  for (const r of requests) r.cut();

  // Default grace 2 s: every fill is gone shortly after, its temp file with it.
  await until('every fill cancelled', async () => (await activeFills(cove)) === 0, 6000);
  const fetched = origin.blobBytesServed;
  t.ok(fetched < 8 * MiB, `the origin sent ${fetched} bytes, not 80 MiB`);
  t.same(storedBlobs(cove.dataDir), [], 'nothing stored');
  t.same(tempFiles(cove.dataDir), [], 'no temp file left');
  // A request cut before its lookup began starts no fill at all; every fill that started is cancelled.
  t.ok(cove.counters.fills > 0, `fills started (${cove.counters.fills})`);
  t.equal(cove.counters.fillsCancelled, cove.counters.fills, 'every fill counted as cancelled');
  t.ok(origin.count({ method: 'GET', kind: 'blob' }) <= 40, 'no fill was retried');
  await new Promise((r) => setTimeout(r, 500));
  t.equal(origin.blobBytesServed, fetched, 'and nothing more arrives afterwards');
});

t.test('a client that comes back within the grace joins the fill it left', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [3 * MiB], seed: 'come-back' });
  origin.putImage('proj/back', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 2 * MiB });
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/back/blobs/${layer.digest}`;

  const first = openGet(url);
  t.equal(await first.answered, 200);
  first.cut();
  await new Promise((r) => setTimeout(r, 500));
  const again = await fetchAll(url, { headers: { range: 'bytes=1000-' } });
  t.equal(again.status, 206);
  t.ok(again.body.equals(layer.bytes.subarray(1000)), 'the rest of the blob');
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 1, 'one upstream fetch: the resume joined it');
  await cove.fillsDone();
  t.equal(cove.counters.fillsCancelled, 0);
  t.same(storedBlobs(cove.dataDir), [layer.digest.slice(7)], 'stored');
});

t.test('a HEAD that started a fill lets it go; the GET that follows joins it within the grace', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1 * MiB], seed: 'head-then-get' });
  origin.putImage('proj/hg', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'head-404' });
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 1 * MiB });
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/hg/blobs/${layer.digest}`;
  const head = await fetchAll(url, { method: 'HEAD' });
  t.equal(head.headers['content-length'], String(layer.bytes.length));
  const get = await fetchAll(url);
  t.equal(sha256(get.body), layer.digest);
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 1, 'the HEAD\'s fill served the GET');
});

t.test('one client over COVE_MAX_FILLS_PER_CLIENT gets 429 TOOMANYREQUESTS with Retry-After while another client still pulls', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [MiB, MiB, MiB, MiB], seed: 'per-client' });
  origin.putImage('proj/pc', '1', image);
  const [a, b, c, d] = image.layers as [typeof image.layers[0], typeof image.layers[0], typeof image.layers[0], typeof image.layers[0]];
  origin.setFault({ digest: a.digest }, { type: 'slow', bytesPerSecond: 256 * 1024 });
  origin.setFault({ digest: b.digest }, { type: 'slow', bytesPerSecond: 256 * 1024 });
  const cove = await startTestCove(t, origin.url, { COVE_MAX_FILLS_PER_CLIENT: '2', COVE_FILL_QUEUE_WAIT: '0s' });
  const blob = (digest: string) => `${cove.url}/v2/proj/pc/blobs/${digest}`;

  const held = [openGet(blob(a.digest)), openGet(blob(b.digest))];
  t.same(await Promise.all(held.map((h) => h.answered)), [200, 200], 'two fills for the first client');
  t.teardown(() => held.forEach((h) => h.cut()));

  const refused = await getFrom(blob(c.digest), '127.0.0.1');
  t.not(refused, 'broken');
  if (refused === 'broken') return;
  t.equal(refused.status, 429, 'a third cold blob for the same client is refused');
  t.equal(refused.headers['retry-after'], '5');
  t.match(refused.headers['content-type'], /application\/json/);
  const body = JSON.parse(refused.body.toString()) as { errors: Array<{ code: string; message: string }> };
  t.equal(body.errors[0]?.code, 'TOOMANYREQUESTS');
  t.match(body.errors[0]?.message, /COVE_MAX_FILLS_PER_CLIENT/);
  t.equal(origin.count({ method: 'GET', kind: 'blob', digest: c.digest }), 0, 'the refused blob was never asked upstream');

  const joined = getFrom(blob(a.digest), '127.0.0.1');
  const other = await getFrom(blob(d.digest), '127.0.0.2');
  t.not(other, 'broken');
  if (other !== 'broken') {
    t.equal(other.status, 200, 'another client pulls meanwhile');
    t.equal(sha256(other.body), d.digest);
  }
  const j = await joined;
  t.ok(j !== 'broken' && j.status === 200 && sha256(j.body) === a.digest, 'joining a running fill is never refused');
  t.equal(cove.counters.fillsRefused, 1);
});

t.test('over the overall cap a request waits for a slot (COVE_FILL_QUEUE_WAIT) and is served once one frees', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [MiB, MiB, MiB], seed: 'queue' });
  origin.putImage('proj/q', '1', image);
  const [a, b, c] = image.layers as [typeof image.layers[0], typeof image.layers[0], typeof image.layers[0]];
  for (const l of [a, b]) origin.setFault({ digest: l.digest }, { type: 'slow', bytesPerSecond: 2 * MiB });
  const cove = await startTestCove(t, origin.url, { COVE_MAX_FILLS: '2', COVE_MAX_FILLS_PER_CLIENT: '2', COVE_FILL_QUEUE_WAIT: '10s' });
  const blob = (digest: string) => `${cove.url}/v2/proj/q/blobs/${digest}`;

  const started = Date.now();
  const first = [getFrom(blob(a.digest), '127.0.0.1'), getFrom(blob(b.digest), '127.0.0.2')];
  // The third blob is not slowed down: only the wait for a slot can make it take long.
  await new Promise((r) => setTimeout(r, 100));
  let thirdMs = 0;
  const third = getFrom(blob(c.digest), '127.0.0.3').then((r) => {
    thirdMs = Date.now() - started;
    return r;
  });
  const [ra, rb, rc] = await Promise.all([...first, third]);
  for (const [r, l] of [[ra, a], [rb, b], [rc, c]] as const) t.ok(r !== 'broken' && r.status === 200 && sha256(r.body) === l.digest, `${l.digest.slice(7, 19)} served`);
  t.ok(thirdMs >= 400, `the third waited for a slot (${thirdMs} ms)`);
  t.equal(cove.counters.fillsRefused, 0);
});

t.test('a client pulling a 40-layer image, every layer at once (ctr without a download limit), never meets the default caps', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: Array.from({ length: 40 }, (_, i) => 100_000 + i * 5_000), seed: 'many-layers' });
  origin.putImage('proj/many', '1', image);
  const cove = await startTestCove(t, origin.url);
  const manifest = await fetchAll(`${cove.url}/v2/proj/many/manifests/1`, { headers: { accept: image.mediaType } });
  t.equal(manifest.status, 200);
  // dockerd: 3 at a time; podman and skopeo: 6; ctr: all of them.
  const results = await Promise.all([image.configDigest, ...image.layers.map((l) => l.digest)].map((d) => fetchAll(`${cove.url}/v2/proj/many/blobs/${d}`)));
  t.ok(results.every((r) => r.status === 200), 'every blob 200');
  t.same(results.map((r) => sha256(r.body)), [image.configDigest, ...image.layers.map((l) => l.digest)], 'every blob right');
  t.equal(cove.counters.fillsRefused, 0, 'nothing refused');
  t.equal(cove.counters.fillsCancelled, 0, 'nothing cancelled');
});

t.test('a prewarm fill is never cancelled: a client that joins it and leaves does not stop it', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [3 * MiB], seed: 'prewarm-kept' });
  origin.putImage('proj/pw', '1', image);
  const layer = image.layers[0]!;
  // About 3 s: longer than the grace a client's leaving would start.
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: MiB });
  const cove = await startTestCove(t, origin.url, { COVE_PREWARM: 'proj/pw:1', COVE_FILL_ABANDON_GRACE: '300ms' });
  await until('the prewarm fill started', () => origin.count({ method: 'GET', kind: 'blob', digest: layer.digest }) > 0, 5000);

  const client = openGet(`${cove.url}/v2/proj/pw/blobs/${layer.digest}`);
  t.equal(await client.answered, 200, 'a client joins the prewarm\'s fill');
  client.cut();
  await until('the blob stored', () => storedBlobs(cove.dataDir).includes(layer.digest.slice(7)), 10_000);
  t.equal(cove.counters.fillsCancelled, 0, 'not cancelled');
  t.equal(origin.count({ method: 'GET', kind: 'blob', digest: layer.digest }), 1, 'fetched once');
});
