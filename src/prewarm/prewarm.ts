// Prewarming: bring images into the cache before anyone pulls them (an operator's list, a Harbor
// push webhook, `cove prewarm REF...`). Everything goes through the same resolvers a client's pull
// uses, so tiers (peers, parents, origin), single fills, digest checks and the stale policy apply
// unchanged. From a multi-arch index only the children of the wanted platforms are fetched;
// skipped platforms cost no request at all. A site prewarm (site.ts) takes every manifest but
// fills only this node's share of the blobs.
import { CoveError, OciError } from '../errors.js';
import type { Logger } from '../log.js';
import { ALL_MANIFEST_ACCEPT, isIndexMediaType } from '../oci/mediatypes.js';
import { ImageRefError, parseRef, type ParsedRef } from '../oci/image-ref.js';
import { parseDigest } from '../oci/reference.js';
import type { BlobResolver } from '../resolve/blobs.js';
import { FILL_DISK_FULL } from '../resolve/pass-window.js';
import type { ManifestAnswer, ManifestResolver } from '../resolve/manifests.js';
import type { RouteMap, RoutedTarget } from '../routes.js';
import { formatPlatform, matches, platformFrom, type Platform } from './platforms.js';

export type { Platform } from './platforms.js';

/** What a prewarm says of a blob the full disk kept out of the store. */
export const NOT_STORED_DISK_FULL = 'not stored: the disk is full';
/** Blobs fetched at once by one prewarm call (an edge uplink is narrow; pulls go on beside it). */
export const PREWARM_DEFAULT_CONCURRENCY = 3;
/** Most references one call takes. */
export const PREWARM_MAX_REFS = 1000;
/** Indexes inside indexes are followed this deep (real ones are one level). */
const MAX_INDEX_DEPTH = 3;
/** Image configs larger than this are not read to learn the platform. */
const CONFIG_READ_MAX_BYTES = 1024 * 1024;

export interface PrewarmDeps {
  manifests: ManifestResolver;
  blobs: BlobResolver;
  routes: RouteMap;
  log: Logger;
  /**
   * Reads a stored blob (BlobStore.readAll). Needed only to apply the platform filter to a single
   * image (no index): its platform is in its config. Without it such images are always taken.
   */
  store?: { readAll(digest: string): Promise<Buffer> };
  /**
   * The site's owner ranking (the peer table): with `share` in the options, only the blobs this
   * node ranks for are filled here. Without it every blob is.
   */
  site?: SiteRanking;
}

/** Who owns what in the site: this node's id and every live node ranked for a digest, best first. */
export interface SiteRanking {
  readonly selfId: string;
  owners(digest: string): string[];
}

/**
 * A site prewarm's part for this node: blobs whose first `copies` owners include it are filled
 * here; the rest are left to those owners (the manifests are taken everywhere).
 */
export interface PrewarmShare {
  copies: number;
  /**
   * The nodes known to run this prewarm (the node that forwarded it, with the members that took
   * it). A blob ranked to a node outside this list is filled here too, standing in for it. Left
   * out on a member: it assumes every ranked node runs the prewarm.
   */
  running?: readonly string[];
}

/** The blobs this node fills for a share: those it ranks for, and those a missing node would have. */
export function fillsHere(site: SiteRanking, share: PrewarmShare): (digest: string) => boolean {
  const running = share.running ? new Set(share.running) : null;
  return (digest) => {
    const top = site.owners(digest).slice(0, Math.max(1, share.copies));
    return top.includes(site.selfId) || (running !== null && top.some((id) => !running.has(id)));
  };
}

export interface PrewarmOptions {
  /** Platforms to take from multi-arch images; [] takes every platform. */
  platforms: readonly Platform[];
  /** Registry namespace for references without a host, as a client's `?ns=` (null: the Cove's default). */
  ns?: string | null;
  /**
   * "client" (default): names are what a client would pull, so the default ns and routes apply.
   * "upstream": names are already the upstream's repository paths (a Harbor webhook), used 1:1
   * unless `ns` or a host in the reference selects a route.
   */
  names?: 'client' | 'upstream';
  /** Blobs in flight at once (default 3). */
  concurrency?: number;
  /** A site prewarm: fill only this node's part of the blobs (needs `site` in the deps). */
  share?: PrewarmShare;
  onProgress?: (event: PrewarmEvent) => void;
  signal?: AbortSignal;
}

/** How one blob came to be in the store. */
export type BlobOutcome = 'cached' | 'fetched' | 'joined' | 'failed';

export type PrewarmEvent =
  | { type: 'ref-start'; ref: string }
  | { type: 'manifest'; ref: string; digest: string; mediaType: string; cache: string; platform: string | null }
  | { type: 'platform-skipped'; ref: string; digest: string; platform: string; reason: string }
  | { type: 'plan'; ref: string; blobs: number; bytes: number }
  | {
      type: 'blob';
      ref: string;
      digest: string;
      size: number;
      result: BlobOutcome;
      error?: string;
      blobsDone: number;
      blobsTotal: number;
      bytesDone: number;
      bytesTotal: number;
    }
  | { type: 'ref-done'; ref: string; result: PrewarmRefResult };

export interface PrewarmCounts {
  total: number;
  cached: number;
  fetched: number;
  /** Already arriving for someone else (a client's pull): waited for, not fetched again. */
  joined: number;
}

export interface PrewarmRefResult {
  /** The reference as given. */
  ref: string;
  ok: boolean;
  /** Why the reference failed (set when ok is false). */
  error?: string;
  /** Where it went: upstream name and repository path there. */
  target?: { upstream: string; repo: string; ns: string | null };
  /** Digest and media type of the top manifest (the index of a multi-arch image). */
  digest?: string;
  mediaType?: string;
  /** Platforms taken ("linux/arm64"); "unknown" for an image whose platform is not known. */
  platforms: string[];
  /** Platforms left out by the filter, with attestation manifests ("unknown/unknown"). */
  skipped: string[];
  /** Manifests (top and children) handled, and how many were already cached. */
  manifests: { total: number; cached: number };
  blobs: PrewarmCounts & { failed: number };
  bytes: PrewarmCounts;
  /**
   * A site prewarm: the blobs (and their bytes) left to the other site members that rank for
   * them, and the copies asked for. `blobs` and `bytes` above count this node's part only.
   */
  elsewhere?: { blobs: number; bytes: number; copies: number };
  /** Not errors, but worth telling: no platform matched, the tag points elsewhere now, ... */
  warnings: string[];
  ms: number;
}

export interface PrewarmResult {
  /** True when every reference prewarmed. */
  ok: boolean;
  refs: PrewarmRefResult[];
  /** One entry per failed reference. */
  errors: Array<{ ref: string; message: string }>;
}

/** Maps a parsed reference to the upstream target, as the request of a client would be. */
export function targetOf(ref: ParsedRef, routes: RouteMap, opts: Pick<PrewarmOptions, 'ns' | 'names'> = {}): RoutedTarget {
  if (ref.host !== null) {
    // A host with a route selects it; any other host is taken to be the origin itself.
    try {
      return routes.resolve(ref.name, ref.host);
    } catch (err) {
      if (!(err instanceof OciError && err.code === 'NAME_UNKNOWN')) throw err;
      return routes.resolve(ref.name, opts.ns ?? null, true);
    }
  }
  return routes.resolve(ref.name, opts.ns ?? null, opts.names === 'upstream');
}

/**
 * Prewarms every reference in turn; one failing does not stop the others. Resolves with a summary
 * per reference; it rejects only for a call that is wrong as a whole (too many references).
 */
export async function prewarm(refs: readonly string[], deps: PrewarmDeps, opts: PrewarmOptions): Promise<PrewarmResult> {
  if (refs.length > PREWARM_MAX_REFS) throw new ImageRefError(`too many references: ${refs.length} (at most ${PREWARM_MAX_REFS} per call)`);
  const unique = [...new Set(refs.map((r) => r.trim()).filter((r) => r !== ''))];
  const results: PrewarmRefResult[] = [];
  for (const ref of unique) {
    const result = await prewarmOne(ref, deps, opts);
    results.push(result);
    emit(deps, opts, { type: 'ref-done', ref, result });
    const log = { ref, digest: result.digest, platforms: result.platforms, blobs: result.blobs, bytes: result.bytes, ms: result.ms };
    if (result.ok) deps.log.info(log, 'prewarmed');
    else deps.log.warn({ ...log, err: result.error }, 'prewarm failed');
  }
  const errors = results.filter((r) => !r.ok).map((r) => ({ ref: r.ref, message: r.error ?? 'failed' }));
  return { ok: errors.length === 0, refs: results, errors };
}

/** An image manifest to take, with the platform it was chosen for. */
interface TakenImage {
  digest: string;
  doc: Record<string, unknown>;
  /** From the index descriptor; null for a single image or a descriptor without one. */
  platform: Platform | null;
}

interface BlobRef {
  digest: string;
  size: number;
}

/** The result of a reference before any work: nothing counted, not ok. */
export function emptyResult(ref: string): PrewarmRefResult {
  return {
    ref,
    ok: false,
    platforms: [],
    skipped: [],
    manifests: { total: 0, cached: 0 },
    blobs: { total: 0, cached: 0, fetched: 0, joined: 0, failed: 0 },
    bytes: { total: 0, cached: 0, fetched: 0, joined: 0 },
    warnings: [],
    ms: 0,
  };
}

/** Prewarms one reference; never rejects: a failure (an abort included) is in the result. */
export async function prewarmOne(ref: string, deps: PrewarmDeps, opts: PrewarmOptions): Promise<PrewarmRefResult> {
  const started = Date.now();
  const result = emptyResult(ref);
  try {
    checkAborted(opts.signal);
    emit(deps, opts, { type: 'ref-start', ref });
    const parsed = parseRef(ref);
    const target = targetOf(parsed, deps.routes, opts);
    result.target = { upstream: target.upstream, repo: target.repo, ns: target.ns };
    const top = await topManifest(parsed, target, deps, result);
    result.digest = top.digest;
    result.mediaType = top.mediaType;
    countManifest(result, top);
    emit(deps, opts, { type: 'manifest', ref, digest: top.digest, mediaType: top.mediaType, cache: top.cache, platform: null });

    // Phase 1: manifests. Children of skipped platforms are never asked for.
    const images: TakenImage[] = [];
    await collect(top, null, 0, { ref, target, deps, opts, result, images });

    // Phase 2: a single image of unknown platform under a filter: its config tells.
    const outcomes = new Map<string, { outcome: BlobOutcome; size: number; error?: string }>();
    const taken: TakenImage[] = [];
    for (const image of images) {
      if (image.platform !== null || opts.platforms.length === 0 || !deps.store) {
        taken.push(image);
        continue;
      }
      const config = descriptorOf(image.doc.config);
      if (!config || config.size > CONFIG_READ_MAX_BYTES) {
        taken.push(image);
        continue;
      }
      const got = await fetchBlob(target, config, deps, opts.signal);
      outcomes.set(config.digest, got);
      if (got.outcome === 'failed') throw new CoveError('PREWARM_FAILED', `config ${config.digest}: ${got.error}`);
      const platform = platformFrom(parseJson(await deps.store.readAll(config.digest)));
      if (platform && !matches(platform, opts.platforms)) {
        skip(deps, opts, result, image.digest, formatPlatform(platform), 'not in the platform filter');
        continue;
      }
      taken.push({ ...image, platform });
    }
    for (const image of taken) result.platforms.push(formatPlatform(image.platform));
    if (taken.length === 0) {
      result.warnings.push(`no platform matches the filter ${opts.platforms.map(formatPlatform).join(',')} (the image has ${result.skipped.join(', ') || 'none'})`);
    }

    // Phase 3: blobs (configs and layers), each once however many images share it.
    const wanted = new Map<string, BlobRef>();
    for (const image of taken) for (const blob of blobsOf(image)) if (!wanted.has(blob.digest)) wanted.set(blob.digest, blob);
    let all = [...wanted.values()];
    if (opts.share && deps.site) {
      // A site prewarm: this node's part, and what any blob already fetched above (a config) adds.
      const mine = fillsHere(deps.site, opts.share);
      const left = all.filter((b) => !mine(b.digest) && !outcomes.has(b.digest));
      all = all.filter((b) => mine(b.digest) || outcomes.has(b.digest));
      result.elsewhere = { blobs: left.length, bytes: left.reduce((n, b) => n + b.size, 0), copies: opts.share.copies };
    }
    result.blobs.total = all.length;
    result.bytes.total = all.reduce((n, b) => n + b.size, 0);
    emit(deps, opts, { type: 'plan', ref, blobs: result.blobs.total, bytes: result.bytes.total });
    let blobsDone = 0;
    let bytesDone = 0;
    const errors: string[] = [];
    const record = (blob: BlobRef, got: { outcome: BlobOutcome; size: number; error?: string }) => {
      blobsDone++;
      bytesDone += got.size;
      if (got.outcome === 'failed') {
        result.blobs.failed++;
        errors.push(`blob ${blob.digest}: ${got.error}`);
      } else {
        result.blobs[got.outcome]++;
        result.bytes[got.outcome] += got.size;
      }
      emit(deps, opts, {
        type: 'blob',
        ref,
        digest: blob.digest,
        size: got.size,
        result: got.outcome,
        ...(got.error ? { error: got.error } : {}),
        blobsDone,
        blobsTotal: result.blobs.total,
        bytesDone,
        bytesTotal: result.bytes.total,
      });
    };
    const pending: BlobRef[] = [];
    for (const blob of all) {
      const done = outcomes.get(blob.digest);
      if (done) record(blob, done);
      else pending.push(blob);
    }
    const concurrency = Math.max(1, Math.min(16, Math.floor(opts.concurrency ?? PREWARM_DEFAULT_CONCURRENCY)));
    await pool(pending, concurrency, opts.signal, async (blob) => record(blob, await fetchBlob(target, blob, deps, opts.signal)));
    checkAborted(opts.signal);
    if (errors.length > 0) {
      throw new CoveError('PREWARM_FAILED', `${errors.length} of ${all.length} blobs failed; first: ${errors[0]}`);
    }
    result.ok = true;
  } catch (err) {
    result.ok = false;
    result.error = messageOf(err);
  }
  result.ms = Date.now() - started;
  return result;
}

/**
 * The top manifest. A tag with a digest (a webhook's "proj/app:1@sha256:…") revalidates the tag
 * once, so the cached tag follows the push, and fetches the digest if the tag has moved on since.
 */
async function topManifest(parsed: ParsedRef, target: RoutedTarget, deps: PrewarmDeps, result: PrewarmRefResult): Promise<ManifestAnswer> {
  if (parsed.digest === null) return deps.manifests.byTag(target, parsed.tag!, ALL_MANIFEST_ACCEPT);
  if (parsed.tag === null) return deps.manifests.byDigest(target, parsed.digest);
  try {
    await deps.manifests.invalidate(target, parsed.tag);
    const byTag = await deps.manifests.byTag(target, parsed.tag, ALL_MANIFEST_ACCEPT);
    if (byTag.digest === parsed.digest) return byTag;
    result.warnings.push(`tag ${parsed.tag} now points to ${byTag.digest}, not ${parsed.digest}; prewarming ${parsed.digest}`);
  } catch (err) {
    result.warnings.push(`tag ${parsed.tag} not refreshed: ${messageOf(err)}`);
  }
  return deps.manifests.byDigest(target, parsed.digest);
}

interface Walk {
  ref: string;
  target: RoutedTarget;
  deps: PrewarmDeps;
  opts: PrewarmOptions;
  result: PrewarmRefResult;
  images: TakenImage[];
}

/** Adds the image manifests under `answer` that the filter takes; fetches only those. */
async function collect(answer: ManifestAnswer, platform: Platform | null, depth: number, w: Walk): Promise<void> {
  const doc = parseJson(answer.bytes);
  if (!doc) throw new CoveError('PREWARM_FAILED', `manifest ${answer.digest} is not a JSON object`);
  const isIndex = isIndexMediaType(answer.mediaType) || (Array.isArray(doc.manifests) && doc.config === undefined);
  if (!isIndex) {
    if (!descriptorOf(doc.config) && !Array.isArray(doc.layers)) {
      throw new CoveError('PREWARM_FAILED', `manifest ${answer.digest} (${answer.mediaType}) is neither an image manifest nor an index`);
    }
    w.images.push({ digest: answer.digest, doc, platform });
    return;
  }
  if (depth >= MAX_INDEX_DEPTH) throw new CoveError('PREWARM_FAILED', `index ${answer.digest} nests indexes more than ${MAX_INDEX_DEPTH} deep`);
  const children = Array.isArray(doc.manifests) ? doc.manifests : [];
  for (const entry of children) {
    checkAborted(w.opts.signal);
    const desc = descriptorOf(entry);
    if (!desc) throw new CoveError('PREWARM_FAILED', `index ${answer.digest} has a child without a valid digest`);
    const childPlatform = platformFrom((entry as Record<string, unknown>).platform);
    const label = formatPlatform(childPlatform);
    if (isAttestation(entry, childPlatform)) {
      skip(w.deps, w.opts, w.result, desc.digest, label, 'attestation manifest');
      continue;
    }
    if (childPlatform && !matches(childPlatform, w.opts.platforms)) {
      skip(w.deps, w.opts, w.result, desc.digest, label, 'not in the platform filter');
      continue;
    }
    if (!childPlatform && w.opts.platforms.length > 0 && !isIndexMediaType(String((entry as Record<string, unknown>).mediaType ?? ''))) {
      // A child with no platform cannot match a filter; without a filter it is taken.
      skip(w.deps, w.opts, w.result, desc.digest, label, 'no platform in the index');
      continue;
    }
    const child = await w.deps.manifests.byDigest(w.target, desc.digest);
    countManifest(w.result, child);
    emit(w.deps, w.opts, { type: 'manifest', ref: w.ref, digest: child.digest, mediaType: child.mediaType, cache: child.cache, platform: childPlatform ? label : null });
    await collect(child, childPlatform ?? platform, depth + 1, w);
  }
}

/** buildx attestations: platform unknown/unknown, annotated as attestation manifests. */
function isAttestation(entry: unknown, platform: Platform | null): boolean {
  const annotations = (entry as { annotations?: Record<string, unknown> }).annotations;
  if (annotations && annotations['vnd.docker.reference.type'] === 'attestation-manifest') return true;
  return platform !== null && platform.os === 'unknown' && platform.architecture === 'unknown';
}

/** Config and layers of an image manifest; foreign (non-distributable) layers are left out. */
function blobsOf(image: TakenImage): BlobRef[] {
  const out: BlobRef[] = [];
  const config = descriptorOf(image.doc.config);
  if (config) out.push(config);
  const layers = Array.isArray(image.doc.layers) ? image.doc.layers : [];
  for (const layer of layers) {
    const desc = descriptorOf(layer);
    if (!desc) throw new CoveError('PREWARM_FAILED', `manifest ${image.digest} has a layer without a valid digest`);
    const mediaType = String((layer as Record<string, unknown>).mediaType ?? '');
    if (/foreign|nondistributable/.test(mediaType) && Array.isArray((layer as Record<string, unknown>).urls)) continue;
    out.push(desc);
  }
  return out;
}

/** One blob into the store: already there, fetched by a fill this call started, or joined. */
async function fetchBlob(target: RoutedTarget, blob: BlobRef, deps: PrewarmDeps, signal?: AbortSignal): Promise<{ outcome: BlobOutcome; size: number; error?: string }> {
  try {
    checkAborted(signal);
    const found = await deps.blobs.lookup(target, blob.digest);
    if (found.kind === 'hit') return { outcome: 'cached', size: found.size };
    // The fill belongs to the cache: aborting stops the waiting, not the fill.
    await untilAborted(found.fill.done, signal);
    // Clients were reading when the disk filled: they got the blob, the store did not.
    if (found.fill.state === 'passed') return { outcome: 'failed', size: 0, error: NOT_STORED_DISK_FULL };
    return { outcome: found.joined ? 'joined' : 'fetched', size: found.fill.size ?? blob.size };
  } catch (err) {
    if (isAbort(err)) throw err;
    if (err instanceof CoveError && err.code === FILL_DISK_FULL) return { outcome: 'failed', size: 0, error: NOT_STORED_DISK_FULL };
    return { outcome: 'failed', size: 0, error: messageOf(err) };
  }
}

/** Runs `work` over `items`, at most `limit` at once; stops taking new items once aborted. */
async function pool<T>(items: readonly T[], limit: number, signal: AbortSignal | undefined, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      checkAborted(signal);
      const item = items[next++]!;
      await work(item);
    }
  };
  // Every worker ends before this returns (no result is touched after the reference is done).
  const settled = await Promise.allSettled(Array.from({ length: Math.min(limit, items.length) }, worker));
  const failed = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failed) throw failed.reason;
}

function skip(deps: PrewarmDeps, opts: PrewarmOptions, result: PrewarmRefResult, digest: string, platform: string, reason: string): void {
  result.skipped.push(platform);
  emit(deps, opts, { type: 'platform-skipped', ref: result.ref, digest, platform, reason });
}

function countManifest(result: PrewarmRefResult, answer: ManifestAnswer): void {
  result.manifests.total++;
  if (answer.cache === 'hit' || answer.cache === 'revalidated') result.manifests.cached++;
}

function emit(deps: PrewarmDeps, opts: PrewarmOptions, event: PrewarmEvent): void {
  if (!opts.onProgress) return;
  try {
    opts.onProgress(event);
  } catch (err) {
    // A listener's failure (a client that went away) must not stop the prewarm.
    deps.log.debug({ err: messageOf(err) }, 'prewarm progress listener failed');
  }
}

function descriptorOf(value: unknown): BlobRef | null {
  if (!value || typeof value !== 'object') return null;
  const { digest, size } = value as { digest?: unknown; size?: unknown };
  if (typeof digest !== 'string' || !parseDigest(digest)) return null;
  return { digest, size: typeof size === 'number' && Number.isSafeInteger(size) && size >= 0 ? size : 0 };
}

function parseJson(bytes: Buffer): Record<string, unknown> | null {
  try {
    const doc: unknown = JSON.parse(bytes.toString('utf8'));
    return doc && typeof doc === 'object' && !Array.isArray(doc) ? (doc as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

class PrewarmAbortedError extends CoveError {
  constructor() {
    super('PREWARM_ABORTED', 'prewarm aborted');
  }
}

function isAbort(err: unknown): boolean {
  return err instanceof PrewarmAbortedError;
}

function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new PrewarmAbortedError();
}

function untilAborted<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return promise;
  checkAborted(signal);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(new PrewarmAbortedError());
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}

function messageOf(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
