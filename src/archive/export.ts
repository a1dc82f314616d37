// Offline export: images from the store written as one tar that is both an OCI image layout
// (oci-layout, index.json, blobs/<alg>/<hex>: what skopeo's oci-archive: and containerd's
// `ctr import` read) and a `docker load` archive (manifest.json naming config and layers by
// their blobs/ paths: what Debian's docker.io 20.10 needs, as it does not read index.json).
//
// Everything is checked before the first byte is written: every reference resolves, and every
// manifest, config and layer of the images to export is in the store with the size its
// descriptor gives. Then blobs stream from their files into tar entries, one at a time, with
// backpressure from `output`; nothing larger than a manifest is held in memory.
import type { Writable } from 'node:stream';
import type { Logger } from 'pino';
import * as tar from 'tar-stream';
import { isIndexMediaType, OCI_INDEX, sniffMediaType } from '../oci/mediatypes.js';
import { parseDigest } from '../oci/reference.js';
import type { BlobStore } from '../store/blobs.js';
import type { Catalog } from '../store/catalog.js';
import {
  ArchiveError,
  CONTAINERD_NAME_ANNOTATION,
  describeError,
  hostArchitecture,
  isDescriptor,
  OCI_LAYOUT_FILE,
  OCI_LAYOUT_VERSION,
  parseImageName,
  REF_NAME_ANNOTATION,
  type Descriptor,
} from './common.js';
import { ARCHIVE_MANIFEST_MAX_BYTES } from './import.js';

export { ArchiveError } from './common.js';

export interface ExportOptions {
  store: BlobStore;
  catalog: Catalog;
  /** Maps an image name without tag to where Cove keeps it (the same function import uses). */
  resolveName: (name: string) => { upstream: string; repo: string };
  log: Logger;
  /** Called as blob bytes go into the archive, with the total so far. */
  onProgress?: (bytesWritten: number) => void;
  /** The platform whose image manifest.json (docker load) gets from a multi-platform index. Default: this host's. */
  platform?: { os: string; architecture: string; variant?: string };
}

export interface ExportedImage {
  ref: string;
  digest: string;
  mediaType: string;
  /** For an index: how many of its platform manifests are in the archive, and how many it lists. */
  platforms: { included: number; listed: number } | null;
  /** The image manifest docker load gets for this ref (the index's platform pick, or the image itself). */
  dockerImage: string | null;
}

export interface ExportResult {
  images: ExportedImage[];
  /** Blob entries written (manifests, configs, layers), and their bytes. */
  blobs: number;
  bytes: number;
  /** Every byte of the tar, headers and padding included. */
  archiveBytes: number;
}

/** One image manifest whose config and layers are all in the store. */
interface CompleteImage {
  digest: string;
  config: Descriptor;
  layers: Descriptor[];
  platform: Descriptor['platform'] | null;
}

interface PlannedRef {
  ref: string;
  /** The name as written, without tag or digest. */
  name: string;
  tag: string | null;
  digest: string;
  mediaType: string;
  size: number;
  platforms: ExportedImage['platforms'];
  docker: CompleteImage | null;
}

/**
 * Writes the images `refs` name ("proj/app:1", "proj/app@sha256:…", "harbor.example.com/proj/app:1")
 * to `output` as one tar. Fails with ArchiveError before writing anything when a reference is
 * unknown or a blob is missing; a failure while writing destroys `output` (the archive would be
 * incomplete), and the caller removes what it wrote.
 */
export async function exportImages(refs: string[], output: Writable, opts: ExportOptions): Promise<ExportResult> {
  if (refs.length === 0) throw new ArchiveError('EXPORT_UNKNOWN', 'no image to export');
  const blobs = new Map<string, number>(); // digest -> size, in write order
  const planned: PlannedRef[] = [];
  for (const ref of refs) planned.push(await plan(ref, blobs, opts));
  return write(planned, blobs, output, opts);
}

// ------------------------------------------------------------------------------- planning

async function plan(ref: string, blobs: Map<string, number>, opts: ExportOptions): Promise<PlannedRef> {
  const parsed = parseImageName(ref);
  if (!parsed) throw new ArchiveError('EXPORT_UNKNOWN', `"${ref}" is not a valid image reference (REPO:TAG or REPO@DIGEST)`);
  let target: { upstream: string; repo: string };
  try {
    target = opts.resolveName(parsed.name);
  } catch (err) {
    throw new ArchiveError('EXPORT_UNKNOWN', `cannot place "${ref}": ${describeError(err)}`, { cause: err });
  }
  let digest = parsed.digest;
  let tagMediaType: string | null = null;
  const tag = parsed.digest ? parsed.tag : (parsed.tag ?? 'latest');
  if (!digest) {
    const record = await opts.catalog.getTag({ upstream: target.upstream, repo: target.repo, tag: tag! });
    if (!record) throw new ArchiveError('EXPORT_UNKNOWN', `${ref}: this Cove has no tag ${target.repo}:${tag} (upstream ${target.upstream}); pull it through Cove first`);
    digest = record.digest;
    tagMediaType = record.mediaType;
  }
  const root = await readManifest(digest, opts, `${ref}`);
  if (!root) throw new ArchiveError('EXPORT_BLOB_MISSING', `${ref}: manifest ${digest} is not in the store`);
  const mediaType = root.mediaType ?? tagMediaType;
  if (!mediaType) throw new ArchiveError('EXPORT_UNKNOWN', `${ref}: ${digest} is not a manifest Cove can read`);

  const out: PlannedRef = { ref, name: parsed.name, tag, digest, mediaType, size: root.bytes.length, platforms: null, docker: null };
  if (!isIndexMediaType(mediaType)) {
    const image = await completeImage(digest, root.doc, opts);
    if ('missing' in image) throw new ArchiveError('EXPORT_BLOB_MISSING', `${ref}: ${image.missing} of manifest ${digest} is not in the store`);
    blobs.set(digest, root.bytes.length);
    addImage(image, blobs);
    out.docker = image;
    return out;
  }

  const children = Array.isArray(root.doc.manifests) ? (root.doc.manifests as unknown[]).filter(isDescriptor) : [];
  const complete: CompleteImage[] = [];
  for (const child of children) {
    const m = await readManifest(child.digest, opts, `${ref} child`);
    if (!m) {
      opts.log.info({ ref, index: digest, child: child.digest, platform: child.platform }, 'export: platform manifest not in the store; left out');
      continue;
    }
    if (m.bytes.length !== child.size) throw new ArchiveError('EXPORT_BLOB_MISSING', `${ref}: ${child.digest} in the store is ${m.bytes.length} bytes; the index says ${child.size}`);
    if (isIndexMediaType(m.mediaType ?? child.mediaType ?? '')) {
      opts.log.info({ ref, index: digest, child: child.digest }, 'export: nested index left out');
      continue;
    }
    const image = await completeImage(child.digest, m.doc, opts);
    if ('missing' in image) {
      opts.log.info({ ref, index: digest, child: child.digest, platform: child.platform, missing: image.missing }, 'export: platform image incomplete in the store; left out');
      continue;
    }
    complete.push({ ...image, platform: child.platform ?? null });
  }
  if (complete.length === 0) {
    throw new ArchiveError('EXPORT_BLOB_MISSING', `${ref}: none of the ${children.length} platform images of index ${digest} is complete in the store`);
  }
  blobs.set(digest, root.bytes.length);
  for (const image of complete) {
    const size = (await opts.store.stat(image.digest))!.size;
    blobs.set(image.digest, size);
    addImage(image, blobs);
  }
  out.platforms = { included: complete.length, listed: children.length };
  out.docker = pickPlatform(complete, opts.platform ?? { os: 'linux', architecture: hostArchitecture() });
  return out;
}

function addImage(image: CompleteImage, blobs: Map<string, number>): void {
  blobs.set(image.config.digest, image.config.size);
  for (const layer of image.layers) blobs.set(layer.digest, layer.size);
}

async function readManifest(digest: string, opts: ExportOptions, what: string): Promise<{ bytes: Buffer; doc: Record<string, unknown>; mediaType: string | null } | null> {
  if (!parseDigest(digest)) throw new ArchiveError('EXPORT_UNKNOWN', `${what}: ${digest} is not a digest`);
  const stat = await opts.store.stat(digest);
  if (!stat) return null;
  if (stat.size > ARCHIVE_MANIFEST_MAX_BYTES) throw new ArchiveError('EXPORT_UNKNOWN', `${what}: ${digest} is ${stat.size} bytes, too large for a manifest`);
  const bytes = await opts.store.readAll(digest);
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new ArchiveError('EXPORT_UNKNOWN', `${what}: ${digest} in the store is not a JSON manifest`);
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new ArchiveError('EXPORT_UNKNOWN', `${what}: ${digest} in the store is not a JSON manifest`);
  const record = await opts.catalog.getBlob(digest);
  return { bytes, doc: doc as Record<string, unknown>, mediaType: record?.mediaType ?? sniffMediaType(bytes) };
}

/** The manifest's config and layers if every one is in the store with the right size, else what is missing. */
async function completeImage(digest: string, doc: Record<string, unknown>, opts: ExportOptions): Promise<CompleteImage | { missing: string }> {
  if (!isDescriptor(doc.config) || !Array.isArray(doc.layers) || !doc.layers.every(isDescriptor)) {
    throw new ArchiveError('EXPORT_UNKNOWN', `manifest ${digest} in the store has no valid config and layers`);
  }
  const layers = doc.layers as Descriptor[];
  const parts: Array<[string, Descriptor]> = [['config', doc.config], ...layers.map((l, i): [string, Descriptor] => [`layer ${i}`, l])];
  for (const [what, d] of parts) {
    const stat = await opts.store.stat(d.digest);
    if (!stat) return { missing: `${what} ${d.digest} (${d.size} bytes)` };
    if (stat.size !== d.size) return { missing: `${what} ${d.digest} of ${d.size} bytes (the stored file has ${stat.size})` };
  }
  return { digest, config: doc.config, layers, platform: null };
}

/** The image docker load should get: the wanted platform, else the first real platform. */
function pickPlatform(images: CompleteImage[], want: { os: string; architecture: string; variant?: string }): CompleteImage {
  const real = images.filter((i) => i.platform?.os !== 'unknown' && i.platform?.architecture !== 'unknown');
  const same = real.filter((i) => i.platform?.os === want.os && i.platform?.architecture === want.architecture);
  return same.find((i) => want.variant === undefined || i.platform?.variant === want.variant) ?? same[0] ?? real[0] ?? images[0]!;
}

// ------------------------------------------------------------------------------- writing

function blobPath(digest: string): string {
  const [alg, hex] = digest.split(':');
  return `blobs/${alg}/${hex}`;
}

async function write(planned: PlannedRef[], blobs: Map<string, number>, output: Writable, opts: ExportOptions): Promise<ExportResult> {
  // index.json: one descriptor per reference, named as containerd and skopeo look images up.
  const seen = new Set<string>();
  const descriptors: Descriptor[] = [];
  for (const p of planned) {
    const full = p.tag !== null ? `${p.name}:${p.tag}` : `${p.name}@${p.digest}`;
    if (seen.has(full)) continue;
    seen.add(full);
    const annotations: Record<string, string> = { [CONTAINERD_NAME_ANNOTATION]: full };
    if (p.tag !== null) annotations[REF_NAME_ANNOTATION] = p.tag;
    descriptors.push({ mediaType: p.mediaType, digest: p.digest, size: p.size, annotations });
  }
  const index = Buffer.from(`${JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: descriptors }, null, 2)}\n`);

  // manifest.json: one entry per image docker load gets, with every tag that names it.
  const dockerEntries = new Map<string, { Config: string; RepoTags: string[]; Layers: string[] }>();
  for (const p of planned) {
    if (!p.docker) continue;
    let entry = dockerEntries.get(p.docker.digest);
    if (!entry) {
      entry = { Config: blobPath(p.docker.config.digest), RepoTags: [], Layers: p.docker.layers.map((l) => blobPath(l.digest)) };
      dockerEntries.set(p.docker.digest, entry);
    }
    if (p.tag !== null && !entry.RepoTags.includes(`${p.name}:${p.tag}`)) entry.RepoTags.push(`${p.name}:${p.tag}`);
  }
  const manifestJson = Buffer.from(`${JSON.stringify([...dockerEntries.values()])}\n`);

  const pack = tar.pack();
  let archiveBytes = 0;
  let bytes = 0;
  const mtime = new Date(0);
  // Rejects when the output fails or closes early, or the pack breaks; never resolves.
  let onBroken: (err: Error) => void = () => {};
  const broken = new Promise<never>((_, reject) => {
    onBroken = reject;
  });
  broken.catch(() => {}); // raced below; must not be unhandled once the work is done
  output.once('error', (err: Error) => onBroken(err));
  output.once('close', () => {
    if (!output.writableFinished) onBroken(new Error('the output was closed before the archive was complete'));
  });
  pack.once('error', (err: Error) => onBroken(err));
  const finished = new Promise<void>((resolve) => output.once('finish', resolve));
  pack.on('data', (data: unknown) => {
    const chunk = data as Buffer;
    archiveBytes += chunk.length;
    if (!output.write(chunk)) {
      pack.pause();
      output.once('drain', () => pack.resume());
    }
  });
  pack.once('end', () => output.end());

  const entry = (header: { name: string; type?: 'directory' | 'file' }, body?: Buffer) =>
    new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (body) pack.entry({ mode: 0o644, mtime, ...header, size: body.length }, body, cb);
      else pack.entry({ mode: 0o755, mtime, ...header }, cb);
    });

  /** Why a blob could not be read, which explains the pack's breaking better than its own error. */
  let readFailure: ArchiveError | null = null;
  const streamBlob = (digest: string, size: number) =>
    new Promise<void>((resolve, reject) => {
      const done = (err?: Error | null) => (err ? reject(err) : resolve());
      if (size === 0) {
        pack.entry({ name: blobPath(digest), size, mode: 0o644, mtime }, Buffer.alloc(0), done);
        return;
      }
      const sink = pack.entry({ name: blobPath(digest), size, mode: 0o644, mtime }, done);
      const source = opts.store.createReadStream(digest, 0, size - 1);
      source.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        opts.onProgress?.(bytes);
      });
      sink.on('error', () => {}); // reported through the pack and `done`
      source.once('error', (err) => {
        readFailure ??= new ArchiveError('EXPORT_BLOB_MISSING', `reading ${digest} from the store failed: ${describeError(err)}`, { cause: err });
        reject(readFailure);
        sink.destroy(err);
      });
      source.pipe(sink as unknown as NodeJS.WritableStream);
    });

  try {
    const writeEntries = async () => {
      await entry({ name: OCI_LAYOUT_FILE }, Buffer.from(`${JSON.stringify({ imageLayoutVersion: OCI_LAYOUT_VERSION })}\n`));
      await entry({ name: 'index.json' }, index);
      if (dockerEntries.size > 0) await entry({ name: 'manifest.json' }, manifestJson);
      await entry({ name: 'blobs/', type: 'directory' });
      for (const alg of new Set([...blobs.keys()].map((d) => d.split(':')[0]!))) await entry({ name: `blobs/${alg}/`, type: 'directory' });
      for (const [digest, size] of blobs) await streamBlob(digest, size);
      pack.finalize();
    };
    await Promise.race([writeEntries(), broken]);
    await Promise.race([finished, broken]);
  } catch (err) {
    pack.destroy(err as Error);
    output.destroy(err as Error);
    const wrapped =
      readFailure ?? (err instanceof ArchiveError ? err : new ArchiveError('EXPORT_WRITE', `writing the archive failed after ${archiveBytes} bytes: ${describeError(err)}`, { cause: err }));
    opts.log.warn({ err: wrapped.message, archiveBytes }, 'export failed');
    throw wrapped;
  }

  const images: ExportedImage[] = planned.map((p) => ({
    ref: p.ref,
    digest: p.digest,
    mediaType: p.mediaType,
    platforms: p.platforms,
    dockerImage: p.docker?.digest ?? null,
  }));
  opts.log.info({ images: images.map((i) => `${i.ref} -> ${i.digest}`), blobs: blobs.size, bytes, archiveBytes }, 'images exported');
  return { images, blobs: blobs.size, bytes, archiveBytes };
}
