// What import and export share: the error they throw, image-name parsing, the media types of
// archives, and the host platform (which image of an index `docker load` gets).
import { CoveError } from '../errors.js';
import { isValidName, isValidTag, parseDigest, splitRegistryHost } from '../oci/reference.js';

/** Stable codes of ArchiveError; the CLI and the admin API can branch on them. */
export type ArchiveErrorCode =
  /** The input is not a tar archive (nor a gzip of one). */
  | 'ARCHIVE_NOT_TAR'
  /** The archive (or its gzip stream) ends before its last entry does. */
  | 'ARCHIVE_TRUNCATED'
  /** The tar or gzip stream is damaged after a good start. */
  | 'ARCHIVE_CORRUPT'
  /** A compression other than gzip (xz, zstd, bzip2). */
  | 'ARCHIVE_COMPRESSION'
  /** Neither an OCI image layout nor a `docker save` archive, or a malformed one. */
  | 'ARCHIVE_FORMAT'
  /** manifest.json, index.json, a manifest or a config is not valid JSON of the right shape. */
  | 'ARCHIVE_BAD_JSON'
  /** A metadata entry is larger than Cove reads into memory. */
  | 'ARCHIVE_TOO_LARGE'
  /** The archive decompresses to more than the import limits allow (size or expansion ratio). */
  | 'ARCHIVE_LIMIT'
  /** A blob's bytes do not hash to its name (or the descriptor pointing at it), or its size differs. */
  | 'ARCHIVE_DIGEST_MISMATCH'
  /** Something the archive's index or manifest.json refers to is not in the archive. */
  | 'ARCHIVE_BLOB_MISSING'
  /** An image has no usable name (pass a tag), or a name is not valid. */
  | 'ARCHIVE_NAME'
  /** Reading the input failed (the client went away, an I/O error). */
  | 'ARCHIVE_READ'
  /** Export: a reference names no tag or manifest Cove has. */
  | 'EXPORT_UNKNOWN'
  /** Export: a manifest, config or layer of a requested image is not in the store. */
  | 'EXPORT_BLOB_MISSING'
  /** Export: the output stream failed or was closed. */
  | 'EXPORT_WRITE';

export class ArchiveError extends CoveError {
  declare readonly code: ArchiveErrorCode;
  constructor(code: ArchiveErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
  }
}

export const OCI_LAYOUT_FILE = 'oci-layout';
export const OCI_LAYOUT_VERSION = '1.0.0';
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
export const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';

export const DOCKER_CONFIG = 'application/vnd.docker.container.image.v1+json';
export const DOCKER_LAYER = 'application/vnd.docker.image.rootfs.diff.tar';
export const DOCKER_LAYER_GZIP = 'application/vnd.docker.image.rootfs.diff.tar.gzip';
export const OCI_LAYER_ZSTD = 'application/vnd.oci.image.layer.v1.tar+zstd';

/** A descriptor as it appears in manifests and index.json. */
export interface Descriptor {
  mediaType?: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: { architecture?: string; os?: string; variant?: string };
}

/** True for a descriptor-shaped value with a digest Cove can verify and a sane size. */
export function isDescriptor(value: unknown): value is Descriptor {
  if (!value || typeof value !== 'object') return false;
  const d = value as Record<string, unknown>;
  return typeof d.digest === 'string' && parseDigest(d.digest) !== null && typeof d.size === 'number' && Number.isSafeInteger(d.size) && d.size >= 0;
}

/** An image reference split up: `name` without tag or digest; `tag` and `digest` when given. */
export interface ImageName {
  name: string;
  tag: string | null;
  digest: string | null;
}

/**
 * Splits "harbor.example.com:443/proj/app:1", "proj/app@sha256:…" or "nginx" into name, tag and
 * digest. The tag is what follows the last ':' after the last '/' (a registry port is not a tag).
 * Returns null when the pieces are not valid.
 */
export function parseImageName(text: string): ImageName | null {
  let rest = text.trim();
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!parseDigest(digest)) return null;
  }
  let tag: string | null = null;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) return null;
  }
  if (rest === '') return null;
  // The registry host (first component with '.' or ':' or "localhost") may hold upper case and a
  // port; the repository path must follow the distribution grammar.
  const { host, path } = splitRegistryHost(rest);
  if (host !== null && !/^[A-Za-z0-9.-]+(?::[0-9]+)?$/.test(host)) return null;
  if (!isValidName(path)) return null;
  return { name: rest, tag, digest };
}

/** The OCI architecture name of this host (what `docker load` here would run). */
export function hostArchitecture(): string {
  switch (process.arch) {
    case 'x64':
      return 'amd64';
    case 'ia32':
      return '386';
    case 'ppc64':
      return 'ppc64le';
    default:
      return process.arch; // arm64, arm, s390x, riscv64, mips64el
  }
}

export function describeError(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
