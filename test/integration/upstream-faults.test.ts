// What clients see when the origin misbehaves: rate limits, server errors, an origin that accepts
// connections and never answers, and a body that stalls half-way.
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json';

t.test('origin 429: the client gets 503 with the origin Retry-After (the origin limits Cove, not this client)', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', makeImage({ layers: [100], seed: '429' }));
  origin.setFault({ kind: 'manifest' }, { type: 'status', status: 429, retryAfter: 7 }, 1);
  const cove = await startTestCove(t, origin.url);
  const r = await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } });
  t.equal(r.status, 503);
  t.equal(r.headers['retry-after'], '7');
  const error = JSON.parse(r.body.toString()).errors[0];
  t.equal(error.code, 'UPSTREAM_UNAVAILABLE');
  t.match(error.message, /rate-limiting Cove \(429\)/, 'says the origin is rate-limiting');
  t.same(error.detail, { upstream: 'origin', status: 429 });
  const again = await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } });
  t.equal(again.status, 503, 'within Retry-After Cove does not ask again');
  t.ok(Number(again.headers['retry-after']) > 0 && Number(again.headers['retry-after']) <= 7, `and says how long is left (${again.headers['retry-after']} s)`);
  t.equal(origin.count({ kind: 'manifest' }), 1, 'the origin saw one request');
});

t.test('origin 429 with a short Retry-After: requests resume after it', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', makeImage({ layers: [100], seed: '429-short' }));
  origin.setFault({ kind: 'manifest' }, { type: 'status', status: 429, retryAfter: 1 }, 1);
  const cove = await startTestCove(t, origin.url);
  t.equal((await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } })).status, 503);
  await new Promise((r) => setTimeout(r, 1100));
  t.equal((await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } })).status, 200, 'served once the wait is over');
});

t.test('origin 500 on a blob: 503 OCI JSON with Retry-After, nothing stored', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [10_000], seed: '500' });
  origin.putImage('proj/app', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'status', status: 500 }, 1);
  const cove = await startTestCove(t, origin.url);
  const url = `${cove.url}/v2/proj/app/blobs/${layer.digest}`;
  const r = await fetchAll(url);
  t.equal(r.status, 503);
  t.equal(r.headers['retry-after'], '5');
  t.equal(r.headers['content-type'], 'application/json');
  t.notMatch(r.body.toString(), /at .*\.js:\d+/, 'no stack trace');
  const ok = await fetchAll(url);
  t.equal(sha256(ok.body), layer.digest, 'a later request fills normally');
  t.equal(ok.headers['cache-status'], 'cove; fwd=miss; stored', 'the failed attempt left nothing in the cache');
});

t.test('an origin that accepts and never answers: 503 within the upstream timeout', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', makeImage({ layers: [100], seed: 'blackhole' }));
  origin.setFault({ kind: 'manifest' }, { type: 'blackhole' });
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_TIMEOUT: '1s' });
  const started = Date.now();
  const r = await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } });
  const ms = Date.now() - started;
  t.equal(r.status, 503);
  t.equal(JSON.parse(r.body.toString()).errors[0].code, 'UPSTREAM_UNAVAILABLE');
  t.ok(ms >= 900 && ms < 4000, `answered after the 1 s timeout, not a hang (${ms} ms)`);
});

t.test('a body that stalls mid-blob is resumed with Range after the body timeout', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [600_000], seed: 'stall' });
  origin.putImage('proj/app', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'stall', afterBytes: 200_000 }, 1);
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_BODY_TIMEOUT: '1s' });
  const r = await fetchAll(`${cove.url}/v2/proj/app/blobs/${layer.digest}`);
  t.equal(r.status, 200);
  t.equal(sha256(r.body), layer.digest, 'whole and correct');
  const gets = origin.requests.filter((q) => q.method === 'GET' && q.kind === 'blob');
  t.equal(gets.length, 2, 'one stalled transfer, one resume');
  t.equal(gets[1]!.range, 'bytes=200000-', 'resumed from the first missing byte');
  await cove.fillsDone();
  t.equal(cove.counters.resumes, 1);
});
