// Real clients pulling through Cove with the files `cove client-config ... --write --root DIR`
// generates (DIR is a temp dir, never the real /etc):
//  - ctr reads the generated certs.d/docker.io/hosts.toml (--hosts-dir) and pulls
//    docker.io/library/app:1 through a Cove with COVE_ROUTES=docker.io=dockerhub/;
//  - dockerd runs with the daemon.json client-config merged into an existing one and pulls app:1
//    through a Cove with COVE_DEFAULT_NS=docker.io.
// The generated files name the real registry-1.docker.io as fallback, so the clients run with
// HTTPS_PROXY pointing at a closed loopback port: traffic stays on loopback even if the mirror fails.
// podman pulls through its generated drop-in in test/e2e/podman.test.ts.
import t from 'tap';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  COVE_CLI,
  Cleanup,
  buildImage,
  dockerCli,
  isBlobPath,
  pushImage,
  requireRoot,
  requireTools,
  run,
  startContainerd,
  startCove,
  startDockerd,
  startRegistry,
  tempDir,
} from './real.js';

const NO_INTERNET = { HTTPS_PROXY: 'http://127.0.0.1:9', HTTP_PROXY: 'http://127.0.0.1:9', NO_PROXY: '127.0.0.1,localhost' };

function cove(args: string[]) {
  return run(process.execPath, [COVE_CLI, ...args], { timeoutMs: 20_000 });
}

t.test('ctr pulls through Cove with the hosts.toml from cove client-config containerd', async (t) => {
  if (!requireTools(t, ['docker-registry', 'skopeo', 'umoci', 'containerd', 'ctr'])) return;
  if (!requireRoot(t, 'containerd')) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup);
  const origin = await startRegistry(cleanup);
  const image = await buildImage(join(work, 'layout'), 'app', [1_000_000, 1_500_000], 'client-config-ctr');
  await pushImage(image, origin, 'dockerhub/library/app:1');
  const mirror = await startCove(cleanup, origin.url, { COVE_ROUTES: 'docker.io=dockerhub/' });
  const containerd = await startContainerd(cleanup);

  const root = join(work, 'root');
  const gen = await cove(['client-config', 'containerd', '--cache', mirror.url, '--write', '--root', root]);
  t.match(gen.stdout, /certs\.d\/docker\.io\/hosts\.toml: created/, 'client-config wrote hosts.toml');
  t.match(gen.stderr, /config_path/, 'and noted the CRI config_path');
  const hostsDir = join(root, 'etc', 'containerd', 'certs.d');
  const toml = readFileSync(join(hostsDir, 'docker.io', 'hosts.toml'), 'utf8');
  t.comment(`generated hosts.toml:\n${toml}`);
  t.match(toml, /server = "https:\/\/registry-1\.docker\.io"/);

  origin.markNow();
  const pull = await run(
    'ctr',
    ['-a', containerd.socket, '-n', 'cove-cc', 'image', 'pull', '--hosts-dir', hostsDir, '--snapshotter', 'native', 'docker.io/library/app:1'],
    { timeoutMs: 120_000, env: { ...process.env, ...NO_INTERNET } },
  );
  t.comment(`ctr image pull (no --plain-http; the host URL says http): ${pull.ms.toFixed(0)} ms`);
  const images = await run('ctr', ['-a', containerd.socket, '-n', 'cove-cc', 'image', 'ls']);
  const line = images.stdout.split('\n').find((l) => l.startsWith('docker.io/library/app:1'));
  t.match(line ?? '', image.manifestDigest, 'ctr holds docker.io/library/app:1 at the pushed digest');
  const seen = origin.since();
  t.ok(seen.some((e) => e.path.startsWith('/v2/dockerhub/library/app/manifests/')), 'the origin was asked through the docker.io route');
  t.equal(seen.filter((e) => e.method === 'GET' && isBlobPath(e.path)).length, 1 + image.layers.length, 'one origin GET per blob');
  t.ok(
    await mirror.logged((l) => l.msg === 'request' && String(l.path).startsWith('/v2/library/app/blobs/') && String(l.path).includes('ns=docker.io') && l.status === 200),
    'Cove served the blobs with ?ns=docker.io',
  );
});

t.test('dockerd pulls through Cove with the daemon.json from cove client-config docker', async (t) => {
  if (!requireTools(t, ['docker-registry', 'skopeo', 'umoci', 'containerd', 'ctr', 'dockerd'])) return;
  if (dockerCli() === null && !requireTools(t, ['docker'])) return;
  if (!requireRoot(t, 'dockerd')) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup);
  const origin = await startRegistry(cleanup);
  const image = await buildImage(join(work, 'layout'), 'app', [1_000_000, 1_500_000], 'client-config-docker');
  await pushImage(image, origin, 'dockerhub/library/app:1');
  const mirror = await startCove(cleanup, origin.url, { COVE_DEFAULT_NS: 'docker.io', COVE_ROUTES: 'docker.io=dockerhub/' });
  const containerd = await startContainerd(cleanup);

  // An existing daemon.json with settings of its own: client-config must keep them.
  const root = join(work, 'root');
  const etcDocker = join(root, 'etc', 'docker');
  mkdirSync(etcDocker, { recursive: true });
  const original = '{\n  "log-level": "info",\n  "max-concurrent-downloads": 2\n}\n';
  writeFileSync(join(etcDocker, 'daemon.json'), original);
  const gen = await cove(['client-config', 'docker', '--cache', mirror.url, '--write', '--root', root]);
  t.match(gen.stdout, /daemon\.json: updated \(previous file kept as /, 'client-config merged into daemon.json');
  t.match(gen.stderr, /Docker Hub images only/);
  t.match(gen.stderr, /COVE_DEFAULT_NS=docker\.io/);
  const backups = readdirSync(etcDocker).filter((f) => f.startsWith('daemon.json.bak-'));
  t.equal(backups.length, 1, 'one backup');
  t.equal(readFileSync(join(etcDocker, backups[0]!), 'utf8'), original, 'the backup is the old file');
  const merged = JSON.parse(readFileSync(join(etcDocker, 'daemon.json'), 'utf8')) as Record<string, unknown>;
  t.same(merged, { 'log-level': 'info', 'max-concurrent-downloads': 2, 'registry-mirrors': [mirror.url] }, 'old keys kept, mirror added (loopback: no insecure-registries)');

  // startDockerd writes its daemon.json from an object: the merged file, as dockerd would read it.
  const { docker } = await startDockerd(cleanup, containerd.socket, merged);
  const info = await docker(['info', '--format', '{{json .RegistryConfig.Mirrors}}']);
  t.match(info.stdout, mirror.url, 'dockerd lists the Cove as a registry mirror');
  origin.markNow();
  const pull = await docker(['pull', '-q', 'app:1']);
  t.comment(`docker pull app:1 via the generated registry-mirrors: ${pull.ms.toFixed(0)} ms`);
  const id = (await docker(['image', 'inspect', '--format', '{{.Id}}', 'app:1'])).stdout.trim();
  t.equal(id, image.config.digest, 'image ID is the config digest');
  const seen = origin.since();
  t.ok(seen.some((e) => e.path.startsWith('/v2/dockerhub/library/app/manifests/')), 'the origin was asked for dockerhub/library/app');
  t.ok(
    await mirror.logged((l) => l.msg === 'request' && l.method === 'GET' && l.status === 200 && String(l.path).startsWith(`/v2/library/app/blobs/${image.layers[0]!.digest}`)),
    'the Cove served the layer to dockerd',
  );
  t.notOk(existsSync(join(root, 'etc', 'hosts')), '--root kept everything under the temp dir');
});
