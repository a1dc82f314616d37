// An OCI image layout (index.json, oci-layout, blobs/<alg>/<hex>): every image index.json lists,
// walked down through nested indexes to each manifest's config and layers, checked present and of
// the size its descriptor says. Names come from the containerd name and ref.name annotations, or,
// for docker 25+ archives that carry both formats, from manifest.json's RepoTags.
import type { Logger } from 'pino';
import { DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, isIndexMediaType, MANIFEST_MAX_BYTES, OCI_INDEX, OCI_MANIFEST, sniffMediaType } from '../oci/mediatypes.js';
import { ArchiveError, CONTAINERD_NAME_ANNOTATION, isDescriptor, parseImageName, REF_NAME_ANNOTATION, type Descriptor } from './common.js';
import { dockerNamesByConfig } from './docker-archive.js';
import { parseJson, type ArchiveContents, type FoundImage, type Inventory, type ManifestToStore } from './inventory.js';

/** Manifests are read whole; as large as the resolver accepts from an upstream. */
export const ARCHIVE_MANIFEST_MAX_BYTES = MANIFEST_MAX_BYTES;
const MAX_INDEX_DEPTH = 4;

/** One walk of an index.json: where blobs are looked up, and what it has found so far. */
interface Walker {
  contents: ArchiveContents;
  log: Logger;
  manifests: Map<string, ManifestToStore>;
  blobs: Map<string, number>;
}

/** Reads an OCI image layout's index.json and checks every image it lists (see the file comment). */
export async function readOciLayout(contents: ArchiveContents, log: Logger): Promise<Inventory> {
  const manifests = new Map<string, ManifestToStore>();
  const blobs = new Map<string, number>();
  const walker: Walker = { contents, log, manifests, blobs };
  const layout = contents.metadata.get('oci-layout');
  if (layout) {
    const doc = parseJson(layout, 'oci-layout') as { imageLayoutVersion?: unknown } | null;
    if (!doc || typeof doc !== 'object' || typeof doc.imageLayoutVersion !== 'string') {
      throw new ArchiveError('ARCHIVE_BAD_JSON', 'oci-layout in the archive has no imageLayoutVersion');
    }
  }
  const index = parseJson(contents.metadata.get('index.json')!, 'index.json') as { manifests?: unknown };
  if (!index || typeof index !== 'object' || !Array.isArray(index.manifests)) {
    throw new ArchiveError('ARCHIVE_BAD_JSON', 'index.json in the archive has no "manifests" list');
  }
  const dockerNames = dockerNamesByConfig(contents);
  const images: FoundImage[] = [];
  for (const [i, desc] of (index.manifests as unknown[]).entries()) {
    if (!isDescriptor(desc)) throw new ArchiveError('ARCHIVE_BAD_JSON', `index.json manifests[${i}] is not a valid descriptor`);
    const where = `index.json manifests[${i}]`;
    const root = await walk(walker, desc, where, 0);
    if (!root) throw new ArchiveError('ARCHIVE_BLOB_MISSING', `${where} names ${desc.digest}, which is not in the archive`);
    const annotations = desc.annotations ?? {};
    const names: string[] = [];
    const bareTags: string[] = [];
    const full = annotations[CONTAINERD_NAME_ANNOTATION];
    const refName = annotations[REF_NAME_ANNOTATION];
    if (full) names.push(full);
    if (refName && refName !== full) {
      if (looksLikeFullName(refName)) names.push(refName);
      else if (!full) bareTags.push(refName);
      // else: a bare tag beside a full name says the same thing (containerd and docker 25 write both)
    }
    if (names.length === 0) {
      // docker 25+ writes both an index.json and manifest.json; an unnamed index entry may be
      // named by manifest.json's RepoTags through its config.
      for (const config of root.configs) names.push(...(dockerNames.get(config) ?? []));
    }
    images.push({ digest: desc.digest, mediaType: root.mediaType, size: desc.size, names: [...new Set(names)], bareTags, source: where });
  }
  if (images.length === 0) throw new ArchiveError('ARCHIVE_FORMAT', 'index.json in the archive lists no images');
  return { format: 'oci-layout', images, manifests, blobs };
}

/**
 * Checks the manifest `desc` names and everything under it; records manifests and blobs to
 * register. Returns null when the manifest itself is absent (the caller decides whether that
 * is allowed), else its media type and the configs of its images.
 */
async function walk(w: Walker, desc: Descriptor, where: string, depth: number): Promise<{ mediaType: string; configs: string[] } | null> {
  const { contents, manifests, blobs } = w;
  const size = await contents.sizeOf(desc.digest);
  if (size === null) return null;
  if (size !== desc.size) {
    throw new ArchiveError('ARCHIVE_DIGEST_MISMATCH', `${where} says ${desc.digest} is ${desc.size} bytes; the blob is ${size}`);
  }
  if (size > ARCHIVE_MANIFEST_MAX_BYTES) {
    throw new ArchiveError('ARCHIVE_TOO_LARGE', `manifest ${desc.digest} is ${size} bytes; Cove accepts at most ${ARCHIVE_MANIFEST_MAX_BYTES}`);
  }
  const bytes = await contents.readBlob(desc.digest);
  const doc = parseJson(bytes, `manifest ${desc.digest}`) as Record<string, unknown>;
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) throw new ArchiveError('ARCHIVE_BAD_JSON', `manifest ${desc.digest} is not a JSON object`);
  const mediaType = (typeof doc.mediaType === 'string' && doc.mediaType) || desc.mediaType || sniffMediaType(bytes);
  if (!mediaType || ![OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_MANIFEST_LIST].includes(mediaType)) {
    throw new ArchiveError('ARCHIVE_FORMAT', `${where} (${desc.digest}) is not an image manifest or index (media type ${JSON.stringify(mediaType ?? null)})`);
  }
  manifests.set(desc.digest, { bytes, mediaType });
  blobs.set(desc.digest, size);

  if (isIndexMediaType(mediaType)) {
    if (depth >= MAX_INDEX_DEPTH) throw new ArchiveError('ARCHIVE_FORMAT', `indexes nested deeper than ${MAX_INDEX_DEPTH} at ${desc.digest}`);
    if (!Array.isArray(doc.manifests)) throw new ArchiveError('ARCHIVE_BAD_JSON', `index ${desc.digest} has no "manifests" list`);
    const configs: string[] = [];
    let present = 0;
    for (const [i, child] of (doc.manifests as unknown[]).entries()) {
      if (!isDescriptor(child)) throw new ArchiveError('ARCHIVE_BAD_JSON', `index ${desc.digest} manifests[${i}] is not a valid descriptor`);
      // Only platforms the archive brings are checked and registered; one the store already
      // has (perhaps partly) is left as it is.
      const found = contents.has(child.digest) ? await walk(w, child, `index ${desc.digest} manifests[${i}]`, depth + 1) : null;
      if (found) {
        present++;
        configs.push(...found.configs);
      } else {
        // An archive of one platform of a multi-platform image (what Cove's own export writes
        // for a partly cached index): the rest can still come from upstream.
        w.log.info({ index: desc.digest, child: child.digest, platform: child.platform }, 'archive: index child not in the archive; importing the index without it');
      }
    }
    if (present === 0 && (doc.manifests as unknown[]).length > 0) {
      throw new ArchiveError('ARCHIVE_BLOB_MISSING', `index ${desc.digest} (${where}): none of its ${(doc.manifests as unknown[]).length} manifests is in the archive`);
    }
    return { mediaType, configs };
  }

  if (!isDescriptor(doc.config) || !Array.isArray(doc.layers)) {
    throw new ArchiveError('ARCHIVE_BAD_JSON', `manifest ${desc.digest} has no valid config and layers`);
  }
  const parts: Array<{ d: Descriptor; what: string }> = [{ d: doc.config, what: 'config' }];
  for (const [i, layer] of (doc.layers as unknown[]).entries()) {
    if (!isDescriptor(layer)) throw new ArchiveError('ARCHIVE_BAD_JSON', `manifest ${desc.digest} layers[${i}] is not a valid descriptor`);
    parts.push({ d: layer, what: `layer ${i}` });
  }
  for (const { d, what } of parts) {
    const blobSize = await contents.sizeOf(d.digest);
    if (blobSize === null) {
      if (d.urls && d.urls.length > 0) continue; // a foreign layer, fetched from its URLs
      throw new ArchiveError('ARCHIVE_BLOB_MISSING', `${what} of manifest ${desc.digest} (${d.digest}, ${d.size} bytes) is not in the archive`);
    }
    if (blobSize !== d.size) {
      throw new ArchiveError('ARCHIVE_DIGEST_MISMATCH', `manifest ${desc.digest} says its ${what} ${d.digest} is ${d.size} bytes; the blob is ${blobSize}`);
    }
    blobs.set(d.digest, blobSize);
  }
  return { mediaType, configs: [doc.config.digest] };
}

/** A full image name ("proj/app:1", "registry/x:1") rather than a bare tag ("1", "latest"). */
function looksLikeFullName(refName: string): boolean {
  return refName.includes('/') || (refName.includes(':') && parseImageName(refName)?.tag !== null);
}
