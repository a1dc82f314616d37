// Recovery without a herd. A site's nodes all hold the same tags; during an outage every one of
// them goes stale. When the origin comes back, the first pulls would revalidate every tag on every
// node in the same instant: N nodes × M tags at once. Revalidations of one tag are merged (one
// per tag record), and those of many tags are paced (COVE_REVALIDATE_CONCURRENCY at once, spread
// at random over COVE_RECOVERY_SPREAD after the recovery), so each node costs the origin about M
// requests, spread out. Measured here against the same run with the pacing off.
import type { LookupFunction } from 'node:net';
import t, { type Test } from 'tap';
import { OriginRegistry, type RecordedRequest } from '../helpers/origin-registry.js';
import { makeImage, type Image } from '../helpers/images.js';
import { fetchAll, sha256, type FetchResult } from '../helpers/http.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';

const N = 4;
const M = 25;
/** Tags the origin moves during the outage: their revalidations also fetch the new manifest. */
const MOVED = 5;
const TTL_MS = 3000;
const SPREAD_MS = 3000;
const CONCURRENCY = 8;
const WINDOW_MS = 250;
const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json';

/** Every node reaches the one origin under a name of its own, so the origin can tell who asked. */
const originLookup: LookupFunction = (_hostname, options, callback) => {
  const cb = callback as (err: Error | null, address: string | Array<{ address: string; family: number }>, family?: number) => void;
  if ((options as { all?: boolean }).all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
  else cb(null, '127.0.0.1', 4);
};

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface HerdRun {
  /** Manifest HEADs each node sent after the recovery. */
  headsPerNode: number[];
  /** Manifest GETs each node sent after the recovery (the moved tags). */
  getsPerNode: number[];
  /** Most origin requests in any 250 ms after the recovery. */
  peak: number;
  /** Between each node's first and last HEAD after the recovery, ms. */
  spanPerNode: number[];
  /** From the last node's recovery until every tag on every node was fresh, ms. */
  freshAfterMs: number;
}

/** The largest number of requests whose arrival falls in one window of `ms`. */
function peakIn(requests: readonly RecordedRequest[], ms: number): number {
  const times = requests.map((r) => r.at).sort((a, b) => a - b);
  let peak = 0;
  let first = 0;
  for (let last = 0; last < times.length; last++) {
    while (times[last]! - times[first]! >= ms) first++;
    peak = Math.max(peak, last - first + 1);
  }
  return peak;
}

async function herd(t: Test, env: Record<string, string>): Promise<HerdRun> {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const tags = Array.from({ length: M }, (_, i) => `t${i}`);
  const v1 = new Map<string, Image>();
  const v2 = new Map<string, Image>();
  for (const [i, tag] of tags.entries()) {
    v1.set(tag, makeImage({ layers: [64], seed: `herd-${tag}-v1` }));
    if (i < MOVED) v2.set(tag, makeImage({ layers: [64], seed: `herd-${tag}-v2` }));
    origin.putImage('proj/app', tag, v1.get(tag)!);
  }
  const hosts = Array.from({ length: N }, (_, i) => `node-${i}.origin.test:${origin.port}`);
  const coves: TestCove[] = [];
  for (const [i, host] of hosts.entries()) {
    coves.push(await startTestCove(t, `http://${host}`, { COVE_NODE_ID: `node-${i}`, COVE_TAG_TTL: `${TTL_MS}ms`, COVE_REVALIDATE_DEADLINE: '1s', ...env }, { lookup: originLookup }));
  }
  const pullAll = () =>
    Promise.all(coves.flatMap((cove, node) => tags.map(async (tag) => ({ node, tag, r: await fetchAll(`${cove.url}/v2/proj/app/manifests/${tag}`, { headers: { accept: ACCEPT } }) }))));
  const states = async () => Promise.all(coves.map(async (cove) => ((await (await fetch(`${cove.url}/healthz`)).json()) as { upstreams: Record<string, { state: string }> }).upstreams.origin!.state));

  // Every tag cached on every node, then older than the TTL.
  const cached = await pullAll();
  t.ok(cached.every(({ tag, r }) => r.status === 200 && sha256(r.body) === v1.get(tag)!.manifestDigest), `${N * M} pulls cached`);
  await sleep(TTL_MS + 200);

  // The outage: connections refused. The origin moves some tags meanwhile.
  await origin.stop();
  for (const [tag, image] of v2) origin.putImage('proj/app', tag, image);
  const down = await pullAll();
  t.ok(down.every(({ tag, r }) => r.status === 200 && sha256(r.body) === v1.get(tag)!.manifestDigest && r.headers['cache-status'] === 'cove; hit; detail=stale'), 'during the outage every pull is served stale, the cached bytes');
  t.same(await states(), Array(N).fill('open'), 'every node marked the origin down');

  // The origin comes back; each node's probe finds it.
  const mark = origin.requests.length;
  await origin.restart();
  for (let i = 0; i < 300 && (await states()).some((s) => s !== 'closed'); i++) await sleep(50);
  t.same(await states(), Array(N).fill('closed'), 'every node saw the origin come back');
  const since = () => origin.requests.slice(mark);
  const recoveredAt = hosts.map((host) => since().find((r) => r.host === host && r.kind === 'base' && r.status === 200)?.at ?? Date.now());
  const lastRecovery = Math.max(...recoveredAt);

  // The herd: every tag on every node at once.
  const herdPulls = await pullAll();
  const rightBytes = (tag: string, r: FetchResult) => {
    const digest = sha256(r.body);
    return r.status === 200 && (digest === v1.get(tag)!.manifestDigest || digest === v2.get(tag)?.manifestDigest) && (v2.has(tag) || digest === v1.get(tag)!.manifestDigest);
  };
  t.ok(herdPulls.every(({ tag, r }) => rightBytes(tag, r)), 'every pull after the recovery got 200 and a manifest the tag held (the cached one, or the moved one)');
  const stale = herdPulls.filter(({ r }) => r.headers['cache-status'] === 'cove; hit; detail=stale').length;

  // The revalidations finish (every node asks about every tag once, and fetches the moved ones).
  const perNode = (method: string) => hosts.map((host) => since().filter((r) => r.host === host && r.kind === 'manifest' && r.method === method).length);
  for (let i = 0; i < 200 && (perNode('HEAD').some((n) => n < M) || perNode('GET').some((n) => n < MOVED)); i++) await sleep(50);
  await sleep(300);
  const after = since();
  const headsPerNode = perNode('HEAD');
  const getsPerNode = perNode('GET');
  const peak = peakIn(after, WINDOW_MS);
  const spanPerNode = hosts.map((host) => {
    const heads = after.filter((r) => r.host === host && r.kind === 'manifest' && r.method === 'HEAD').map((r) => r.at);
    return heads.length === 0 ? 0 : Math.max(...heads) - Math.min(...heads);
  });

  // Fresh again: hit or revalidated, with the moved tags' new bytes.
  let freshAfterMs = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 50; i++) {
    const pulls = await pullAll();
    const fresh = pulls.every(({ tag, r }) => {
      const status = r.headers['cache-status'];
      return r.status === 200 && sha256(r.body) === (v2.get(tag) ?? v1.get(tag)!).manifestDigest && (status === 'cove; hit' || status === 'cove; hit; detail=revalidated');
    });
    if (fresh) {
      freshAfterMs = Date.now() - lastRecovery;
      break;
    }
    await sleep(100);
  }
  t.comment(`${JSON.stringify(env)}: HEADs per node ${headsPerNode.join('/')}, GETs per node ${getsPerNode.join('/')}, peak ${peak} requests in ${WINDOW_MS} ms, HEAD span per node ${spanPerNode.join('/')} ms, ${stale} of ${N * M} herd pulls stale, fresh ${freshAfterMs} ms after recovery (recoveries ${recoveredAt.map((at) => at - Math.min(...recoveredAt)).join('/')} ms apart)`);
  t.ok(headsPerNode.every((n) => n >= M && n <= M + 2), `merged: about one HEAD per tag per node (${headsPerNode.join('/')}; M = ${M})`);
  t.ok(getsPerNode.every((n) => n >= MOVED && n <= MOVED + 2), `the moved tags fetched once per node (${getsPerNode.join('/')})`);
  t.ok(freshAfterMs <= SPREAD_MS + TTL_MS, `every tag fresh within spread + TTL of the recovery (${freshAfterMs} ms)`);
  return { headsPerNode, getsPerNode, peak, spanPerNode, freshAfterMs };
}

let paced: HerdRun | null = null;
let unpaced: HerdRun | null = null;

t.test(`paced: ${N} nodes × ${M} tags come back over ${SPREAD_MS} ms, ${CONCURRENCY} at once per node`, async (t) => {
  paced = await herd(t, { COVE_RECOVERY_SPREAD: `${SPREAD_MS}ms`, COVE_REVALIDATE_CONCURRENCY: String(CONCURRENCY) });
  t.ok(paced.peak <= N * CONCURRENCY, `peak ${paced.peak} requests in ${WINDOW_MS} ms, at most nodes × concurrency (${N * CONCURRENCY})`);
  t.ok(paced.spanPerNode.every((ms) => ms >= 500), `each node's HEADs spread out (${paced.spanPerNode.join('/')} ms from first to last)`);
});

t.test('unpaced (COVE_RECOVERY_SPREAD=0, no concurrency bound to speak of): the herd', async (t) => {
  unpaced = await herd(t, { COVE_RECOVERY_SPREAD: '0', COVE_REVALIDATE_CONCURRENCY: '1000' });
});

t.test('pacing cuts the peak the origin sees after a recovery', async (t) => {
  t.ok(paced && unpaced, 'both runs measured');
  if (!paced || !unpaced) return;
  const p: HerdRun = paced;
  const u: HerdRun = unpaced;
  t.comment(`peak origin requests in ${WINDOW_MS} ms after recovery: paced ${p.peak}, unpaced ${u.peak} (N × M = ${N * M})`);
  t.ok(p.peak * 2 <= u.peak, `paced peak ${p.peak} at most half the unpaced ${u.peak}`);
});
