// containerd (ctr) pulling docker.io/library/app:1 through a hosts.toml mirror pointing at Cove:
// containerd appends ?ns=docker.io, Cove's docker.io route sends it to the origin's Harbor-style
// project dockerhub/ (the name already carries library/). containerd runs as its own root
// process with root, state and sockets in a temp dir.
import t from 'tap';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, buildImage, isBlobPath, pushImage, requireRoot, requireTools, run, startContainerd, startCove, startRegistry, tempDir } from './real.js';

const NS = 'cove-e2e';

t.test('ctr pulls docker.io/library/app:1 through a hosts.toml mirror (ns=docker.io route)', async (t) => {
  if (!requireTools(t, ['docker-registry', 'skopeo', 'umoci', 'containerd', 'ctr'])) return;
  if (!requireRoot(t, 'containerd')) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup);
  const origin = await startRegistry(cleanup);
  const image = await buildImage(join(work, 'layout'), 'app', [1_000_000, 2_000_000], 'ctr');
  await pushImage(image, origin, 'dockerhub/library/app:1');

  const cove = await startCove(cleanup, origin.url, { COVE_ROUTES: 'docker.io=dockerhub/' });
  const containerd = await startContainerd(cleanup);

  const hostsDir = join(work, 'certs.d');
  mkdirSync(join(hostsDir, 'docker.io'), { recursive: true });
  // The fallback server is a closed loopback port: should the mirror fail, containerd fails
  // loudly instead of reaching for Docker Hub (tests talk to loopback only).
  writeFileSync(
    join(hostsDir, 'docker.io', 'hosts.toml'),
    `server = "http://127.0.0.1:9"\n\n[host."http://${cove.hostPort}"]\n  capabilities = ["pull", "resolve"]\n`,
  );

  const ctr = (args: string[], timeoutMs = 120_000) => run('ctr', ['-a', containerd.socket, '-n', NS, ...args], { timeoutMs });
  origin.markNow();
  const pull = await ctr(['image', 'pull', '--plain-http', '--hosts-dir', hostsDir, '--snapshotter', 'native', 'docker.io/library/app:1']);
  t.comment(`ctr image pull: ${pull.ms.toFixed(0)} ms`);

  const images = await ctr(['image', 'ls']);
  const line = images.stdout.split('\n').find((l) => l.startsWith('docker.io/library/app:1'));
  t.ok(line, 'ctr lists docker.io/library/app:1');
  t.match(line ?? '', image.manifestDigest, 'the image resolves to the pushed manifest digest');

  const content = (await ctr(['content', 'ls', '-q'])).stdout.split('\n').map((s) => s.trim());
  for (const d of [image.manifestDigest, image.config.digest, ...image.layers.map((l) => l.digest)]) {
    t.ok(content.includes(d), `content store holds ${d.slice(0, 19)}`);
  }

  const seen = origin.since();
  t.ok(
    seen.some((e) => e.path.startsWith('/v2/dockerhub/library/app/manifests/')),
    'the origin was asked for /v2/dockerhub/library/app/manifests/... (ns=docker.io route)',
  );
  const blobGets = seen.filter((e) => e.method === 'GET' && isBlobPath(e.path));
  t.equal(blobGets.length, 1 + image.layers.length, 'one origin GET per blob');
  t.ok(
    blobGets.every((e) => e.path.startsWith('/v2/dockerhub/library/app/blobs/')),
    'blobs fetched from the routed repository',
  );

  // Cove writes one JSON line per request ({msg: 'request', method, path, status, cache, ...}).
  const nsRequest = (l: Record<string, unknown>) => l.msg === 'request' && String(l.path).includes('ns=docker.io');
  t.ok(await cove.logged(nsRequest), 'Cove logged requests carrying ?ns=docker.io');
  t.ok(
    await cove.logged((l) => nsRequest(l) && String(l.path).startsWith('/v2/library/app/blobs/') && l.status === 200),
    'Cove served the blobs containerd asked for under library/app',
  );
});
