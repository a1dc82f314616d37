// importArchive with archives built in-process: OCI layouts and docker save archives, plain and
// gzip, entries in any order; and the failures (truncated, tampered, missing, bad JSON, not a
// tar), each of which must leave store and catalog exactly as they were.
import { createHash } from 'node:crypto';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import t from 'tap';
import { ArchiveError, importArchive, type ImportOptions } from '../../src/archive/import.js';
import { DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST } from '../../src/oci/mediatypes.js';
import { makeImage, makeIndex, randomBytes, sha256Of } from '../helpers/images.js';
import {
  blobName,
  buildTar,
  descriptorOf,
  dockerSaveFiles,
  imageBlobs,
  layoutFiles,
  openStore,
  resolveName,
  shuffle,
  snapshot,
  type Env,
  type TarFile,
} from './helpers.js';

/** `bytes` as a stream of `size`-byte chunks (a file or socket delivers it piecewise). */
function chunked(bytes: Buffer, size = 7_919): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < bytes.length; i += size) yield bytes.subarray(i, i + size);
    })(),
  );
}

function options(env: Env, extra: Partial<ImportOptions> = {}): ImportOptions {
  return { store: env.store, catalog: env.catalog, log: env.log, resolveName, now: () => 1_700_000_000_000, ...extra };
}

const digestOfFile = async (env: Env, digest: string) => sha256Of(await env.store.readAll(digest));

t.test('OCI layout: blobs verified into the store, manifest and tag registered', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [300_000, 70_000], seed: 'oci-plain', mediaType: 'oci' });
  const archive = await buildTar([
    ...layoutFiles([descriptorOf(image, { 'io.containerd.image.name': 'harbor.example.com/proj/app:1', 'org.opencontainers.image.ref.name': '1' })]),
    ...imageBlobs(image),
  ]);
  const progress: number[] = [];
  const result = await importArchive(chunked(archive), options(env, { onProgress: (n) => progress.push(n) }));

  t.same(result.images, [{ ref: 'harbor.example.com/proj/app:1', digest: image.manifestDigest, mediaType: OCI_MANIFEST, upstream: 'origin', repo: 'proj/app', tag: '1' }]);
  t.equal(result.format, 'oci-layout');
  t.equal(result.blobs, 4);
  t.equal(result.bytes, image.totalBytes);
  t.equal(result.newBlobs, 4);
  t.equal(result.bytesRead, archive.length);
  t.equal(progress.at(-1), archive.length, 'progress reaches the archive size');
  t.ok(progress.every((n, i) => i === 0 || n > progress[i - 1]!), 'progress only grows');

  for (const d of [image.manifestDigest, image.configDigest, ...image.layers.map((l) => l.digest)]) {
    t.equal(await digestOfFile(env, d), d, `${d.slice(0, 19)} stored with the right bytes`);
  }
  t.same(await env.store.readAll(image.manifestDigest), image.manifest, 'manifest bytes exactly as in the archive');
  const tag = await env.catalog.getTag({ upstream: 'origin', repo: 'proj/app', tag: '1' });
  t.match(tag, { digest: image.manifestDigest, mediaType: OCI_MANIFEST, size: image.manifest.length, fetchedAt: 1_700_000_000_000 });
  t.equal(tag?.validatedAt, 0, 'never validated: the next pull with the origin up asks it first');
  t.match(await env.catalog.getBlob(image.manifestDigest), { mediaType: OCI_MANIFEST, size: image.manifest.length, pinned: false });
  t.match(await env.catalog.getBlob(image.layers[0]!.digest), { mediaType: null, size: 300_000 });
  t.same((await env.catalog.manifestRefs(image.manifestDigest))?.sort(), [image.configDigest, ...image.layers.map((l) => l.digest)].sort());
  t.same((await snapshot(env)).tmp, [], 'no temp files left');
});

t.test('OCI layout, gzip-compressed, entries in any order (index.json last)', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [200_000, 1, 0], seed: 'oci-gzip', mediaType: 'oci' });
  const [layout, index] = layoutFiles([descriptorOf(image, { 'io.containerd.image.name': 'proj/app:gz' })]);
  const archive = await buildTar([...shuffle(imageBlobs(image)), index!, layout!], { gzip: true });
  t.equal(archive[0], 0x1f);
  const result = await importArchive(chunked(archive, 1000), options(env));
  t.same(
    result.images.map((i) => [i.repo, i.tag, i.digest]),
    [['proj/app', 'gz', image.manifestDigest]],
  );
  t.equal(result.blobs, 5);
  t.equal(result.bytesRead, archive.length, 'compressed bytes counted');
  for (const l of image.layers) t.equal(await digestOfFile(env, l.digest), l.digest);
});

t.test('docker save (20.10 layout): synthesized schema2 manifest, tag from RepoTags', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [150_000, 90_000], seed: 'docker-save' });
  const files = dockerSaveFiles(image, ['harbor.example.com/proj/app:2', 'proj/app:also']);
  const result = await importArchive(chunked(await buildTar(files)), options(env));

  t.equal(result.format, 'docker-archive');
  t.equal(result.images.length, 2);
  const digest = result.images[0]!.digest;
  t.equal(result.images[1]!.digest, digest, 'both names, one image');
  t.same(result.images.map((i) => `${i.upstream}/${i.repo}:${i.tag}`), ['origin/proj/app:2', 'origin/proj/app:also']);
  const manifestBytes = await env.store.readAll(digest);
  t.equal(sha256Of(manifestBytes), digest, 'the synthesized manifest is stored under its digest');
  const manifest = JSON.parse(manifestBytes.toString()) as { mediaType: string; config: { digest: string; mediaType: string; size: number }; layers: Array<{ digest: string; mediaType: string; size: number }> };
  t.equal(manifest.mediaType, DOCKER_MANIFEST);
  t.same(manifest.config, { mediaType: 'application/vnd.docker.container.image.v1+json', size: image.config.length, digest: image.configDigest });
  t.same(
    manifest.layers,
    image.layers.map((l) => ({ mediaType: 'application/vnd.docker.image.rootfs.diff.tar', size: l.bytes.length, digest: l.digest })),
  );
  t.match(await env.catalog.getTag({ upstream: 'origin', repo: 'proj/app', tag: '2' }), { digest, mediaType: DOCKER_MANIFEST, size: manifestBytes.length });
  t.match(await env.catalog.getBlob(digest), { mediaType: DOCKER_MANIFEST });
  t.equal(result.blobs, 4, 'manifest, config and two layers');
  const snap = await snapshot(env);
  t.equal(snap.blobs.length, 4, 'the VERSION and json files of docker save are not kept');
  t.same(snap.tmp, []);

  // The same archive again: nothing new, same digest (the synthesized manifest is deterministic).
  const again = await importArchive(chunked(await buildTar(files)), options(env));
  t.equal(again.images[0]!.digest, digest);
  t.equal(again.newBlobs, 0);
});

t.test('docker save: gzip layers get the gzip media type; symlinked layers are followed', async (t) => {
  const env = await openStore(t);
  const gz = Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0]), randomBytes('gz-layer', 50_000)]);
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256Of(Buffer.from('x')), sha256Of(Buffer.from('y'))] } }));
  const files: TarFile[] = [
    { name: 'aaa/layer.tar', body: gz },
    { name: 'bbb/layer.tar', type: 'symlink', linkname: '../aaa/layer.tar' },
    { name: `${sha256Of(config).slice(7)}.json`, body: config },
    { name: 'manifest.json', body: Buffer.from(JSON.stringify([{ Config: `${sha256Of(config).slice(7)}.json`, RepoTags: ['proj/gz:1'], Layers: ['aaa/layer.tar', 'bbb/layer.tar'] }])) },
  ];
  const result = await importArchive(chunked(await buildTar(files)), options(env));
  const manifest = JSON.parse((await env.store.readAll(result.images[0]!.digest)).toString()) as { layers: Array<{ digest: string; mediaType: string }> };
  t.same(
    manifest.layers.map((l) => [l.digest, l.mediaType]),
    [
      [sha256Of(gz), 'application/vnd.docker.image.rootfs.diff.tar.gzip'],
      [sha256Of(gz), 'application/vnd.docker.image.rootfs.diff.tar.gzip'],
    ],
  );
  t.equal(result.blobs, 3);
});

t.test('docker 25 style: OCI layout beside manifest.json, names from RepoTags when the index has none', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [40_000], seed: 'docker25', mediaType: 'oci' });
  const files = [
    ...imageBlobs(image),
    ...layoutFiles([descriptorOf(image)]),
    {
      name: 'manifest.json',
      body: Buffer.from(JSON.stringify([{ Config: blobName(image.configDigest), RepoTags: ['proj/d25:1'], Layers: image.layers.map((l) => blobName(l.digest)) }])),
    },
  ];
  const result = await importArchive(chunked(await buildTar(files)), options(env));
  t.equal(result.format, 'oci-layout');
  t.same(result.images.map((i) => [i.repo, i.tag, i.digest]), [['proj/d25', '1', image.manifestDigest]], 'the archive manifest is kept, not synthesized');
});

t.test('a bare ref name needs a repository: refused without --tag, fine with it', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [10_000], seed: 'bare', mediaType: 'oci' });
  const archive = await buildTar([...layoutFiles([descriptorOf(image, { 'org.opencontainers.image.ref.name': '1' })]), ...imageBlobs(image)]);
  const before = await snapshot(env);
  await t.rejects(importArchive(chunked(archive), options(env)), { code: 'ARCHIVE_NAME', message: /named only "1".*--tag/ });
  t.same(await snapshot(env), before, 'nothing kept');

  const result = await importArchive(chunked(archive), options(env, { tags: ['proj/bare:7', 'docker.io/nginx:1'] }));
  t.same(
    result.images.map((i) => `${i.upstream}/${i.repo}:${i.tag}`),
    ['origin/proj/bare:7', 'dockerhub/library/nginx:1'],
  );
  t.equal((await env.catalog.listTags()).length, 2, 'the ref name "1" is not used when tags are given');

  await t.rejects(importArchive(chunked(archive), options(env, { tags: ['Not A Name'] })), { code: 'ARCHIVE_NAME' });
  const throwing = () => {
    throw new Error('no route for registry "quay.io"');
  };
  await t.rejects(importArchive(chunked(archive), options(env, { tags: ['quay.io/x:1'], resolveName: throwing })), { code: 'ARCHIVE_NAME', message: /no route/ });
});

t.test('a full ref name (skopeo oci-archive:FILE:proj/app:1) is used as the name', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [10_000], seed: 'fullref', mediaType: 'oci' });
  const archive = await buildTar([...layoutFiles([descriptorOf(image, { 'org.opencontainers.image.ref.name': 'proj/full:3' })]), ...imageBlobs(image)]);
  const result = await importArchive(chunked(archive), options(env));
  t.same(result.images.map((i) => `${i.repo}:${i.tag}`), ['proj/full:3']);
});

t.test('multi-platform index: children present are imported, an absent child is allowed', async (t) => {
  const env = await openStore(t);
  const amd = makeImage({ layers: [20_000], seed: 'idx-amd', mediaType: 'oci', architecture: 'amd64' });
  const arm = makeImage({ layers: [20_000], seed: 'idx-arm', mediaType: 'oci', architecture: 'arm64' });
  const index = makeIndex([{ image: amd }, { image: arm }], 'oci');
  const files = [
    ...layoutFiles([{ mediaType: OCI_INDEX, digest: index.digest, size: index.bytes.length, annotations: { 'io.containerd.image.name': 'proj/multi:1' } }]),
    { name: blobName(index.digest), body: index.bytes },
    ...imageBlobs(amd),
  ];
  const result = await importArchive(chunked(await buildTar(files)), options(env));
  t.same(result.images.map((i) => [i.tag, i.digest, i.mediaType]), [['1', index.digest, OCI_INDEX]]);
  t.equal(result.blobs, 4, 'index, one child manifest, its config and layer');
  t.match(await env.catalog.getBlob(index.digest), { mediaType: OCI_INDEX });
  t.match(await env.catalog.getBlob(amd.manifestDigest), { mediaType: OCI_MANIFEST });
  t.equal(await env.store.stat(arm.manifestDigest), null);
  t.ok(env.lines.some((l) => l.child === arm.manifestDigest), 'the absent child is logged');

  // No child at all is an error.
  const env2 = await openStore(t);
  const empty = [...files.slice(0, 3)];
  await t.rejects(importArchive(chunked(await buildTar(empty)), options(env2)), { code: 'ARCHIVE_BLOB_MISSING', message: /none of its 2 manifests/ });
});

t.test('blobs of the archive already in the store are checked and kept; the import adds the rest', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [30_000, 30_000], seed: 'partial', mediaType: 'oci' });
  const w = await env.store.createWriter(image.layers[0]!.digest, image.layers[0]!.bytes.length);
  await w.write(image.layers[0]!.bytes);
  await w.commit();
  const archive = await buildTar([...layoutFiles([descriptorOf(image, { 'io.containerd.image.name': 'proj/p:1' })]), ...imageBlobs(image)]);
  const result = await importArchive(chunked(archive), options(env));
  t.equal(result.blobs, 4);
  t.equal(result.newBlobs, 3);
  t.equal(result.newBytes, image.totalBytes - 30_000);
});

t.test('blobs no image refers to are not kept', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [5_000], seed: 'stray', mediaType: 'oci' });
  const stray = randomBytes('stray-blob', 1234);
  const archive = await buildTar([
    ...layoutFiles([descriptorOf(image, { 'io.containerd.image.name': 'proj/s:1' })]),
    ...imageBlobs(image),
    { name: blobName(sha256Of(stray)), body: stray },
  ]);
  await importArchive(chunked(archive), options(env));
  t.equal(await env.store.stat(sha256Of(stray)), null);
  t.equal((await snapshot(env)).blobs.length, 3);
});

t.test('no blob of an OCI layout is in the store until the whole archive is read and checked', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [1_500_000, 700_000], seed: 'visible', mediaType: 'oci' });
  const [layout, index] = layoutFiles([descriptorOf(image, { 'io.containerd.image.name': 'proj/v:1' })]);
  const archive = await buildTar([...imageBlobs(image), layout!, index!]);
  // Everything but index.json: the blobs are read (and staged), the import waits for the rest.
  const split = archive.indexOf(Buffer.from('index.json\0'));
  t.ok(split > 0 && split % 512 === 0, 'index.json starts a tar header');
  const input = new PassThrough();
  const importing = importArchive(input, options(env));
  input.write(archive.subarray(0, split));
  const blobBytes = image.totalBytes;
  const staged = () => readdirSync(env.store.tmpDir).reduce((n, f) => n + statSync(join(env.store.tmpDir, f)).size, 0);
  for (let i = 0; i < 500 && staged() < blobBytes; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(staged(), blobBytes, 'every blob of the archive is read into temp files');
  for (const d of [image.manifestDigest, image.configDigest, ...image.layers.map((l) => l.digest)]) {
    t.equal(await env.store.stat(d), null, `${d.slice(0, 19)} is not in the store yet`);
  }
  t.same((await snapshot(env)).blobs, [], 'the store has no blob of it');
  input.end(archive.subarray(split));
  const result = await importing;
  t.equal(result.newBlobs, 4);
  for (const d of [image.manifestDigest, image.configDigest, ...image.layers.map((l) => l.digest)]) t.equal(await digestOfFile(env, d), d, `${d.slice(0, 19)} is in the store now`);
  t.same((await snapshot(env)).tmp, [], 'the temp files became the blobs');
});

// ------------------------------------------------------------------------------- failures

t.test('failures name the problem and leave store and catalog as they were', async (t) => {
  const image = makeImage({ layers: [400_000, 100_000], seed: 'bad', mediaType: 'oci' });
  const named = descriptorOf(image, { 'io.containerd.image.name': 'proj/bad:1' });
  const good = [...layoutFiles([named]), ...imageBlobs(image)];
  const goodTar = await buildTar(good);
  const tamperedLayer = Buffer.from(image.layers[0]!.bytes);
  tamperedLayer[123_456] ^= 0xff;
  const legacy = makeImage({ layers: [60_000], seed: 'bad-legacy' });
  const legacyFiles = dockerSaveFiles(legacy, ['proj/legacy:1']);
  const tamperedLegacy = legacyFiles.map((f) => (f.name.endsWith('/layer.tar') ? { ...f, body: Buffer.concat([f.body!.subarray(0, 100), Buffer.from('X'), f.body!.subarray(101)]) } : f));
  const tamperedConfig = legacyFiles.map((f) => (f.name.endsWith('.json') && !f.name.includes('/') && f.name !== 'manifest.json' ? { ...f, body: Buffer.from(f.body!.toString().replace('amd64', 'arm64')) } : f));
  // Where the second layer's data sits in the tar: a cut there is a truncation mid-entry.
  const cutAt = goodTar.indexOf(image.layers[1]!.bytes.subarray(0, 64)) + 5_000;

  const cases: Array<{ name: string; archive: () => Promise<Buffer>; code: string; message: RegExp }> = [
    { name: 'truncated mid-blob', archive: async () => goodTar.subarray(0, cutAt), code: 'ARCHIVE_TRUNCATED', message: /truncated/ },
    { name: 'truncated gzip', archive: async () => (await buildTar(good, { gzip: true })).subarray(0, 300_000), code: 'ARCHIVE_TRUNCATED', message: /truncated/ },
    {
      name: 'truncated at an entry boundary (the index is gone)',
      archive: async () => buildTar(good.filter((f) => f.name !== 'index.json')),
      code: 'ARCHIVE_FORMAT',
      message: /neither index.json/,
    },
    {
      name: 'tampered blob',
      archive: async () => buildTar(good.map((f) => (f.name === blobName(image.layers[0]!.digest) ? { ...f, body: tamperedLayer } : f))),
      code: 'ARCHIVE_DIGEST_MISMATCH',
      message: new RegExp(`${blobName(image.layers[0]!.digest)} in the archive does not match`),
    },
    { name: 'tampered docker save layer', archive: async () => buildTar(tamperedLegacy), code: 'ARCHIVE_DIGEST_MISMATCH', message: /its config says/ },
    { name: 'tampered docker save config', archive: async () => buildTar(tamperedConfig), code: 'ARCHIVE_DIGEST_MISMATCH', message: /image ID/ },
    {
      name: 'missing layer',
      // (layer 1 is in the store already, which is as good as in the archive; layer 0 is not)
      archive: async () => buildTar(good.filter((f) => f.name !== blobName(image.layers[0]!.digest))),
      code: 'ARCHIVE_BLOB_MISSING',
      message: new RegExp(`layer 0 of manifest ${image.manifestDigest}.*not in the archive`),
    },
    {
      name: 'missing docker save layer',
      archive: async () => buildTar(legacyFiles.filter((f) => !f.name.endsWith('/layer.tar'))),
      code: 'ARCHIVE_BLOB_MISSING',
      message: /names layer .*layer.tar, which is not in the archive/,
    },
    {
      name: 'bad index.json',
      archive: async () => buildTar(good.map((f) => (f.name === 'index.json' ? { ...f, body: Buffer.from('{"manifests": [') } : f))),
      code: 'ARCHIVE_BAD_JSON',
      message: /index.json in the archive is not valid JSON/,
    },
    {
      name: 'bad manifest.json',
      archive: async () => buildTar(legacyFiles.map((f) => (f.name === 'manifest.json' ? { ...f, body: Buffer.from('[{"Config": 1}]') } : f))),
      code: 'ARCHIVE_BAD_JSON',
      message: /manifest.json\[0\] needs "Config"/,
    },
    {
      name: 'descriptor size differs from the blob',
      archive: async () => buildTar([...layoutFiles([{ ...named, size: named.size + 1 }]), ...imageBlobs(image)]),
      code: 'ARCHIVE_DIGEST_MISMATCH',
      message: /says .* is \d+ bytes; the blob is/,
    },
    { name: 'not a tar', archive: async () => randomBytes('not-a-tar', 100_000), code: 'ARCHIVE_NOT_TAR', message: /not a tar archive/ },
    { name: 'xz', archive: async () => Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), randomBytes('xz', 1000)]), code: 'ARCHIVE_COMPRESSION', message: /xz-compressed/ },
    { name: 'empty input', archive: async () => Buffer.alloc(0), code: 'ARCHIVE_FORMAT', message: /empty/ },
    {
      name: 'garbage after a good start',
      archive: async () => Buffer.concat([goodTar.subarray(0, 2048), randomBytes('garbage', 8192)]),
      code: 'ARCHIVE_CORRUPT',
      message: /corrupt/,
    },
  ];

  for (const c of cases) {
    t.test(c.name, async (t) => {
      const env = await openStore(t);
      // Something from before that must survive: one blob of the image and a tag.
      const pre = image.layers[1]!;
      const w = await env.store.createWriter(pre.digest, pre.bytes.length);
      await w.write(pre.bytes);
      await w.commit();
      await env.catalog.putBlob(pre.digest, { size: pre.bytes.length, mediaType: null, lastAccess: 1, pinned: false });
      await env.catalog.putTag({ upstream: 'origin', repo: 'proj/bad', tag: '1' }, { digest: sha256Of(Buffer.from('old')), mediaType: OCI_MANIFEST, size: 3, fetchedAt: 1, validatedAt: 1 });
      const before = await snapshot(env);

      const err = await importArchive(chunked(await c.archive()), options(env)).then(
        () => null,
        (e: unknown) => e,
      );
      t.ok(err instanceof ArchiveError, `an ArchiveError (${String(err)})`);
      t.comment(`${(err as ArchiveError).code}: ${(err as Error).message}`);
      t.match(err, { code: c.code, message: c.message });
      t.same(await snapshot(env), before, 'store, temp dir and catalog unchanged');
      t.equal(await digestOfFile(env, pre.digest), pre.digest, 'the blob that was there before is still there');
    });
  }
});

t.test('a failing input stream is ARCHIVE_READ, and the input is not destroyed by the importer', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [300_000], seed: 'read-error', mediaType: 'oci' });
  const archive = await buildTar([...layoutFiles([descriptorOf(image, { 'io.containerd.image.name': 'proj/r:1' })]), ...imageBlobs(image)]);
  const input = Readable.from(
    (async function* () {
      yield archive.subarray(0, 200_000);
      throw new Error('connection reset by peer');
    })(),
  );
  const before = await snapshot(env);
  await t.rejects(importArchive(input, options(env)), { code: 'ARCHIVE_READ', message: /connection reset/ });
  t.same(await snapshot(env), before);
});

t.test('an input destroyed without an error (an aborted upload) fails instead of hanging', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [300_000], seed: 'aborted', mediaType: 'oci' });
  const archive = await buildTar([...layoutFiles([descriptorOf(image, { 'io.containerd.image.name': 'proj/a:1' })]), ...imageBlobs(image)]);
  const input = new PassThrough();
  input.write(archive.subarray(0, 100_000));
  setTimeout(() => input.destroy(), 50);
  const before = await snapshot(env);
  await t.rejects(importArchive(input, options(env)), { code: 'ARCHIVE_READ', message: /closed before the end/ });
  t.same(await snapshot(env), before);
});

t.test('a large layer streams through (never held whole)', async (t) => {
  const env = await openStore(t);
  // 48 MiB layer generated piecewise; the archive is produced by tar-stream as it is read.
  const size = 48 * 1024 * 1024;
  const piece = randomBytes('big', 1024 * 1024);
  const hash = createHash('sha256');
  for (let i = 0; i < 48; i++) hash.update(piece);
  const layerDigest = `sha256:${hash.digest('hex')}`;
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [layerDigest] } }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Of(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: layerDigest, size }],
    }),
  );
  const { pack } = await import('tar-stream');
  const p = pack();
  const add = (name: string, body: Buffer) => new Promise<void>((res, rej) => p.entry({ name }, body, (e) => (e ? rej(e) : res())));
  const produce = (async () => {
    for (const f of layoutFiles([{ mediaType: OCI_MANIFEST, digest: sha256Of(manifest), size: manifest.length, annotations: { 'io.containerd.image.name': 'proj/big:1' } }])) await add(f.name, f.body!);
    await add(blobName(sha256Of(manifest)), manifest);
    await add(blobName(sha256Of(config)), config);
    await new Promise<void>((res, rej) => {
      const sink = p.entry({ name: blobName(layerDigest), size }, (e) => (e ? rej(e) : res()));
      let i = 0;
      const more = () => {
        while (i < 48) {
          i++;
          if (!sink.write(piece)) return void sink.once('drain', more);
        }
        (sink as unknown as { end(): void }).end();
      };
      more();
    });
    p.finalize();
  })();
  const heapBefore = process.memoryUsage().heapUsed;
  let peak = 0;
  const result = await importArchive(Readable.from(p as unknown as AsyncIterable<Buffer>), options(env, { onProgress: () => (peak = Math.max(peak, process.memoryUsage().heapUsed)) }));
  await produce;
  t.equal(result.blobs, 3);
  t.equal((await env.store.stat(layerDigest))?.size, size);
  t.comment(`heap grew by at most ${((peak - heapBefore) / 1048576).toFixed(1)} MiB while importing a 48 MiB layer`);
  t.ok(peak - heapBefore < 40 * 1024 * 1024, 'heap stays well below the layer size');
});
