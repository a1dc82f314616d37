// GET /metrics (Prometheus text format) and GET /readyz: the exposition agrees with /healthz after
// real pulls, follows the origin breaker, is separate per Cove in one process; readiness turns 503
// with a reason when the data directory's disk is too full or refuses writes.
import { execFileSync } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, rmSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { loadConfig } from '../../src/config.js';
import { startCove } from '../../src/main.js';
import { requireRoot } from '../e2e/real.js';
import { startTestCove } from '../helpers/cove.js';
import { fetchAll } from '../helpers/http.js';
import { makeImage } from '../helpers/images.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { ACCEPT_ALL, pullImage } from '../helpers/site.js';

interface Health {
  requests: Record<string, number>;
  bytesServed: Record<string, number>;
  bytesFetched: Record<string, number>;
  objectsFetched: Record<string, number>;
  fills: number;
  cache: { bytes: number; limit: number | null };
  activeFills: number;
}

interface Scrape {
  text: string;
  contentType: string;
  /** Sample value by `name{labels}` exactly as written (labels in prom-client's order). */
  samples: Map<string, number>;
  types: Map<string, string>;
}

// prom-client writes NaN as "Nan"; Prometheus parses these words case-insensitively (Go's ParseFloat).
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (-?(?:\d+(?:\.\d+)?(?:e[+-]?\d+)?|nan|\+inf|-inf))$/i;
const COMMENT = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/;

/** Fetches /metrics and checks every line against the text format (0.0.4). */
async function scrape(t: Test, url: string): Promise<Scrape> {
  const r = await fetchAll(`${url}/metrics`);
  t.equal(r.status, 200, 'GET /metrics answers 200');
  const text = r.body.toString();
  const samples = new Map<string, number>();
  const types = new Map<string, string>();
  const bad: string[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const comment = COMMENT.exec(line);
    if (comment) {
      if (comment[1] === 'TYPE') {
        if (!['counter', 'gauge', 'histogram', 'summary', 'untyped'].includes(comment[3]!)) bad.push(line);
        types.set(comment[2]!, comment[3]!);
      }
      continue;
    }
    const sample = SAMPLE.exec(line);
    if (!sample) {
      bad.push(line);
      continue;
    }
    const name = sample[1]!;
    const family = [name, name.replace(/_(bucket|sum|count)$/, '')].find((n) => types.has(n));
    if (family === undefined) bad.push(`${line} (no # TYPE before it)`);
    samples.set(`${name}${sample[2] ?? ''}`, Number(sample[3]));
  }
  t.same(bad, [], 'every line of /metrics is a comment or a well-formed sample');
  return { text, contentType: r.headers['content-type'] ?? '', samples, types };
}

async function health(url: string): Promise<Health> {
  return (await (await fetch(`${url}/healthz`)).json()) as Health;
}

t.test('/metrics agrees with /healthz after a cold and a warm pull, and shows the breaker opening', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [200_000, 700_000], seed: 'metrics' });
  origin.putImage('proj/app', '1', image);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h', COVE_MAX_CACHE_BYTES: '1GiB' });

  const cold = await pullImage(cove.url, 'proj/app', '1', image);
  await cove.fillsDone();
  const warm = await pullImage(cove.url, 'proj/app', '1', image);
  t.ok(cold.blobs.every((b) => b.cache.includes('fwd=miss')) && warm.blobs.every((b) => b.cache === 'cove; hit'), 'a cold pull, then a warm one');

  const m = await scrape(t, cove.url);
  const h = await health(cove.url);
  t.match(m.contentType, /^text\/plain; version=0\.0\.4/, 'Prometheus text format content type');
  t.equal(m.types.get('cove_requests_total'), 'counter');
  t.equal(m.types.get('cove_upstream_breaker_open'), 'gauge');
  for (const result of ['hit', 'miss']) {
    t.equal(m.samples.get(`cove_requests_total{result="${result}"}`), h.requests[result], `requests{result="${result}"} equals /healthz (${h.requests[result]})`);
  }
  t.equal(h.requests.hit, 4, 'four hits: the manifest and three blobs');
  t.equal(m.samples.get('cove_fetched_bytes_total{tier="origin"}'), image.totalBytes, 'bytes fetched from the origin are the image');
  t.equal(m.samples.get('cove_fetched_bytes_total{tier="origin"}'), h.bytesFetched.origin);
  t.equal(m.samples.get('cove_fetched_objects_total{tier="origin"}'), h.objectsFetched.origin);
  t.equal(m.samples.get('cove_served_bytes_total{tier="local"}'), h.bytesServed.local);
  t.equal(m.samples.get('cove_fills_total'), h.fills);
  t.equal(m.samples.get('cove_fills_total'), 3, 'one fill per blob');
  for (const name of ['cove_fill_resumes_total', 'cove_digest_mismatches_total', 'cove_stale_served_total', 'cove_disk_full_total', 'cove_evictions_total', 'cove_evicted_bytes_total']) {
    t.equal(m.samples.get(name), 0, `${name} is exposed`);
  }
  t.equal(m.samples.get('cove_cache_bytes'), h.cache.bytes, 'cache size equals /healthz');
  t.equal(m.samples.get('cove_cache_limit_bytes'), 1024 ** 3, 'cache limit');
  t.equal(m.samples.get('cove_active_fills'), 0);
  t.equal(m.samples.get('cove_peers_live'), 0, 'no peers configured');
  t.equal(m.samples.get('cove_upstream_breaker_open{upstream="origin"}'), 0, 'origin breaker closed');
  t.equal(m.samples.get('cove_upstream_consecutive_failures{upstream="origin"}'), 0);
  t.equal(m.samples.get('cove_upstream_reachable{upstream="origin"}'), 1, 'origin reachable');
  t.equal(m.samples.get('cove_upstream_stale_while_down{upstream="origin"}'), 0);
  t.notOk(m.samples.has('cove_upstream_state_since_seconds{upstream="origin"}'), 'no state change since start: no since');
  t.notOk([...m.samples.keys()].some((k) => k.startsWith('cove_upstream_last_error{')), 'no error class before any error');
  t.ok((m.samples.get('process_resident_memory_bytes') ?? 0) > 0, 'process metrics on the per-Cove registry');
  t.ok((m.samples.get('nodejs_heap_size_used_bytes') ?? 0) > 0);

  const head = await fetchAll(`${cove.url}/metrics`, { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.body.length, 0, 'HEAD /metrics has no body');

  // The scrapes and /healthz calls above were counted as "other" when they ended: counters only grow.
  const again = await scrape(t, cove.url);
  t.ok((again.samples.get('cove_requests_total{result="other"}') ?? 0) > (m.samples.get('cove_requests_total{result="other"}') ?? 0), 'a counter moved on between scrapes');
  t.equal(again.samples.get('cove_requests_total{result="hit"}'), 4, 'and the others stayed');

  const ready = await fetchAll(`${cove.url}/readyz`);
  t.equal(ready.status, 200, '/readyz is 200 while the origin is up');

  await origin.stop();
  let open = 0;
  for (let i = 0; i < 10 && open !== 1; i++) {
    const r = await fetchAll(`${cove.url}/v2/proj/app/manifests/2`, { headers: { accept: ACCEPT_ALL } });
    t.not(r.status, 200, `pull ${i} of an uncached tag fails`);
    open = (await scrape(t, cove.url)).samples.get('cove_upstream_breaker_open{upstream="origin"}') ?? -1;
  }
  t.equal(open, 1, 'the breaker gauge flips to open');
  const down = await scrape(t, cove.url);
  t.ok((down.samples.get('cove_upstream_consecutive_failures{upstream="origin"}') ?? 0) >= 3, 'consecutive failures counted');
  t.equal(down.samples.get('cove_upstream_breaker_opened_total{upstream="origin"}'), 1, 'opened once');
  t.equal(down.samples.get('cove_upstream_reachable{upstream="origin"}'), 0, 'unreachable');
  t.equal(down.samples.get('cove_upstream_last_error{upstream="origin",class="refused"}'), 1, 'the last error class: refused');
  const since = down.samples.get('cove_upstream_state_since_seconds{upstream="origin"}') ?? 0;
  t.ok(since > Date.now() / 1000 - 60 && since <= Date.now() / 1000, `marked down since ${since}`);
  t.ok((down.samples.get('cove_upstream_last_error_timestamp_seconds{upstream="origin"}') ?? 0) >= since - 5, 'when the last error was');
  t.equal((await health(cove.url)).requests.hit, 4, 'hits unchanged');

  const stillReady = await fetchAll(`${cove.url}/readyz`);
  t.equal(stillReady.status, 200, 'an open origin breaker does not make Cove unready: it still serves its cache');
  t.equal(JSON.parse(stillReady.body.toString()).upstreams.origin.state, 'open', '/readyz reports the breaker');
  const warmAgain = await pullImage(cove.url, 'proj/app', '1', image);
  t.equal(warmAgain.blobs.filter((b) => b.cache === 'cove; hit').length, 3, 'cached blobs are still served');
  const after = await scrape(t, cove.url);
  t.equal(after.samples.get('cove_upstream_stale_while_down{upstream="origin"}'), after.samples.get('cove_stale_served_total'), 'stale answers while down counted for the origin');
});

t.test('two Coves in one process have their own metrics', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [50_000], seed: 'metrics-two' });
  origin.putImage('proj/two', '1', image);
  const a = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-a' });
  const b = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-b' });

  await pullImage(a.url, 'proj/two', '1', image);
  await a.fillsDone();
  await pullImage(a.url, 'proj/two', '1', image);
  const ma = await scrape(t, a.url);
  const mb = await scrape(t, b.url);
  t.equal(ma.samples.get('cove_requests_total{result="hit"}'), 3, 'A counted its hits');
  t.equal(ma.samples.get('cove_fetched_bytes_total{tier="origin"}'), image.totalBytes, 'A fetched the image');
  t.equal(mb.samples.get('cove_requests_total{result="hit"}'), undefined, 'B has no hits');
  t.equal(mb.samples.get('cove_fetched_bytes_total{tier="origin"}'), undefined, 'B fetched nothing');
  t.equal(mb.samples.get('cove_fills_total'), 0);
  t.ok(ma.text.includes('node="node-a"') && !ma.text.includes('node="node-b"'), 'cove_info names A on A');
  t.ok(mb.text.includes('node="node-b"') && !mb.text.includes('node="node-a"'), 'and B on B');
  t.ok(mb.samples.has('process_resident_memory_bytes'), 'both registries carry the process metrics (no duplicate-registration error)');
});

t.test('/readyz: ready normally; 503 with a reason below the free-space floor', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const cove = await startTestCove(t, origin.url);
  const r = await fetchAll(`${cove.url}/readyz`);
  t.equal(r.status, 200);
  const body = JSON.parse(r.body.toString());
  t.equal(body.status, 'ready');
  t.equal(body.disk.writable, true);
  t.ok(body.disk.freeBytes > 0, `free bytes reported (${body.disk.freeBytes})`);
  t.equal(body.disk.fullRecently, false);
  t.equal(body.upstreams.origin.state, 'closed');
  t.equal(r.headers['cache-control'], 'no-store');
  t.equal((await fetchAll(`${cove.url}/readyz`, { method: 'HEAD' })).status, 200, 'HEAD /readyz');

  // The floor is min(100 MiB, 1 % of the file system); an internal option raises it past any disk.
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-ready-'));
  const config = loadConfig({ env: { COVE_LISTEN: '127.0.0.1:0', COVE_DATA_DIR: dataDir, COVE_UPSTREAM: origin.url, COVE_SHUTDOWN_GRACE: '1s' } });
  const strict = await startCove(config, { log: pino({ level: 'silent' }), readiness: { minFreeBytes: Number.MAX_SAFE_INTEGER, minFreeRatio: 2 } });
  t.teardown(async () => {
    await strict.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const low = await fetchAll(`${strict.url}/readyz`);
  t.equal(low.status, 503, 'not ready below the floor');
  const lowBody = JSON.parse(low.body.toString());
  t.equal(lowBody.status, 'not ready');
  t.match(lowBody.reasons, [/bytes free, below the minimum/]);
  t.equal((await fetchAll(`${strict.url}/healthz`)).status, 200, '/healthz (liveness) is still 200');
});

t.test('/readyz on a full tmpfs: 503, not writable and below the floor; ready again once space is freed', async (t) => {
  if (!requireRoot(t, 'mounting a small tmpfs as the data directory')) return;
  const dir = mkdtempSync(join(tmpdir(), 'cove-ready-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=2m', 'cove-ready-full', dir]);
  t.teardown(() => {
    execFileSync('umount', [dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const cove = await startTestCove(t, origin.url, {}, { dataDir: join(dir, 'data'), keepData: true });
  t.equal((await fetchAll(`${cove.url}/readyz`)).status, 200, 'ready on an empty 2 MiB tmpfs');

  const filler = join(dir, 'filler');
  const fd = openSync(filler, 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  try {
    for (;;) writeSync(fd, chunk);
  } catch (err) {
    t.equal((err as NodeJS.ErrnoException).code, 'ENOSPC', 'the tmpfs is full');
  } finally {
    closeSync(fd);
  }
  const full = await fetchAll(`${cove.url}/readyz`);
  t.equal(full.status, 503, 'not ready on a full disk');
  const body = JSON.parse(full.body.toString());
  t.equal(body.disk.writable, false);
  t.match(body.reasons, [/below the minimum/, /not writable: ENOSPC/]);

  unlinkSync(filler);
  t.equal((await fetchAll(`${cove.url}/readyz`)).status, 200, 'ready again once space is freed');
});
