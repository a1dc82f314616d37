// Offline seeding end to end: archives made by skopeo (docker-archive: and oci-archive:) go into
// a running Cove with `cove import`, and skopeo then pulls the images through Cove with no origin
// anywhere; every digest must match what umoci built.
import t from 'tap';
import { join } from 'node:path';
import { COVE_CLI, Cleanup, buildImage, requireTools, run, skopeoPull, startCove, tempDir, verifyDirCopy } from './real.js';

t.test('skopeo archives imported with cove import, then pulled through Cove with the origin absent', async (t) => {
  if (!requireTools(t, ['skopeo', 'umoci'])) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup, 'cove-seed-');
  const image = await buildImage(join(work, 'layout'), 'v1', [2_000_000, 600_000], 'archive-pull');
  const dockerTar = join(work, 'docker.tar');
  const ociTar = join(work, 'oci.tar');
  await run('skopeo', ['copy', '-q', `oci:${image.layout}:${image.tag}`, `docker-archive:${dockerTar}:proj/app:1`]);
  await run('skopeo', ['copy', '-q', `oci:${image.layout}:${image.tag}`, `oci-archive:${ociTar}:1`]);
  // No origin at all: a closed loopback port.
  const cove = await startCove(cleanup, 'http://127.0.0.1:9', { COVE_TAG_TTL: '1h' });
  // The cove command reaches the daemon over its admin socket.
  const socket = cove.adminSocket;

  const fromDocker = await run(process.execPath, [COVE_CLI, 'import', dockerTar, '--socket', socket]);
  t.equal(fromDocker.code, 0, fromDocker.stderr);
  t.match(fromDocker.stdout, /^docker\.io\/proj\/app:1: sha256:/m);
  const fromOci = await run(process.execPath, [COVE_CLI, 'import', ociTar, '--tag', 'proj/app:oci', '--socket', socket]);
  t.equal(fromOci.code, 0, fromOci.stderr);
  t.match(fromOci.stdout, new RegExp(`^proj/app:oci: ${image.manifestDigest}$`, 'm'));

  await skopeoPull(`${cove.hostPort}/proj/app:oci`, join(work, 'pulled-oci'));
  const oci = verifyDirCopy(join(work, 'pulled-oci'));
  t.same(oci.problems, [], 'every blob of the OCI image hashes to its name');
  t.equal(oci.manifest.config.digest, image.config.digest);
  t.same(oci.manifest.layers.map((l) => l.digest), image.layers.map((l) => l.digest), 'the layers umoci built');

  await skopeoPull(`${cove.hostPort}/proj/app:1`, join(work, 'pulled-docker'));
  const docker = verifyDirCopy(join(work, 'pulled-docker'));
  t.same(docker.problems, [], 'the docker-archive image pulls whole too');
  t.equal(docker.manifest.config.digest, image.config.digest, 'with the same config');
});
