// A fill brings one blob into the store from the tiers: bytes are written to a temp file as they
// arrive, hashed on the way, and renamed into place only once digest and length are right.
// Every client of the blob — the first one and any that join later — reads the growing temp
// file, so a cold blob crosses the uplink once however many clients want it.
import { finished, type Readable } from 'node:stream';
import { CoveError, DigestMismatchError, OciError } from '../errors.js';
import { isEmptyDigest } from '../oci/digest.js';
import type { Logger } from '../log.js';
import type { BlobStore } from '../store/blobs.js';
import type { ByteSource } from '../store/source.js';
import type { BlobWriter } from '../store/writer.js';
import type { BlobBody, Target, TierKind } from '../tiers/tier.js';
import { FillReader, type FillView } from './fill-reader.js';
import { FILL_DISK_FULL, PassWindow } from './pass-window.js';
import type { Resolver } from './resolver.js';
import { dropBody } from '../http-util.js';

/**
 * Named decision: a fill belongs to the cache, not to the client that started it. A client that
 * disconnects stops only its own reader; the fill runs on for the other clients, and for a short
 * grace after the last one left (COVE_FILL_ABANDON_GRACE, 2 s) so that a client resuming its
 * download joins it. A fill nobody came back to within the grace is cancelled (resolve/blobs.ts):
 * a client that opens many requests and drops them must not make the node fetch and store what
 * nobody reads. Prewarm fills, which nobody reads by design, always complete.
 */
export const CLIENT_DISCONNECT_POLICY = 'cancel-after-grace' as const;

/** Code of the CoveError a fill ends with when it was cancelled because nobody waited for it. */
export const FILL_ABANDONED = 'FILL_ABANDONED';

/** How far the temp file may fall behind the network before the fill waits for the disk. */
const FILL_WRITE_BEHIND_BYTES = 2 * 1024 * 1024;

/**
 * How many times in a row a fill may open the blob without gaining FILL_MIN_PROGRESS_BYTES: an
 * attempt that brought bytes is not a failure (the next one resumes after them), one that brought
 * nothing is.
 */
export const FILL_MAX_FUTILE_ATTEMPTS = 4;
/** What an attempt must add to the temp file to count as progress. */
export const FILL_MIN_PROGRESS_BYTES = 64 * 1024;
/**
 * How many times a fill opens the blob in all, progress or not: an upstream that cuts every
 * response after a few hundred KB still delivers tens of MB, and nothing loops for ever.
 */
export const FILL_MAX_ATTEMPTS = 256;

/** What a fill needs from the rest of Cove. */
export interface FillOptions {
  digest: string;
  target: Target;
  resolver: Resolver;
  store: BlobStore;
  log: Logger;
  /** Aborted on shutdown, and when nobody waits for the fill any more (see CLIENT_DISCONNECT_POLICY). */
  signal: AbortSignal;
  /**
   * The most bytes the blob may have when the tier sends no length (the size hint, or the hard
   * cap): a body that goes on past it is treated as wrong bytes.
   */
  maxBytes?: number;
  /**
   * The size a cached manifest's descriptor or a tier's HEAD gave, or null: a tier declaring
   * more is refused before a byte is stored.
   */
  sizeHint?: number | null;
  /**
   * Called once the blob is committed to the store, before readers see it as complete; `added`
   * is false when another writer (a manifest stored by digest, an import) had put it there first.
   */
  onCommitted: (size: number, tier: string, added: boolean) => Promise<void>;
  /** Called when bytes arrive from a tier, for byte counters. */
  onBytes?: (tier: string, bytes: number) => void;
  /** Called when the disk filled up and the fill turned into a pass-through (see DISK_FULL_POLICY). */
  onDiskFull?: (digest: string, bytesInFile: number) => void;
}

/** 'passed': every byte went to the clients and checked out, but the blob was not stored. */
type State = 'opening' | 'filling' | 'committed' | 'passed' | 'failed';

export class Fill implements FillView {
  readonly digest: string;
  /** Total size once the first tier answered (null while unknown or if the tier never said). */
  size: number | null = null;
  /** Name of the tier that supplied the bytes (the last one, after a resume). */
  tier: string | null = null;
  /** Kind of that tier: whether the bytes come from a sibling, a parent or the origin. */
  tierKind: TierKind | null = null;
  /** Upstream opens this fill made: 1 for a clean fill, more after resumes. */
  attempts = 0;
  #state: State = 'opening';
  #verified = false;
  #error: Error | null = null;
  #writer: BlobWriter | null = null;
  #waiters: Array<() => void> = [];
  #pass: PassWindow | null = null;
  /** Readers of this fill and the next byte each one needs (pass-through drops what all have read). */
  readonly #readers = new Map<FillReader, number>();
  readonly #opts: FillOptions;
  /** Resolves when the size is known and bytes are flowing; rejects when no tier has the blob. */
  readonly started: Promise<void>;
  /** Resolves when the blob is committed; rejects when the fill failed. */
  readonly done: Promise<void>;

  constructor(opts: FillOptions) {
    this.digest = opts.digest;
    this.#opts = opts;
    let markStarted!: () => void;
    let failStarted!: (err: Error) => void;
    this.started = new Promise((resolve, reject) => {
      markStarted = resolve;
      failStarted = reject;
    });
    this.done = this.#run(markStarted).catch((err: Error) => {
      failStarted(err);
      throw err;
    });
    // Both promises may have no listener (a fill nobody waits on); never an unhandled rejection.
    this.started.catch(() => {});
    this.done.catch(() => {});
  }

  get state(): State {
    return this.#state;
  }

  /** True once every byte is in and the digest checked out (the commit may still be running). */
  get verified(): boolean {
    return this.#verified;
  }

  /** Bytes already received and readable: in the temp file, or past it in a pass-through's memory. */
  get written(): number {
    return this.#pass?.end ?? this.#writer?.written ?? 0;
  }

  /** True once the disk filled up and the blob is passed to its clients without being stored. */
  get passingThrough(): boolean {
    return this.#pass !== null;
  }

  /** The failure that ended the fill, if it failed. */
  get error(): Error | null {
    return this.#error;
  }

  /**
   * A source of this blob's bytes, read from the growing file. The last byte of every read range
   * is held back until the whole blob is verified, so no client ever receives a complete-looking
   * body of bytes that turn out wrong: on failure the read rejects instead.
   */
  openSource(): ByteSource {
    return new FillReader(this);
  }

  /**
   * A source for a span the temp file holds already, served before the blob is verified (a
   * client's Range on a blob still arriving; see resolve/span.ts).
   */
  openEarlySpan(): ByteSource {
    return new FillReader(this, false);
  }

  /** Path of the temp file while filling; the store path once committed. */
  currentPath(): string {
    if (this.#state === 'committed' || !this.#writer) return this.storePath();
    return this.#writer.tempPath;
  }

  /** Where the blob lives once committed. */
  storePath(): string {
    return this.#opts.store.pathOf(this.digest);
  }

  /** Resolves at the next change: more bytes, commit or failure. */
  nextChange(): Promise<void> {
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #notify(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  async #run(markStarted: () => void): Promise<void> {
    const { digest, resolver, log, signal } = this.#opts;
    let target = this.#opts.target;
    let tierIndex = 0;
    let lastError: unknown = null;
    let futile = 0;
    try {
      while (futile < FILL_MAX_FUTILE_ATTEMPTS && this.attempts < FILL_MAX_ATTEMPTS) {
        signal.throwIfAborted();
        this.attempts++;
        const offset = this.written;
        let found;
        try {
          found = await resolver.first(target, (tier) => tier.openBlob(target, digest, offset, signal), tierIndex);
        } catch (err) {
          // No tier could be asked. Before any byte arrived that is the client's answer — unless
          // this node was the site's owner and only its own way up failed: then the next owner in
          // rank is asked once (its uplink may be fine), rather than failing the pull.
          if (offset === 0 && this.#writer === null) {
            if (target.pastSelf || target.reach === 'local' || target.reach === 'above' || !resolver.tiers.some((t) => t.kind === 'peer')) throw err;
            log.info({ digest, err: describe(err) }, 'could not fetch from above as the site\'s owner: asking the next owner');
            target = { ...target, pastSelf: true };
            tierIndex = 0;
            continue;
          }
          lastError = err;
          futile++;
          continue;
        }
        if (!found) {
          if (offset === 0 && this.#writer === null) {
            throw new OciError('BLOB_UNKNOWN', `blob ${digest} is not known upstream`, { detail: { digest } });
          }
          lastError = new CoveError('FILL_RESUME_FAILED', `no tier could resume ${digest} at byte ${offset}`);
          futile++;
          continue;
        }
        tierIndex = resolver.tiers.indexOf(found.tier);
        const body = found.value;
        this.tier = body.source ?? found.tier.name;
        this.tierKind = found.tier.kind;
        try {
          await this.#accept(body, offset, markStarted);
          await this.#commit();
          return;
        } catch (err) {
          dropBody(body.body);
          if (err instanceof DigestMismatchError) body.condemn?.(err.message);
          if (err instanceof DigestMismatchError || signal.aborted) throw err;
          if (err instanceof CoveError && err.code === FILL_DISK_FULL) throw err;
          if (isDiskFull(err) && this.#pass === null && this.#writer !== null) {
            const pass = await this.#enterPassThrough();
            // Nobody to pass the blob to (its clients left, or a prewarm started it): fetching
            // the rest to keep nothing would hold the upstream and the window for no one.
            if (pass.abandoned) throw new CoveError(FILL_DISK_FULL, `the disk is full and no client is reading ${digest}: not stored`, { cause: err });
            this.attempts--; // the disk failed, not the transfer
            continue;
          }
          lastError = err;
          // The bytes in the temp file were hashed in order: the next attempt goes on after them.
          futile = this.written - offset >= FILL_MIN_PROGRESS_BYTES ? 0 : futile + 1;
          log.warn({ digest, tier: this.tier, written: this.written, err: describe(err) }, 'blob transfer broke; resuming');
        }
      }
      throw new CoveError('FILL_FAILED', `blob ${digest} could not be fetched whole after ${this.attempts} attempts`, {
        cause: lastError,
      });
    } catch (err) {
      await this.#fail(err as Error);
      throw err;
    }
  }

  /** Checks one tier's answer against what is known and streams its bytes into the temp file. */
  async #accept(body: BlobBody, offset: number, markStarted: () => void): Promise<void> {
    if (body.offset !== offset) throw new CoveError('FILL_BAD_OFFSET', `tier resumed at ${body.offset}, wanted ${offset}`);
    // Only one blob per algorithm is empty: any other digest declared 0 bytes long is a lie that
    // need not be read to be caught (and must not size a HEAD or a Range meanwhile).
    if (body.size === 0 && !isEmptyDigest(this.digest)) throw new DigestMismatchError(`tier declares ${this.digest} empty`);
    const hint = this.#opts.sizeHint ?? null;
    if (body.size !== null && hint !== null && body.size > hint) {
      throw new DigestMismatchError(`tier declares ${body.size} bytes for ${this.digest}, more than the ${hint} it can have`);
    }
    if (this.size === null) this.size = body.size;
    else if (body.size !== null && body.size !== this.size) {
      throw new DigestMismatchError(`tier reports size ${body.size} for ${this.digest}, earlier ${this.size}`);
    }
    if (this.#writer === null) {
      this.#writer = await this.#opts.store.createWriter(this.digest, this.size);
      this.#state = 'filling';
      markStarted();
    }
    if (this.#pass) {
      await this.#passInto(body.body, this.#pass);
      if (this.size !== null && this.#pass.end < this.size) throw new CoveError('FILL_SHORT', `body ended at ${this.#pass.end} of ${this.size} bytes`);
      return;
    }
    const writer = this.#writer;
    writer.onProgress = () => this.#notify();
    // Writes overlap with the network: wait for the file only when it falls behind by a margin.
    try {
      await this.#drainInto(body.body, writer);
    } finally {
      // A resume starts at the first byte not in the file, so let the file catch up first.
      await writer.flush().catch(() => {});
    }
    await writer.flush();
    if (this.size !== null && writer.written < this.size) {
      throw new CoveError('FILL_SHORT', `body ended at ${writer.written} of ${this.size} bytes`);
    }
  }

  /**
   * Moves a tier's body into the writer chunk by chunk as the network delivers them ('data'
   * events: async iteration would concatenate queued chunks into new buffers). The body is paused
   * while the file is more than FILL_WRITE_BEHIND_BYTES behind.
   */
  #drainInto(body: Readable, writer: BlobWriter): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (err: Error) => {
        if (settled) return;
        settled = true;
        dropBody(body);
        reject(err);
      };
      const limit = this.#byteLimit();
      body.on('data', (chunk: Buffer) => {
        if (settled) return;
        // The writer refuses bytes past the size the tier declared (DigestMismatchError); a body
        // without one stops at the bound before a byte past it reaches the file.
        if (writer.written + writer.pendingBytes + chunk.length > limit) {
          fail(new DigestMismatchError(`more than the ${limit} bytes ${this.digest} can have (the tier sent no length)`));
          return;
        }
        const flushed = writer.write(chunk);
        flushed.catch(fail);
        this.#opts.onBytes?.(this.tier ?? 'unknown', chunk.length);
        if (writer.pendingBytes >= FILL_WRITE_BEHIND_BYTES) {
          body.pause();
          flushed.then(() => body.resume(), () => {});
        }
      });
      // finished() also reports a body that failed before these listeners were attached (the
      // connection may break while the writer is being created).
      finished(body, (err) => {
        if (err) {
          fail(err);
          return;
        }
        if (settled) return;
        settled = true;
        resolve();
      });
    });
  }

  /**
   * The disk is full: from here the blob goes to the clients without being stored. The bytes in
   * the temp file are hashed once more (the writer's hash is gone with it), the rest arrives
   * into memory, and eviction is asked to make room for the next blob.
   */
  async #enterPassThrough(): Promise<PassWindow> {
    const writer = this.#writer!;
    const pass = await PassWindow.after(writer.tempPath, writer.written, this.digest);
    this.#pass = pass;
    // A fill nobody reads (a prewarm, or its clients left before the disk filled) has no one
    // to pass to; readerAt() never runs for it, so it is marked here.
    pass.abandoned = this.#readers.size === 0;
    this.#opts.log.warn(
      { digest: this.digest, bytesInFile: pass.base, size: this.size, readers: this.#readers.size },
      pass.abandoned ? 'disk full and no client reading: the blob is not stored' : 'disk full: passing the blob through to its clients without storing it',
    );
    this.#opts.onDiskFull?.(this.digest, pass.base);
    this.#trim();
    return pass;
  }

  /** A pass-through's bytes: hashed and kept in memory until every reader has them. */
  #passInto(body: Readable, pass: PassWindow): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      body.on('data', (chunk: Buffer) => {
        if (settled) return;
        if (this.#readers.size === 0 && pass.abandoned) {
          settled = true;
          dropBody(body);
          reject(new CoveError(FILL_DISK_FULL, `every client of ${this.digest} left while it was passed through (disk full): not stored`));
          return;
        }
        if (pass.end + chunk.length > this.#byteLimit()) {
          settled = true;
          dropBody(body);
          reject(new DigestMismatchError(`more than the expected ${this.#byteLimit()} bytes for ${this.digest}`));
          return;
        }
        const full = pass.append(chunk);
        this.#opts.onBytes?.(this.tier ?? 'unknown', chunk.length);
        this.#notify();
        if (full) {
          body.pause();
          pass.pausedUntilRoom(() => body.resume());
        }
      });
      finished(body, (err) => {
        if (settled) return;
        settled = true;
        if (err) reject(err);
        else resolve();
      });
    });
  }

  /** The most bytes the blob may have: the tier's word when it gave one, else the fill's bound. */
  #byteLimit(): number {
    return this.size ?? this.#opts.maxBytes ?? Number.POSITIVE_INFINITY;
  }

  /** Bytes of a pass-through's memory window into `buf`; 0 when `pos` is not in it. */
  readWindow(buf: Buffer, pos: number, endExclusive: number): number {
    return this.#pass?.read(buf, pos, endExclusive) ?? 0;
  }

  /** Where a pass-through's bytes start in memory (bytes below it come from the temp file). */
  get passBase(): number | null {
    return this.#pass?.base ?? null;
  }

  /** A reader now needs bytes from `pos` on (null: the reader is done). */
  readerAt(reader: FillReader, pos: number | null): void {
    if (pos === null) this.#readers.delete(reader);
    else this.#readers.set(reader, pos);
    const pass = this.#pass;
    if (!pass) return;
    if (this.#readers.size === 0 && this.#state === 'filling') {
      // A pass-through serves only its clients: with none left, stop (see the body's data handler).
      pass.abandoned = true;
      pass.resumeNow();
    }
    this.#trim();
  }

  /** Drops what every reader has read, removes the temp file once nobody needs it, resumes the body. */
  #trim(): void {
    const pass = this.#pass;
    if (!pass) return;
    const finished = this.#state === 'passed' || this.#state === 'failed';
    const lowest = this.#readers.size === 0 ? (finished ? Infinity : pass.start) : Math.min(...this.#readers.values());
    pass.dropBelow(lowest);
    if (!pass.fileReleased && (lowest >= pass.base || finished)) {
      pass.fileReleased = true;
      void this.#writer?.abort().catch(() => {});
    }
  }

  async #commit(): Promise<void> {
    if (this.#pass) {
      const pass = this.#pass;
      if (this.size !== null && pass.end !== this.size) throw new DigestMismatchError(`expected ${this.size} bytes for ${this.digest}, got ${pass.end}`);
      const { ok, actual } = pass.finish();
      if (!ok) throw new DigestMismatchError(`expected ${this.digest}, got ${actual} (${pass.end} bytes)`);
      this.size = pass.end;
      this.#verified = true;
      this.#state = 'passed';
      this.#notify();
      this.#trim();
      return;
    }
    const writer = this.#writer!;
    const added = await writer.commit(() => {
      // The digest checked out: readers may pass the last byte now, while fsync and rename run.
      this.#verified = true;
      this.#notify();
    });
    this.size = writer.written;
    await this.#opts.onCommitted(this.size, this.tier ?? 'unknown', added);
    this.#state = 'committed';
    this.#notify();
  }

  async #fail(err: Error): Promise<void> {
    this.#error = err;
    this.#state = 'failed';
    this.#pass?.clear();
    if (this.#writer) await this.#writer.abort().catch(() => {});
    this.#notify();
    if (err instanceof DigestMismatchError) {
      this.#opts.log.error({ digest: this.digest, tier: this.tier, err: err.message }, 'digest mismatch: blob discarded');
    }
  }
}

function isDiskFull(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

function describe(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}
