// A flapping uplink: the origin (behind the link relay) is up and down every few seconds, down
// being a black hole or refused connections, while a few clients pull cached images (manifest by
// tag past its TTL, every blob, every byte checked) and new images added to the origin as they
// go. Cached pulls never fail and never wait past the revalidation deadline; an uncached pull
// well inside an up phase succeeds; one inside a down phase gets a 503 with a Retry-After; none
// hangs. Seeded and reproducible: COVE_FLAP_SEED replays a schedule, COVE_FLAP_MS sets how long
// the link flaps (default 60 s).
import t from 'tap';
import { startTestCove } from '../helpers/cove.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { makeImage, type Image } from '../helpers/images.js';
import { Link, type LinkMode } from '../helpers/link.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { ACCEPT_ALL } from '../helpers/site.js';

const SEED = Number(process.env.COVE_FLAP_SEED ?? Math.floor(Math.random() * 2 ** 31));
const FLAP_MS = Number(process.env.COVE_FLAP_MS ?? 60_000);
const CLIENTS = 3;
const CACHED_IMAGES = 4;
/** Revalidation deadline (1 s) plus a generous margin. */
const CACHED_BOUND_MS = 3000;
const UNCACHED_BOUND_MS = 4500;
/** An up phase needs this long before an uncached pull must succeed (the breaker's probe notices it). */
const SETTLE_MS = 1500;

/** xorshift32 over a seed: the schedule and the clients' choices, replayable from the seed. */
function generator(seed: number): () => number {
  let x = (seed >>> 0) || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

interface Phase {
  mode: LinkMode;
  start: number;
  end: number;
}

interface UncachedPull {
  start: number;
  end: number;
  /** 'ok' (whole image, right bytes), '503' (with a Retry-After), or what else happened. */
  outcome: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A whole pull: manifest by tag and every blob, each checked; throws on anything else but a 503. */
async function pull(url: string, repo: string, tag: string, image: Image): Promise<'ok' | '503'> {
  const m = await fetchAll(`${url}/v2/${repo}/manifests/${tag}`, { headers: { accept: ACCEPT_ALL }, timeoutMs: 15_000 });
  if (m.status === 503 && /^[1-9]\d*$/.test(m.headers['retry-after'] ?? '')) return '503';
  if (m.status !== 200) throw new Error(`manifest ${repo}:${tag}: ${m.status} ${m.body.toString().slice(0, 200)}`);
  if (sha256(m.body) !== image.manifestDigest) throw new Error(`manifest ${repo}:${tag}: wrong bytes`);
  for (const blob of [{ digest: image.configDigest }, ...image.layers]) {
    const b = await fetchAll(`${url}/v2/${repo}/blobs/${blob.digest}`, { timeoutMs: 15_000 });
    if (b.status === 503 && /^[1-9]\d*$/.test(b.headers['retry-after'] ?? '')) return '503';
    if (b.status !== 200) throw new Error(`blob ${blob.digest}: ${b.status} ${b.body.toString().slice(0, 200)}`);
    if (sha256(b.body) !== blob.digest) throw new Error(`blob ${blob.digest}: wrong bytes`);
  }
  return 'ok';
}

function quantile(sorted: number[], q: number): number {
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

t.test(`a flapping link for ${FLAP_MS} ms (seed ${SEED})`, { timeout: FLAP_MS + 60_000 }, async (t) => {
  t.comment(`COVE_FLAP_SEED=${SEED} COVE_FLAP_MS=${FLAP_MS}`);
  const random = generator(SEED);
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const link = await Link.start({ port: origin.port });
  t.teardown(() => link.close());
  const cove = await startTestCove(t, link.url(), { COVE_TAG_TTL: '200ms' });

  const cached: Image[] = [];
  for (let i = 0; i < CACHED_IMAGES; i++) {
    const image = makeImage({ layers: [30_000 + i * 1000, 2000], seed: `flap-${SEED}-cached-${i}` });
    origin.putImage(`proj/cached${i}`, '1', image);
    t.equal(await pull(cove.url, `proj/cached${i}`, '1', image), 'ok', `proj/cached${i}:1 cached while the link is up`);
    cached.push(image);
  }
  await cove.fillsDone();
  origin.resetCounters();

  // The schedule: up and down (black hole or refused) in turns, 2 to 5 s each, then up.
  const started = Date.now();
  const phases: Phase[] = [{ mode: 'up', start: started, end: Number.POSITIVE_INFINITY }];
  const stopAt = started + FLAP_MS;
  const flapper = (async () => {
    for (let i = 0; i < 1000 && Date.now() < stopAt; i++) {
      await sleep(Math.min(2000 + random() * 3000, Math.max(0, stopAt - Date.now())));
      const current = phases.at(-1)!;
      const next: LinkMode = Date.now() >= stopAt ? 'up' : current.mode === 'up' ? (random() < 0.5 ? 'blackhole' : 'refuse') : 'up';
      if (next === current.mode) continue;
      // The old phase ends before the switch, the new one begins after it: a pull that straddles a switch belongs to neither.
      current.end = Date.now();
      await link.setMode(next);
      phases.push({ mode: next, start: Date.now(), end: Number.POSITIVE_INFINITY });
    }
  })();

  const cachedMs: number[] = [];
  const cachedFailures: string[] = [];
  const uncached: UncachedPull[] = [];
  let fresh = 0;
  const client = async (id: number) => {
    for (let i = 0; i < 10_000 && Date.now() < stopAt; i++) {
      if (random() < 0.7) {
        const n = Math.floor(random() * CACHED_IMAGES);
        const begin = Date.now();
        try {
          const outcome = await pull(cove.url, `proj/cached${n}`, '1', cached[n]!);
          if (outcome !== 'ok') cachedFailures.push(`client ${id}: proj/cached${n}:1 got a 503`);
        } catch (err) {
          cachedFailures.push(`client ${id}: proj/cached${n}:1: ${(err as Error).message}`);
        }
        cachedMs.push(Date.now() - begin);
      } else {
        // A new image on the origin, in a new repository or as a new tag of a cached one.
        const k = fresh++;
        const image = makeImage({ layers: [8000 + k], seed: `flap-${SEED}-fresh-${k}` });
        const repo = k % 2 === 0 ? `proj/fresh${k}` : `proj/cached${k % CACHED_IMAGES}`;
        origin.putImage(repo, `new${k}`, image);
        const begin = Date.now();
        let outcome: string;
        try {
          outcome = await pull(cove.url, repo, `new${k}`, image);
        } catch (err) {
          outcome = (err as Error).message;
        }
        uncached.push({ start: begin, end: Date.now(), outcome });
      }
      await sleep(50 + random() * 150);
    }
  };
  await Promise.all([flapper, ...Array.from({ length: CLIENTS }, (_, id) => client(id))]);
  phases.at(-1)!.end = Date.now();

  const downs = phases.filter((p) => p.mode !== 'up').length;
  t.comment(`phases: ${phases.map((p) => `${p.mode} ${Math.round((Math.min(p.end, Date.now()) - p.start) / 100) / 10}s`).join(', ')}`);
  t.ok(downs >= 1 || FLAP_MS < 3000, `the link went down ${downs} times`);

  // Cached pulls: none failed, none waited past the deadline and margin.
  t.same(cachedFailures.slice(0, 10), [], `0 failed cached pulls (of ${cachedMs.length})`);
  const sorted = [...cachedMs].sort((a, b) => a - b);
  t.comment(`cached pulls: ${sorted.length}, p50 ${quantile(sorted, 0.5)} ms, p99 ${quantile(sorted, 0.99)} ms, max ${sorted.at(-1) ?? 0} ms`);
  t.ok((sorted.at(-1) ?? 0) <= CACHED_BOUND_MS, `every cached pull within ${CACHED_BOUND_MS} ms (max ${sorted.at(-1) ?? 0} ms)`);

  // Uncached pulls, judged by the phase they lay in.
  const phaseOf = (at: number) => phases.find((p) => p.start <= at && at < p.end);
  let mustSucceed = 0;
  let mustFail = 0;
  let straddled = 0;
  let early = 0;
  const wrong: string[] = [];
  for (const u of uncached) {
    const ms = u.end - u.start;
    if (ms >= UNCACHED_BOUND_MS) wrong.push(`an uncached pull took ${ms} ms (${u.outcome})`);
    if (u.outcome !== 'ok' && u.outcome !== '503') wrong.push(`an uncached pull ended neither whole nor 503 with Retry-After: ${u.outcome}`);
    const phase = phaseOf(u.start);
    // A pull that outlived its phase may go either way (a held connection goes through when the link comes back).
    if (!phase || u.end >= phase.end) {
      straddled++;
      continue;
    }
    if (phase.mode === 'up' && u.start - phase.start < SETTLE_MS) early++;
    if (phase.mode === 'up' && u.start - phase.start >= SETTLE_MS) {
      mustSucceed++;
      if (u.outcome !== 'ok') wrong.push(`started ${u.start - phase.start} ms into an up phase, got ${u.outcome}`);
    }
    if (phase.mode !== 'up') {
      mustFail++;
      if (u.outcome !== '503') wrong.push(`started in a ${phase.mode} phase, got ${u.outcome}`);
    }
  }
  t.same(wrong.slice(0, 10), [], `uncached pulls as their phases say (${wrong.length} wrong)`);
  const ok = uncached.filter((u) => u.outcome === 'ok').length;
  t.comment(`uncached pulls: ${uncached.length} (${ok} whole, ${uncached.filter((u) => u.outcome === '503').length} 503); judged: ${mustSucceed} inside up phases, ${mustFail} inside down phases, ${straddled} across a switch and ${early} early in an up phase (either way)`);
  t.comment(`pulls: ${cachedMs.length + uncached.length}, failures (cached): ${cachedFailures.length}, origin requests: ${origin.requests.length} (${origin.count({ kind: 'base' })} of them GET /v2/), link connections: ${link.accepted}`);
  if (FLAP_MS >= 20_000) {
    t.ok(mustSucceed >= 1, 'some uncached pulls fell well inside an up phase');
    t.ok(mustFail >= 1, 'some uncached pulls fell inside a down phase');
  }

  // Once the link stays up the origin is reachable again and new images come through. With no
  // traffic since the last outage the breaker may still be open: the first request then gets a
  // 503 and starts a probe, which finds the origin within about a second.
  await sleep(SETTLE_MS + 1000);
  const last = makeImage({ layers: [4000], seed: `flap-${SEED}-last` });
  origin.putImage('proj/last', '1', last);
  const first = await pull(cove.url, 'proj/last', '1', last);
  t.comment(`first pull after the flapping stopped: ${first}`);
  if (first === '503') await sleep(SETTLE_MS);
  t.equal(first === 'ok' ? first : await pull(cove.url, 'proj/last', '1', last), 'ok', 'after the flapping, a new image is pulled whole');
});
