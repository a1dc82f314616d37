// The shapes of what the index keeps about tags, blobs and listings, and the checks that a
// stored value has that shape. Shared by the catalog, the tag journal, the rebuild and the
// listing shelf, below all of them.

/** Which tag of which repository on which upstream. */
export interface TagKey {
  upstream: string;
  repo: string;
  tag: string;
  /**
   * Absent for the tag's own record (what the upstream holds under the tag, as a client that
   * accepts every manifest type is told). Set to an Accept class (oci/mediatypes acceptClass)
   * for the answer the upstream gave clients of that class instead: the platform child a
   * registry picks from a list for a client that cannot take lists.
   */
  accept?: string;
}

/** What a tag resolved to, and when. */
export interface TagRecord {
  digest: string;
  mediaType: string;
  size: number;
  /** When the manifest was fetched from upstream (ms since the epoch). */
  fetchedAt: number;
  /** When upstream last confirmed the tag still points here (ms since the epoch); NOT_VALIDATED if never. */
  validatedAt: number;
}

/**
 * validatedAt of a tag no upstream has confirmed: one an operator invalidated, one learnt from a
 * stale source, and one an offline import wrote (an archive's names are only the importer's
 * word). Older than any TTL: the next pull asks upstream before answering, even with
 * stale-while-revalidate, and an upstream answer replaces it; with nothing upstream reachable,
 * the record is served stale.
 */
export const NOT_VALIDATED = 0;

/** Bookkeeping for one stored blob. */
export interface BlobRecord {
  size: number;
  /** Set for manifests; null for layers and configs (or when unknown). */
  mediaType: string | null;
  /** Last time a client read the blob (ms since the epoch); eviction goes oldest first. */
  lastAccess: number;
  /** Pinned blobs are never evicted. */
  pinned: boolean;
}

/** Whether a stored value has the shape of a TagRecord. */
export function isTagRecord(value: unknown): value is TagRecord {
  if (!value || typeof value !== 'object') return false;
  const r = value as Record<string, unknown>;
  return (
    typeof r.digest === 'string' &&
    typeof r.mediaType === 'string' &&
    typeof r.size === 'number' &&
    typeof r.fetchedAt === 'number' &&
    typeof r.validatedAt === 'number'
  );
}

export function isBlobRecord(value: unknown): value is BlobRecord {
  if (!value || typeof value !== 'object') return false;
  const r = value as Record<string, unknown>;
  return (
    typeof r.size === 'number' &&
    (r.mediaType === null || typeof r.mediaType === 'string') &&
    typeof r.lastAccess === 'number' &&
    typeof r.pinned === 'boolean'
  );
}

/** Identifies one listing request: which endpoint, of which repository, with which query. */
export interface ListingKey {
  upstream: string;
  repo: string;
  /** "tags" or "referrers". */
  kind: string;
  /** The query that shaped the answer (n/last, digest and artifactType). */
  query: string;
}

/** A stored listing answer (tags/list or referrers); `body` is base64. */
export interface Listing {
  status: number;
  headers: Record<string, string>;
  body: string;
  fetchedAt: number;
}

/** Whether a stored value has the shape of a Listing. */
export function isListing(value: unknown): value is Listing {
  if (!value || typeof value !== 'object') return false;
  const r = value as Record<string, unknown>;
  return (
    typeof r.status === 'number' &&
    typeof r.body === 'string' &&
    typeof r.fetchedAt === 'number' &&
    !!r.headers &&
    typeof r.headers === 'object' &&
    Object.values(r.headers).every((v) => typeof v === 'string')
  );
}
