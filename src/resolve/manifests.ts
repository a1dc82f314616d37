// Manifest lookups. Manifests by digest never change: once stored they are served without asking
// anyone. Tags move: a tag resolved within the TTL is served from the cache, after it one HEAD
// revalidates, and when the upstream cannot be asked the cached tag is served stale.
import { DigestMismatchError, OciError, isMarkedDown, isUpstreamFailure } from '../errors.js';
import type { Logger } from '../log.js';
import type { Counters } from '../metrics.js';
import { digestOf } from '../oci/digest.js';
import {
  ALL_MANIFEST_ACCEPT,
  MANIFEST_MAX_BYTES,
  acceptAdmits,
  acceptClass,
  admitsEveryIndex,
  descriptorSizes,
  effectiveAccept,
  isIndexMediaType,
  manifestReferences,
  sniffMediaType,
} from '../oci/mediatypes.js';
import { parseDigest } from '../oci/reference.js';
import type { BlobStore } from '../store/blobs.js';
import type { Catalog, TagKey, TagRecord } from '../store/catalog.js';
import { NOT_VALIDATED } from '../store/records.js';
import type { PeerTagAnswer } from '../tiers/peers.js';
import type { FetchedManifest, Target, Tier } from '../tiers/tier.js';
import { SingleFlight } from './flight.js';
import type { Resolver } from './resolver.js';
import type { RevalidationPace } from './revalidation-pace.js';

/** What to do when the upstream 404s a cached tag: pass the 404 on, or keep serving the cached copy. */
export const NOT_FOUND_POLICIES = ['not-found', 'serve-stale'] as const;
export type NotFoundPolicy = (typeof NOT_FOUND_POLICIES)[number];

/** How a manifest answer came about; it becomes the Cache-Status header and the log's cache field. */
export type ManifestCacheResult = 'hit' | 'revalidated' | 'stale' | 'miss' | 'vary-miss';

/** A manifest ready to serve. */
export interface ManifestAnswer {
  bytes: Buffer;
  digest: string;
  mediaType: string;
  cache: ManifestCacheResult;
  /** "local" for answers from the store, else the tier that supplied the bytes. */
  tier: string;
}

/** validatedAt of a tag an operator invalidated, or no upstream ever confirmed (an import): older than any TTL. */
const INVALIDATED = NOT_VALIDATED;

export interface ManifestResolverOptions {
  store: BlobStore;
  catalog: Catalog;
  resolver: Resolver;
  counters: Counters;
  log: Logger;
  tagTtlMs: number;
  /** A cached tag the upstream now 404s: pass the 404 on, or keep serving the cached copy. */
  onUpstreamNotFound?: NotFoundPolicy;
  /** Past the TTL, serve the cached tag at once and revalidate it in the background. */
  staleWhileRevalidate?: boolean;
  /**
   * How long a client waits for a cached tag's revalidation (0: as long as the upstream takes).
   * Past it the client gets the cached answer, stale; the revalidation goes on and updates the
   * tag if it succeeds, and the tier that kept silent is marked down at once.
   */
  revalidateDeadlineMs?: number;
  /**
   * Bounds the tier asks of revalidations running at once and spreads them after an upstream's
   * recovery, so a site's nodes do not all revalidate every tag in the same instant.
   */
  revalidationPace?: RevalidationPace;
  /** A tag as LAN peers hold it: asked only when no tier above could be asked and nothing is cached. */
  peerTags?: (target: Target, tag: string, accept: readonly string[]) => Promise<PeerTagAnswer | null>;
  /** Told of every manifest newly written to the store (eviction keeps count). */
  onStored?: (bytes: number) => void;
  /** Told of every manifest fetched under a repository's name (which repository holds what). */
  onFetchedFor?: (target: Target, digest: string) => Promise<void>;
  now?: () => number;
}

export class ManifestResolver {
  readonly #o: ManifestResolverOptions;
  readonly #now: () => number;
  readonly #flights = new SingleFlight<{ manifest: FetchedManifest; tier: string } | null>();
  /** Revalidations under way, one per tag record: concurrent pulls of a tag share one. */
  readonly #revalidating = new Map<string, Revalidation>();

  constructor(options: ManifestResolverOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  /** A manifest by digest: the store's copy, else fetched (with every type accepted) and verified. */
  async byDigest(target: Target, digest: string): Promise<ManifestAnswer> {
    const local = await this.#local(digest);
    if (local) return { ...local, digest, cache: 'hit', tier: 'local' };
    if (target.reach === 'local') throw manifestUnknown(target, digest);
    // By digest the bytes are fixed, so ask for every type: the upstream must not rewrite them.
    const fetched = await this.#fetch(target, digest, ALL_MANIFEST_ACCEPT);
    if (!fetched) throw manifestUnknown(target, digest);
    const expected = digest;
    const algorithm = parseDigest(expected)!.algorithm;
    const actual = algorithm === 'sha256' ? fetched.manifest.digest : digestOf(fetched.manifest.bytes, algorithm);
    if (actual !== expected) {
      this.#o.counters.digestMismatches++;
      this.#o.log.error({ digest: expected, actual, tier: fetched.tier }, 'digest mismatch: manifest discarded');
      throw new DigestMismatchError(`manifest fetched as ${expected} hashes to ${actual}`);
    }
    await this.#store(expected, fetched.manifest);
    await this.#o.onFetchedFor?.(target, expected);
    return { bytes: fetched.manifest.bytes, digest: expected, mediaType: fetched.manifest.mediaType, cache: 'miss', tier: fetched.tier };
  }

  /**
   * A manifest by tag, as the upstream would answer this client's Accept list. The tag's own
   * record holds what the upstream keeps under the tag (the answer to a client that takes every
   * manifest type) and answers every client that admits its type. A client that does not (one
   * that cannot take lists, when the tag is a multi-platform list) gets the answer kept for its
   * Accept class: the registry's pick for it. Neither answer ever replaces the other.
   */
  async byTag(target: Target, tag: string, clientAccept: readonly string[]): Promise<ManifestAnswer> {
    const accept = effectiveAccept(clientAccept);
    const base: TagKey = { upstream: target.upstream, repo: target.repo, tag };
    const own = await this.#o.catalog.getTag(base);
    const ownAdmitted = own !== null && acceptAdmits(accept, own.mediaType);
    const key: TagKey = ownAdmitted ? base : { ...base, accept: acceptClass(accept) };
    const record = ownAdmitted ? own : await this.#o.catalog.getTag(key);
    if (record) {
      const local = await this.#local(record.digest);
      if (local && target.reach === 'local') {
        // A peer asks what this node holds: the cached tag as it is, fresh or not, never revalidated.
        const fresh = this.#now() - record.validatedAt < this.#o.tagTtlMs;
        return { ...local, digest: record.digest, cache: fresh ? 'hit' : 'stale', tier: 'local' };
      }
      if (local) return this.#cachedTag(target, key, record, local);
    }
    if (target.reach === 'local') throw manifestUnknown(target, tag);
    let fetched;
    try {
      fetched = await this.#fetch(target, tag, accept);
    } catch (err) {
      if (!isUpstreamFailure(err)) throw err;
      const child = own && !ownAdmitted ? await this.#childOf(target, base, own, accept, err as Error) : null;
      const fallback = child ?? (record === null ? await this.#fromPeers(target, base, accept, err as Error) : null);
      if (fallback) return fallback;
      throw err;
    }
    if (!fetched) throw manifestUnknown(target, tag);
    const { manifest } = fetched;
    await this.#store(manifest.digest, manifest);
    await this.#o.onFetchedFor?.(target, manifest.digest);
    await this.#putTag(answerKey(base, accept, manifest.mediaType), manifest, manifest.stale === true);
    if (manifest.stale) this.#o.counters.staleServed++;
    return { ...manifest, cache: manifest.stale ? 'stale' : own && !ownAdmitted ? 'vary-miss' : 'miss', tier: fetched.tier };
  }

  /**
   * Nothing above could be asked, and this client's Accept class has no answer of its own here,
   * but the tag's own record is a list whose platform child is cached: the child a registry
   * picks for such a client (linux/amd64, as the distribution registry and Harbor do) is served
   * stale and not recorded, so the upstream decides once it is back.
   */
  async #childOf(target: Target, base: TagKey, own: TagRecord, accept: readonly string[], cause: Error): Promise<ManifestAnswer | null> {
    if (!isIndexMediaType(own.mediaType)) return null;
    const list = await this.#local(own.digest);
    if (!list) return null;
    for (const child of defaultPlatformChildren(list.bytes)) {
      if (!acceptAdmits(accept, child.mediaType)) continue;
      const local = await this.#local(child.digest);
      if (!local || !acceptAdmits(accept, local.mediaType)) continue;
      this.#o.counters.staleServed++;
      this.#o.log.warn({ repo: base.repo, tag: base.tag, digest: child.digest, list: own.digest, err: cause.message }, 'upstream unavailable: serving the cached list\'s linux/amd64 child stale');
      return { ...local, digest: child.digest, cache: 'stale', tier: 'local' };
    }
    return null;
  }

  /**
   * Nothing above could be asked and the tag was never cached here: a sibling's copy is better
   * than a failed pull. It is served stale and flagged, and recorded so that the next pull asks
   * upward again first.
   */
  async #fromPeers(target: Target, base: TagKey, accept: readonly string[], cause: Error): Promise<ManifestAnswer | null> {
    if ((target.reach ?? 'all') !== 'all' || !this.#o.peerTags) return null;
    const found = await this.#o.peerTags(target, base.tag, accept).catch(() => null);
    if (!found) return null;
    const { manifest, peer } = found;
    this.#o.counters.add(this.#o.counters.objectsFetched, `peer:${peer}`);
    this.#o.counters.add(this.#o.counters.bytesFetched, `peer:${peer}`, manifest.bytes.length);
    await this.#store(manifest.digest, manifest);
    await this.#putTag(answerKey(base, accept, manifest.mediaType), manifest, true);
    this.#o.counters.staleServed++;
    this.#o.log.warn({ repo: base.repo, tag: base.tag, digest: manifest.digest, peer, err: cause.message }, 'upstream unavailable: serving a peer\'s copy of the tag, stale');
    return { ...manifest, cache: 'stale', tier: `peer:${peer}` };
  }

  /**
   * Makes the next pull of a tag (or of every cached tag of the repository) revalidate with the
   * upstream, whatever the TTL. Returns how many tags were marked.
   */
  async invalidate(target: Target, tag: string | null): Promise<number> {
    const keys = (await this.#o.catalog.listTags(target.upstream, target.repo, { variants: true }))
      .map((entry) => entry.key)
      .filter((key) => tag === null || key.tag === tag);
    for (const key of keys) await this.#o.catalog.touchTag(key, INVALIDATED);
    // Counted by tag name: a tag's own record and those kept per Accept class are one tag.
    return new Set(keys.map((key) => key.tag)).size;
  }


  /** A tag whose record and bytes are local: fresh, revalidated, moved, or served stale. */
  async #cachedTag(
    target: Target,
    key: TagKey,
    record: TagRecord,
    local: { bytes: Buffer; mediaType: string },
  ): Promise<ManifestAnswer> {
    const now = this.#now();
    const cached: ManifestAnswer = { ...local, digest: record.digest, cache: 'hit', tier: 'local' };
    if (now - record.validatedAt < this.#o.tagTtlMs) return cached;
    // An invalidated or imported tag (validatedAt 0) is revalidated before answering, even with
    // SWR: nothing upstream vouched for it, so serving it first would serve whatever was imported.
    const revalidation = this.#revalidation(target, key, record, cached, now);
    if (!this.#o.staleWhileRevalidate || record.validatedAt === INVALIDATED) return this.#withinDeadline(key, record, cached, revalidation);
    // Stale-while-revalidate: answer now; the revalidation goes on in the background.
    revalidation.unwatched = true;
    return { ...cached, cache: 'stale' };
  }

  /** The revalidation of this tag record: the one under way, or a new one. */
  #revalidation(target: Target, key: TagKey, record: TagRecord, cached: ManifestAnswer, now: number): Revalidation {
    const flight = flightOf(key);
    const running = this.#revalidating.get(flight);
    if (running !== undefined) return running;
    const entry: Revalidation = { answer: Promise.resolve(cached), asking: null, late: false, unwatched: false };
    entry.answer = this.#revalidate(target, key, record, cached, now, entry).finally(() => this.#revalidating.delete(flight));
    // A client that waits gets the failure; one nobody waits for any more is logged here.
    entry.answer.catch((err: Error) => {
      if (!entry.late && !entry.unwatched) return;
      // An upstream marked down was logged when it was marked; the log says so once, not per tag.
      this.#o.log[isMarkedDown(err) ? 'debug' : 'warn']({ repo: key.repo, tag: key.tag, err: err.message }, 'background revalidation failed');
    });
    this.#revalidating.set(flight, entry);
    return entry;
  }

  /**
   * The revalidation's answer if it comes within the deadline; else the cached answer, stale,
   * and the tier being asked is marked down (its silence is taken as an outage) — not one that
   * was not asked yet (the revalidation waits its turn). Once past the deadline, later pulls of
   * the tag get the cached answer at once.
   */
  async #withinDeadline(key: TagKey, record: TagRecord, cached: ManifestAnswer, revalidation: Revalidation): Promise<ManifestAnswer> {
    const deadlineMs = this.#o.revalidateDeadlineMs ?? 0;
    if (deadlineMs <= 0) return revalidation.answer;
    if (revalidation.late) {
      this.#o.counters.staleServed++;
      return { ...cached, cache: 'stale' };
    }
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<null>((resolve) => {
      timer = setTimeout(() => resolve(null), deadlineMs);
    });
    const answer = await Promise.race([revalidation.answer, late]).finally(() => clearTimeout(timer));
    if (answer !== null) return answer;
    this.#o.counters.staleServed++;
    if (revalidation.late) return { ...cached, cache: 'stale' };
    revalidation.late = true;
    const asking = revalidation.asking;
    if (asking === null) {
      // Still waiting its turn (paced after a recovery): no tier has kept silent, nothing is wrong.
      this.#o.log.debug({ repo: key.repo, tag: key.tag, digest: record.digest, deadlineMs }, 'revalidation past its deadline while waiting its turn: serving cached tag stale, the revalidation goes on');
      return { ...cached, cache: 'stale' };
    }
    this.#suspectIfSilent(revalidation, deadlineMs);
    // The tier's breaker logs the outage once; each tag that met it is a debug line.
    this.#o.log.debug({ repo: key.repo, tag: key.tag, digest: record.digest, tier: asking.tier.name, deadlineMs }, 'revalidation past its deadline: serving cached tag stale, the revalidation goes on');
    return { ...cached, cache: 'stale' };
  }

  /**
   * Marks the tier a revalidation asks down once it has kept silent for the whole deadline: now,
   * or, when it was asked only lately (the ask waited its turn), when its deadline is up.
   */
  #suspectIfSilent(revalidation: Revalidation, deadlineMs: number): void {
    const asking = revalidation.asking;
    if (asking === null) return;
    const reason = `no answer within the revalidation deadline (${deadlineMs} ms)`;
    const left = asking.since + deadlineMs - Date.now();
    if (left <= 0) {
      asking.tier.suspect?.(asking.target, reason, asking.since);
      return;
    }
    const timer = setTimeout(() => {
      if (revalidation.asking === asking) asking.tier.suspect?.(asking.target, reason, asking.since);
    }, left);
    timer.unref();
    void revalidation.answer.catch(() => undefined).finally(() => clearTimeout(timer));
  }

  /**
   * One HEAD upstream decides: same digest (touch), moved (fetch and move), or unreachable
   * (stale). It asks with the Accept list the record stands for, never the client's: the tag's
   * own record with every type, a class's record with that class's types.
   */
  async #revalidate(target: Target, key: TagKey, record: TagRecord, cached: ManifestAnswer, now: number, entry: Revalidation): Promise<ManifestAnswer> {
    const accept = key.accept === undefined ? ALL_MANIFEST_ACCEPT : key.accept.split(',');
    // When the upstream vouched for the tag: when it was asked, which pacing may put after `now`.
    let askedAt = now;
    const ask = (tier: Tier) => () => {
      entry.asking = { tier, target, since: Date.now() };
      askedAt = this.#now();
      return tier.headManifest(target, key.tag, accept);
    };
    const pace = this.#o.revalidationPace;
    let head;
    try {
      head = await this.#o.resolver.first(target, (tier) => {
        if (!pace) return ask(tier)();
        // Waiting for a turn is not the tier's silence: no tier is being asked until the pace lets it.
        entry.asking = null;
        return pace.run(tier.upSince?.(target) ?? 0, ask(tier));
      });
    } catch (err) {
      if (!isUpstreamFailure(err)) throw err;
      this.#o.counters.staleServed++;
      this.#o.log[isMarkedDown(err) ? 'debug' : 'warn']({ repo: key.repo, tag: key.tag, digest: record.digest, err: (err as Error).message }, 'upstream unavailable: serving cached tag stale');
      return { ...cached, cache: 'stale' };
    }
    if (!head) {
      if (this.#o.onUpstreamNotFound !== 'serve-stale') throw manifestUnknown(target, key.tag);
      this.#o.counters.staleServed++;
      this.#o.log.warn({ repo: key.repo, tag: key.tag, digest: record.digest }, 'tag gone upstream: serving the cached copy (COVE_ON_UPSTREAM_NOT_FOUND=serve-stale)');
      return { ...cached, cache: 'stale' };
    }
    const stale = head.value.stale === true;
    if (stale) this.#o.counters.staleServed++;
    if (head.value.digest === record.digest) {
      // A parent that answered from its own stale copy confirms nothing: ask again next time.
      if (stale) return { ...cached, cache: 'stale' };
      await this.#o.catalog.touchTag(key, askedAt);
      return { ...cached, cache: 'revalidated' };
    }
    // The tag moved upstream: fetch the new manifest by digest and move the tag.
    const moved = await this.byDigest(target, head.value.digest);
    await this.#putTag(key, { digest: moved.digest, mediaType: moved.mediaType, size: moved.bytes.length }, stale);
    this.#o.log.info({ repo: key.repo, tag: key.tag, from: record.digest, to: moved.digest, stale }, 'tag moved upstream');
    return { ...moved, cache: stale ? 'stale' : 'miss' };
  }

  async #fetch(target: Target, reference: string, accept: readonly string[]) {
    const flightKey = JSON.stringify([target.upstream, target.repo, reference, accept]);
    return this.#flights.run(flightKey, async () => {
      let found;
      try {
        found = await this.#o.resolver.first(target, (tier) => tier.getManifest(target, reference, accept));
      } catch (err) {
        if (err instanceof DigestMismatchError) {
          this.#o.counters.digestMismatches++;
          this.#o.log.error({ repo: target.repo, reference, err: err.message }, 'digest mismatch: manifest discarded');
        }
        throw err;
      }
      if (!found) return null;
      if (found.value.bytes.length > MANIFEST_MAX_BYTES) {
        throw new OciError('MANIFEST_INVALID', `manifest ${reference} is larger than ${MANIFEST_MAX_BYTES} bytes`);
      }
      const tier = found.value.source ?? found.tier.name;
      this.#o.counters.add(this.#o.counters.objectsFetched, tier);
      this.#o.counters.add(this.#o.counters.bytesFetched, tier, found.value.bytes.length);
      return { manifest: found.value, tier };
    }).promise;
  }

  /** The store's copy of a manifest, with its media type, or null. */
  async #local(digest: string): Promise<{ bytes: Buffer; mediaType: string } | null> {
    const stat = await this.#o.store.stat(digest);
    if (!stat || stat.size > MANIFEST_MAX_BYTES) return null;
    let bytes: Buffer;
    let record;
    try {
      [bytes, record] = await Promise.all([this.#o.store.readAll(digest), this.#o.catalog.getBlob(digest)]);
    } catch (err) {
      // Evicted between the stat and the read: not cached after all.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
    const mediaType = record?.mediaType ?? sniffMediaType(bytes);
    if (!mediaType) return null;
    this.#o.catalog.touchBlob(digest);
    return { bytes, mediaType };
  }

  async #store(digest: string, manifest: FetchedManifest): Promise<void> {
    const { store, catalog } = this.#o;
    if (!(await store.stat(digest))) {
      const writer = await store.createWriter(digest, manifest.bytes.length);
      let added: boolean;
      try {
        await writer.write(manifest.bytes);
        added = await writer.commit();
      } catch (err) {
        await writer.abort();
        throw err;
      }
      // Two clients of different Accept classes may store one manifest at once: count it once.
      if (added) this.#o.onStored?.(manifest.bytes.length);
    }
    await catalog.putBlob(digest, { size: manifest.bytes.length, mediaType: manifest.mediaType, lastAccess: this.#now(), pinned: false });
    await catalog.putManifestRefs(digest, manifestReferences(manifest.bytes));
    // What the manifest says its blobs weigh bounds their fills (a tier may send no length).
    await catalog.recordDescriptorSizes(descriptorSizes(manifest.bytes));
  }

  /** Records a tag; one learnt from a stale source counts as never validated, so it is asked again. */
  async #putTag(key: TagKey, m: { digest: string; mediaType: string; size: number }, stale = false): Promise<void> {
    const now = this.#now();
    await this.#o.catalog.putTag(key, { digest: m.digest, mediaType: m.mediaType, size: m.size, fetchedAt: now, validatedAt: stale ? INVALIDATED : now });
  }
}

/**
 * Where an answer to `accept` is recorded: under the tag itself when it is what the upstream
 * holds there — a list or index (registries never rewrite to one), or anything given to a client
 * that takes both kinds of list — else under the client's Accept class, since the registry may
 * have picked a platform child for that client.
 */
function answerKey(base: TagKey, accept: readonly string[], mediaType: string): TagKey {
  if (isIndexMediaType(mediaType) || (admitsEveryIndex(accept) && acceptAdmits(accept, mediaType))) return base;
  return { ...base, accept: acceptClass(accept) };
}

/** The children of a list for linux/amd64, the platform registries pick for list-less clients. */
function defaultPlatformChildren(bytes: Buffer): Array<{ digest: string; mediaType: string }> {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    return [];
  }
  const manifests = (doc as { manifests?: unknown } | null)?.manifests;
  if (!Array.isArray(manifests)) return [];
  const out: Array<{ digest: string; mediaType: string }> = [];
  for (const entry of manifests as unknown[]) {
    const e = entry as { digest?: unknown; mediaType?: unknown; platform?: { os?: unknown; architecture?: unknown } } | null;
    if (typeof e?.digest !== 'string' || !parseDigest(e.digest) || typeof e.mediaType !== 'string') continue;
    if (e.platform?.os === 'linux' && e.platform?.architecture === 'amd64') out.push({ digest: e.digest, mediaType: e.mediaType });
  }
  return out;
}

function manifestUnknown(target: Target, reference: string): OciError {
  return new OciError('MANIFEST_UNKNOWN', `manifest unknown: ${target.repo}:${reference} is not at the upstream`, {
    detail: { name: target.repo, reference },
  });
}

/** A revalidation under way, shared by every pull of its tag record. */
interface Revalidation {
  answer: Promise<ManifestAnswer>;
  /**
   * The tier being asked now, and since when: marked down if it keeps silent past the deadline;
   * null while the revalidation waits its turn (RevalidationPace).
   */
  asking: { tier: Tier; target: Target; since: number } | null;
  /** Past its deadline: later pulls get the cached answer at once. */
  late: boolean;
  /** Nobody waits for it (stale-while-revalidate answered at once). */
  unwatched: boolean;
}

/** One key per tag record (a class's record apart from the tag's own): what a revalidation is of. */
function flightOf(key: TagKey): string {
  return JSON.stringify([key.upstream, key.repo, key.tag, key.accept ?? '']);
}
