// podman pulling through Cove with the registries.conf drop-in `cove client-config podman --write
// --root DIR` generates (DIR is a temp dir, never the real /etc/containers):
//  - the origin (Debian docker-registry) holds proj/app:1; Cove runs in port mode in front of it;
//  - the drop-in makes harbor.test a registry whose mirror is the Cove (insecure: plain http);
//  - `podman pull harbor.test/proj/app:1` reads it through CONTAINERS_REGISTRIES_CONF (podman 4.3
//    takes the drop-in as its registries.conf; it still reads /etc/containers/registries.conf.d/,
//    which only holds Debian's shortnames.conf) and must get everything from the Cove.
// harbor.test itself is never contacted: the mirror answers first (checked on this machine with
// strace: podman connects only to the Cove, no DNS). Should the mirror fail, podman's fallback to
// https://harbor.test goes to HTTPS_PROXY, a closed loopback port, so nothing is resolved or sent
// off the machine either way.
// podman runs with root, runroot, tmpdir, network config and volumes in a temp dir and vfs storage.
// It still writes a few host paths (/run/containers/networks, /dev/shm/libpod_lock,
// /var/lib/containers/cache/blob-info-cache-v1.boltdb); those that did not exist before the test
// are removed afterwards.
import t from 'tap';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { COVE_CLI, Cleanup, Registry, buildImage, isBlobPath, pushImage, requireRoot, requireTools, run, startCove, startRegistry, tempDir, podmanIsolation, removePodmanSideEffects } from './real.js';

const NO_INTERNET = { HTTPS_PROXY: 'http://127.0.0.1:9', HTTP_PROXY: 'http://127.0.0.1:9', NO_PROXY: '127.0.0.1,localhost' };
const REGISTRY = 'harbor.test';

function cove(args: string[]) {
  return run(process.execPath, [COVE_CLI, ...args], { timeoutMs: 20_000 });
}

t.test('podman pulls through Cove with the registries.conf drop-in from cove client-config podman', async (t) => {
  if (!requireTools(t, ['docker-registry', 'skopeo', 'umoci', 'podman'])) return;
  if (!requireRoot(t, 'podman with its own storage')) return;
  const cleanup = Cleanup.forTest(t);
  // Registered first, so it runs last: after every process has stopped and the temp dirs are gone.
  const absentBefore = removePodmanSideEffects(cleanup);


  const work = tempDir(cleanup);
  const origin = await startRegistry(cleanup);
  const image = await buildImage(join(work, 'layout'), 'app', [1_000_000, 1_500_000], 'podman');
  await pushImage(image, origin, 'proj/app:1');
  const mirror = await startCove(cleanup, origin.url);

  const root = join(work, 'root');
  const gen = await cove(['client-config', 'podman', '--cache', mirror.url, '--registry', REGISTRY, '--write', '--root', root]);
  const dropIn = join(root, 'etc', 'containers', 'registries.conf.d', '50-cove.conf');
  t.match(gen.stdout, /registries\.conf\.d\/50-cove\.conf: created/, 'client-config wrote the drop-in');
  const conf = readFileSync(dropIn, 'utf8');
  t.comment(`generated drop-in:\n${conf}`);
  t.match(conf, `prefix = "${REGISTRY}"`);
  t.match(conf, `location = "${mirror.hostPort}"`);
  t.match(conf, /insecure = true/);

  const pm = join(work, 'podman');
  const env = { ...process.env, ...NO_INTERNET, CONTAINERS_REGISTRIES_CONF: dropIn };
  const podman = (args: string[], timeoutMs = 120_000) =>
    run(
      'podman',
      [...podmanIsolation(pm), ...args],
      { timeoutMs, env },
    );
  // podman's vfs layers are owned by root and some read-only: remove them with podman first, then
  // the temp dir goes (registered after tempDir, so this runs before it).
  cleanup.add(async () => {
    await podman(['rmi', '-a', '-f'], 30_000).catch(() => undefined);
    rmSync(pm, { recursive: true, force: true });
  });

  const ref = `${REGISTRY}/proj/app:1`;
  origin.markNow();
  const pull = await podman(['pull', ref]);
  t.equal(pull.code, 0, `podman pull ${ref} exits 0`);
  t.comment(`podman pull ${ref} via the generated drop-in: ${pull.ms.toFixed(0)} ms`);
  t.notMatch(pull.stderr, /127\.0\.0\.1:9|harbor\.test: .*(no such host|connection refused)/, 'no fallback to harbor.test was attempted');

  const id = (await podman(['image', 'inspect', '--format', '{{.Id}}', ref])).stdout.trim();
  t.equal(`sha256:${id}`, image.config.digest, 'image ID is the config digest');

  const seen = origin.since();
  t.ok(seen.some((e) => e.method === 'GET' && e.path.startsWith('/v2/proj/app/manifests/')), 'Cove asked the origin for proj/app');
  for (const d of [image.config, ...image.layers]) {
    const gets = seen.filter((e) => e.method === 'GET' && e.path === `/v2/proj/app/blobs/${d.digest}`);
    t.equal(gets.length, 1, `the origin served ${d.digest.slice(0, 19)} once`);
    t.ok(
      await mirror.logged((l) => l.msg === 'request' && l.method === 'GET' && l.status === 200 && String(l.path).startsWith(`/v2/proj/app/blobs/${d.digest}`)),
      `Cove served ${d.digest.slice(0, 19)} to podman`,
    );
  }
  t.equal(seen.filter((e) => e.method === 'GET' && isBlobPath(e.path)).length, 1 + image.layers.length, 'no other blob GETs at the origin');
  const podmanAtCove = mirror.logLines().filter((l) => l.msg === 'request' && String(l.ua ?? '').startsWith('containers/'));
  t.ok(podmanAtCove.length > 0, 'the requests came from podman (containers/image user agent)');

  // A second pull of the same image is served from podman's own storage: nothing new at the origin.
  origin.markNow();
  await podman(['pull', ref]);
  t.equal(Registry.blobGets(origin.since()).requests, 0, 'a repeated pull fetches no blobs from the origin');
  await cleanup.run();
  for (const p of absentBefore) t.notOk(existsSync(p), `${p} removed (it did not exist before)`);
});

