// Eviction: keeps the cache under its byte cap and drops what nobody pulled for too long.
// It works on images, not files: an image is a top-level manifest (one no other cached manifest
// refers to) with everything it reaches (child manifests of an index, configs, layers). Images
// go least recently pulled first; a blob goes only when no image that stays still refers to it.
// Never evicted: pinned images, blobs being read (leases) and blobs being filled. Kept listing
// answers (tags/list, referrers) count towards the cap too, and go by age among the images.
import { statfs as fsStatfs } from 'node:fs/promises';
import type { Logger } from '../log.js';
import type { Counters } from '../metrics.js';
import type { BlobStore } from './blobs.js';
import type { BlobRecord, Catalog, ShelvedListing, TagKey } from './catalog.js';
import type { Leases } from './leases.js';
import type { PinStore } from './pins.js';

export interface EvictionLimits {
  /** Byte cap of the cache (blobs, manifests and kept listings), or null for none. */
  maxBytes: number | null;
  /** Eviction starts above this share of the cap… */
  highWater: number;
  /** …and stops at this share. */
  lowWater: number;
  /** Images not pulled for this long are dropped whatever the size, or null. */
  maxIdleMs: number | null;
}

export interface EvictionOptions {
  store: BlobStore;
  catalog: Catalog;
  pins: PinStore;
  leases: Leases;
  /** Digests of fills running now. */
  filling: () => Iterable<string>;
  limits: EvictionLimits;
  log: Logger;
  counters: Counters;
  now?: () => number;
}

/** What cacheCap needs of statfs(2): block size and block count of a file system. */
export type StatFs = (path: string) => Promise<{ bsize: number; blocks: number }>;

/**
 * The byte cap eviction works to: the configured size; else, with a share configured (80% by
 * default), that share of the data directory's file system, worked out once at start — so a
 * fresh install cannot fill its disk; null only when the operator turned the cap off. The
 * share is of the file system's size, not of its free space: the cap must not shrink because
 * the cache itself filled the disk. Other files on the same file system are not counted; the
 * disk-full path (eviction on ENOSPC, pass-through) stays the backstop.
 */
export async function cacheCap(cache: { maxBytes: number | null; maxShare: number | null }, dataDir: string, statfs: StatFs = fsStatfs): Promise<number | null> {
  if (cache.maxBytes !== null) return cache.maxBytes;
  if (cache.maxShare === null) return null;
  const fs = await statfs(dataDir);
  const total = fs.bsize * fs.blocks;
  if (!Number.isFinite(total) || total <= 0) throw new Error(`statfs(${dataDir}) gave no size (${fs.blocks} blocks of ${fs.bsize} bytes): set COVE_MAX_CACHE_BYTES to a size`);
  return Math.max(1, Math.floor(total * cache.maxShare));
}

/** One removed (or, in a dry run, removable) blob. */
export interface Evicted {
  digest: string;
  size: number;
  kind: 'manifest' | 'blob';
  lastAccess: number;
  why: 'idle' | 'size' | 'disk-full';
}

export interface EvictionReport {
  dryRun: boolean;
  bytesBefore: number;
  bytesAfter: number;
  limit: number | null;
  evicted: Evicted[];
  tagsRemoved: Array<TagKey & { digest: string }>;
  /** Kept tags/list and referrers answers dropped (a later request simply asks upstream again). */
  listingsRemoved: number;
  /** Images kept because they are pinned, or because a blob of theirs is being read or filled. */
  keptPinned: number;
  keptInUse: number;
}

interface Image {
  root: string;
  /** Root and everything it reaches. */
  members: Set<string>;
  /** Last pull of the image: the newest access of its manifests. */
  lastAccess: number;
}

export class Evictor {
  readonly #o: EvictionOptions;
  readonly #now: () => number;
  /** Bytes of blob files as last counted, plus what was added since (listings: see bytes). */
  #bytes = 0;
  #running: Promise<EvictionReport> | null = null;
  #timer: NodeJS.Timeout | null = null;

  constructor(options: EvictionOptions) {
    this.#o = options;
    this.#now = options.now ?? Date.now;
  }

  get limits(): EvictionLimits {
    return this.#o.limits;
  }

  /** Bytes the cache holds now: blobs (counted at start, kept up to date since) and kept listings. */
  get bytes(): number {
    return this.#bytes + this.#o.catalog.listingBytes;
  }

  /** Counts the store and starts the idle sweep; an over-full cache is trimmed at once. */
  async start(): Promise<void> {
    // A sum over the records as they stream by: start-up must not hold every record at once.
    this.#bytes = await this.#o.catalog.blobBytes();
    const { maxIdleMs } = this.#o.limits;
    if (maxIdleMs !== null) {
      // Often enough that an idle image goes within a tenth of its allowance, at most hourly.
      const every = Math.min(Math.max(maxIdleMs / 10, 1000), 3_600_000);
      this.#timer = setInterval(() => this.#background('idle sweep'), every);
      this.#timer.unref();
    }
    if (this.#over('high')) this.#background('over the high watermark at start');
  }

  async stop(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    await this.#running?.catch(() => undefined);
  }

  /** A blob or manifest entered the store: over the high watermark, eviction runs in the background. */
  added(bytes: number): void {
    this.#bytes += bytes;
    if (this.#over('high')) this.#background('over the high watermark');
  }

  /** Runs now (one run at a time; a caller arriving during a run gets that run's report). */
  run(options: { dryRun?: boolean; reason?: string; needBytes?: number } = {}): Promise<EvictionReport> {
    if (this.#running && !options.dryRun) return this.#running;
    const run = this.#run(options.dryRun ?? false, options.reason ?? 'requested', options.needBytes ?? 0);
    if (options.dryRun) return run;
    this.#running = run.finally(() => {
      this.#running = null;
    });
    return this.#running;
  }

  #background(reason: string): void {
    if (this.#running) return;
    this.run({ reason }).catch((err: Error) => this.#o.log.error({ err: err.message }, 'eviction failed'));
  }

  #over(mark: 'high' | 'low'): boolean {
    const { maxBytes, highWater, lowWater } = this.#o.limits;
    if (maxBytes === null) return false;
    return this.bytes > maxBytes * (mark === 'high' ? highWater : lowWater);
  }

  /** The disk filled up: free at least `bytes`, least recently pulled images first, whatever the cap. */
  diskFull(bytes: number): void {
    if (this.#running) return;
    this.run({ reason: 'disk full', needBytes: bytes }).catch((err: Error) => this.#o.log.error({ err: err.message }, 'eviction failed'));
  }

  async #run(dryRun: boolean, reason: string, needBytes: number): Promise<EvictionReport> {
    const { catalog, store, leases, limits, log } = this.#o;
    // The maps as the catalog reads them, used in place: at 100,000 blobs every copy counts.
    const { records, refs: allRefs } = await catalog.blobGraph();
    // References of manifests that have a record; a manifest naming itself is no reference.
    const refs = new Map<string, string[]>();
    for (const [digest, list] of allRefs) if (records.has(digest)) refs.set(digest, list.includes(digest) ? list.filter((d) => d !== digest) : list);
    allRefs.clear();
    const tags = await catalog.listTags(undefined, undefined, { variants: true });
    const listings = catalog.listListings();
    let bytes = listings.reduce((n, l) => n + l.bytes, 0);
    for (const record of records.values()) bytes += record.size;
    const report: EvictionReport = { dryRun, bytesBefore: bytes, bytesAfter: bytes, limit: limits.maxBytes, evicted: [], tagsRemoved: [], listingsRemoved: 0, keptPinned: 0, keptInUse: 0 };

    // Images: manifests no other manifest refers to, and blobs nothing refers to (alone).
    const referenced = new Set<string>();
    for (const list of refs.values()) for (const d of list) referenced.add(d);
    const images: Image[] = [];
    for (const [digest, record] of records) {
      if (referenced.has(digest)) continue;
      const { members, lastAccess } = imageOf(digest, records, refs);
      images.push({ root: digest, members, lastAccess: Math.max(lastAccess, record.lastAccess) });
    }
    // Every image a blob belongs to: it can go only when all of them have gone.
    const owners = new Map<string, number>();
    for (const image of images) for (const m of image.members) owners.set(m, (owners.get(m) ?? 0) + 1);

    const pinned = this.#pinnedDigests(tags, refs);
    const filling = new Set(this.#o.filling());
    const inUse = (image: Image) => [...image.members].some((m) => leases.held(m) || filling.has(m));
    const cap = limits.maxBytes === null ? null : limits.maxBytes * limits.lowWater;
    const idleBefore = limits.maxIdleMs === null ? null : this.#now() - limits.maxIdleMs;
    const sizeDriven = limits.maxBytes !== null && (reason === 'requested' ? bytes > cap! : bytes > limits.maxBytes * limits.highWater);

    // Images and listings in one line, least recently pulled or fetched first: an old listing
    // goes before a recent image, and costs only one upstream request when asked again.
    const candidates: Array<{ at: number; image: Image } | { at: number; listing: ShelvedListing }> = [
      ...images.map((image) => ({ at: image.lastAccess, image })),
      ...listings.map((listing) => ({ at: listing.fetchedAt, listing })),
    ].sort((a, b) => a.at - b.at);
    const removed = new Set<string>();
    const listingsRemoved: ShelvedListing[] = [];
    const startBytes = bytes;
    for (const candidate of candidates) {
      const idle = idleBefore !== null && candidate.at < idleBefore;
      const diskFull = startBytes - bytes < needBytes;
      const needSpace = (sizeDriven && cap !== null && bytes > cap) || diskFull;
      if (!idle && !needSpace) continue;
      if ('listing' in candidate) {
        listingsRemoved.push(candidate.listing);
        bytes -= candidate.listing.bytes;
        continue;
      }
      const image = candidate.image;
      if (pinned.has(image.root)) {
        report.keptPinned++;
        continue;
      }
      if (inUse(image)) {
        report.keptInUse++;
        continue;
      }
      for (const m of image.members) {
        const left = (owners.get(m) ?? 1) - 1;
        owners.set(m, left);
        if (left > 0 || pinned.has(m) || removed.has(m)) continue;
        const record = records.get(m);
        if (!record) continue;
        removed.add(m);
        bytes -= record.size;
        report.evicted.push({ digest: m, size: record.size, kind: refs.has(m) || record.mediaType !== null ? 'manifest' : 'blob', lastAccess: record.lastAccess, why: idle ? 'idle' : diskFull && !(sizeDriven && cap !== null && bytes > cap) ? 'disk-full' : 'size' });
      }
    }
    report.tagsRemoved = tags.filter((t) => removed.has(t.record.digest)).map((t) => ({ ...t.key, digest: t.record.digest }));
    report.listingsRemoved = listingsRemoved.length;
    report.bytesAfter = bytes;
    if (dryRun || (removed.size === 0 && listingsRemoved.length === 0)) return report;

    // Tags first, so no pull resolves to a manifest that is about to go; then manifests, then the rest.
    for (const tag of report.tagsRemoved) await catalog.deleteTag({ upstream: tag.upstream, repo: tag.repo, tag: tag.tag, ...(tag.accept === undefined ? {} : { accept: tag.accept }) });
    const order = [...report.evicted].sort((a, b) => (a.kind === b.kind ? 0 : a.kind === 'manifest' ? -1 : 1));
    let freed = 0;
    for (const e of order) {
      // A reader may have arrived since the plan was made: its blob stays.
      if (leases.held(e.digest)) {
        report.evicted.splice(report.evicted.indexOf(e), 1);
        report.bytesAfter += e.size;
        continue;
      }
      await catalog.deleteBlob(e.digest);
      // Only a file really removed leaves the figure: a record can outlive its file (a manifest
      // recorded again by a request that raced an earlier eviction), and counting it would let
      // the figure fall below the bytes on disk (found by the chaos test).
      if (await store.remove(e.digest)) freed += e.size;
    }
    this.#bytes = Math.max(0, this.#bytes - freed);
    // The shelf keeps its own account, which the bytes figure reads; nothing to subtract here.
    const freedListings = await catalog.dropListings(listingsRemoved);
    this.#o.counters.evictions += report.evicted.length;
    this.#o.counters.bytesEvicted += freed + freedListings;
    log.info(
      { reason, evicted: report.evicted.length, freedBytes: freed + freedListings, bytesBefore: report.bytesBefore, bytesAfter: report.bytesAfter, tags: report.tagsRemoved.length, listings: report.listingsRemoved, keptPinned: report.keptPinned, keptInUse: report.keptInUse },
      'eviction',
    );
    return report;
  }

  /** Everything the pins reach: a pinned tag protects what it points to now. */
  #pinnedDigests(tags: Array<{ key: TagKey; record: { digest: string } }>, refs: Map<string, string[]>): Set<string> {
    const out = new Set<string>();
    for (const pin of this.#o.pins.list()) {
      const roots = pin.reference.includes(':')
        ? [pin.reference]
        : tags.filter((t) => t.key.upstream === pin.upstream && t.key.repo === pin.repo && t.key.tag === pin.reference).map((t) => t.record.digest);
      for (const root of roots) for (const d of closure(root, refs)) out.add(d);
    }
    return out;
  }
}

/**
 * An image as eviction and `cove ls` see it: the manifest, everything it reaches, their bytes,
 * and its last pull (the newest access of the root and of the manifests it reaches).
 */
export function imageOf(root: string, records: Map<string, BlobRecord>, refs: Map<string, string[]>): { members: Set<string>; size: number; lastAccess: number } {
  const members = closure(root, refs);
  let size = 0;
  let lastAccess = 0;
  for (const d of members) {
    const record = records.get(d);
    if (!record) continue;
    size += record.size;
    if (d === root || refs.has(d)) lastAccess = Math.max(lastAccess, record.lastAccess);
  }
  return { members, size, lastAccess };
}

/** A manifest and everything it reaches through manifest references. */
export function closure(root: string, refs: Map<string, string[]>): Set<string> {
  const out = new Set<string>([root]);
  const queue = [root];
  while (queue.length > 0) {
    for (const d of refs.get(queue.pop()!) ?? []) {
      if (out.has(d)) continue;
      out.add(d);
      queue.push(d);
    }
  }
  return out;
}
