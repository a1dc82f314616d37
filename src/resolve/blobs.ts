// Blob lookups: a local hit, or a fill shared by every concurrent client of the same digest.
import { open, type FileHandle } from 'node:fs/promises';
import { CoveError, DigestMismatchError, OciError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Counters } from '../metrics.js';
import type { BlobStore } from '../store/blobs.js';
import type { Catalog } from '../store/catalog.js';
import { FileSource, type ByteSource } from '../store/source.js';
import type { Target } from '../tiers/tier.js';
import { BACKGROUND, FillAdmission, type AdmissionLimits, type Requester } from './admission.js';
import { FILL_ABANDONED, Fill } from './fill.js';
import { SizeHints } from './size-hints.js';
import type { Resolver } from './resolver.js';
import { dropBody } from '../http-util.js';
import { RANGE_PASSTHROUGH_MAX_BYTES, RANGE_WAIT_AHEAD_BYTES, SpanSource } from './span.js';

/**
 * Where a blob's bytes come from for one request. A fill comes with `release`: the requester
 * stops waiting for it (call it once, when the response is over). A fill nobody waits for is
 * cancelled after the abandon grace; prewarm's fills are kept whatever happens.
 */
export type BlobLookup =
  | { kind: 'hit'; size: number }
  | { kind: 'fill'; fill: Fill; joined: boolean; release: () => void };

/** A lookup for sending: a hit's file is open already (close the source when done). */
export type OpenedLookup =
  | { kind: 'hit'; size: number; source: ByteSource }
  | { kind: 'fill'; fill: Fill; joined: boolean; release: () => void };

/** A blob's size for a HEAD, and who told it. */
export interface BlobSize {
  size: number;
  source: 'hit' | 'upstream' | 'fill';
}

export interface BlobResolverOptions {
  store: BlobStore;
  catalog: Catalog;
  resolver: Resolver;
  counters: Counters;
  log: Logger;
  /** Aborted on shutdown: stops every fill. */
  signal: AbortSignal;
  /** Told of every blob committed to the store (eviction keeps count). */
  onStored?: (bytes: number) => void;
  /** Told when the disk filled up during a fill (eviction makes room). */
  onDiskFull?: (digest: string, bytesNeeded: number) => void;
  /** Caps on fills running at once; unlimited when absent (tools, tests of other parts). */
  admission?: AdmissionLimits;
  /**
   * Named decision (CLIENT_DISCONNECT_POLICY in fill.ts): a fill that nobody waits for any more — its clients
   * left, a HEAD answered — is cancelled this long after the last one left, unless prewarm
   * asked for it. A client that comes back within the grace (a resume) joins it. Default 2 s.
   */
  abandonGraceMs?: number;
  /** No blob grows past this when neither the tier, a cached manifest nor a HEAD told its size. */
  maxBlobBytes?: number;
}

export const DEFAULT_ABANDON_GRACE_MS = 2_000;
export const DEFAULT_MAX_BLOB_BYTES = 16 * 1024 ** 3;

/** A running fill and who waits for it. */
interface FillEntry {
  fill: Fill;
  stop: AbortController;
  /** Requests waiting for the fill now (HEADs and GETs, from lookup to the end of the response). */
  holders: number;
  /** Asked for by prewarm: runs to its end whoever waits. */
  keep: boolean;
  /** The abandon grace running, if nobody holds the fill. */
  timer: NodeJS.Timeout | null;
}

export class BlobResolver {
  readonly #fills = new Map<string, FillEntry>();
  /** Each running fill's own abort controller, aborted when the shutdown signal is. */
  readonly #stops = new Set<AbortController>();
  /** Every fill not yet ended, in the map or not (a cancelled fill leaves it before it ends). */
  readonly #live = new Set<Fill>();
  readonly #o: BlobResolverOptions;
  readonly #admission: FillAdmission;
  /** Sizes learnt before a fill (a tier's HEAD): they bound a body that brings no length. */
  readonly #hints = new SizeHints();

  constructor(options: BlobResolverOptions) {
    this.#o = options;
    this.#admission = new FillAdmission(options.admission ?? { max: Number.MAX_SAFE_INTEGER, maxPerClient: Number.MAX_SAFE_INTEGER, queueWaitMs: 0, background: Number.MAX_SAFE_INTEGER }, () => {
      options.counters.fillsRefused++;
    });
    // One listener on the shutdown signal for all fills: the upstream client hangs a listener on
    // the signal of every request it makes, and fifteen fills sharing the shutdown signal would
    // pass Node's limit of ten (MaxListenersExceededWarning) and keep it growing with load.
    options.signal.addEventListener('abort', () => {
      for (const stop of this.#stops) stop.abort(options.signal.reason);
    }, { once: true });
  }

  /** Digests of the fills in progress (eviction leaves them alone). */
  activeDigests(): Iterable<string> {
    return this.#fills.keys();
  }

  /** Fills in progress right now (for /healthz and tests). */
  get activeFills(): number {
    return this.#fills.size;
  }

  /** Resolves when every fill running now has committed or failed (after shutdown aborts them). */
  async settled(): Promise<void> {
    // #live, not #fills: a cancelled fill leaves the map at once but may still be removing its file.
    await Promise.allSettled([...this.#live].map((fill) => fill.done));
  }

  /**
   * A hit when the store has the blob; otherwise the fill for it, joined or started. A new fill
   * needs a slot (see admission.ts): over a cap this waits, then throws 429 TOOMANYREQUESTS.
   * `who` defaults to prewarm, whose fills are kept to their end; `signal` ends a wait for a slot.
   */
  async lookup(target: Target, digest: string, who: Requester = BACKGROUND, signal?: AbortSignal): Promise<BlobLookup> {
    const joined = this.#join(digest, target, who);
    if (joined) return joined;
    const stat = await this.#o.store.stat(digest);
    if (stat) {
      this.#o.catalog.touchBlob(digest);
      return { kind: 'hit', size: stat.size };
    }
    return this.#fillFor(target, digest, who, signal);
  }

  /**
   * Like lookup, for a request that will send the bytes: a hit comes with its file already open,
   * before any header is sent, so an eviction that unlinks the file afterwards cannot take the
   * bytes away (an open file outlives its name). A hit whose file vanished between the lookup
   * and the open (evicted just then) is a miss, fetched again.
   */
  async lookupOpen(target: Target, digest: string, who: Requester = BACKGROUND, signal?: AbortSignal): Promise<OpenedLookup> {
    const found = await this.lookup(target, digest, who, signal);
    if (found.kind === 'fill') return found;
    let handle: FileHandle;
    try {
      handle = await open(this.#o.store.pathOf(digest), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.#o.log.debug({ digest }, 'stored blob vanished between lookup and open (evicted): fetching it again');
      return this.#fillFor(target, digest, who, signal);
    }
    const { size } = await handle.stat().catch(async (err: unknown) => {
      await handle.close();
      throw err;
    });
    return { kind: 'hit', size, source: FileSource.of(handle, digest) };
  }

  /**
   * Bytes [start, end] of a blob whose fill is under way, without waiting for the whole blob:
   * from the temp file when they are there already, else straight from a tier (counted as
   * fetched, never stored) when the fill is not about to reach them. Null: read them from the
   * fill, which holds the last byte until the blob is verified (the fill is done or close to the
   * span, the span is long, a sibling Cove asked, or no tier answers the exact span — it ignored
   * Range).
   */
  async openSpan(target: Target, fill: Fill, start: number, end: number): Promise<{ source: ByteSource; tier: string } | null> {
    if (fill.verified || fill.passingThrough || fill.state !== 'filling') return null;
    if (end < fill.written) return { source: fill.openEarlySpan(), tier: fill.tier ?? 'unknown' };
    // A sibling resuming its copy of the blob asks for the rest of it from its own byte: it waits
    // for this fill, which brings those bytes anyway, rather than have them fetched twice.
    if (target.reach !== 'all') return null;
    if (start < fill.written + RANGE_WAIT_AHEAD_BYTES || end - start + 1 > RANGE_PASSTHROUGH_MAX_BYTES) return null;
    const stop = new AbortController();
    this.#stops.add(stop);
    const release = () => this.#stops.delete(stop);
    const { resolver, counters, log } = this.#o;
    let found;
    try {
      found = await resolver.first(target, (tier) => tier.openBlobSpan(target, fill.digest, start, end, stop.signal));
    } catch (err) {
      // The fill has the blob coming: a tier that failed the span costs only the wait.
      log.debug({ digest: fill.digest, start, end, err }, 'range span from the tiers failed; reading it from the fill');
      found = null;
    }
    const body = found?.value;
    if (!found || !body || (body.size !== null && fill.size !== null && body.size !== fill.size)) {
      if (body) dropBody(body.body);
      release();
      return null;
    }
    const tier = body.source ?? found.tier.name;
    const source = new SpanSource(body.body, start, end + 1, (n) => counters.add(counters.bytesFetched, tier, n), release);
    return { source, tier };
  }

  /** The fill of a blob not in the store: one running already, joined, or a new one. */
  async #fillFor(target: Target, digest: string, who: Requester, signal?: AbortSignal): Promise<BlobLookup & { kind: 'fill' }> {
    // Checked again: another request may have started the fill while we looked at the disk.
    const raced = this.#join(digest, target, who);
    if (raced) return raced;
    // A peer asked for what this node holds: neither stored nor arriving, so not here.
    if (target.reach === 'local') throw new OciError('BLOB_UNKNOWN', `blob ${digest} is not on this node`, { detail: { digest } });
    const slot = await this.#admission.admit(who, signal);
    // And again: the wait for a slot may have let another request start the same fill.
    const joined = this.#join(digest, target, who);
    if (joined) {
      slot();
      return joined;
    }
    let entry: FillEntry;
    try {
      entry = await this.#startFill(target, digest, slot);
    } catch (err) {
      slot();
      throw err;
    }
    return { kind: 'fill', fill: entry.fill, joined: false, release: this.#hold(entry, who) };
  }

  /** The running fill of `digest` when `target` may wait on it, held for `who`. */
  #join(digest: string, target: Target, who: Requester): (BlobLookup & { kind: 'fill' }) | null {
    const entry = this.#fills.get(digest);
    if (!entry || !joinable(entry, target)) return null;
    return { kind: 'fill', fill: entry.fill, joined: true, release: this.#hold(entry, who) };
  }

  /**
   * Marks one more request waiting for the fill; the answer ends the wait. Prewarm marks the fill
   * kept instead: nobody has to wait for it to be worth finishing.
   */
  #hold(entry: FillEntry, who: Requester): () => void {
    if (entry.timer) clearTimeout(entry.timer);
    entry.timer = null;
    if (who.kind === 'background') {
      entry.keep = true;
      return () => {};
    }
    entry.holders++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      entry.holders--;
      if (entry.holders === 0 && !entry.keep) this.#armGrace(entry);
    };
  }

  /** Nobody waits for the fill: cancel it once the grace runs out with nobody back. */
  #armGrace(entry: FillEntry): void {
    const state = entry.fill.state;
    if (state !== 'opening' && state !== 'filling') return;
    const grace = this.#o.abandonGraceMs ?? DEFAULT_ABANDON_GRACE_MS;
    entry.timer = setTimeout(() => {
      entry.timer = null;
      if (entry.holders > 0 || entry.keep || entry.fill.verified) return;
      const { digest } = entry.fill;
      // Gone from the map at once: a request arriving now starts afresh rather than join a fill
      // that is being torn down.
      if (this.#fills.get(digest) === entry) this.#fills.delete(digest);
      this.#o.counters.fillsCancelled++;
      this.#o.log.info({ digest, written: entry.fill.written, size: entry.fill.size, graceMs: grace }, 'fill cancelled: nobody waits for it any more');
      entry.stop.abort(new CoveError(FILL_ABANDONED, `nobody waited for ${digest} any more: fill cancelled`));
    }, grace);
    entry.timer.unref();
  }

  /**
   * The size of a blob for a HEAD request. The store answers hits; on a miss the upstream's HEAD
   * is asked, but its 404 is not trusted alone (Harbor proxy projects 404 blobs they have not
   * cached yet, distribution/distribution#4747): a fill confirms with a GET, and the bytes it
   * brings serve the GET that normally follows.
   */
  async size(target: Target, digest: string, who: Requester = BACKGROUND, signal?: AbortSignal): Promise<BlobSize> {
    const inflight = this.#fills.get(digest);
    // A fill under way answers, a pass-through too: a HEAD never starts a second fill beside it.
    if (inflight && inflight.fill.state !== 'failed' && (target.reach !== 'local' || servesPeers(inflight.fill))) {
      const release = this.#hold(inflight, who);
      try {
        return await this.#sizeOf(target, digest, inflight.fill, false);
      } finally {
        release();
      }
    }
    const stat = await this.#o.store.stat(digest);
    if (stat) return { size: stat.size, source: 'hit' };
    // A HEAD that failed somewhere proves nothing either: the fill's GET decides.
    const head = await this.#tierHead(target, digest);
    if (head) return head;
    const found = await this.lookup(target, digest, who, signal);
    if (found.kind === 'hit') return { size: found.size, source: 'hit' };
    // The HEAD waits for the fill's size, then lets go: the GET that normally follows joins it
    // within the abandon grace.
    try {
      return await this.#sizeOf(target, digest, found.fill, true);
    } finally {
      found.release();
    }
  }

  /**
   * A blob's size from its fill, once the first tier answered. A tier that sent no length leaves
   * it unknown until the end of the fill: a tier's HEAD answers first, since a HEAD that waits
   * for a whole blob would make a peer (1 s HEAD timeout) mark this healthy node down.
   */
  async #sizeOf(target: Target, digest: string, fill: Fill, headAsked: boolean): Promise<BlobSize> {
    await fill.started;
    if (fill.size !== null) return { size: fill.size, source: 'fill' };
    if (!headAsked) {
      const head = await this.#tierHead(target, digest);
      if (head) return head;
    }
    await fill.done;
    return { size: fill.size!, source: 'fill' };
  }

  async #tierHead(target: Target, digest: string): Promise<BlobSize | null> {
    const head = await this.#o.resolver.first(target, (tier) => tier.headBlob(target, digest)).catch(() => null);
    if (head) this.#hints.learnt(digest, head.value.size);
    return head && { size: head.value.size, source: 'upstream' };
  }

  /**
   * What a fill of `digest` knows of its size before it starts: the size a cached manifest's
   * descriptor or a tier's HEAD gave (the largest such word, so that one lying manifest cannot
   * make the real blob unfetchable), or null. With none, a body without a length is bounded by
   * maxBlobBytes; a blob whose size is known may be larger than that.
   */
  async #sizeHint(digest: string): Promise<number | null> {
    const described = await this.#o.catalog.descriptorSize(digest).catch(() => null);
    const known = Math.max(described ?? -1, this.#hints.get(digest) ?? -1);
    return known >= 0 ? known : null;
  }

  /** Starts a fill holding admission slot `slot` (released when the fill ends). */
  async #startFill(target: Target, digest: string, slot: () => void): Promise<FillEntry> {
    const { store, catalog, resolver, counters, log } = this.#o;
    const sizeHint = await this.#sizeHint(digest);
    // The bound was looked up asynchronously: another request may have started the fill meanwhile.
    const raced = this.#fills.get(digest);
    if (raced && joinable(raced, target)) {
      slot();
      return raced;
    }
    counters.fills++;
    const stop = new AbortController();
    if (this.#o.signal.aborted) stop.abort(this.#o.signal.reason);
    else this.#stops.add(stop);
    const signal = stop.signal;
    const fill = new Fill({
      digest,
      target,
      resolver,
      store,
      log,
      signal,
      sizeHint,
      maxBytes: sizeHint ?? this.#o.maxBlobBytes ?? DEFAULT_MAX_BLOB_BYTES,
      onCommitted: async (size, _tier, added) => {
        // A blob another writer stored first keeps its record (a manifest keeps its media type).
        if (!added) return;
        await catalog.putBlob(digest, { size, mediaType: null, lastAccess: Date.now(), pinned: false });
        this.#o.onStored?.(size);
      },
      onBytes: (tier, n) => counters.add(counters.bytesFetched, tier, n),
      onDiskFull: (d, inFile) => {
        counters.diskFull++;
        this.#o.onDiskFull?.(d, Math.max(fill.size ?? 0, inFile));
      },
    });
    const entry: FillEntry = { fill, stop, holders: 0, keep: false, timer: null };
    this.#fills.set(digest, entry);
    this.#live.add(fill);
    fill.done
      .then(() => {
        if (fill.attempts > 1) counters.resumes += fill.attempts - 1;
        counters.add(counters.objectsFetched, fill.tier ?? 'unknown');
        if (fill.state === 'passed') log.warn({ digest, size: fill.size, tier: fill.tier }, 'blob passed through to its clients, not stored (disk full)');
        else log.info({ digest, size: fill.size, tier: fill.tier, attempts: fill.attempts }, 'blob stored');
      })
      .catch((err: unknown) => {
        if (err instanceof DigestMismatchError) counters.digestMismatches++;
      })
      .finally(() => {
        if (entry.timer) clearTimeout(entry.timer);
        this.#live.delete(fill);
        this.#stops.delete(stop);
        if (this.#fills.get(digest) === entry) this.#fills.delete(digest);
        slot();
      });
    return entry;
  }
}

/**
 * A fill a request may wait on. A peer asking what this node holds gets only a fill that
 * servesPeers(): the rest may end up waiting on that very peer.
 */
function joinable(entry: FillEntry, target: Target): boolean {
  const fill = entry.fill;
  // A pass-through holds only what its own clients still need: a newcomer starts afresh; so does
  // one arriving as a cancelled fill is torn down.
  if (fill.state === 'failed' || fill.passingThrough || entry.stop.signal.aborted) return false;
  return target.reach !== 'local' || servesPeers(fill);
}

/**
 * Whether a fill may answer a peer's "what do you hold" (Cove-Peer: local): once bytes flow, and
 * only bytes from above (a parent, the origin). A fill still looking for a source may be asking
 * that very peer; a fill fed by another peer may, after a break, resume from the peer now reading
 * from it — and two nodes waiting on each other stall until a timeout. Sibling copies in progress
 * are reached through the node that fetches from above, so a site's transfers form a star, and
 * a resume after a broken one never meets a cycle.
 */
function servesPeers(fill: Fill): boolean {
  return fill.state !== 'opening' && (fill.verified || fill.tierKind !== 'peer');
}
