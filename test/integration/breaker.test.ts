// An origin that accepts connections and never answers: one timed-out attempt is enough for Cove
// to mark it down and answer from its cache at once; when the origin is back, a probe notices.
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json';

t.test('black-holed origin: stale within the timeout, then at once; a probe closes the breaker', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1000], seed: 'breaker' });
  origin.putImage('proj/app', '1', image);
  // The upstream timeout itself is under test: no revalidation deadline to race it
  // (revalidate-deadline.test.ts has that path).
  const cove = await startTestCove(t, origin.url, { COVE_UPSTREAM_TIMEOUT: '500ms', COVE_TAG_TTL: '1ms', COVE_REVALIDATE_DEADLINE: '0' });
  const url = `${cove.url}/v2/proj/app/manifests/1`;
  t.equal((await fetchAll(url, { headers: { accept: ACCEPT } })).status, 200, 'cached while the origin is up');

  origin.setFault({}, { type: 'blackhole' });
  const timings: number[] = [];
  for (let i = 0; i < 6; i++) {
    const started = Date.now();
    const r = await fetchAll(url, { headers: { accept: ACCEPT } });
    timings.push(Date.now() - started);
    t.equal(r.status, 200, `pull ${i} served`);
    t.equal(r.headers['cache-status'], 'cove; hit; detail=stale', `pull ${i} stale`);
    t.equal(sha256(r.body), image.manifestDigest);
  }
  t.ok(timings[0]! >= 400 && timings[0]! < 2000, `the first waits for the 500 ms timeout (${timings.join(', ')} ms)`);
  t.ok(timings.slice(1).every((ms) => ms < 150), `one timeout marks the origin down: no more waits (${timings.join(', ')} ms)`);
  const uncached = await fetchAll(`${cove.url}/v2/proj/app/manifests/2`, { headers: { accept: ACCEPT } });
  t.equal(uncached.status, 503, 'an uncached tag fails fast and clearly');
  t.match(JSON.parse(uncached.body.toString()).errors[0].message, /marked down/);

  const health = (await (await fetch(`${cove.url}/healthz`)).json()) as { upstreams: Record<string, { state: string }> };
  t.equal(health.upstreams.origin!.state, 'open', '/healthz shows the breaker open');

  origin.clearFaults();
  let state = 'open';
  for (let i = 0; i < 60 && state === 'open'; i++) {
    await new Promise((r) => setTimeout(r, 100));
    state = ((await (await fetch(`${cove.url}/healthz`)).json()) as typeof health).upstreams.origin!.state;
  }
  t.equal(state, 'closed', 'the probe found the origin back');
  const fresh = await fetchAll(url, { headers: { accept: ACCEPT } });
  t.equal(fresh.headers['cache-status'], 'cove; hit; detail=revalidated', 'revalidated with the origin again');
});
