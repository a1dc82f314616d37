// Offline import: an image archive (`docker save`, or an OCI image layout in a tar; plain or
// gzip) is read as a stream into the store, then checked and registered in the catalog.
//
// The archive is read once, front to back, whatever order its entries come in (docker save puts
// manifest.json last). Each `blobs/<alg>/<hex>` entry streams into a BlobWriter named by its path,
// which verifies digest and length at commit. Entries with no digest in their name (docker save's
// `<id>/layer.tar`, skopeo's `<hex>.tar`) stream into a temp file beside the store while being
// hashed; the ones the archive's manifest.json refers to are moved into the store afterwards.
// Small metadata entries (index.json, manifest.json, oci-layout, repositories) are read into
// memory, bounded. Nothing of an image is in the catalog until every manifest, config and layer
// it needs is in the store and checked; a failed import removes every blob it added.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readFile, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join, posix } from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { createGunzip, type Gunzip } from 'node:zlib';
import type { Logger } from 'pino';
import * as tar from 'tar-stream';
import { DigestMismatchError } from '../errors.js';
import { DigestVerifier } from '../oci/digest.js';
import {
  DOCKER_MANIFEST,
  DOCKER_MANIFEST_LIST,
  isIndexMediaType,
  manifestReferences,
  OCI_INDEX,
  OCI_MANIFEST,
  sniffMediaType,
} from '../oci/mediatypes.js';
import { isValidName, isValidTag, parseDigest } from '../oci/reference.js';
import type { BlobStore } from '../store/blobs.js';
import type { Catalog, TagKey, TagRecord } from '../store/catalog.js';
import { fsyncDir } from '../store/writer.js';
import type { BlobWriter } from '../store/writer.js';
import {
  ArchiveError,
  CONTAINERD_NAME_ANNOTATION,
  describeError,
  DOCKER_CONFIG,
  DOCKER_LAYER,
  DOCKER_LAYER_GZIP,
  isDescriptor,
  OCI_LAYER_ZSTD,
  parseImageName,
  REF_NAME_ANNOTATION,
  type Descriptor,
} from './common.js';

export { ArchiveError } from './common.js';

/** Metadata entries read into memory, and at most how large each may be. */
const METADATA_ENTRIES = new Set(['manifest.json', 'index.json', 'oci-layout', 'repositories']);
export const METADATA_MAX_BYTES = 16 * 1024 * 1024;
/** Manifests are read whole; as large as the resolver accepts from an upstream. */
export const ARCHIVE_MANIFEST_MAX_BYTES = 4 * 1024 * 1024;
/** A config read whole to check it (docker archives only). */
const CONFIG_MAX_BYTES = 16 * 1024 * 1024;
/** Bytes a blob writer may hold before the importer waits for them to reach the file. */
const WRITE_HIGH_WATER = 4 * 1024 * 1024;
/** Bytes gathered before one write to a staging file. */
const STAGE_BATCH = 1024 * 1024;
const MAX_LINK_HOPS = 16;
const MAX_INDEX_DEPTH = 4;

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

/** One entry as tar-stream's extractor yields it. */
type TarEntry = AsyncIterable<Buffer> & { header: tar.Header };

/** A file entry of the archive, by normalized path. */
interface FileEntry {
  digest: string;
  size: number;
  /** Its first bytes, for sniffing compression. */
  head: Buffer;
}

/** One manifest to register: exact bytes and media type. */
interface ManifestToStore {
  bytes: Buffer;
  mediaType: string;
}

/** An image found in the archive, before its names are resolved. */
interface FoundImage {
  digest: string;
  mediaType: string;
  size: number;
  /** Names from the archive, full ("registry/repo:tag") or as found. */
  names: string[];
  /** A bare ref name (a tag without repository) found with no repository to go with it. */
  bareTags: string[];
  /** Where it came from, for messages. */
  source: string;
}

/** What the archive holds, checked: its images, the manifests to register, every blob they need. */
interface Inventory {
  format: ImportResult['format'];
  images: FoundImage[];
  manifests: Map<string, ManifestToStore>;
  /** digest -> size: manifests, configs and layers of every image. */
  blobs: Map<string, number>;
}

class Importer {
  readonly #o: ImportOptions;
  readonly #now: () => number;
  /** Every file entry (blobs included), by normalized path. */
  readonly #files = new Map<string, FileEntry>();
  /** Symbolic and hard links: path -> target path (normalized). */
  readonly #links = new Map<string, string>();
  readonly #metadata = new Map<string, Buffer>();
  /** Digests the archive supplied and that are verified and in the store (or staged), with sizes. */
  readonly #have = new Map<string, number>();
  /** Committed into the store by this import and not there before it. */
  readonly #added = new Set<string>();
  /** Hashed temp files not yet moved into the store: digest -> path. */
  readonly #staged = new Map<string, string>();
  /** Every temp file this import created and has not yet moved or removed. */
  readonly #temps = new Set<string>();
  #writer: BlobWriter | null = null;
  #bytesRead = 0;
  #entries = 0;
  /** The path of the entry being read, for messages. */
  #current = '';
  /** Catalog changes made so far, undone if registration fails half-way. */
  #tagsBefore: Array<{ key: TagKey; record: TagRecord | null }> = [];
  #blobsRegistered: string[] = [];

  constructor(opts: ImportOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
  }

  async run(input: Readable): Promise<ImportResult> {
    const t0 = performance.now();
    try {
      await this.#read(input);
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
      this.#o.log.warn({ err: describeError(err), code: (err as { code?: unknown }).code, bytesRead: this.#bytesRead }, 'archive import failed; nothing kept');
      throw err;
    }
  }

  // ------------------------------------------------------------------------------- reading

  async #read(input: Readable): Promise<void> {
    const decoder = new Decompressor((n) => {
      this.#bytesRead += n;
      this.#o.onProgress?.(this.#bytesRead);
    });
    const extract = tar.extract();
    let inputError: Error | null = null;
    let extractError: Error | null = null;
    extract.on('error', (err: Error) => {
      extractError ??= err;
    });
    const onInputError = (err: Error) => {
      inputError = err;
      extract.destroy(err);
    };
    const onDecoderError = (err: Error) => extract.destroy(err);
    // A stream destroyed without an error (an aborted upload) would otherwise leave the extractor
    // waiting for more bytes forever.
    const onInputClose = () => {
      if (!input.readableEnded && !inputError) onInputError(new Error('the input was closed before the end of the archive'));
    };
    input.on('error', onInputError);
    input.on('close', onInputClose);
    decoder.on('error', onDecoderError);
    input.pipe(decoder).pipe(extract);
    try {
      for await (const entry of extract) {
        this.#entries++;
        await this.#entry(entry as unknown as TarEntry);
      }
    } catch (err) {
      // An entry stream torn down by its extractor fails with a bare "Stream was destroyed";
      // the reason (truncation, a bad header) is the extractor's error, reported as it closes.
      if ((err as { code?: unknown }).code === 'STREAM_DESTROYED' && !extractError) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 1000);
          const done = () => {
            clearTimeout(timer);
            resolve();
          };
          if (extract.destroyed) setImmediate(done);
          else extract.once('close', done);
        });
      }
      throw this.#classify((err as { code?: unknown }).code === 'STREAM_DESTROYED' ? (extractError ?? err) : err, inputError);
    } finally {
      input.unpipe(decoder);
      input.off('error', onInputError);
      input.off('close', onInputClose);
      decoder.destroy();
      // Late errors from a torn-down pipe must not surface as unhandled.
      decoder.on('error', () => {});
      extract.on('error', () => {});
    }
    if (inputError) throw this.#classify(inputError, inputError);
  }

  /** Maps a failure of the tar/gzip machinery to an ArchiveError naming the problem. */
  #classify(err: unknown, inputError: Error | null): unknown {
    if (err instanceof ArchiveError) return err;
    if (inputError && (err === inputError || !(err instanceof Error))) {
      return new ArchiveError('ARCHIVE_READ', `reading the archive failed after ${this.#bytesRead} bytes: ${describeError(inputError)}`, { cause: inputError });
    }
    if (!(err instanceof Error)) return err;
    const code = (err as NodeJS.ErrnoException).code;
    if (err.message === 'Unexpected end of data' || code === 'Z_BUF_ERROR' || /unexpected end of file/i.test(err.message)) {
      return new ArchiveError('ARCHIVE_TRUNCATED', `the archive is truncated: it ends ${this.#entries === 0 ? 'in its first entry' : `in or after entry ${this.#entries} (${this.#current})`}, ${this.#bytesRead} bytes read`, { cause: err });
    }
    if (/Invalid tar header/i.test(err.message)) {
      if (this.#entries === 0) return new ArchiveError('ARCHIVE_NOT_TAR', 'the input is not a tar archive (nor a gzip-compressed one)', { cause: err });
      return new ArchiveError('ARCHIVE_CORRUPT', `the archive is corrupt after entry ${this.#entries} (${this.#bytesRead} bytes read): ${err.message}`, { cause: err });
    }
    if (code === 'Z_DATA_ERROR' || code === 'Z_STREAM_ERROR') {
      return new ArchiveError('ARCHIVE_CORRUPT', `the gzip stream is corrupt (${this.#bytesRead} bytes read): ${err.message}`, { cause: err });
    }
    return err;
  }

  async #entry(entry: TarEntry): Promise<void> {
    const header = entry.header;
    const name = normalize(header.name);
    const size = header.size ?? 0;
    this.#current = name;
    switch (header.type) {
      case 'file':
      case 'contiguous-file':
      case undefined:
      case null:
        break;
      case 'symlink':
        if (header.linkname) this.#links.set(name, normalize(posix.join(posix.dirname(name), header.linkname)));
        return drain(entry);
      case 'link':
        if (header.linkname) this.#links.set(name, normalize(header.linkname));
        return drain(entry);
      default:
        return drain(entry); // directories, devices, fifos: not part of an image archive
    }
    if (name === '') return drain(entry);

    if (METADATA_ENTRIES.has(name)) {
      if (size > METADATA_MAX_BYTES) {
        throw new ArchiveError('ARCHIVE_TOO_LARGE', `${name} in the archive is ${size} bytes; Cove reads at most ${METADATA_MAX_BYTES}`);
      }
      this.#metadata.set(name, await readAll(entry, size));
      return;
    }
    const m = /^blobs\/([a-z0-9]+)\/([0-9a-f]+)$/.exec(name);
    if (m) {
      const digest = `${m[1]}:${m[2]}`;
      if (parseDigest(digest)) return this.#blobEntry(entry, name, digest, size);
      return drain(entry); // a blob of an algorithm Cove does not verify; only a problem if referenced
    }
    return this.#stageEntry(entry, name, size);
  }

  /** A `blobs/<alg>/<hex>` entry: into the store under that digest, verified by the writer. */
  async #blobEntry(entry: TarEntry, name: string, digest: string, size: number): Promise<void> {
    if (this.#have.has(digest) || (await this.#o.store.stat(digest)) !== null) {
      // Already there (an earlier entry, or in the store before): check these bytes all the same,
      // so a tampered archive is refused whatever the store holds.
      const verifier = new DigestVerifier(digest);
      let head: Buffer | null = null;
      for await (const chunk of entry) {
        head ??= chunk.subarray(0, 8);
        verifier.update(chunk);
      }
      const { ok, actual } = verifier.finish();
      if (!ok || verifier.length !== size) throw mismatch(name, digest, actual, verifier.length);
      this.#files.set(name, { digest, size, head: head ?? Buffer.alloc(0) });
      this.#have.set(digest, size);
      return;
    }
    const writer = await this.#o.store.createWriter(digest, size);
    this.#writer = writer;
    let head: Buffer | null = null;
    try {
      for await (const chunk of entry) {
        head ??= Buffer.from(chunk.subarray(0, 8));
        const written = writer.write(chunk);
        written.catch(() => {}); // surfaced by flush() below
        if (writer.pendingBytes >= WRITE_HIGH_WATER) await written;
      }
      await writer.flush();
      await writer.commit();
    } catch (err) {
      await writer.abort();
      if (err instanceof DigestMismatchError) {
        throw new ArchiveError('ARCHIVE_DIGEST_MISMATCH', `${name} in the archive does not match its name: ${err.message}`, { cause: err });
      }
      throw err;
    } finally {
      this.#writer = null;
    }
    this.#added.add(digest);
    this.#files.set(name, { digest, size, head: head ?? Buffer.alloc(0) });
    this.#have.set(digest, size);
  }

  /** Any other file: hashed into a temp file beside the store; moved in later if referenced. */
  async #stageEntry(entry: TarEntry, name: string, size: number): Promise<void> {
    const path = join(this.#o.store.tmpDir, `import-${randomBytes(8).toString('hex')}.part`);
    const hash = createHash('sha256');
    let head: Buffer | null = null;
    let handle: FileHandle | null = await open(path, 'wx');
    this.#temps.add(path);
    let written = 0;
    try {
      let batch: Buffer[] = [];
      let batchBytes = 0;
      const flush = async () => {
        if (batchBytes === 0) return;
        await writeAll(handle!, batch, batchBytes, written);
        written += batchBytes;
        batch = [];
        batchBytes = 0;
      };
      for await (const chunk of entry) {
        head ??= Buffer.from(chunk.subarray(0, 8));
        hash.update(chunk);
        batch.push(chunk);
        batchBytes += chunk.length;
        if (batchBytes >= STAGE_BATCH) await flush();
      }
      await flush();
      await handle.close();
      handle = null;
    } finally {
      await handle?.close().catch(() => {});
    }
    if (written !== size) throw new ArchiveError('ARCHIVE_TRUNCATED', `${name}: ${written} bytes where the tar header says ${size}`);
    const digest = `sha256:${hash.digest('hex')}`;
    this.#files.set(name, { digest, size, head: head ?? Buffer.alloc(0) });
    if (this.#have.has(digest)) {
      await this.#removeTemp(path); // the same bytes came before
      return;
    }
    this.#staged.set(digest, path);
    this.#have.set(digest, size);
  }

  // ------------------------------------------------------------------------------- checking

  /** Works out the images in the archive and checks each is complete. */
  async #inventory(): Promise<Inventory> {
    const manifests = new Map<string, ManifestToStore>();
    const blobs = new Map<string, number>();
    if (this.#metadata.has('index.json')) {
      const images = await this.#ociImages(manifests, blobs);
      return { format: 'oci-layout', images, manifests, blobs };
    }
    if (this.#metadata.has('manifest.json')) {
      const images = await this.#dockerImages(manifests, blobs);
      return { format: 'docker-archive', images, manifests, blobs };
    }
    if (this.#entries === 0) throw new ArchiveError('ARCHIVE_FORMAT', 'the archive is empty');
    throw new ArchiveError(
      'ARCHIVE_FORMAT',
      'the archive is not an image archive: it has neither index.json (OCI image layout) nor manifest.json (docker save)',
    );
  }

  async #ociImages(manifests: Map<string, ManifestToStore>, blobs: Map<string, number>): Promise<FoundImage[]> {
    const layout = this.#metadata.get('oci-layout');
    if (layout) {
      const doc = parseJson(layout, 'oci-layout') as { imageLayoutVersion?: unknown } | null;
      if (!doc || typeof doc !== 'object' || typeof doc.imageLayoutVersion !== 'string') {
        throw new ArchiveError('ARCHIVE_BAD_JSON', 'oci-layout in the archive has no imageLayoutVersion');
      }
    }
    const index = parseJson(this.#metadata.get('index.json')!, 'index.json') as { manifests?: unknown };
    if (!index || typeof index !== 'object' || !Array.isArray(index.manifests)) {
      throw new ArchiveError('ARCHIVE_BAD_JSON', 'index.json in the archive has no "manifests" list');
    }
    const dockerNames = this.#dockerNamesByConfig();
    const images: FoundImage[] = [];
    for (const [i, desc] of (index.manifests as unknown[]).entries()) {
      if (!isDescriptor(desc)) throw new ArchiveError('ARCHIVE_BAD_JSON', `index.json manifests[${i}] is not a valid descriptor`);
      const where = `index.json manifests[${i}]`;
      const root = await this.#walk(desc, where, manifests, blobs, 0);
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
    return images;
  }

  /** RepoTags of a manifest.json beside an index.json, by config digest. */
  #dockerNamesByConfig(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    const bytes = this.#metadata.get('manifest.json');
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
      const file = this.#file(item.Config);
      if (file) out.set(file.digest, item.RepoTags.filter((t): t is string => typeof t === 'string'));
    }
    return out;
  }

  /**
   * Checks the manifest `desc` names and everything under it; records manifests and blobs to
   * register. Returns null when the manifest itself is absent (the caller decides whether that
   * is allowed), else its media type and the configs of its images.
   */
  async #walk(
    desc: Descriptor,
    where: string,
    manifests: Map<string, ManifestToStore>,
    blobs: Map<string, number>,
    depth: number,
  ): Promise<{ mediaType: string; configs: string[] } | null> {
    const size = await this.#sizeOf(desc.digest);
    if (size === null) return null;
    if (size !== desc.size) {
      throw new ArchiveError('ARCHIVE_DIGEST_MISMATCH', `${where} says ${desc.digest} is ${desc.size} bytes; the blob is ${size}`);
    }
    if (size > ARCHIVE_MANIFEST_MAX_BYTES) {
      throw new ArchiveError('ARCHIVE_TOO_LARGE', `manifest ${desc.digest} is ${size} bytes; Cove accepts at most ${ARCHIVE_MANIFEST_MAX_BYTES}`);
    }
    const bytes = await this.#readBlob(desc.digest);
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
        const found = this.#have.has(child.digest) ? await this.#walk(child, `index ${desc.digest} manifests[${i}]`, manifests, blobs, depth + 1) : null;
        if (found) {
          present++;
          configs.push(...found.configs);
        } else {
          // An archive of one platform of a multi-platform image (what Cove's own export writes
          // for a partly cached index): the rest can still come from upstream.
          this.#o.log.info({ index: desc.digest, child: child.digest, platform: child.platform }, 'archive: index child not in the archive; importing the index without it');
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
      const blobSize = await this.#sizeOf(d.digest);
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

  async #dockerImages(manifests: Map<string, ManifestToStore>, blobs: Map<string, number>): Promise<FoundImage[]> {
    const doc = parseJson(this.#metadata.get('manifest.json')!, 'manifest.json');
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

      const config = this.#file(e.Config);
      if (!config) throw new ArchiveError('ARCHIVE_BLOB_MISSING', `${where} names config ${e.Config}, which is not in the archive`);
      // docker save names the config file by the image ID, the digest of the config.
      const idName = /^(?:.*\/)?([0-9a-f]{64})\.json$/.exec(e.Config);
      if (idName && `sha256:${idName[1]}` !== config.digest) {
        throw new ArchiveError('ARCHIVE_DIGEST_MISMATCH', `config ${e.Config} in the archive hashes to ${config.digest}, not to the image ID its name gives`);
      }
      if (config.size > CONFIG_MAX_BYTES) throw new ArchiveError('ARCHIVE_TOO_LARGE', `config ${e.Config} is ${config.size} bytes`);
      const configDoc = parseJson(await this.#readBlob(config.digest), `config ${e.Config}`) as { rootfs?: { diff_ids?: unknown } } | null;
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
        const file = this.#file(path);
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
    return images;
  }

  /** A file entry by path, following links. */
  #file(path: string): FileEntry | null {
    let name = normalize(path);
    for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
      const file = this.#files.get(name);
      if (file) return file;
      const next = this.#links.get(name);
      if (next === undefined) return null;
      name = next;
    }
    return null;
  }

  /** The size of a blob the archive supplied, or the store already had; null if neither. */
  async #sizeOf(digest: string): Promise<number | null> {
    const have = this.#have.get(digest);
    if (have !== undefined) return have;
    if (!parseDigest(digest)) return null;
    return (await this.#o.store.stat(digest))?.size ?? null;
  }

  async #readBlob(digest: string): Promise<Buffer> {
    const staged = this.#staged.get(digest);
    if (staged) return readFile(staged);
    return this.#o.store.readAll(digest);
  }

  // ------------------------------------------------------------------------------- registering

  async #register(found: Inventory): Promise<ImportResult> {
    const { store, catalog } = this.#o;
    const now = this.#now();

    // Names first: a name problem must leave nothing behind either.
    const targets = this.#targets(found.images);

    // Synthesized manifests (docker archives) become blobs like any other.
    for (const [digest, m] of found.manifests) {
      if ((await this.#sizeOf(digest)) !== null) continue;
      const writer = await store.createWriter(digest, m.bytes.length);
      this.#writer = writer;
      try {
        await writer.write(m.bytes);
        await writer.commit();
      } catch (err) {
        await writer.abort();
        throw err;
      } finally {
        this.#writer = null;
      }
      this.#added.add(digest);
      this.#have.set(digest, m.bytes.length);
    }
    // Referenced staged files move into the store.
    for (const digest of found.blobs.keys()) {
      const temp = this.#staged.get(digest);
      if (temp) await this.#publish(digest, temp);
    }
    // Everything the images need is in the store now; anything else this import brought is not
    // part of an image and goes.
    for (const [digest, temp] of this.#staged) {
      await this.#removeTemp(temp);
      this.#staged.delete(digest);
    }
    let strays = 0;
    for (const digest of [...this.#added]) {
      if (found.blobs.has(digest)) continue;
      await store.remove(digest);
      this.#added.delete(digest);
      strays++;
    }
    if (strays > 0) this.#o.log.info({ blobs: strays }, 'archive: removed blobs no image of the archive refers to');
    for (const [digest, size] of found.blobs) {
      const s = await store.stat(digest);
      if (!s || s.size !== size) throw new ArchiveError('ARCHIVE_BLOB_MISSING', `blob ${digest} vanished from the store during the import`);
    }

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
      await catalog.putTag(key, { digest: t.image.digest, mediaType: t.image.mediaType, size: t.image.size, fetchedAt: now, validatedAt: now });
      images.push({ ref: t.ref, digest: t.image.digest, mediaType: t.image.mediaType, upstream: t.upstream, repo: t.repo, tag: t.tag });
    }

    let bytes = 0;
    let newBytes = 0;
    for (const [digest, size] of found.blobs) {
      bytes += size;
      if (this.#added.has(digest)) newBytes += size;
    }
    return {
      images,
      blobs: found.blobs.size,
      bytes,
      newBlobs: [...found.blobs.keys()].filter((d) => this.#added.has(d)).length,
      newBytes,
      bytesRead: this.#bytesRead,
      format: found.format,
    };
  }

  /** Every (name, image) pair to tag, resolved and checked. */
  #targets(images: FoundImage[]): Array<{ ref: string; upstream: string; repo: string; tag: string; image: FoundImage }> {
    const out: Array<{ ref: string; upstream: string; repo: string; tag: string; image: FoundImage }> = [];
    const override = this.#o.tags ?? [];
    if (override.length > 0 && images.length !== 1) {
      throw new ArchiveError('ARCHIVE_NAME', `the archive holds ${images.length} images; a tag given on the command line must name exactly one`);
    }
    for (const image of images) {
      const names = override.length > 0 ? override : image.names;
      if (names.length === 0) {
        const why = image.bareTags.length > 0 ? `it is named only "${image.bareTags.join('", "')}", with no repository` : 'it has no name in the archive';
        throw new ArchiveError('ARCHIVE_NAME', `cannot tag ${image.source} (${image.digest}): ${why}; pass --tag REPO:TAG`);
      }
      for (const ref of names) out.push({ ref, ...this.#resolve(ref), image });
    }
    const seen = new Map<string, string>();
    for (const t of out) {
      const k = `${t.upstream}\0${t.repo}\0${t.tag}`;
      const other = seen.get(k);
      if (other !== undefined && other !== t.image.digest) {
        throw new ArchiveError('ARCHIVE_NAME', `${t.ref} names two different images in the archive (${other} and ${t.image.digest})`);
      }
      seen.set(k, t.image.digest);
    }
    return out.filter((t, i) => out.findIndex((u) => u.upstream === t.upstream && u.repo === t.repo && u.tag === t.tag) === i);
  }

  #resolve(ref: string): { upstream: string; repo: string; tag: string } {
    const parsed = parseImageName(ref);
    if (!parsed || parsed.digest !== null) throw new ArchiveError('ARCHIVE_NAME', `"${ref}" is not a valid image name with a tag (REPO:TAG)`);
    let target: { upstream: string; repo: string };
    try {
      target = this.#o.resolveName(parsed.name);
    } catch (err) {
      throw new ArchiveError('ARCHIVE_NAME', `cannot place "${ref}": ${describeError(err)}`, { cause: err });
    }
    const tag = parsed.tag ?? 'latest';
    if (!isValidName(target.repo) || !isValidTag(tag)) {
      throw new ArchiveError('ARCHIVE_NAME', `"${ref}" maps to ${target.repo}:${tag}, which is not a valid repository and tag`);
    }
    return { upstream: target.upstream, repo: target.repo, tag };
  }

  /** Moves a hashed temp file into the store under its digest (as a BlobWriter commit does). */
  async #publish(digest: string, temp: string): Promise<void> {
    const final = this.#o.store.pathOf(digest);
    const handle = await open(temp, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await mkdir(dirname(final), { recursive: true });
    if (await exists(final)) {
      await this.#removeTemp(temp);
    } else {
      await rename(temp, final);
      this.#temps.delete(temp);
      await fsyncDir(dirname(final));
      this.#added.add(digest);
    }
    this.#staged.delete(digest);
  }

  async #removeTemp(path: string): Promise<void> {
    await unlink(path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    this.#temps.delete(path);
  }

  /** Undoes everything: writer, temp files, blobs added, catalog records written. Never throws. */
  async #rollback(): Promise<void> {
    const { store, catalog, log } = this.#o;
    const quiet = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        log.warn({ err: describeError(err) }, `archive rollback: ${what} failed`);
      }
    };
    if (this.#writer) await quiet('abort writer', () => this.#writer!.abort());
    for (const path of [...this.#temps]) await quiet(`remove ${path}`, () => this.#removeTemp(path));
    for (const { key, record } of this.#tagsBefore.reverse()) {
      await quiet(`restore tag ${key.repo}:${key.tag}`, () => (record ? catalog.putTag(key, record) : catalog.deleteTag(key)));
    }
    for (const digest of this.#blobsRegistered) {
      if (this.#added.has(digest)) await quiet(`forget ${digest}`, () => catalog.deleteBlob(digest));
    }
    for (const digest of this.#added) await quiet(`remove ${digest}`, () => store.remove(digest));
    this.#added.clear();
  }
}

// ------------------------------------------------------------------------------- helpers

/**
 * Passes a tar through, or gunzips it when it starts with the gzip magic; counts input bytes.
 * Other compressions are refused with a clear message rather than "invalid tar header".
 */
class Decompressor extends Transform {
  readonly #count: (n: number) => void;
  #head: Buffer | null = Buffer.alloc(0);
  #gunzip: Gunzip | null = null;

  constructor(count: (n: number) => void) {
    super();
    this.#count = count;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#count(chunk.length);
    if (this.#head === null) return this.#forward(chunk, cb);
    const head = Buffer.concat([this.#head, chunk]);
    if (head.length < 6) {
      this.#head = head;
      return cb();
    }
    this.#head = null;
    const err = this.#decide(head);
    if (err) return cb(err);
    this.#forward(head, cb);
  }

  override _flush(cb: TransformCallback): void {
    if (this.#head !== null) {
      // Fewer than 6 bytes in all: not an archive of anything, but let tar say so.
      const head = this.#head;
      this.#head = null;
      const err = this.#decide(head);
      if (err) return cb(err);
      if (!this.#gunzip) this.push(head);
      else this.#gunzip.write(head);
    }
    if (!this.#gunzip) return cb();
    this.#gunzip.once('end', () => cb());
    this.#gunzip.end();
  }

  override _read(size: number): void {
    this.#gunzip?.resume();
    super._read(size);
  }

  #decide(head: Buffer): Error | null {
    if (head[0] === 0x1f && head[1] === 0x8b) {
      const gunzip = createGunzip({ chunkSize: 64 * 1024 });
      gunzip.on('data', (data: Buffer) => {
        if (!this.push(data)) gunzip.pause();
      });
      gunzip.on('error', (err) => this.destroy(err));
      this.#gunzip = gunzip;
      return null;
    }
    const other = compressionOf(head);
    if (other) return new ArchiveError('ARCHIVE_COMPRESSION', `the archive is ${other}-compressed; Cove reads plain or gzip-compressed tar archives (decompress it first)`);
    return null;
  }

  #forward(chunk: Buffer, cb: TransformCallback): void {
    if (!this.#gunzip) {
      this.push(chunk);
      return cb();
    }
    if (this.#gunzip.write(chunk)) cb();
    else this.#gunzip.once('drain', () => cb());
  }

  override _destroy(err: Error | null, cb: (error: Error | null) => void): void {
    this.#gunzip?.destroy();
    cb(err);
  }
}

function compressionOf(head: Buffer): string | null {
  if (head.length >= 4 && head.readUInt32BE(0) === 0x28b52ffd) return 'zstd';
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (head.length >= 3 && head.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  return null;
}

function layerMediaType(head: Buffer): string {
  if (head.length >= 2 && head[0] === 0x1f && head[1] === 0x8b) return DOCKER_LAYER_GZIP;
  if (head.length >= 4 && head.readUInt32BE(0) === 0x28b52ffd) return OCI_LAYER_ZSTD;
  return DOCKER_LAYER;
}

/** A tar path as a key: no leading "./" or "/", no "." or ".." segments, no trailing "/". */
function normalize(name: string): string {
  const n = posix.normalize(`/${name}`).replace(/^\/+/, '').replace(/\/+$/, '');
  return n === '.' ? '' : n;
}

/** A full image name ("proj/app:1", "registry/x:1") rather than a bare tag ("1", "latest"). */
function looksLikeFullName(refName: string): boolean {
  return refName.includes('/') || (refName.includes(':') && parseImageName(refName)?.tag !== null);
}

function parseJson(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new ArchiveError('ARCHIVE_BAD_JSON', `${what} in the archive is not valid JSON: ${describeError(err)}`, { cause: err });
  }
}

function mismatch(name: string, digest: string, actual: string, length: number): ArchiveError {
  return new ArchiveError('ARCHIVE_DIGEST_MISMATCH', `${name} in the archive does not match its name: expected ${digest}, got ${actual} (${length} bytes)`);
}

async function drain(entry: TarEntry): Promise<void> {
  for await (const _ of entry) {
    // discard
  }
}

async function readAll(entry: TarEntry, size: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of entry) {
    length += chunk.length;
    if (length > size) throw new ArchiveError('ARCHIVE_CORRUPT', `tar entry longer than its header says (${size} bytes)`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, length);
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

async function writeAll(handle: FileHandle, buffers: Buffer[], bytes: number, position: number): Promise<void> {
  const { bytesWritten } = await handle.writev(buffers, position);
  if (bytesWritten === bytes) return;
  const rest = Buffer.concat(buffers).subarray(bytesWritten);
  let offset = 0;
  while (offset < rest.length) {
    const r = await handle.write(rest, offset, rest.length - offset, position + bytesWritten + offset);
    offset += r.bytesWritten;
  }
}
