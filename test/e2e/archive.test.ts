// Offline import/export against the real tools: archives written by skopeo (docker-archive and
// oci-archive, from an image umoci built) are imported into a fresh store and every digest is
// checked; Cove's export is read back by skopeo (as an OCI archive and as a docker archive) and
// loaded by dockerd 20.10 (`docker load`), whose `docker save` is imported again; truncated and
// tampered archives are refused and leave store and catalog unchanged.
import { createReadStream, createWriteStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import t from 'tap';
import { exportImages } from '../../src/archive/export.js';
import { importArchive, type ImportResult } from '../../src/archive/import.js';
import { DOCKER_MANIFEST, OCI_MANIFEST } from '../../src/oci/mediatypes.js';
import { sha256Of } from '../helpers/images.js';
import { openStore, snapshot, type Env } from '../archive/helpers.js';
import {
  buildImage,
  Cleanup,
  requireRoot,
  requireTools,
  run,
  startContainerd,
  startDockerd,
  tempDir,
  verifyDirCopy,
  dockerCli,
  type TestImage,
} from './real.js';

/**
 * Port-mode naming: skopeo and docker 25+ write "docker.io/proj/app:1" for what the user called
 * "proj/app:1"; here docker.io and a bare name are the same repository on the one upstream.
 */
function resolveName(name: string): { upstream: string; repo: string } {
  return { upstream: 'origin', repo: name.replace(/^docker\.io\//, '') };
}

async function importFile(env: Env, file: string, tags?: string[]): Promise<ImportResult> {
  return importArchive(createReadStream(file), { store: env.store, catalog: env.catalog, log: env.log, resolveName, ...(tags ? { tags } : {}) });
}

/** Every blob file in the store hashes to its name. */
async function checkStore(t: { pass(m: string): unknown; fail(m: string): unknown }, env: Env): Promise<void> {
  let n = 0;
  for await (const b of env.store.list()) {
    const bytes = await env.store.readAll(b.digest);
    if (sha256Of(bytes) !== b.digest) t.fail(`${b.digest} in the store hashes to ${sha256Of(bytes)}`);
    n++;
  }
  t.pass(`all ${n} blobs in the store hash to their names`);
}

/** Where each regular file's data starts in a plain tar, by name. */
function tarOffsets(buf: Buffer): Map<string, { offset: number; size: number }> {
  const out = new Map<string, { offset: number; size: number }>();
  let pos = 0;
  while (pos + 512 <= buf.length) {
    const h = buf.subarray(pos, pos + 512);
    if (h.every((b) => b === 0)) break;
    const field = (a: number, b: number) => h.subarray(a, b).toString('latin1').replace(/\0.*$/s, '');
    const name = (field(345, 500) ? `${field(345, 500)}/` : '') + field(0, 100);
    const size = parseInt(field(124, 136).trim() || '0', 8);
    const type = field(156, 157);
    if (type === '0' || type === '') out.set(name, { offset: pos + 512, size });
    pos += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

t.test('skopeo archives in, Cove archive out, docker load and docker save', async (t) => {
  if (!requireTools(t, ['skopeo', 'umoci'])) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup, 'cove-arch-');
  const image: TestImage = await buildImage(join(work, 'layout'), 'v1', [3_000_000, 700_000], 'archive-e2e');
  const configDigest = image.config.digest;
  const ociLayers = image.layers.map((l) => l.digest);

  const dockerTar = join(work, 'docker.tar');
  const ociTar = join(work, 'oci.tar');
  await run('skopeo', ['copy', '-q', `oci:${image.layout}:${image.tag}`, `docker-archive:${dockerTar}:proj/app:1`]);
  await run('skopeo', ['copy', '-q', `oci:${image.layout}:${image.tag}`, `oci-archive:${ociTar}:1`]);
  const skopeoDockerManifest = JSON.parse((await run('skopeo', ['inspect', '--raw', `docker-archive:${dockerTar}`])).stdout) as {
    config: { digest: string };
    layers: Array<{ digest: string; size: number }>;
  };
  const diffIds = (JSON.parse((await run('skopeo', ['inspect', '--config', '--raw', `docker-archive:${dockerTar}`])).stdout) as { rootfs: { diff_ids: string[] } }).rootfs.diff_ids;

  const env = await openStore(t);

  // docker-archive: skopeo writes uncompressed "<hex>.tar" layers, "<id>/layer.tar" symlinks,
  // and RepoTags "docker.io/proj/app:1".
  const fromDocker = await importFile(env, dockerTar);
  t.equal(fromDocker.format, 'docker-archive');
  t.same(fromDocker.images.map((i) => [i.ref, i.repo, i.tag, i.mediaType]), [['docker.io/proj/app:1', 'proj/app', '1', DOCKER_MANIFEST]]);
  const synthesized = JSON.parse((await env.store.readAll(fromDocker.images[0]!.digest)).toString()) as {
    config: { digest: string; size: number };
    layers: Array<{ digest: string; size: number; mediaType: string }>;
  };
  t.equal(synthesized.config.digest, configDigest, 'config digest as umoci made it');
  t.equal(skopeoDockerManifest.config.digest, configDigest, 'and as skopeo reads the archive');
  t.same(synthesized.layers.map((l) => l.digest), diffIds, 'layer digests are the diff IDs (uncompressed layers)');
  t.same(
    synthesized.layers.map((l) => [l.digest, l.size]),
    skopeoDockerManifest.layers.map((l) => [l.digest, l.size]),
    'the layers skopeo sees in the archive',
  );
  t.ok(synthesized.layers.every((l) => l.mediaType === 'application/vnd.docker.image.rootfs.diff.tar'));
  t.equal(fromDocker.blobs, 2 + image.layers.length);

  // oci-archive: a bare ref name "1" needs a repository.
  await t.rejects(importFile(env, ociTar), { code: 'ARCHIVE_NAME' });
  const fromOci = await importFile(env, ociTar, ['proj/app:oci']);
  t.same(fromOci.images.map((i) => [i.repo, i.tag, i.digest, i.mediaType]), [['proj/app', 'oci', image.manifestDigest, OCI_MANIFEST]], 'the manifest digest umoci made');
  t.equal(fromOci.newBlobs, 1 + image.layers.length, 'manifest and gzip layers new; the config was there');
  for (const d of ociLayers) t.ok(await env.store.stat(d), `OCI layer ${d.slice(0, 19)} in the store`);
  // The same, gzip-compressed, into another store.
  const gzEnv = await openStore(t);
  const ociTarGz = join(work, 'oci.tar.gz');
  writeFileSync(ociTarGz, gzipSync(readFileSync(ociTar)));
  const fromGz = await importFile(gzEnv, ociTarGz, ['proj/app:oci']);
  t.equal(fromGz.images[0]!.digest, image.manifestDigest);
  t.equal(fromGz.bytes, image.totalBytes);
  await checkStore(t, env);
  await checkStore(t, gzEnv);

  // Export both tags into one archive.
  const exported = join(work, 'export.tar');
  const result = await exportImages(['proj/app:1', 'proj/app:oci'], createWriteStream(exported), { store: env.store, catalog: env.catalog, log: env.log, resolveName });
  t.equal(result.images.length, 2);
  t.equal(result.blobs, 1 + 1 + 2 * image.layers.length + 1, 'two manifests, one config, both sets of layers');

  // skopeo reads it as an OCI archive: same raw manifest, and a full copy checks out.
  const raw = (await run('skopeo', ['inspect', '--raw', `oci-archive:${exported}:oci`])).stdout;
  t.equal(sha256Of(Buffer.from(raw)), image.manifestDigest, 'skopeo inspect --raw oci-archive: gives the same manifest bytes');
  const dirOut = join(work, 'dir-oci');
  await run('skopeo', ['copy', '-q', `oci-archive:${exported}:oci`, `dir:${dirOut}`]);
  const checked = verifyDirCopy(dirOut);
  t.same(checked.problems, []);
  t.equal(checked.manifest.config.digest, configDigest);
  t.same(checked.manifest.layers.map((l) => l.digest), ociLayers);
  // skopeo's OCI layout reader looks only at index.json entries of OCI media types, so the
  // schema2 image (from the docker archive) is not found by its ref name there; docker load and
  // skopeo's docker-archive: read it through manifest.json below.
  const notFound = await run('skopeo', ['inspect', '--raw', `oci-archive:${exported}:1`], { allowFail: true });
  t.not(notFound.code, 0, 'skopeo oci-archive: skips the schema2 entry (a skopeo limitation)');

  // ... and as a docker archive (manifest.json), as docker load would.
  const dirDocker = join(work, 'dir-docker');
  await run('skopeo', ['copy', '-q', `docker-archive:${exported}:proj/app:1`, `dir:${dirDocker}`]);
  const checkedDocker = verifyDirCopy(dirDocker);
  t.same(checkedDocker.problems, []);
  t.equal(checkedDocker.manifest.config.digest, configDigest);
  t.same(checkedDocker.manifest.layers.map((l) => l.digest), diffIds);

  // Re-import Cove's own export into a fresh store: same digests.
  const again = await openStore(t);
  const reimported = await importFile(again, exported);
  t.same(
    reimported.images.map((i) => `${i.repo}:${i.tag} ${i.digest}`).sort(),
    [`proj/app:1 ${fromDocker.images[0]!.digest}`, `proj/app:oci ${image.manifestDigest}`].sort(),
  );
  t.same((await snapshot(again)).blobs, (await snapshot(env)).blobs);

  // Truncated and tampered real archives: refused, nothing changes.
  const truncated = join(work, 'truncated.tar');
  writeFileSync(truncated, readFileSync(dockerTar).subarray(0, 1_500_000));
  const ociBytes = readFileSync(ociTar);
  const layerAt = tarOffsets(ociBytes).get(`blobs/sha256/${ociLayers[0]!.slice(7)}`)!;
  t.ok(layerAt, 'found the layer in the OCI archive');
  const tamperedBytes = Buffer.from(ociBytes);
  tamperedBytes[layerAt.offset + Math.floor(layerAt.size / 2)] ^= 0x01;
  const tampered = join(work, 'tampered.tar');
  writeFileSync(tampered, tamperedBytes);
  for (const [label, store] of [
    ['a store that has the image', env],
    ['a fresh store', await openStore(t)],
  ] as const) {
    const before = await snapshot(store);
    await t.rejects(importFile(store, truncated), { code: 'ARCHIVE_TRUNCATED', message: /truncated/ }, `truncated docker archive refused (${label})`);
    t.same(await snapshot(store), before, `nothing changed (${label})`);
    await t.rejects(
      importFile(store, tampered, ['proj/app:tampered']),
      { code: 'ARCHIVE_DIGEST_MISMATCH', message: new RegExp(`blobs/sha256/${ociLayers[0]!.slice(7)} in the archive does not match`) },
      `tampered OCI archive refused (${label})`,
    );
    t.same(await snapshot(store), before, `nothing changed (${label})`);
  }

  // docker load (Debian docker.io 20.10 reads manifest.json), then docker save back into Cove.
  t.test('docker load and docker save', async (t) => {
    if (!requireTools(t, ['dockerd', 'containerd'])) return;
    if (!dockerCli()) return void requireTools(t, ['docker']);
    if (!requireRoot(t, 'dockerd')) return;
    const c = Cleanup.forTest(t);
    const ctd = await startContainerd(c);
    const dockerd = await startDockerd(c, ctd.socket, {});
    const loaded = await dockerd.docker(['load', '-i', exported]);
    t.match(loaded.stdout, /Loaded image: proj\/app:1/);
    t.match(loaded.stdout, /Loaded image: proj\/app:oci/);
    const inspect = JSON.parse((await dockerd.docker(['image', 'inspect', 'proj/app:1'])).stdout) as Array<{ Id: string; RootFS: { Layers: string[] }; RepoTags: string[] }>;
    t.equal(inspect[0]!.Id, configDigest, 'docker computes the image ID from the exported config');
    t.same(inspect[0]!.RootFS.Layers, diffIds, 'and the layers it unpacked match the diff IDs');
    t.same(inspect[0]!.RepoTags.sort(), ['proj/app:1', 'proj/app:oci']);

    const saved = join(work, 'saved.tar');
    await dockerd.docker(['save', '-o', saved, 'proj/app:1']);
    const fromSave = await openStore(t);
    const imported = await importFile(fromSave, saved);
    t.equal(imported.format, 'docker-archive');
    t.same(imported.images.map((i) => `${i.repo}:${i.tag}`), ['proj/app:1']);
    const m = JSON.parse((await fromSave.store.readAll(imported.images[0]!.digest)).toString()) as { config: { digest: string }; layers: Array<{ digest: string }> };
    t.equal(m.config.digest, configDigest);
    t.same(m.layers.map((l) => l.digest), diffIds);
    t.equal(imported.images[0]!.digest, fromDocker.images[0]!.digest, 'docker save and skopeo docker-archive give the same image');
    await checkStore(t, fromSave);
  });
});
