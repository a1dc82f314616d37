// The edge link goes down: Debian's docker-registry as origin is stopped under a running Cove.
// skopeo still pulls the cached tag, an uncached tag fails cleanly within the timeout, and once
// the origin is back with a new image under the same tag, Cove follows it after the TTL.
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, buildImage, httpGet, pushImage, requireTools, run, skopeoPull, startCove, startRegistry, tempDir, verifyDirCopy, waitFor } from './real.js';

const sha256File = (file: string) => `sha256:${createHash('sha256').update(readFileSync(file)).digest('hex')}`;

t.test('skopeo through Cove while the origin is down, and after it comes back', async (t) => {
  if (!requireTools(t, ['docker-registry', 'skopeo', 'umoci'])) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup);
  const origin = await startRegistry(cleanup);
  const v1 = await buildImage(join(work, 'layout'), 'v1', [1_000_000, 500_000], 'outage-v1');
  const v2 = await buildImage(join(work, 'layout'), 'v2', [700_000], 'outage-v2');
  await pushImage(v1, origin, 'proj/app:1');
  const cove = await startCove(cleanup, origin.url, { COVE_TAG_TTL: '2s', COVE_UPSTREAM_TIMEOUT: '2s' });
  const ref = `${cove.hostPort}/proj/app:1`;
  await skopeoPull(ref, join(work, 'warmup'));

  await origin.stop();
  await new Promise((r) => setTimeout(r, 2100)); // past the TTL: Cove must try the origin, and fail
  await skopeoPull(ref, join(work, 'down'));
  const down = verifyDirCopy(join(work, 'down'));
  t.same(down.problems, [], 'origin down: the cached image, every blob verified');
  t.equal(sha256File(join(work, 'down', 'manifest.json')), v1.manifestDigest);
  t.ok(await cove.logged((l) => l.cache === 'stale'), 'Cove logged the stale answer');

  const started = Date.now();
  const uncached = await run('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${cove.hostPort}/proj/app:2`, `dir:${join(work, 'none')}`], {
    allowFail: true,
    timeoutMs: 60_000,
  });
  const ms = Date.now() - started;
  t.not(uncached.code, 0, 'an uncached tag fails');
  t.match(uncached.stderr, /503|unavailable|UPSTREAM_UNAVAILABLE/i, 'with the reason');
  t.ok(ms < 30_000, `within bounds, no hang (${ms} ms, skopeo retries included)`);

  await origin.restart(cleanup);
  await pushImage(v2, origin, 'proj/app:1');
  await waitFor(
    'Cove to see the origin again',
    async () => {
      const health = JSON.parse((await httpGet(`${cove.url}/healthz`, { keep: true })).body.toString()) as { upstreams: { origin: { state: string } } };
      return health.upstreams.origin.state === 'closed';
    },
    70_000,
    250,
  );
  await new Promise((r) => setTimeout(r, 2100));
  await skopeoPull(ref, join(work, 'back'));
  t.equal(sha256File(join(work, 'back', 'manifest.json')), v2.manifestDigest, 'after the TTL the moved tag is followed');
  t.same(verifyDirCopy(join(work, 'back')).problems, []);
});
