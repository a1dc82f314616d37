// The listing shelf: the last upstream answer to each tags/list and referrers request, kept in
// the index to be served stale while the upstream is away. Every distinct query (n, last,
// artifactType) is its own answer, so without a bound a client paging through a large registry,
// or a scanner asking referrers of every digest, would grow the index without end. The shelf
// keeps at most a number of listings and a number of bytes, dropping the oldest answers first,
// and tells eviction how many bytes it holds so the cache cap covers them.
import type { Level } from 'level';
import { isListing, type Listing, type ListingKey } from './records.js';

/** How many listings, and how many bytes of them, the shelf keeps. */
export interface ListingLimits {
  maxCount: number;
  maxBytes: number;
}

/**
 * Defaults: a site's day-to-day listings (a few hundred repositories, some pages each) fit, and
 * 16 MiB is what one tags/list answer may weigh at most (PASSTHROUGH_LIMIT), so any one fits.
 */
export const DEFAULT_LISTING_LIMITS: Readonly<ListingLimits> = Object.freeze({ maxCount: 1000, maxBytes: 16 * 1024 * 1024 });

/** A listing as eviction sees it: which, how big, how old. */
export interface ShelvedListing {
  key: string;
  bytes: number;
  fetchedAt: number;
}

type Db = Level<string, unknown>;

const SEP = '\0';
const PREFIX = `list${SEP}`;

/** The index key of a listing. */
export function listingKey(key: ListingKey): string {
  return PREFIX + [key.upstream, key.repo, key.kind, key.query].join(SEP);
}

export class ListingShelf {
  readonly #db: Db;
  readonly #limits: ListingLimits;
  /** Index key -> size and age, oldest first (a Map keeps insertion order; a put re-inserts). */
  readonly #shelf = new Map<string, { bytes: number; fetchedAt: number }>();
  #bytes = 0;
  /** Writes one at a time, so the in-memory account and the index never disagree. */
  #chain: Promise<void> = Promise.resolve();

  private constructor(db: Db, limits: ListingLimits) {
    this.#db = db;
    this.#limits = limits;
  }

  /** Reads what the index holds and trims it to `limits` (they may have been lowered since). */
  static async load(db: Db, limits: ListingLimits = DEFAULT_LISTING_LIMITS): Promise<ListingShelf> {
    for (const [name, value] of Object.entries(limits)) {
      if (!Number.isSafeInteger(value) || value < 1) throw new TypeError(`listing limit ${name} must be a positive integer, got ${String(value)}`);
    }
    const shelf = new ListingShelf(db, limits);
    const found: Array<[string, { bytes: number; fetchedAt: number }]> = [];
    const junk: string[] = [];
    for await (const [key, value] of db.iterator({ gte: PREFIX, lt: `list\x01` })) {
      if (isListing(value)) found.push([key, { bytes: sizeOf(key, value), fetchedAt: value.fetchedAt }]);
      else junk.push(key);
    }
    found.sort((a, b) => a[1].fetchedAt - b[1].fetchedAt);
    for (const [key, entry] of found) {
      shelf.#shelf.set(key, entry);
      shelf.#bytes += entry.bytes;
    }
    const over = shelf.#overflow(0, 0);
    if (junk.length > 0 || over.length > 0) await shelf.#remove([...junk, ...over]);
    return shelf;
  }

  /** Bytes the kept listings take in the index (keys and values). */
  get bytes(): number {
    return this.#bytes;
  }

  /** How many listings are kept. */
  get count(): number {
    return this.#shelf.size;
  }

  /** The kept answer to a listing request, or null. */
  async get(key: ListingKey): Promise<Listing | null> {
    const value = await this.#db.get(listingKey(key));
    return isListing(value) ? value : null;
  }

  /** Keeps an answer (replacing an older one of the same request), dropping the oldest to stay in bounds. */
  put(key: ListingKey, listing: Listing): Promise<void> {
    const k = listingKey(key);
    const value = { ...listing, headers: { ...listing.headers } };
    const bytes = sizeOf(k, value);
    return this.#serial(async () => {
      // An answer bigger than the whole shelf is not kept: it would push out everything else.
      if (bytes > this.#limits.maxBytes) return;
      const old = this.#shelf.get(k);
      const drop = old ? this.#overflow(bytes - old.bytes, 0, k) : this.#overflow(bytes, 1);
      await this.#db.batch([{ type: 'put', key: k, value }, ...drop.map((d) => ({ type: 'del' as const, key: d }))]);
      for (const d of drop) this.#forget(d);
      if (old) this.#forget(k);
      this.#shelf.set(k, { bytes, fetchedAt: value.fetchedAt });
      this.#bytes += bytes;
    });
  }

  /** Every kept listing, oldest first: what eviction may take. */
  list(): ShelvedListing[] {
    return [...this.#shelf].map(([key, e]) => ({ key, bytes: e.bytes, fetchedAt: e.fetchedAt }));
  }

  /**
   * Drops listings as list() gave them; one answered again since (newer fetchedAt) stays, since
   * the plan that chose it saw an older answer. Answers the bytes freed.
   */
  drop(listings: readonly ShelvedListing[]): Promise<number> {
    return this.#serial(async () => {
      const present = listings.filter((l) => this.#shelf.get(l.key)?.fetchedAt === l.fetchedAt).map((l) => l.key);
      const before = this.#bytes;
      await this.#remove(present);
      return before - this.#bytes;
    });
  }

  /** Waits for writes under way. */
  settled(): Promise<void> {
    return this.#chain;
  }

  /**
   * The oldest keys to drop so that `addCount` more listings of `addBytes` more bytes fit in the
   * limits; `keep` (a listing being replaced, its size already netted out) is never chosen.
   */
  #overflow(addBytes: number, addCount: 0 | 1, keep: string | null = null): string[] {
    let count = this.#shelf.size + addCount;
    let bytes = this.#bytes + addBytes;
    const out: string[] = [];
    for (const [key, entry] of this.#shelf) {
      if (count <= this.#limits.maxCount && bytes <= this.#limits.maxBytes) break;
      if (key === keep) continue;
      out.push(key);
      count--;
      bytes -= entry.bytes;
    }
    return out;
  }

  async #remove(keys: string[]): Promise<void> {
    if (keys.length === 0) return;
    await this.#db.batch(keys.map((key) => ({ type: 'del' as const, key })));
    for (const k of keys) this.#forget(k);
  }

  #forget(key: string): void {
    const entry = this.#shelf.get(key);
    if (!entry) return;
    this.#shelf.delete(key);
    this.#bytes -= entry.bytes;
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(fn);
    this.#chain = run.then(
      () => {},
      () => {},
    );
    return run;
  }
}

/** What a listing takes in the index: its key and its JSON value, in bytes. */
function sizeOf(key: string, value: Listing): number {
  return Buffer.byteLength(key) + Buffer.byteLength(JSON.stringify(value));
}
