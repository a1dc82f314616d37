// tags/list and referrers answers kept in the index: served stale when the origin answers
// 5xx or 429 (as when it cannot be reached), passed through as errors when nothing is kept.
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
      // The tier keeps only Content-Type and Link of a listing answer, so the upstream's own
      // value cannot reach here yet; the client must still be told to wait, in seconds.
      if (status === 429) t.match(r.headers['retry-after'] ?? '', /^\d+$/, `${kind} 429: a Retry-After`);
    }
  }
  origin.clearFaults();
});
