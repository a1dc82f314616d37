// The index: what the blob files cannot say by themselves. Tags and the digests they point at,
// per-blob bookkeeping for eviction (size, media type, last access, pin), and which blobs each
// manifest refers to. Kept in LevelDB; rebuildable from the blob files plus the tag journal.
import { rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import type { Logger } from 'pino';
import { CoveError } from '../errors.js';
import type { BlobStore } from './blobs.js';
import { reconcileIndex, type ReconcileCounts, type ReconcileIndex } from './reconcile.js';
import { rebuildIndex, type RebuildCounts, type RebuildSink } from './reindex.js';
import { DEFAULT_LISTING_LIMITS, ListingShelf, type ListingLimits, type ShelvedListing } from './listings.js';
import { isBlobRecord, isTagRecord, type BlobRecord, type Listing, type ListingKey, type TagKey, type TagRecord } from './records.js';
import { TagJournal } from './tag-journal.js';

export type { BlobRecord, Listing, ListingKey, TagKey, TagRecord } from './records.js';
export { DEFAULT_LISTING_LIMITS, type ListingLimits, type ShelvedListing } from './listings.js';

/** Bump when the key layout or record shapes change: an index of another version is rebuilt. */
export const CATALOG_VERSION = 1;

/** lastAccess updates are held in memory at most this long before they reach the index. */
export const TOUCH_FLUSH_MS = 2_000;

type Db = Level<string, unknown>;
// Scans of every blob record (the start-up reconcile and count, eviction's plan) read with
// fillCache: false: a pass over 100,000 records would otherwise fill LevelDB's 8 MiB block
// cache with blocks nobody reads again, pushing out the tags and records requests look up.

// Keys: a type prefix and fields joined by NUL, which no upstream name, repository, tag or
// digest can contain (tagKey checks), so no two different keys encode alike.
const SEP = '\0';
const META_VERSION = `meta${SEP}version`;
const blobKey = (digest: string) => `blob${SEP}${digest}`;
const refsKey = (digest: string) => `refs${SEP}${digest}`;
/** The size cached manifests' descriptors give a blob: a bound on its fill (resolve/blobs.ts). */
const descSizeKey = (digest: string) => `dsize${SEP}${digest}`;
function tagKey(key: TagKey): string {
  const parts = [key.upstream, key.repo, key.tag, ...(key.accept === undefined ? [] : [key.accept])];
  for (const part of parts) {
    if (part.includes(SEP)) throw new TypeError(`tag key part contains NUL: ${JSON.stringify(part)}`);
  }
  return ['tag', ...parts].join(SEP);
}

export class Catalog {
  readonly #db: Db;
  readonly #blobs: BlobStore;
  readonly #journal: TagJournal;
  readonly #log: Logger;
  /** digest -> lastAccess not yet written to the index. */
  readonly #touched = new Map<string, number>();
  #timer: NodeJS.Timeout | null = null;
  /** Blob records are read-modify-written (touch flushes); one at a time so none is lost. */
  #blobChain: Promise<void> = Promise.resolve();
  /** Tag writes go to the index and the journal; one at a time so both end in the same order. */
  #tagChain: Promise<void> = Promise.resolve();
  #closing: Promise<void> | null = null;
  /** Kept listing answers; loaded once the index is ready (see openWith). */
  #listings!: ListingShelf;

  private constructor(db: Db, blobs: BlobStore, journal: TagJournal, log: Logger) {
    this.#db = db;
    this.#blobs = blobs;
    this.#journal = journal;
    this.#log = log;
  }

  /**
   * Opens the index at `<data>/index/`. A missing index (fresh database while blob files exist)
   * or a broken one (it cannot be opened, or its version marker is absent or wrong) is set aside
   * and rebuilt from the blob files and the tag journal, with a warning giving the counts. A
   * usable index is reconciled with the blob files (store/reconcile.ts): files it lacks are
   * recorded, records whose file is gone are dropped, with a warning giving the counts.
   */
  static async open(dataDir: string, blobs: BlobStore, log: Logger, options: { listingLimits?: ListingLimits } = {}): Promise<Catalog> {
    return (await Catalog.openWith(dataDir, blobs, log, options)).catalog;
  }

  /**
   * open() with choices: `force` rebuilds whatever state the index is in and `verify` re-hashes
   * every blob during the rebuild (`cove reindex`); `reconcile: false` skips the start-up
   * comparison of a usable index with the blob files (the start-up benchmark's baseline).
   * `listingLimits` bound the kept tags/list and referrers answers (DEFAULT_LISTING_LIMITS).
   * Returns the rebuild counts, if it rebuilt, or the reconcile counts, if it reconciled.
   */
  static async openWith(
    dataDir: string,
    blobs: BlobStore,
    log: Logger,
    options: { force?: boolean; verify?: boolean; reconcile?: boolean; listingLimits?: ListingLimits } = {},
  ): Promise<{ catalog: Catalog; rebuilt: RebuildCounts | null; reconciled: ReconcileCounts | null }> {
    const dir = join(dataDir, 'index');
    const journal = new TagJournal(join(dataDir, 'tags'));
    const probe = await probeIndex(dir);
    let db = probe.db;
    let reason: string | null = probe.problem;
    if (options.force && reason === null) reason = 'rebuild requested';
    if (reason !== null) {
      await db?.close().catch(() => {});
      db = null;
      await setAside(dir);
    }
    if (db === null) {
      db = new Level<string, unknown>(dir, { valueEncoding: 'json' });
      await db.open();
    }
    const catalog = new Catalog(db, blobs, journal, log);
    try {
      let rebuilt: RebuildCounts | null = null;
      let reconciled: ReconcileCounts | null = null;
      if (reason !== null || probe.fresh) {
        rebuilt = await catalog.#rebuild(options.verify ?? false);
        const fields = { reason: reason ?? 'index missing', verified: options.verify ?? false, ...rebuilt };
        if (reason !== null || rebuilt.blobs > 0 || rebuilt.tags > 0) log.warn(fields, 'index rebuilt from blob files and tag journal');
      } else if (options.reconcile !== false) {
        reconciled = await reconcileIndex(catalog.#reconcileIndex(), blobs);
        const r = reconciled;
        if (r.added > 0 || r.dropped > 0 || r.refsRestored > 0) log.warn(r, 'index reconciled with the blob files');
      }
      catalog.#listings = await ListingShelf.load(db, options.listingLimits ?? DEFAULT_LISTING_LIMITS);
      return { catalog, rebuilt, reconciled };
    } catch (err) {
      await catalog.close().catch(() => {});
      throw err;
    }
  }

  /** The index as the start-up reconcile reads and fixes it. */
  #reconcileIndex(): ReconcileIndex {
    const db = this.#db;
    return {
      async records(from, to) {
        // One range of digests at a time: the reconcile holds a few shards' records, never all.
        const range = (prefix: string) => ({ gte: `${prefix}${SEP}${from}`, lt: to === null ? `${prefix}\x01` : `${prefix}${SEP}${to}`, fillCache: false });
        const withRefs = new Set<string>();
        for await (const k of db.keys(range('refs'))) withRefs.add(k.slice(5));
        const digests = new Set<string>();
        const manifestsWithoutRefs: string[] = [];
        for await (const [k, value] of db.iterator(range('blob'))) {
          if (!isBlobRecord(value)) continue;
          const digest = k.slice(5);
          digests.add(digest);
          if (value.mediaType !== null && !withRefs.has(digest)) manifestsWithoutRefs.push(digest);
        }
        return { digests, manifestsWithoutRefs };
      },
      add: async (entries) => {
        await db.batch(
          entries.flatMap(({ digest, record, refs }) => [
            { type: 'put' as const, key: blobKey(digest), value: record },
            refs === null ? { type: 'del' as const, key: refsKey(digest) } : { type: 'put' as const, key: refsKey(digest), value: refs },
          ]),
        );
      },
      drop: async (digests) => {
        await db.batch(digests.flatMap((d) => [{ type: 'del' as const, key: blobKey(d) }, { type: 'del' as const, key: refsKey(d) }]));
      },
      setRefs: (digest, refs) => db.put(refsKey(digest), refs),
    };
  }

  async #rebuild(verify: boolean): Promise<RebuildCounts> {
    const sink: RebuildSink = {
      blob: async (digest, record, refs) => {
        await this.#db.batch([
          { type: 'put', key: blobKey(digest), value: record },
          refs === null ? { type: 'del', key: refsKey(digest) } : { type: 'put', key: refsKey(digest), value: refs },
        ]);
      },
      tag: (key, record) => this.#db.put(tagKey(key), record),
    };
    const counts = await rebuildIndex(sink, this.#blobs, this.#journal, this.#log, { verify });
    // Written last: an index without the marker (a rebuild cut short) is rebuilt again next start.
    await this.#db.put(META_VERSION, CATALOG_VERSION);
    return counts;
  }

  /** The record of a tag, or null. */
  async getTag(key: TagKey): Promise<TagRecord | null> {
    const value = await this.#db.get(tagKey(key));
    return isTagRecord(value) ? value : null;
  }

  /**
   * Records what a tag resolved to, in the index and the tag journal. A record kept for one
   * Accept class goes to the index only: after a rebuild, such a client is answered from the
   * tag's own record (a list's platform child) or asks the upstream once more.
   */
  putTag(key: TagKey, record: TagRecord): Promise<void> {
    const k = tagKey(key);
    return this.#serialTag(async () => {
      await this.#db.put(k, { ...record });
      if (key.accept !== undefined) return;
      await this.#journal.put(key, record).catch((err: unknown) => this.#journalFailed(key, err));
    });
  }

  /**
   * Marks a tag as confirmed by upstream at `validatedAt`. Only the index is updated: a journal
   * write per revalidation is not worth it, and a restored tag with an older validatedAt is
   * merely revalidated sooner.
   */
  touchTag(key: TagKey, validatedAt: number): Promise<void> {
    const k = tagKey(key);
    return this.#serialTag(async () => {
      const value = await this.#db.get(k);
      if (!isTagRecord(value)) return;
      await this.#db.put(k, { ...value, validatedAt });
    });
  }

  /** Forgets a tag, in the index and the journal. */
  deleteTag(key: TagKey): Promise<void> {
    const k = tagKey(key);
    return this.#serialTag(async () => {
      await this.#db.del(k);
      if (key.accept !== undefined) return;
      await this.#journal.delete(key).catch((err: unknown) => this.#journalFailed(key, err));
    });
  }

  /**
   * Every tag, or those of one upstream, or of one repository of one upstream: the tags' own
   * records, and with `variants` also the records kept per Accept class.
   */
  async listTags(upstream?: string, repo?: string, options: { variants?: boolean } = {}): Promise<Array<{ key: TagKey; record: TagRecord }>> {
    const prefix = ['tag', ...(upstream === undefined ? [] : [upstream]), ...(upstream !== undefined && repo !== undefined ? [repo] : [])]
      .join(SEP)
      .concat(SEP);
    // Every key with the prefix sorts before the prefix with its final NUL raised to \x01.
    const end = `${prefix.slice(0, -1)}\x01`;
    const out: Array<{ key: TagKey; record: TagRecord }> = [];
    for await (const [k, value] of this.#db.iterator({ gte: prefix, lt: end })) {
      const parts = k.split(SEP);
      const variant = parts.length === 5;
      if (!(parts.length === 4 || (variant && options.variants)) || !isTagRecord(value)) continue;
      const key: TagKey = { upstream: parts[1]!, repo: parts[2]!, tag: parts[3]!, ...(variant ? { accept: parts[4]! } : {}) };
      if (repo !== undefined && key.repo !== repo) continue;
      out.push({ key, record: value });
    }
    return out;
  }

  /** The record of a blob (with any not yet flushed access time), or null. */
  async getBlob(digest: string): Promise<BlobRecord | null> {
    const record = await this.#readBlob(digest);
    if (!record) return null;
    const touched = this.#touched.get(digest);
    return touched !== undefined && touched > record.lastAccess ? { ...record, lastAccess: touched } : record;
  }

  /** Records a blob. A pending touch newer than `record.lastAccess` wins. */
  putBlob(digest: string, record: BlobRecord): Promise<void> {
    return this.#serialBlob(async () => {
      const touched = this.#touched.get(digest) ?? 0;
      await this.#db.put(blobKey(digest), { ...record, lastAccess: Math.max(record.lastAccess, touched) });
    });
  }

  /**
   * Notes that a blob was read now. Never throws and never waits: updates are batched in memory
   * and written at most every TOUCH_FLUSH_MS, and on close.
   */
  touchBlob(digest: string): void {
    if (this.#closing) return;
    this.#touched.set(digest, Date.now());
    if (this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      void this.#flushTouches();
    }, TOUCH_FLUSH_MS);
    // A pending flush must not keep the process alive; close() flushes what is left.
    this.#timer.unref();
  }

  /**
   * Bytes of every recorded blob, read as a stream: nothing is kept per blob, so counting a
   * store of 100,000 blobs at start-up costs no more memory than counting ten (Evictor.start).
   */
  async blobBytes(): Promise<number> {
    let bytes = 0;
    for await (const value of this.#db.values({ gte: `blob${SEP}`, lt: `blob\x01`, fillCache: false })) if (isBlobRecord(value)) bytes += value.size;
    return bytes;
  }

  /** Every blob record (pending access times applied) with the references of manifests. */
  async listBlobs(): Promise<Array<{ digest: string; record: BlobRecord; refs: string[] | null }>> {
    const { records, refs } = await this.blobGraph();
    return [...records].map(([digest, record]) => ({ digest, record, refs: refs.get(digest) ?? null }));
  }

  /**
   * What listBlobs gives, as the maps eviction works on: digest -> record (pending access times
   * applied) and manifest digest -> references. Fresh maps the caller may change; no list of
   * 100,000 entries is built beside them.
   */
  async blobGraph(): Promise<{ records: Map<string, BlobRecord>; refs: Map<string, string[]> }> {
    const records = new Map<string, BlobRecord>();
    const refs = new Map<string, string[]>();
    for await (const [k, value] of this.#db.iterator({ gte: `blob${SEP}`, lt: `blob\x01`, fillCache: false })) {
      if (!isBlobRecord(value)) continue;
      const digest = k.slice(5);
      const touched = this.#touched.get(digest);
      records.set(digest, touched !== undefined && touched > value.lastAccess ? { ...value, lastAccess: touched } : value);
    }
    for await (const [k, value] of this.#db.iterator({ gte: `refs${SEP}`, lt: `refs\x01`, fillCache: false })) {
      if (Array.isArray(value) && value.every((d) => typeof d === 'string')) refs.set(k.slice(5), value as string[]);
    }
    return { records, refs };
  }

  /** Forgets a blob and, if it was a manifest, its references; and the size descriptors gave it. */
  deleteBlob(digest: string): Promise<void> {
    return this.#serialBlob(async () => {
      this.#touched.delete(digest);
      await this.#db.batch([
        { type: 'del', key: blobKey(digest) },
        { type: 'del', key: refsKey(digest) },
        { type: 'del', key: descSizeKey(digest) },
      ]);
    });
  }

  /**
   * Records the sizes a manifest's descriptors give its blobs. Two manifests that disagree about
   * a blob keep the larger size: the value bounds a fill, and a smaller lie would make the real
   * blob unfetchable from a tier that sends no length. A hint, not part of a rebuild.
   */
  recordDescriptorSizes(entries: ReadonlyArray<{ digest: string; size: number }>): Promise<void> {
    if (entries.length === 0) return Promise.resolve();
    return this.#serialBlob(async () => {
      const ops: Array<{ type: 'put'; key: string; value: number }> = [];
      for (const { digest, size } of entries) {
        const before = await this.#db.get(descSizeKey(digest));
        if (typeof before === 'number' && before >= size) continue;
        ops.push({ type: 'put', key: descSizeKey(digest), value: size });
      }
      if (ops.length > 0) await this.#db.batch(ops);
    });
  }

  /** The size cached manifests' descriptors gave a blob, or null. */
  async descriptorSize(digest: string): Promise<number | null> {
    const value = await this.#db.get(descSizeKey(digest));
    return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : null;
  }

  /** The digests a manifest refers to, or null when none are recorded. */
  async manifestRefs(digest: string): Promise<string[] | null> {
    const value = await this.#db.get(refsKey(digest));
    return Array.isArray(value) && value.every((d) => typeof d === 'string') ? (value as string[]) : null;
  }

  /** Records the digests a manifest refers to. */
  async putManifestRefs(digest: string, refs: string[]): Promise<void> {
    await this.#db.put(refsKey(digest), [...refs]);
  }

  /** The last upstream answer to a tags/list or referrers request, kept to serve during outages. */
  getListing(key: ListingKey): Promise<Listing | null> {
    return this.#listings.get(key);
  }

  /** Keeps a listing answer; the oldest ones go when the listing limits would be passed. */
  putListing(key: ListingKey, listing: Listing): Promise<void> {
    return this.#listings.put(key, listing);
  }

  /** Bytes the kept listings take in the index: part of the cached-bytes figure. */
  get listingBytes(): number {
    return this.#listings.bytes;
  }

  /** Every kept listing, oldest first, for eviction. */
  listListings(): ShelvedListing[] {
    return this.#listings.list();
  }

  /** Drops kept listings as listListings gave them (unless answered again since); answers the bytes freed. */
  dropListings(listings: readonly ShelvedListing[]): Promise<number> {
    return this.#listings.drop(listings);
  }

  /**
   * Notes that a manifest was fetched under a repository's name (by tag or by digest), so that
   * the repository's digests can be told apart from other repositories' (client-auth/repo-scope).
   */
  async putRepoManifest(upstream: string, repo: string, digest: string): Promise<void> {
    await this.#db.put(repoManifestKey(upstream, repo, digest), 1);
  }

  /** The manifests fetched under a repository's name. */
  async repoManifests(upstream: string, repo: string): Promise<string[]> {
    const prefix = repoManifestKey(upstream, repo, '');
    const out: string[] = [];
    for await (const k of this.#db.keys({ gte: prefix, lt: `${prefix.slice(0, -1)}\x01` })) out.push(k.slice(prefix.length));
    return out;
  }

  /** Flushes pending touches and closes the index. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      if (this.#timer) clearTimeout(this.#timer);
      this.#timer = null;
      await this.#flushTouches();
      await this.#tagChain;
      await this.#blobChain;
      await this.#listings?.settled();
      await this.#db.close();
    })();
    return this.#closing;
  }

  /** Writes pending touches; never rejects (a failure is logged and the touches are kept). */
  #flushTouches(): Promise<void> {
    if (this.#touched.size === 0) return Promise.resolve();
    const batch = new Map(this.#touched);
    return this.#serialBlob(async () => {
      const ops: Array<{ type: 'put'; key: string; value: BlobRecord }> = [];
      for (const [digest, at] of batch) {
        let record = await this.#readBlob(digest);
        if (!record) {
          // A blob on disk that the index does not know (e.g. a record lost to a crash): the
          // touch recreates it, so eviction can see it.
          const stat = await this.#blobs.stat(digest);
          if (!stat) continue;
          record = { size: stat.size, mediaType: null, lastAccess: at, pinned: false };
        } else if (record.lastAccess >= at) continue;
        ops.push({ type: 'put', key: blobKey(digest), value: { ...record, lastAccess: at } });
      }
      if (ops.length > 0) await this.#db.batch(ops);
      for (const [digest, at] of batch) if (this.#touched.get(digest) === at) this.#touched.delete(digest);
    }).catch((err: unknown) => {
      this.#log.warn({ err: describe(err), pending: this.#touched.size }, 'could not write blob access times to the index');
    });
  }

  async #readBlob(digest: string): Promise<BlobRecord | null> {
    const value = await this.#db.get(blobKey(digest));
    return isBlobRecord(value) ? value : null;
  }

  #serialBlob(fn: () => Promise<void>): Promise<void> {
    const run = this.#blobChain.then(fn);
    this.#blobChain = run.catch(() => {});
    return run;
  }

  #serialTag(fn: () => Promise<void>): Promise<void> {
    const run = this.#tagChain.then(fn);
    this.#tagChain = run.catch(() => {});
    return run;
  }

  #journalFailed(key: TagKey, err: unknown): void {
    // The index is the source of truth; a journal write that fails only means this tag would
    // not survive an index rebuild.
    this.#log.warn({ ...key, err: describe(err) }, 'could not write the tag journal');
  }
}

/**
 * Opens the index directory as it is. `problem` says why it must be rebuilt (null: usable);
 * `fresh` means a new, empty database, to be filled from the blob files.
 */
async function probeIndex(dir: string): Promise<{ db: Db | null; problem: string | null; fresh: boolean }> {
  const db = new Level<string, unknown>(dir, { valueEncoding: 'json' });
  try {
    await db.open();
  } catch (err) {
    // Another process has the index open: rebuilding under it would destroy a working index.
    if (hasCode(err, 'LEVEL_LOCKED')) {
      throw new CoveError('INDEX_LOCKED', `the index at ${dir} is in use by another process (is Cove running?)`, { cause: err });
    }
    return { db: null, problem: `index could not be opened: ${describe(err)}`, fresh: false };
  }
  try {
    const version = await db.get(META_VERSION);
    if (version === CATALOG_VERSION) return { db, problem: null, fresh: false };
    if (version !== undefined) return { db, problem: `index version ${JSON.stringify(version)}, expected ${CATALOG_VERSION}`, fresh: false };
    const anyKey = await db.keys({ limit: 1 }).all();
    return anyKey.length === 0 ? { db, problem: null, fresh: true } : { db, problem: 'index has no version marker', fresh: false };
  } catch (err) {
    return { db, problem: `index could not be read: ${describe(err)}`, fresh: false };
  }
}

/** Moves a broken index to `index.broken` (replacing an older one) for a look later. */
async function setAside(dir: string): Promise<void> {
  const aside = `${dir}.broken`;
  await rm(aside, { recursive: true, force: true });
  try {
    await rename(dir, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') await rm(dir, { recursive: true, force: true });
  }
}

function hasCode(err: unknown, code: string): boolean {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if ((e as { code?: unknown }).code === code) return true;
  }
  return false;
}

function describe(err: unknown): string {
  return err instanceof Error ? `${err.name}: ${err.message}` : String(err);
}

function repoManifestKey(upstream: string, repo: string, digest: string): string {
  return ['repoman', upstream, repo, digest].join(SEP);
}
