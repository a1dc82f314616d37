// The prewarm queue: one job per (upstream, repo, reference, platforms) however many callers ask,
// at most N jobs running, at most M waiting (past that a call is refused whole), and shutdown
// aborting what runs and failing what waits.
import t from 'tap';
import { pino } from 'pino';
import { loadConfig } from '../../src/config.js';
import type { PrewarmDeps, PrewarmOptions, PrewarmRefResult } from '../../src/prewarm/prewarm.js';
import { PrewarmQueue, PrewarmQueueFullError, type PrewarmRunner } from '../../src/prewarm/queue.js';
import { RouteMap } from '../../src/routes.js';
import { toOciResponse } from '../../src/errors.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { startHarness } from './harness.js';

const log = pino({ level: 'silent' });
const routes = new RouteMap(loadConfig({ env: { COVE_UPSTREAM: 'http://127.0.0.1:9', COVE_DATA_DIR: '/nonexistent', COVE_ROUTES: 'docker.io=dockerhub/' } }));
const deps = { routes, log } as unknown as PrewarmDeps;

/** A runner whose jobs end when the test says so; counts runs and how many overlap. */
function gatedRunner() {
  const gates: Array<{ ref: string; opts: PrewarmOptions; finish: (ok?: boolean) => void }> = [];
  let running = 0;
  let peak = 0;
  const run: PrewarmRunner = (ref, opts) =>
    new Promise<PrewarmRefResult>((resolve) => {
      running++;
      peak = Math.max(peak, running);
      const finish = (ok = true) => {
        running--;
        resolve({ ref, ok, ...(ok ? {} : { error: 'prewarm aborted' }), platforms: [], skipped: [], manifests: { total: 1, cached: 0 }, blobs: { total: 0, cached: 0, fetched: 0, joined: 0, failed: 0 }, bytes: { total: 0, cached: 0, fetched: 0, joined: 0 }, warnings: [], ms: 1 });
      };
      opts.signal?.addEventListener('abort', () => finish(false), { once: true });
      gates.push({ ref, opts, finish });
    });
  return { run, gates, peak: () => peak, running: () => running };
}

const tick = () => new Promise((r) => setImmediate(r));

t.test('equal requests share one job; other references, platforms or routes do not', async (t) => {
  const r = gatedRunner();
  const queue = new PrewarmQueue(deps, { concurrency: 4, run: r.run });
  const five = Array.from({ length: 5 }, () => queue.submit(['proj/app:1'], { platforms: [] })[0]!);
  t.equal(five.filter((s) => s.joined).length, 4, 'four of five joined the first');
  t.ok(five.every((s) => s.job === five[0]!.job), 'one job');
  queue.submit(['proj/app:1', ' proj/app:1 '], { platforms: [] });
  // The same image by the client's name through a route and by the upstream's name is one job.
  const routed = queue.submit(['docker.io/library/nginx:1'], { platforms: [] })[0]!;
  const upstreamName = queue.submit(['dockerhub/library/nginx:1'], { platforms: [], names: 'upstream' })[0]!;
  t.equal(upstreamName.job, routed.job, 'docker.io/library/nginx:1 and the webhook name dockerhub/library/nginx:1 are one job');
  queue.submit(['proj/app:2'], { platforms: [] });
  queue.submit(['proj/app:1'], { platforms: [{ os: 'linux', architecture: 'arm64' }] });
  await tick();
  t.same(r.gates.map((g) => g.ref).sort(), ['docker.io/library/nginx:1', 'proj/app:1', 'proj/app:1', 'proj/app:2'], 'four jobs: the arm64-only prewarm is its own');
  r.gates[0]!.finish();
  const results = await Promise.all(five.map((s) => s.job.done));
  t.ok(results.every((res) => res === results[0] && res.ok), 'every caller gets the one result');
  // Done: the next request is a new job (a later push must be fetched again).
  const again = queue.submit(['proj/app:1'], { platforms: [] })[0]!;
  t.equal(again.joined, false, 'a finished job is not joined');
  queue.close();
});

t.test('concurrency never exceeds the bound; waiting jobs start as running ones end', async (t) => {
  const r = gatedRunner();
  const queue = new PrewarmQueue(deps, { concurrency: 2, run: r.run });
  const all = queue.submit(Array.from({ length: 7 }, (_, i) => `proj/app:${i}`), { platforms: [] });
  await tick();
  t.equal(r.running(), 2, 'two run');
  t.same(queue.stats, { running: 2, queued: 5, peakRunning: 2 });
  for (let i = 0; i < 7; i++) {
    const open = r.gates.filter((g) => g.opts.signal && !('done' in g));
    t.ok(r.running() <= 2, `never more than two (${r.running()})`);
    Object.assign(open[0]!, { done: true }).finish();
    await tick();
  }
  const results = await Promise.all(all.map((s) => s.job.done));
  t.equal(results.filter((res) => res.ok).length, 7, 'all seven done');
  t.equal(r.peak(), 2, 'peak concurrency 2');
  t.equal(queue.stats.peakRunning, 2);
});

t.test('a full queue refuses the whole call with 429; joins still fit', async (t) => {
  const r = gatedRunner();
  const queue = new PrewarmQueue(deps, { concurrency: 1, maxQueued: 3, run: r.run });
  queue.submit(['proj/a:1', 'proj/a:2', 'proj/a:3', 'proj/a:4'], { platforms: [] });
  await tick();
  t.same(queue.stats, { running: 1, queued: 3, peakRunning: 1 });
  const err = (() => {
    try {
      queue.submit(['proj/a:2', 'proj/b:1'], { platforms: [] });
      return null;
    } catch (e) {
      return e;
    }
  })();
  t.type(err, PrewarmQueueFullError);
  const mapped = toOciResponse(err);
  t.equal(mapped.status, 429);
  t.equal(mapped.body.errors[0]!.code, 'TOOMANYREQUESTS');
  t.match(mapped.body.errors[0]!.message, /prewarm queue is full: 3 job\(s\) waiting, 1 more asked for, at most 3 \(COVE_PREWARM_QUEUE\)/);
  t.equal(mapped.headers['retry-after'], '30');
  t.equal(queue.stats.queued, 3, 'nothing of the refused call was queued');
  t.ok(queue.submit(['proj/a:1', 'proj/a:4'], { platforms: [] }).every((s) => s.joined), 'requests for pending jobs still join');
  queue.close();
});

t.test('close() aborts running jobs and fails waiting ones; invalid references fail at once', async (t) => {
  const r = gatedRunner();
  const queue = new PrewarmQueue(deps, { concurrency: 1, run: r.run });
  const [bad, running, waiting] = queue.submit(['Bad//Ref', 'proj/a:1', 'proj/a:2'], { platforms: [] });
  t.match((await bad!.job.done).error, /invalid reference "Bad\/\/Ref"/);
  await tick();
  queue.close();
  t.same([(await running!.job.done).error, (await waiting!.job.done).error], ['prewarm aborted', 'prewarm aborted']);
  t.equal(r.gates.length, 1, 'the waiting job never started');
  t.equal((await queue.run(['proj/a:3'], { platforms: [] })).errors[0]!.message, 'prewarm aborted', 'after close, jobs fail at once');
});

t.test('five prewarms of one image through the queue cost the origin what one does', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [200_000], seed: 'queue-five' });
  origin.putImage('proj/app', '1', image);
  // Slow blobs: all five calls arrive while the first is still fetching. The webhook's form
  // (tag and digest) makes each prewarm revalidate the tag, as Harbor's pushes do.
  origin.setFault({ kind: 'blob' }, { type: 'slow', bytesPerSecond: 400_000 });
  const ref = `proj/app:1@${image.manifestDigest}`;
  const costOf = async (calls: number) => {
    const h = await startHarness(t, origin.url);
    const queue = new PrewarmQueue(h.deps);
    t.teardown(() => queue.close());
    const start = origin.requests.length;
    const results = await Promise.all(Array.from({ length: calls }, () => queue.run([ref], { platforms: [] })));
    t.ok(results.every((res) => res.ok), `${calls} call(s): all report success`);
    return origin.requests.length - start;
  };
  const one = await costOf(1);
  t.ok(one >= 3, `one prewarm: ${one} origin requests`);
  const five = await costOf(5);
  t.equal(five, one, `five identical prewarms: ${five} origin requests, one alone: ${one}`);
});
