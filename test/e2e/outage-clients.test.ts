// What edge nodes really run, with the link down: containerd (ctr, hosts.toml mirror) and dockerd
// (port mode) pull an image through Cove, the origin is stopped, the local copies are removed, and
// both pull again — from Cove's cache alone.
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, buildImage, dockerCli, pushImage, requireRoot, requireTools, run, startContainerd, startCove, startDockerd, startRegistry, tempDir } from './real.js';

t.test('ctr and dockerd pull a cached image through Cove while the origin is down', async (t) => {
  if (!requireTools(t, ['docker-registry', 'skopeo', 'umoci', 'containerd', 'ctr', 'dockerd'])) return;
  if (dockerCli() === null && !requireTools(t, ['docker'])) return;
  if (!requireRoot(t, 'containerd and dockerd')) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup);
  const origin = await startRegistry(cleanup);
  const image = await buildImage(join(work, 'layout'), 'app', [800_000, 600_000], 'outage-clients');
  await pushImage(image, origin, 'dockerhub/library/app:1');
  await pushImage(image, origin, 'proj/app:1');
  const cove = await startCove(cleanup, origin.url, { COVE_ROUTES: 'docker.io=dockerhub/', COVE_TAG_TTL: '1s', COVE_UPSTREAM_TIMEOUT: '2s' });
  const containerd = await startContainerd(cleanup);

  const hostsDir = join(work, 'certs.d');
  mkdirSync(join(hostsDir, 'docker.io'), { recursive: true });
  writeFileSync(join(hostsDir, 'docker.io', 'hosts.toml'), `server = "http://127.0.0.1:9"\n\n[host."http://${cove.hostPort}"]\n  capabilities = ["pull", "resolve"]\n`);
  const ctr = (args: string[]) => run('ctr', ['-a', containerd.socket, '-n', 'cove-outage', ...args], { timeoutMs: 120_000 });
  const ctrPull = () => ctr(['image', 'pull', '--plain-http', '--hosts-dir', hostsDir, '--snapshotter', 'native', 'docker.io/library/app:1']);
  const { docker } = await startDockerd(cleanup, containerd.socket, { 'insecure-registries': [cove.hostPort] });
  const ref = `${cove.hostPort}/proj/app:1`;

  await ctrPull();
  await docker(['pull', '-q', ref]);

  await origin.stop();
  await new Promise((r) => setTimeout(r, 1100)); // past the tag TTL: Cove must try the origin
  await ctr(['image', 'rm', 'docker.io/library/app:1']);
  await docker(['rmi', ref]);

  const again = await ctrPull();
  t.comment(`ctr pull with the origin down: ${again.ms.toFixed(0)} ms`);
  const listed = (await ctr(['image', 'ls', '-q'])).stdout;
  t.match(listed, /docker\.io\/library\/app:1/, 'ctr has the image again');

  const pulled = await docker(['pull', '-q', ref]);
  t.comment(`docker pull with the origin down: ${pulled.ms.toFixed(0)} ms`);
  const id = (await docker(['image', 'inspect', '--format', '{{.Id}}', ref])).stdout.trim();
  t.equal(id, image.config.digest, 'dockerd has the image again, same ID');
  t.ok(await cove.logged((l) => l.cache === 'stale' && String(l.path).startsWith('/v2/library/app/manifests/')), 'Cove answered containerd stale');
  t.ok(await cove.logged((l) => l.cache === 'stale' && String(l.path).startsWith('/v2/proj/app/manifests/')), 'Cove answered dockerd stale');
});
