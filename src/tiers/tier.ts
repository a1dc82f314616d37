// The seam every source of content implements: LAN peers, parent Coves and the origin (Harbor).
// The resolver walks tiers in order; a tier answers null for "not here" and throws the classes in
// src/errors.ts for "could not ask" (unreachable, bad status, auth).
import type { Readable } from 'node:stream';

/** Where a request goes upstream: a configured upstream by name and the repository path there. */
export interface Target {
  /** Name of the configured upstream, e.g. "origin". */
  upstream: string;
  /** Repository path at that upstream, route prefix applied, e.g. "dockerhub/library/nginx". */
  repo: string;
  /**
   * Which tiers this request may use: every tier (a client's request, the default), only the
   * tiers above the LAN (a peer asked this node to fetch for the site), or none (a peer asked
   * for what this node already holds).
   */
  reach?: Reach;
  /** Node ids of the Coves this request already passed through (its Via hops), oldest first. */
  via?: readonly string[];
  /**
   * This node owns the blob for its site but could not fetch it from above: the peer tier asks
   * the next owner in rank instead of leaving the fetch to this node (whose uplink just failed).
   */
  pastSelf?: boolean;
}

export type Reach = 'all' | 'above' | 'local';

/** Where a tier sits: the resolver asks peers, then parents, then the origin. */
export type TierKind = 'peer' | 'parent' | 'origin';

/** What a manifest HEAD tells: enough to decide whether the cached copy is current. */
export interface ManifestHead {
  /** Digest of the manifest bytes (Docker-Content-Digest), e.g. "sha256:…". */
  digest: string;
  /** The Content-Type the tier sent, exactly. */
  mediaType: string;
  /** Length of the manifest in bytes. */
  size: number;
  /** The tier answered from a stale copy (a parent whose own upstream was away). */
  stale?: boolean;
}

/** A manifest's exact bytes as the tier sent them; `digest` is the sha256 of `bytes`. */
export interface FetchedManifest extends ManifestHead {
  bytes: Buffer;
  /** Which source inside the tier sent it (e.g. "peer:node-b"), for counters and logs. */
  source?: string;
}

/** An open blob body starting at `offset`; bytes are unverified until the fill checks them. */
export interface BlobBody {
  /** Total size of the blob when the tier told it (Content-Length or Content-Range total). */
  size: number | null;
  /** Offset of the first byte `body` yields (0 unless a Range was honoured). */
  offset: number;
  /** The byte stream; destroying it releases the upstream connection. */
  body: Readable;
  /** Which source inside the tier sent it (e.g. "peer:node-b"), for counters and logs. */
  source?: string;
  /** Told when the bytes proved wrong (digest or length), so the tier can distrust the source. */
  condemn?: (reason: string) => void;
}

/** A response passed through to the client as is (tags/list, referrers). */
export interface PassThroughResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** One source of content. Every method answers null when the tier does not have the thing. */
export interface Tier {
  /** Short name for logs and Cache-Status, e.g. "origin". */
  readonly name: string;
  readonly kind: TierKind;
  /** HEAD a manifest by tag or digest with the given Accept list. */
  headManifest(target: Target, reference: string, accept: readonly string[], signal?: AbortSignal): Promise<ManifestHead | null>;
  /** GET a manifest by tag or digest; checks Docker-Content-Digest against the bytes when sent. */
  getManifest(target: Target, reference: string, accept: readonly string[], signal?: AbortSignal): Promise<FetchedManifest | null>;
  /** HEAD a blob; a null here is not proof of absence (Harbor proxy projects 404 uncached blobs). */
  headBlob(target: Target, digest: string, signal?: AbortSignal): Promise<{ size: number } | null>;
  /** Open a blob from byte `offset` (a Range request when offset > 0). */
  openBlob(target: Target, digest: string, offset: number, signal?: AbortSignal): Promise<BlobBody | null>;
  /**
   * Open exactly bytes [start, end] of a blob (a client's Range, answered before the blob is
   * here). The body yields end - start + 1 bytes from `start`, checked against Content-Range;
   * null when the tier lacks the blob or does not answer ranges (it ignored the Range header).
   */
  openBlobSpan(target: Target, digest: string, start: number, end: number, signal?: AbortSignal): Promise<BlobBody | null>;
  /** GET /v2/<repo>/tags/list with the client's n and last, passed through (null: not asked here). */
  listTags(target: Target, query: { n?: number; last?: string }, signal?: AbortSignal): Promise<PassThroughResponse | null>;
  /** GET /v2/<repo>/referrers/<digest>, passed through (null: not asked here). */
  referrers(target: Target, digest: string, artifactType: string | undefined, signal?: AbortSignal): Promise<PassThroughResponse | null>;
  /**
   * A request sent at `since` (ms since epoch) got no answer within a deadline of Cove's own (a
   * revalidation's): a tier with a breaker marks itself down now, unless it has answered anything
   * since, so later requests do not wait for it again.
   */
  suspect?(target: Target, reason: string, since: number): void;
  /**
   * Whether the tier can be asked now, for a tier with a breaker: null while it is marked down
   * (asking fails at once), else since when it has been reachable again (ms since epoch; 0 when it
   * was never marked down). Revalidations spread themselves out after a recovery.
   */
  upSince?(target: Target): number | null;
}
