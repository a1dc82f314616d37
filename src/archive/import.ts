// Offline import: an image archive (`docker save`, or an OCI image layout in a tar; plain or
// gzip) is read as a stream into the store, then checked and registered in the catalog.
//
// The archive is read once, front to back, whatever order its entries come in (docker save puts
// manifest.json last): tar-reader.ts reads it, staging.ts takes each entry into the store or a
// temp file. Once it is all read, oci-layout.ts or docker-archive.ts works out its images and
// checks each is complete; tag-targets.ts places their names. Nothing of an image is in the
// catalog until every manifest, config and layer it needs is in the store and checked; a failed
// import removes every blob it added and restores every catalog record it changed.
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { manifestReferences } from '../oci/mediatypes.js';
import type { BlobStore } from '../store/blobs.js';
import type { Catalog, TagKey, TagRecord } from '../store/catalog.js';
import { NOT_VALIDATED } from '../store/records.js';
import { ArchiveError, describeError } from './common.js';
import { readDockerArchive } from './docker-archive.js';
import type { Inventory } from './inventory.js';
import { readOciLayout } from './oci-layout.js';
import type { ImportLimits } from './decompress.js';
import { quietly, Staging } from './staging.js';
import { tagTargets } from './tag-targets.js';
import { TarReader } from './tar-reader.js';

export { ArchiveError } from './common.js';
export { ARCHIVE_MANIFEST_MAX_BYTES } from './oci-layout.js';
export { METADATA_MAX_BYTES } from './staging.js';

export interface ImportOptions {
  store: BlobStore;
  catalog: Catalog;
  log: Logger;
  /** Maps an image name without tag ("harbor.example.com/proj/app", "nginx") to where Cove keeps it. */
  resolveName: (name: string) => { upstream: string; repo: string };
  /** "REPO:TAG" names that replace the archive's own; the archive must then hold one image. */
  tags?: string[];
  /** Called as the archive is read, with the (compressed) bytes read so far. */
  onProgress?: (bytesRead: number) => void;
  now?: () => number;
  /** Pin the imported blobs so eviction never removes them. Default false. */
  pin?: boolean;
  /** Bounds on the decompressed size and expansion ratio (default DEFAULT_IMPORT_LIMITS). */
  limits?: ImportLimits;
}

export interface ImportedImage {
  /** The name the tag came from: from the archive, or one of `tags`. */
  ref: string;
  digest: string;
  mediaType: string;
  upstream: string;
  repo: string;
  tag: string;
}

export interface ImportResult {
  images: ImportedImage[];
  /** Distinct blobs (manifests, configs, layers) of the imported images, all now in the store. */
  blobs: number;
  /** Their total size. */
  bytes: number;
  /** Of those, how many (and how many bytes) were not in the store before. */
  newBlobs: number;
  newBytes: number;
  /** Bytes read from the input (compressed size for a gzip archive). */
  bytesRead: number;
  format: 'oci-layout' | 'docker-archive';
}

/** Reads an image archive from `input` into the store and catalog. See the file comment. */
export async function importArchive(input: Readable, opts: ImportOptions): Promise<ImportResult> {
  return new Importer(opts).run(input);
}

class Importer {
  readonly #o: ImportOptions;
  readonly #now: () => number;
  readonly #reader: TarReader;
  readonly #staging: Staging;
  /** Catalog changes made so far, undone if registration fails half-way. */
  #tagsBefore: Array<{ key: TagKey; record: TagRecord | null }> = [];
  #blobsRegistered: string[] = [];

  constructor(opts: ImportOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#reader = new TarReader(opts.onProgress, opts.limits);
    this.#staging = new Staging(opts.store, opts.log);
  }

  async run(input: Readable): Promise<ImportResult> {
    const t0 = performance.now();
    try {
      await this.#reader.read(input, (entry, name) => this.#staging.add(entry, name));
      const found = await this.#inventory();
      const result = await this.#register(found);
      this.#o.log.info(
        {
          format: result.format,
          images: result.images.map((i) => `${i.ref} -> ${i.digest}`),
          blobs: result.blobs,
          newBlobs: result.newBlobs,
          bytesRead: result.bytesRead,
          ms: Math.round(performance.now() - t0),
        },
        'archive imported',
      );
      return result;
    } catch (err) {
      await this.#rollback();
      this.#o.log.warn({ err: describeError(err), code: (err as { code?: unknown }).code, bytesRead: this.#reader.bytesRead }, 'archive import failed; nothing kept');
      throw err;
    }
  }

  /** Works out the images in the archive and checks each is complete. */
  async #inventory(): Promise<Inventory> {
    const metadata = this.#staging.metadata;
    if (metadata.has('index.json')) return readOciLayout(this.#staging, this.#o.log);
    if (metadata.has('manifest.json')) return readDockerArchive(this.#staging);
    if (this.#reader.entries === 0) throw new ArchiveError('ARCHIVE_FORMAT', 'the archive is empty');
    throw new ArchiveError(
      'ARCHIVE_FORMAT',
      'the archive is not an image archive: it has neither index.json (OCI image layout) nor manifest.json (docker save)',
    );
  }

  async #register(found: Inventory): Promise<ImportResult> {
    const { catalog } = this.#o;
    const now = this.#now();

    // Names first: a name problem must leave nothing behind either.
    const targets = tagTargets(found.images, this.#o);
    await this.#staging.settle(found);

    // The catalog: blobs, manifests with their references, then tags.
    for (const [digest, size] of found.blobs) {
      const before = await catalog.getBlob(digest);
      const m = found.manifests.get(digest);
      this.#blobsRegistered.push(digest);
      await catalog.putBlob(digest, {
        size,
        mediaType: m?.mediaType ?? before?.mediaType ?? null,
        lastAccess: now,
        pinned: (before?.pinned ?? false) || (this.#o.pin ?? false),
      });
      if (m) await catalog.putManifestRefs(digest, manifestReferences(m.bytes));
    }
    const images: ImportedImage[] = [];
    for (const t of targets) {
      const key = { upstream: t.upstream, repo: t.repo, tag: t.tag };
      this.#tagsBefore.push({ key, record: await catalog.getTag(key) });
      // An archive's names are the importer's word, not the origin's: the tag answers at once only
      // while no upstream can be asked; the next pull with the origin up asks it first.
      await catalog.putTag(key, { digest: t.image.digest, mediaType: t.image.mediaType, size: t.image.size, fetchedAt: now, validatedAt: NOT_VALIDATED });
      images.push({ ref: t.ref, digest: t.image.digest, mediaType: t.image.mediaType, upstream: t.upstream, repo: t.repo, tag: t.tag });
    }

    let bytes = 0;
    let newBytes = 0;
    for (const [digest, size] of found.blobs) {
      bytes += size;
      if (this.#staging.isNew(digest)) newBytes += size;
    }
    return {
      images,
      blobs: found.blobs.size,
      bytes,
      newBlobs: [...found.blobs.keys()].filter((d) => this.#staging.isNew(d)).length,
      newBytes,
      bytesRead: this.#reader.bytesRead,
      format: found.format,
    };
  }

  /** Undoes everything: writer, temp files, catalog records written, blobs added. Never throws. */
  async #rollback(): Promise<void> {
    const { catalog, log } = this.#o;
    await this.#staging.discardPending();
    for (const { key, record } of this.#tagsBefore.reverse()) {
      await quietly(log, `restore tag ${key.repo}:${key.tag}`, () => (record ? catalog.putTag(key, record) : catalog.deleteTag(key)));
    }
    for (const digest of this.#blobsRegistered) {
      if (this.#staging.isNew(digest)) await quietly(log, `forget ${digest}`, () => catalog.deleteBlob(digest));
    }
    await this.#staging.removeAdded();
  }
}
