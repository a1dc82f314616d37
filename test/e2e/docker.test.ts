// dockerd pulling through Cove, both ways Docker reaches a mirror:
//  - port mode: `docker pull 127.0.0.1:<cove>/proj/app:1` (insecure-registries covers loopback);
//  - registry-mirrors: `docker pull app:1` = docker.io/library/app:1, sent to a Cove whose default
//    ns is docker.io and whose docker.io route maps it to the origin's dockerhub/library/app.
// dockerd runs as root with data-root, exec-root, pidfile and socket in temp dirs, no iptables, no
// bridge, vfs storage, and its own containerd.
import t from 'tap';
import { join } from 'node:path';
import {
  Cleanup,
  buildImage,
  dockerCli,
  isBlobPath,
  pushImage,
  requireRoot,
  requireTools,
  startContainerd,
  startCove,
  startDockerd,
  startRegistry,
  tempDir,
  type CoveProc,
} from './real.js';

const TOOLS = ['docker-registry', 'skopeo', 'umoci', 'containerd', 'ctr', 'dockerd'];

/** True when Cove's request log shows a 200 GET of `/v2/<repo>/blobs/<digest>`. */
function coveServed(cove: CoveProc, repo: string, digest: string): Promise<boolean> {
  return cove.logged((l) => l.msg === 'request' && l.method === 'GET' && l.status === 200 && String(l.path).startsWith(`/v2/${repo}/blobs/${digest}`));
}

t.test('dockerd pulls through Cove in port mode and as a registry mirror', async (t) => {
  if (!requireTools(t, TOOLS)) return;
  if (dockerCli() === null && !requireTools(t, ['docker'])) return;
  if (!requireRoot(t, 'dockerd')) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup);
  const origin = await startRegistry(cleanup);
  const image = await buildImage(join(work, 'layout'), 'app', [1_000_000, 1_500_000], 'docker');
  await pushImage(image, origin, 'proj/app:1');
  await pushImage(image, origin, 'dockerhub/library/app:1');

  const portCove = await startCove(cleanup, origin.url);
  const mirrorCove = await startCove(cleanup, origin.url, { COVE_DEFAULT_NS: 'docker.io', COVE_ROUTES: 'docker.io=dockerhub/' });
  const containerd = await startContainerd(cleanup);

  await t.test('port mode', async (t) => {
    const sub = Cleanup.forTest(t);
    const { docker } = await startDockerd(sub, containerd.socket, { 'insecure-registries': [portCove.hostPort] });
    const ref = `${portCove.hostPort}/proj/app:1`;
    origin.markNow();
    const pull = await docker(['pull', '-q', ref]);
    t.comment(`docker pull ${ref}: ${pull.ms.toFixed(0)} ms`);
    const id = (await docker(['image', 'inspect', '--format', '{{.Id}}', ref])).stdout.trim();
    t.equal(id, image.config.digest, 'image ID is the config digest');
    const seen = origin.since();
    t.ok(seen.some((e) => e.method === 'GET' && e.path === `/v2/proj/app/blobs/${image.layers[0]!.digest}`), 'Cove fetched the layer from /v2/proj/app at the origin');
    t.ok(await coveServed(portCove, 'proj/app', image.layers[0]!.digest), 'Cove logged the layer it served');
    await sub.run();
  });

  await t.test('registry-mirrors (docker.io -> dockerhub/library/app)', async (t) => {
    const sub = Cleanup.forTest(t);
    // The same containerd served the first dockerd; a fresh content namespace is not guaranteed,
    // so dockerd gets its own data-root (vfs layers) and the pull is checked at the origin.
    const { docker } = await startDockerd(sub, containerd.socket, { 'registry-mirrors': [mirrorCove.url] });
    origin.markNow();
    const pull = await docker(['pull', '-q', 'app:1']);
    t.comment(`docker pull app:1 via registry-mirrors: ${pull.ms.toFixed(0)} ms`);
    const id = (await docker(['image', 'inspect', '--format', '{{.Id}}', 'app:1'])).stdout.trim();
    t.equal(id, image.config.digest, 'image ID is the config digest');
    const seen = origin.since();
    t.ok(
      seen.some((e) => e.path.startsWith('/v2/dockerhub/library/app/manifests/')),
      'the origin was asked for dockerhub/library/app (default ns docker.io + route)',
    );
    const blobGets = seen.filter((e) => e.method === 'GET' && isBlobPath(e.path));
    t.ok(
      blobGets.length > 0 && blobGets.every((e) => e.path.startsWith('/v2/dockerhub/library/app/blobs/')),
      'blobs came from the routed repository',
    );
    t.ok(await coveServed(mirrorCove, 'library/app', image.layers[0]!.digest), 'the mirror Cove logged the layer it served');
    await sub.run();
  });
});
