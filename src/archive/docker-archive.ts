// A `docker save` archive: manifest.json lists each image's config and layer files by path
// (`<id>.json`, `<id>/layer.tar`), with its RepoTags. The files are checked against the image ID
// and the config's diff IDs, and a schema2 registry manifest is made for each image, as `docker
// push` would write it, so the image can be pulled like any other.
import { createHash } from 'node:crypto';
import { DOCKER_MANIFEST } from '../oci/mediatypes.js';
import { ArchiveError, DOCKER_CONFIG, DOCKER_LAYER, DOCKER_LAYER_GZIP, OCI_LAYER_ZSTD, type Descriptor } from './common.js';
import { parseJson, type ArchiveContents, type FoundImage, type Inventory, type ManifestToStore } from './inventory.js';

/** A config read whole to check it. */
const CONFIG_MAX_BYTES = 16 * 1024 * 1024;

/** Reads a docker save archive's manifest.json and makes a registry manifest for each image it lists. */
export async function readDockerArchive(contents: ArchiveContents): Promise<Inventory> {
  const manifests = new Map<string, ManifestToStore>();
  const blobs = new Map<string, number>();
  const doc = parseJson(contents.metadata.get('manifest.json')!, 'manifest.json');
  if (!Array.isArray(doc)) throw new ArchiveError('ARCHIVE_BAD_JSON', 'manifest.json in the archive is not a list');
  const images: FoundImage[] = [];
  for (const [i, item] of (doc as unknown[]).entries()) {
    const where = `manifest.json[${i}]`;
    const e = item as { Config?: unknown; RepoTags?: unknown; Layers?: unknown } | null;
    if (!e || typeof e !== 'object' || typeof e.Config !== 'string' || !Array.isArray(e.Layers) || !e.Layers.every((l) => typeof l === 'string')) {
      throw new ArchiveError('ARCHIVE_BAD_JSON', `${where} needs "Config" (a path) and "Layers" (a list of paths)`);
    }
    const repoTags = e.RepoTags === null || e.RepoTags === undefined ? [] : e.RepoTags;
    if (!Array.isArray(repoTags) || !repoTags.every((t) => typeof t === 'string')) {
      throw new ArchiveError('ARCHIVE_BAD_JSON', `${where} "RepoTags" is not a list of names`);
    }

    const config = contents.file(e.Config);
    if (!config) throw new ArchiveError('ARCHIVE_BLOB_MISSING', `${where} names config ${e.Config}, which is not in the archive`);
    // docker save names the config file by the image ID, the digest of the config.
    const idName = /^(?:.*\/)?([0-9a-f]{64})\.json$/.exec(e.Config);
    if (idName && `sha256:${idName[1]}` !== config.digest) {
      throw new ArchiveError('ARCHIVE_DIGEST_MISMATCH', `config ${e.Config} in the archive hashes to ${config.digest}, not to the image ID its name gives`);
    }
    if (config.size > CONFIG_MAX_BYTES) throw new ArchiveError('ARCHIVE_TOO_LARGE', `config ${e.Config} is ${config.size} bytes`);
    const configDoc = parseJson(await contents.readBlob(config.digest), `config ${e.Config}`) as { rootfs?: { diff_ids?: unknown } } | null;
    if (!configDoc || typeof configDoc !== 'object') throw new ArchiveError('ARCHIVE_BAD_JSON', `config ${e.Config} is not a JSON object`);
    const diffIds = configDoc.rootfs?.diff_ids;
    if (!Array.isArray(diffIds) || diffIds.length !== e.Layers.length) {
      throw new ArchiveError(
        'ARCHIVE_FORMAT',
        `config ${e.Config} lists ${Array.isArray(diffIds) ? diffIds.length : 'no'} rootfs.diff_ids for the ${e.Layers.length} layers of ${where}`,
      );
    }

    const layers: Descriptor[] = [];
    for (const [j, path] of (e.Layers as string[]).entries()) {
      const file = contents.file(path);
      if (!file) throw new ArchiveError('ARCHIVE_BLOB_MISSING', `${where} names layer ${path}, which is not in the archive`);
      const mediaType = layerMediaType(file.head);
      // An uncompressed layer's digest is its diff ID: a tampered layer.tar shows here.
      if (mediaType === DOCKER_LAYER && diffIds[j] !== file.digest) {
        throw new ArchiveError('ARCHIVE_DIGEST_MISMATCH', `layer ${path} in the archive hashes to ${file.digest}; its config says ${String(diffIds[j])}`);
      }
      layers.push({ mediaType, size: file.size, digest: file.digest });
      blobs.set(file.digest, file.size);
    }
    blobs.set(config.digest, config.size);

    // A registry manifest for the image, as `docker push` would write it for these files.
    const manifest = Buffer.from(
      JSON.stringify(
        {
          schemaVersion: 2,
          mediaType: DOCKER_MANIFEST,
          config: { mediaType: DOCKER_CONFIG, size: config.size, digest: config.digest },
          layers,
        },
        null,
        3,
      ),
    );
    const digest = `sha256:${createHash('sha256').update(manifest).digest('hex')}`;
    manifests.set(digest, { bytes: manifest, mediaType: DOCKER_MANIFEST });
    blobs.set(digest, manifest.length);
    images.push({ digest, mediaType: DOCKER_MANIFEST, size: manifest.length, names: repoTags as string[], bareTags: [], source: where });
  }
  if (images.length === 0) throw new ArchiveError('ARCHIVE_FORMAT', 'manifest.json in the archive lists no images');
  return { format: 'docker-archive', images, manifests, blobs };
}

/** RepoTags of a manifest.json beside an index.json, by config digest. */
export function dockerNamesByConfig(contents: ArchiveContents): Map<string, string[]> {
  const out = new Map<string, string[]>();
  const bytes = contents.metadata.get('manifest.json');
  if (!bytes) return out;
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    return out; // the layout is what counts; a broken companion manifest.json is ignored
  }
  if (!Array.isArray(doc)) return out;
  for (const item of doc as Array<{ Config?: unknown; RepoTags?: unknown }>) {
    if (!item || typeof item.Config !== 'string' || !Array.isArray(item.RepoTags)) continue;
    const file = contents.file(item.Config);
    if (file) out.set(file.digest, item.RepoTags.filter((t): t is string => typeof t === 'string'));
  }
  return out;
}

function layerMediaType(head: Buffer): string {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return DOCKER_LAYER_GZIP;
  if (head.length >= 4 && head.readUInt32BE(0) === 0x28b52ffd) return OCI_LAYER_ZSTD;
  return DOCKER_LAYER;
}
