// tags/list and referrers answers kept in the index: served stale when the origin answers
// 5xx or 429 (as when it cannot be reached), passed through as errors when nothing is kept;
// bounded in number and bytes, and counted in the cached-bytes figure.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Level } from 'level';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

const STATUSES = [502, 503, 429];

t.test('listings served stale on 5xx/429: the kept answer, marked stale, for each status and kind', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100], seed: 'listings-stale' });
  for (const tag of ['a', 'b', 'c']) origin.putImage('proj/app', tag, image);
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_TIMEOUT: '1s' });
  const urls = {
    tags: `${cove.url}/v2/proj/app/tags/list?n=2`,
    referrers: `${cove.url}/v2/proj/app/referrers/${image.manifestDigest}`,
  } as const;
  const live = { tags: await fetchAll(urls.tags), referrers: await fetchAll(urls.referrers) };
  t.equal(live.tags.status, 200);
  t.equal(live.referrers.status, 200);

  for (const kind of ['tags', 'referrers'] as const) {
    for (const status of STATUSES) {
      origin.clearFaults();
      origin.setFault({ kind }, { type: 'status', status });
      const asked = origin.count({ kind });
      const r = await fetchAll(urls[kind]);
      t.equal(origin.count({ kind }), asked + 1, `${kind} ${status}: the origin was asked`);
      t.equal(r.status, 200, `${kind} ${status}: the kept answer, not the error`);
      t.same(r.body, live[kind].body, `${kind} ${status}: same bytes as the live answer`);
      t.equal(r.headers['cache-status'], 'cove; hit; detail=stale', `${kind} ${status}: marked stale`);
      t.equal(r.headers['warning'], '110 - "Response is Stale"');
    }
  }
  origin.clearFaults();
});

t.test('listings on 5xx/429 with nothing kept: the error reaches the client, 429 with a Retry-After', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100], seed: 'listings-error' });
  origin.putImage('proj/app', 'a', image);
  for (const kind of ['tags', 'referrers'] as const) {
    // A Cove per kind: a 429 with Retry-After makes the breaker hold the upstream off, so the
    // 429 case comes last and the next kind starts with a fresh breaker.
    const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_TIMEOUT: '1s' });
    const url = kind === 'tags' ? `${cove.url}/v2/proj/app/tags/list?n=5` : `${cove.url}/v2/proj/app/referrers/${image.manifestDigest}`;
    for (const status of STATUSES) {
      origin.clearFaults();
      origin.setFault({ kind }, { type: 'status', status, ...(status === 429 ? { retryAfter: 7 } : {}) });
      const asked = origin.count({ kind });
      const r = await fetchAll(url);
      t.equal(origin.count({ kind }), asked + 1, `${kind} ${status}: the origin was asked`);
      t.equal(r.status, status, `${kind} ${status}: the upstream's status`);
      t.not(r.headers['cache-status'], 'cove; hit; detail=stale', `${kind} ${status}: nothing stale`);
      t.match(r.headers['content-type'] ?? '', /json/, `${kind} ${status}: an error body a client can parse`);
      if (status === 429) t.equal(r.headers['retry-after'], '7', `${kind} 429: the upstream's Retry-After`);
    }
  }
  origin.clearFaults();
});

t.test('2,000 distinct tags/list queries: at most 1,000 kept, their bytes in the cache figure, a dropped one simply asked again', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100], seed: 'listings-cap' });
  for (const tag of ['a', 'b', 'c']) origin.putImage('proj/app', tag, image);
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_TIMEOUT: '1s' }, { keepData: true });
  t.teardown(() => rmSync(cove.dataDir, { recursive: true, force: true }));
  const url = (n: number) => `${cove.url}/v2/proj/app/tags/list?n=${n}`;
  for (let n = 1; n <= 2000; n++) {
    const r = await fetchAll(url(n));
    if (r.status !== 200) t.fail(`n=${n}: ${r.status}`);
  }
  t.equal(origin.count({ kind: 'tags' }), 2000);

  // The newest is kept (stale on a 502); the oldest was dropped: the error, as for one never asked.
  origin.setFault({ kind: 'tags' }, { type: 'status', status: 502 });
  t.equal((await fetchAll(url(2000))).headers['cache-status'], 'cove; hit; detail=stale', 'the newest listing is kept');
  t.equal((await fetchAll(url(1))).status, 502, 'the oldest listing was dropped');
  origin.clearFaults();
  const asked = origin.count({ kind: 'tags' });
  const again = await fetchAll(url(1));
  t.equal(again.status, 200, 'a dropped listing is simply asked again');
  t.equal(again.headers['cache-status'], 'cove; fwd=bypass');
  t.equal(origin.count({ kind: 'tags' }), asked + 1);
  const health = (await (await fetch(`${cove.url}/healthz`)).json()) as { cache: { bytes: number } };
  await cove.stop();

  const db = new Level<string, unknown>(join(cove.dataDir, 'index'), { valueEncoding: 'json' });
  await db.open();
  let count = 0;
  let bytes = 0;
  let hasFirst = false;
  for await (const [k, v] of db.iterator({ gte: 'list\0', lt: 'list\x01' })) {
    count++;
    bytes += Buffer.byteLength(k) + Buffer.byteLength(JSON.stringify(v));
    if (k.endsWith('\0n=1&last=')) hasFirst = true;
  }
  await db.close();
  t.ok(count <= 1000, `${count} listings in the index, at most 1,000`);
  t.ok(hasFirst, 'the one asked again is kept again');
  // No blob was pulled: the whole figure is listings.
  t.ok(bytes > 0);
  t.equal(health.cache.bytes, bytes, 'the cached-bytes figure is the bytes of the listings in the index');
});
