// A real containerd pull of a many-layer image never meets the default fill caps: `ctr image
// pull` without --max-concurrent-downloads sets no limit of its own and may ask for all 41 blobs
// at once, more than COVE_MAX_FILLS_PER_CLIENT (32). Any past the cap wait for a slot; none is
// refused with 429 (a failed pull), none is cancelled.
import t from 'tap';
import { join } from 'node:path';
import { Cleanup, buildImage, httpGet, pushImage, requireRoot, requireTools, run, startContainerd, startCove, startRegistry, tempDir } from './real.js';

const LAYERS = 40;

t.test(`ctr pulls a ${LAYERS}-layer image with no download limit through Cove's default caps`, async (t) => {
  if (!requireTools(t, ['docker-registry', 'skopeo', 'umoci', 'containerd', 'ctr'])) return;
  if (!requireRoot(t, 'containerd')) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup);
  const origin = await startRegistry(cleanup);
  const image = await buildImage(join(work, 'layout'), 'many', Array.from({ length: LAYERS }, (_, i) => 50_000 + i * 1_000), 'admission');
  await pushImage(image, origin, 'proj/many:1');

  const cove = await startCove(cleanup, origin.url);
  const containerd = await startContainerd(cleanup);
  const host = cove.hostPort;
  // Cove in port mode is the registry ctr pulls from, over plain HTTP on loopback.
  const pull = await run('ctr', ['-a', containerd.socket, '-n', 'cove-e2e', 'image', 'pull', '--plain-http', '--snapshotter', 'native', `${host}/proj/many:1`], { timeoutMs: 180_000 });
  t.comment(`ctr image pull: ${pull.ms.toFixed(0)} ms`);

  const health = JSON.parse((await httpGet(`http://${host}/healthz`, { keep: true })).body.toString()) as { fills: number; fillsRefused: number; fillsCancelled: number };
  t.equal(health.fills, LAYERS + 1, 'one fill per blob');
  t.equal(health.fillsRefused, 0, 'nothing refused');
  t.equal(health.fillsCancelled, 0, 'nothing cancelled');
  t.notOk(await cove.logged((l) => l.msg === 'request' && l.status === 429, 500), 'no request answered 429');
  // How many blob GETs overlapped at most, from the access lines (end time and duration).
  const spans = cove.logLines()
    .filter((l) => l.msg === 'request' && typeof l.path === 'string' && l.path.includes('/blobs/') && l.method === 'GET')
    .map((l) => {
      const end = typeof l.time === 'number' ? l.time : Date.parse(String(l.time));
      return { start: end - Number(l.ms), end };
    });
  const peak = Math.max(0, ...spans.map((s) => spans.filter((o) => o.start <= s.start && o.end > s.start).length));
  t.comment(`blob GETs at once, at most: ${peak} of ${spans.length}`);
});
