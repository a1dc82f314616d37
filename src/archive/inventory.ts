// What an archive holds, as its format reader (oci-layout.ts or docker-archive.ts) works it out
// from the entries read: the images, the manifests to register, and every blob they need. Also
// the little a format reader may ask of those entries (ArchiveContents; staging.ts provides it).
import { ArchiveError, describeError } from './common.js';

/** A file entry of the archive, by normalized path. */
export interface FileEntry {
  digest: string;
  size: number;
  /** Its first bytes, for sniffing compression. */
  head: Buffer;
}

/** One manifest to register: exact bytes and media type. */
export interface ManifestToStore {
  bytes: Buffer;
  mediaType: string;
}

/** An image found in the archive, before its names are resolved. */
export interface FoundImage {
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
export interface Inventory {
  format: 'oci-layout' | 'docker-archive';
  images: FoundImage[];
  manifests: Map<string, ManifestToStore>;
  /** digest -> size: manifests, configs and layers of every image. */
  blobs: Map<string, number>;
}

/** The entries of an archive as a format reader sees them once the whole archive is read. */
export interface ArchiveContents {
  /** Small metadata entries (index.json, manifest.json, oci-layout, repositories) by name. */
  readonly metadata: ReadonlyMap<string, Buffer>;
  /** A file entry by path, following links; null when the archive has none there. */
  file(path: string): FileEntry | null;
  /** True when the archive supplied this blob (verified, in the store or staged). */
  has(digest: string): boolean;
  /** The size of a blob the archive supplied, or the store already had; null if neither. */
  sizeOf(digest: string): Promise<number | null>;
  /** A blob's bytes, whether staged or in the store; for manifests and configs only. */
  readBlob(digest: string): Promise<Buffer>;
}

export function parseJson(bytes: Buffer, what: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new ArchiveError('ARCHIVE_BAD_JSON', `${what} in the archive is not valid JSON: ${describeError(err)}`, { cause: err });
  }
}
