// exportImages: one tar that is an OCI layout and a docker-load archive, checked entry by entry;
// a round trip through importArchive; indexes with absent platforms; refusals before writing.
import { createWriteStream, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import t from 'tap';
import { hostArchitecture } from '../../src/archive/common.js';
import { exportImages, type ExportOptions } from '../../src/archive/export.js';
import { importArchive } from '../../src/archive/import.js';
import { OCI_INDEX } from '../../src/oci/mediatypes.js';
import type { Env } from './helpers.js';
import { blobName, buildTar, descriptorOf, imageBlobs, layoutFiles, openStore, readTar, resolveName, snapshot } from './helpers.js';
import { makeImage, makeIndex, sha256Of, type Image } from '../helpers/images.js';

function options(env: Env, extra: Partial<ExportOptions> = {}): ExportOptions {
  return { store: env.store, catalog: env.catalog, log: env.log, resolveName, ...extra };
}

/** Puts images into a store through an OCI-layout import, tagged as given. */
async function seed(env: Env, entries: Array<{ name: string; image: Image }>, extra: Array<{ name: string; body: Buffer }> = []): Promise<void> {
  const files = [
    ...layoutFiles(entries.map((e) => descriptorOf(e.image, { 'io.containerd.image.name': e.name }))),
    ...entries.flatMap((e) => imageBlobs(e.image)),
    ...extra,
  ];
  await importArchive(Readable.from([await buildTar(files)]), { store: env.store, catalog: env.catalog, log: env.log, resolveName });
}

/** Collects what is written. */
function sink(): { stream: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    highWaterMark: 64 * 1024,
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      setImmediate(cb); // a slow consumer: the exporter must wait for it
    },
  });
  return { stream, bytes: () => Buffer.concat(chunks) };
}

t.test('one image: an OCI layout and a docker-load archive in one tar', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [250_000, 12_345, 0], seed: 'export-one', mediaType: 'oci' });
  await seed(env, [{ name: 'proj/app:1', image }]);

  const out = sink();
  const progress: number[] = [];
  const result = await exportImages(['proj/app:1'], out.stream, options(env, { onProgress: (n) => progress.push(n) }));
  const tar = await readTar(out.bytes());

  t.same(tar.order.slice(0, 5), ['oci-layout', 'index.json', 'manifest.json', 'blobs/', 'blobs/sha256/'], 'metadata first');
  t.same(JSON.parse(tar.files.get('oci-layout')!.toString()), { imageLayoutVersion: '1.0.0' });
  const index = JSON.parse(tar.files.get('index.json')!.toString()) as { schemaVersion: number; manifests: Array<Record<string, unknown>> };
  t.equal(index.schemaVersion, 2);
  t.same(index.manifests, [
    {
      mediaType: image.mediaType,
      digest: image.manifestDigest,
      size: image.manifest.length,
      annotations: { 'io.containerd.image.name': 'proj/app:1', 'org.opencontainers.image.ref.name': '1' },
    },
  ]);
  t.same(JSON.parse(tar.files.get('manifest.json')!.toString()), [
    { Config: blobName(image.configDigest), RepoTags: ['proj/app:1'], Layers: image.layers.map((l) => blobName(l.digest)) },
  ]);
  const blobs = [...tar.files.keys()].filter((n) => n.startsWith('blobs/'));
  t.equal(blobs.length, 5, 'manifest, config, three layers');
  for (const name of blobs) t.equal(sha256Of(tar.files.get(name)!), name.replace('blobs/sha256/', 'sha256:'), `${name.slice(0, 26)} hashes to its name`);
  t.same(tar.files.get(blobName(image.manifestDigest)), image.manifest, 'manifest bytes exact');
  t.same(result, {
    images: [{ ref: 'proj/app:1', digest: image.manifestDigest, mediaType: image.mediaType, platforms: null, dockerImage: image.manifestDigest }],
    blobs: 5,
    bytes: image.totalBytes,
    archiveBytes: out.bytes().length,
  });
  t.equal(progress.at(-1), image.totalBytes);
});

t.test('round trip: export, import into a fresh store, same digests; several refs and a digest ref', async (t) => {
  const env = await openStore(t);
  const a = makeImage({ layers: [100_000, 50_000], seed: 'rt-a' });
  const b = makeImage({ layers: [100_000], seed: 'rt-b', mediaType: 'oci' });
  await seed(env, [
    { name: 'proj/a:1', image: a },
    { name: 'proj/a:latest', image: a },
    { name: 'harbor.example.com/proj/b:2', image: b },
  ]);
  const out = sink();
  const result = await exportImages(['proj/a:1', 'proj/a', 'harbor.example.com/proj/b:2', `proj/b@${b.manifestDigest}`], out.stream, options(env));
  t.equal(result.blobs, 3 + 1 + 1 + 1 + 1, 'shared blobs written once');
  const tar = await readTar(out.bytes());
  const manifestJson = JSON.parse(tar.files.get('manifest.json')!.toString()) as Array<{ RepoTags: string[] }>;
  t.same(manifestJson.map((e) => e.RepoTags), [['proj/a:1', 'proj/a:latest'], ['harbor.example.com/proj/b:2']], 'one docker entry per image, every tag');
  const index = JSON.parse(tar.files.get('index.json')!.toString()) as { manifests: Array<{ digest: string; annotations: Record<string, string> }> };
  t.same(
    index.manifests.map((m) => m.annotations),
    [
      { 'io.containerd.image.name': 'proj/a:1', 'org.opencontainers.image.ref.name': '1' },
      { 'io.containerd.image.name': 'proj/a:latest', 'org.opencontainers.image.ref.name': 'latest' },
      { 'io.containerd.image.name': 'harbor.example.com/proj/b:2', 'org.opencontainers.image.ref.name': '2' },
      { 'io.containerd.image.name': `proj/b@${b.manifestDigest}` },
    ],
  );

  const fresh = await openStore(t);
  // The digest-only entry has no tag: name it on import... an archive entry without a tag is
  // refused, so drop it from index.json here and check the rest round-trips.
  const files = [...tar.files].map(([name, body]) =>
    name === 'index.json' ? { name, body: Buffer.from(JSON.stringify({ ...index, manifests: index.manifests.slice(0, 3) })) } : { name, body },
  );
  const imported = await importArchive(Readable.from([await buildTar(files)]), { store: fresh.store, catalog: fresh.catalog, log: fresh.log, resolveName });
  t.same(
    imported.images.map((i) => `${i.repo}:${i.tag} ${i.digest}`),
    [`proj/a:1 ${a.manifestDigest}`, `proj/a:latest ${a.manifestDigest}`, `proj/b:2 ${b.manifestDigest}`],
  );
  t.same((await snapshot(fresh)).blobs, (await snapshot(env)).blobs, 'the same blobs, byte for byte');
});

t.test('an index: present platforms exported, absent ones left out; docker gets the host platform', async (t) => {
  const env = await openStore(t);
  const host = hostArchitecture();
  const other = host === 'arm64' ? 'amd64' : 'arm64';
  const mine = makeImage({ layers: [30_000], seed: 'idx-mine', mediaType: 'oci', architecture: host });
  const theirs = makeImage({ layers: [30_000], seed: 'idx-theirs', mediaType: 'oci', architecture: other });
  const absent = makeImage({ layers: [30_000], seed: 'idx-absent', mediaType: 'oci', architecture: 's390x' });
  // theirs first, so "first complete" and "host" differ
  const index = makeIndex([{ image: theirs }, { image: mine }, { image: absent }], 'oci');
  await importArchive(
    Readable.from([
      await buildTar([
        ...layoutFiles([{ mediaType: OCI_INDEX, digest: index.digest, size: index.bytes.length, annotations: { 'io.containerd.image.name': 'proj/multi:1' } }]),
        { name: blobName(index.digest), body: index.bytes },
        ...imageBlobs(theirs),
        ...imageBlobs(mine),
      ]),
    ]),
    { store: env.store, catalog: env.catalog, log: env.log, resolveName },
  );
  // An incomplete platform: its manifest is there but a layer is not.
  await env.store.remove(theirs.layers[0]!.digest);

  const out = sink();
  const result = await exportImages(['proj/multi:1'], out.stream, options(env));
  t.same(result.images[0], { ref: 'proj/multi:1', digest: index.digest, mediaType: OCI_INDEX, platforms: { included: 1, listed: 3 }, dockerImage: mine.manifestDigest });
  const tar = await readTar(out.bytes());
  t.same(tar.files.get(blobName(index.digest)), index.bytes, 'the index, exact bytes');
  t.ok(tar.files.has(blobName(mine.manifestDigest)));
  t.notOk(tar.files.has(blobName(theirs.manifestDigest)), 'incomplete platform left out');
  t.notOk(tar.files.has(blobName(absent.manifestDigest)));
  t.same(JSON.parse(tar.files.get('manifest.json')!.toString()), [{ Config: blobName(mine.configDigest), RepoTags: ['proj/multi:1'], Layers: [blobName(mine.layers[0]!.digest)] }]);
  t.ok(env.lines.some((l) => l.child === absent.manifestDigest) && env.lines.some((l) => l.child === theirs.manifestDigest), 'left-out platforms are logged');
});

t.test('refused before anything is written: unknown tag, missing blob, bad ref', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [10_000, 10_000], seed: 'export-missing', mediaType: 'oci' });
  await seed(env, [{ name: 'proj/m:1', image }]);
  await env.store.remove(image.layers[1]!.digest);

  const cases: Array<[string[], string, RegExp]> = [
    [['proj/nope:1'], 'EXPORT_UNKNOWN', /no tag proj\/nope:1/],
    [['proj/m:1'], 'EXPORT_BLOB_MISSING', new RegExp(`layer 1 ${image.layers[1]!.digest}.*not in the store`)],
    [[`proj/m@${sha256Of(Buffer.from('nothing'))}`], 'EXPORT_BLOB_MISSING', /not in the store/],
    [['Bad Ref'], 'EXPORT_UNKNOWN', /not a valid image reference/],
    [[], 'EXPORT_UNKNOWN', /no image/],
  ];
  for (const [refs, code, message] of cases) {
    const out = new PassThrough();
    let written = 0;
    out.on('data', (c: Buffer) => (written += c.length));
    await t.rejects(exportImages(refs, out, options(env)), { code, message }, `${refs.join(' ')}: ${code}`);
    t.equal(written, 0, 'nothing written');
    t.notOk(out.destroyed, 'the output is left to the caller');
  }
});

t.test('a blob vanishing mid-export fails the export and destroys the output', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [2_000_000, 2_000_000], seed: 'export-vanish', mediaType: 'oci' });
  await seed(env, [{ name: 'proj/v:1', image }]);
  const out = new PassThrough({ highWaterMark: 1024 });
  let first = true;
  out.on('data', () => {
    if (!first) return;
    first = false;
    // Evicted while the export runs.
    void env.store.remove(image.layers[1]!.digest);
  });
  await t.rejects(exportImages(['proj/v:1'], out, options(env)), { code: 'EXPORT_BLOB_MISSING', message: /reading .* from the store failed/ });
  t.ok(out.destroyed);
});

t.test('to a file: the archive on disk reads back the same', async (t) => {
  const env = await openStore(t);
  const image = makeImage({ layers: [500_000], seed: 'export-file' });
  await seed(env, [{ name: 'proj/f:1', image }]);
  const file = join(env.dir, 'out.tar');
  const result = await exportImages(['proj/f:1'], createWriteStream(file), options(env));
  const bytes = readFileSync(file);
  t.equal(bytes.length, result.archiveBytes);
  t.equal(bytes.length % 512, 0, 'whole tar blocks');
  const tar = await readTar(bytes);
  t.same(tar.files.get(blobName(image.layers[0]!.digest)), image.layers[0]!.bytes);
});
