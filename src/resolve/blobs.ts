// Blob lookups: a local hit, or a fill shared by every concurrent client of the same digest.
import { open, type FileHandle } from 'node:fs/promises';
import { DigestMismatchError, OciError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Counters } from '../metrics.js';
import type { BlobStore } from '../store/blobs.js';
import type { Catalog } from '../store/catalog.js';
import { FileSource, type ByteSource } from '../store/source.js';
import type { Target } from '../tiers/tier.js';
import { Fill } from './fill.js';
import type { Resolver } from './resolver.js';
import { dropBody } from '../http-util.js';
import { RANGE_PASSTHROUGH_MAX_BYTES, RANGE_WAIT_AHEAD_BYTES, SpanSource } from './span.js';

/** Where a blob's bytes come from for one request. */
export type BlobLookup =
  | { kind: 'hit'; size: number }
  | { kind: 'fill'; fill: Fill; joined: boolean };

/** A lookup for sending: a hit's file is open already (close the source when done). */
export type OpenedLookup =
  | { kind: 'hit'; size: number; source: ByteSource }
  | { kind: 'fill'; fill: Fill; joined: boolean };

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
}

export class BlobResolver {
  readonly #fills = new Map<string, Fill>();
  /** Each running fill's own abort controller, aborted when the shutdown signal is. */
  readonly #stops = new Set<AbortController>();
  readonly #o: BlobResolverOptions;

  constructor(options: BlobResolverOptions) {
    this.#o = options;
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
    await Promise.allSettled([...this.#fills.values()].map((fill) => fill.done));
  }

  /** A hit when the store has the blob; otherwise the fill for it, started or joined. */
  async lookup(target: Target, digest: string): Promise<BlobLookup> {
    const existing = this.#fills.get(digest);
    if (existing && joinable(existing, target)) return { kind: 'fill', fill: existing, joined: true };
    const stat = await this.#o.store.stat(digest);
    if (stat) {
      this.#o.catalog.touchBlob(digest);
      return { kind: 'hit', size: stat.size };
    }
    return this.#fillFor(target, digest);
  }

  /**
   * Like lookup, for a request that will send the bytes: a hit comes with its file already open,
   * before any header is sent, so an eviction that unlinks the file afterwards cannot take the
   * bytes away (an open file outlives its name). A hit whose file vanished between the lookup
   * and the open (evicted just then) is a miss, fetched again.
   */
  async lookupOpen(target: Target, digest: string): Promise<OpenedLookup> {
    const found = await this.lookup(target, digest);
    if (found.kind === 'fill') return found;
    let handle: FileHandle;
    try {
      handle = await open(this.#o.store.pathOf(digest), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      this.#o.log.debug({ digest }, 'stored blob vanished between lookup and open (evicted): fetching it again');
      return this.#fillFor(target, digest);
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
   * span, the span is long, or no tier answers the exact span — it ignored Range).
   */
  async openSpan(target: Target, fill: Fill, start: number, end: number): Promise<{ source: ByteSource; tier: string } | null> {
    if (fill.verified || fill.passingThrough || fill.state !== 'filling') return null;
    if (end < fill.written) return { source: fill.openEarlySpan(), tier: fill.tier ?? 'unknown' };
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
  #fillFor(target: Target, digest: string): BlobLookup & { kind: 'fill' } {
    // Checked again: another request may have started the fill while we looked at the disk.
    const raced = this.#fills.get(digest);
    if (raced && joinable(raced, target)) return { kind: 'fill', fill: raced, joined: true };
    // A peer asked for what this node holds: neither stored nor arriving, so not here.
    if (target.reach === 'local') throw new OciError('BLOB_UNKNOWN', `blob ${digest} is not on this node`, { detail: { digest } });
    return { kind: 'fill', fill: this.#startFill(target, digest), joined: false };
  }

  /**
   * The size of a blob for a HEAD request. The store answers hits; on a miss the upstream's HEAD
   * is asked, but its 404 is not trusted alone (Harbor proxy projects 404 blobs they have not
   * cached yet, distribution/distribution#4747): a fill confirms with a GET, and the bytes it
   * brings serve the GET that normally follows.
   */
  async size(target: Target, digest: string): Promise<BlobSize> {
    const inflight = this.#fills.get(digest);
    // A fill under way answers, a pass-through too: a HEAD never starts a second fill beside it.
    if (inflight && inflight.state !== 'failed' && (target.reach !== 'local' || inflight.state !== 'opening')) {
      return this.#sizeOf(target, digest, inflight, false);
    }
    const stat = await this.#o.store.stat(digest);
    if (stat) return { size: stat.size, source: 'hit' };
    // A HEAD that failed somewhere proves nothing either: the fill's GET decides.
    const head = await this.#tierHead(target, digest);
    if (head) return head;
    const found = await this.lookup(target, digest);
    if (found.kind === 'hit') return { size: found.size, source: 'hit' };
    return this.#sizeOf(target, digest, found.fill, true);
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
    return head && { size: head.value.size, source: 'upstream' };
  }

  #startFill(target: Target, digest: string): Fill {
    const { store, catalog, resolver, counters, log } = this.#o;
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
    this.#fills.set(digest, fill);
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
        this.#stops.delete(stop);
        if (this.#fills.get(digest) === fill) this.#fills.delete(digest);
      });
    return fill;
  }
}

/**
 * A fill a request may wait on. A peer asking what this node holds gets a fill only once bytes
 * flow: one still looking for a source may itself be asking that peer, and two nodes waiting on
 * each other would stall until a timeout.
 */
function joinable(fill: Fill, target: Target): boolean {
  // A pass-through holds only what its own clients still need: a newcomer starts afresh.
  if (fill.state === 'failed' || fill.passingThrough) return false;
  return target.reach !== 'local' || fill.state !== 'opening';
}
