// Every way the origin can fail, one by one: a cached tag is still served (stale, marked, logged
// and counted) and an uncached one gets a fast, clear OCI error.
import t, { type Test } from 'tap';
import { OriginRegistry, type Fault } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';

const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json';

interface Case {
  name: string;
  /** Breaks the origin after the tag is cached; may return another Cove to ask. */
  breakIt: (origin: OriginRegistry, cove: TestCove, t: Test) => Promise<TestCove | void>;
  uncachedStatus: number;
  uncachedCode: string;
  auth?: 'bearer';
}

const fault = (f: Fault, kind?: 'manifest' | 'token') => async (origin: OriginRegistry) => origin.setFault(kind ? { kind } : {}, f);

const cases: Case[] = [
  { name: 'connection refused', breakIt: async (origin) => origin.stop(), uncachedStatus: 503, uncachedCode: 'UPSTREAM_UNAVAILABLE' },
  { name: 'no response headers (black hole)', breakIt: fault({ type: 'blackhole' }), uncachedStatus: 503, uncachedCode: 'UPSTREAM_UNAVAILABLE' },
  { name: 'origin 503', breakIt: fault({ type: 'status', status: 503 }, 'manifest'), uncachedStatus: 503, uncachedCode: 'UPSTREAM_UNAVAILABLE' },
  { name: 'origin 429', breakIt: fault({ type: 'status', status: 429, retryAfter: 30 }, 'manifest'), uncachedStatus: 503, uncachedCode: 'UPSTREAM_UNAVAILABLE' },
  {
    name: 'TLS failure (the origin does not speak TLS)',
    breakIt: async (origin, cove, t) => {
      await cove.stop();
      return startTestCove(t, origin.url.replace('http:', 'https:'), { COVE_TAG_TTL: '1ms', COVE_UPSTREAM_TIMEOUT: '1s' }, { dataDir: cove.dataDir });
    },
    uncachedStatus: 503,
    uncachedCode: 'UPSTREAM_UNAVAILABLE',
  },
  {
    name: 'token endpoint down while the registry is up',
    auth: 'bearer',
    breakIt: async (origin) => {
      origin.setFault({ kind: 'token' }, { type: 'status', status: 503 });
      await new Promise((r) => setTimeout(r, 1100)); // the cached token (expires_in 1 s) runs out
    },
    uncachedStatus: 503,
    uncachedCode: 'UPSTREAM_UNAVAILABLE',
  },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    const origin = await OriginRegistry.start(c.auth ? { auth: c.auth, username: 'edge', password: 'pw', tokenExpiresIn: 1 } : {});
    t.teardown(() => origin.close());
    const image = makeImage({ layers: [1000], seed: `outage-${c.name}` });
    origin.putImage('proj/app', '1', image);
    const creds: Record<string, string> = c.auth ? { COVE_UPSTREAM_USERNAME: 'edge', COVE_UPSTREAM_PASSWORD: 'pw' } : {};
    let cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1ms', COVE_UPSTREAM_TIMEOUT: '1s', ...creds }, { keepData: true });
    t.teardown(() => import('node:fs').then((fs) => fs.rmSync(cove.dataDir, { recursive: true, force: true })));
    const first = await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } });
    t.equal(first.status, 200, 'cached while the origin works');

    cove = (await c.breakIt(origin, cove, t)) ?? cove;
    await new Promise((r) => setTimeout(r, 5));
    const started = Date.now();
    const stale = await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT } });
    t.equal(stale.status, 200, 'the cached tag is served');
    t.equal(sha256(stale.body), image.manifestDigest);
    t.equal(stale.headers['cache-status'], 'cove; hit; detail=stale');
    t.equal(stale.headers['warning'], '110 - "Response is Stale"');
    t.equal(cove.counters.staleServed, 1, 'counted');
    t.ok(Date.now() - started < 2500, `within the upstream timeout (${Date.now() - started} ms)`);

    const uncachedStart = Date.now();
    const uncached = await fetchAll(`${cove.url}/v2/proj/app/manifests/2`, { headers: { accept: ACCEPT } });
    t.equal(uncached.status, c.uncachedStatus, 'uncached: a clear status');
    t.equal(uncached.headers['content-type'], 'application/json');
    t.equal(JSON.parse(uncached.body.toString()).errors[0].code, c.uncachedCode);
    t.notMatch(uncached.body.toString(), /at .*\.js:\d+|goroutine/, 'no stack trace');
    t.ok(Date.now() - uncachedStart < 2500, `fast (${Date.now() - uncachedStart} ms)`);
  });
}
