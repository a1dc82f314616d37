// A fill brings one blob into the store from the tiers: bytes are written to a temp file as they
// arrive, hashed on the way, and renamed into place only once digest and length are right.
// Every client of the blob — the first one and any that join later — reads the growing temp
// file, so a cold blob crosses the uplink once however many clients want it.
import { open, type FileHandle } from 'node:fs/promises';
import { DigestVerifier } from '../oci/digest.js';
import { CoveError, DigestMismatchError, OciError } from '../errors.js';
import type { Logger } from '../log.js';
import { finished, type Readable } from 'node:stream';
import type { BlobStore } from '../store/blobs.js';
import { FileSource, type ByteSource } from '../store/source.js';
import type { BlobWriter } from '../store/writer.js';
import type { BlobBody, Target } from '../tiers/tier.js';
import type { Resolver } from './resolver.js';

/**
 * Named decision: a fill belongs to the cache, not to the client that started it. A client that
 * disconnects stops only its own reader; the fill runs on, for the other clients and so that the
 * next pull is a hit. Only shutdown (the fill's own signal) aborts a fill.
 */
export const CLIENT_DISCONNECT_POLICY = 'fill-completes' as const;

/** How far the temp file may fall behind the network before the fill waits for the disk. */
const FILL_WRITE_BEHIND_BYTES = 2 * 1024 * 1024;

/** How many times a fill opens the blob in all (first try plus resumes from the next byte). */
export const FILL_MAX_ATTEMPTS = 4;

/**
 * Named decision: when the disk fills up mid-blob (ENOSPC), the fill turns into a pass-through.
 * Its clients keep receiving the blob — the part already in the temp file from there, the rest
 * from memory as it arrives, never more than PASS_WINDOW_BYTES ahead of the slowest of them — and
 * the blob is verified but not stored. The partial file is removed once no client needs it.
 */
export const DISK_FULL_POLICY = 'pass-through' as const;
const PASS_WINDOW_BYTES = 4 * 1024 * 1024;

/** What a fill needs from the rest of Cove. */
export interface FillOptions {
  digest: string;
  target: Target;
  resolver: Resolver;
  store: BlobStore;
  log: Logger;
  /** Aborted on shutdown only (see CLIENT_DISCONNECT_POLICY). */
  signal: AbortSignal;
  /** Called once the blob is committed to the store, before readers see it as complete. */
  onCommitted: (size: number, tier: string) => Promise<void>;
  /** Called when bytes arrive from a tier, for byte counters. */
  onBytes?: (tier: string, bytes: number) => void;
  /** Called when the disk filled up and the fill turned into a pass-through (see DISK_FULL_POLICY). */
  onDiskFull?: (digest: string, bytesInFile: number) => void;
}

/** 'passed': every byte went to the clients and checked out, but the blob was not stored. */
type State = 'opening' | 'filling' | 'committed' | 'passed' | 'failed';

/** The in-memory tail of a pass-through fill. */
interface PassWindow {
  /** Bytes [0, base) are in the temp file. */
  base: number;
  /** Offset of chunks[0]; bytes before it (and at or past base) were dropped once read. */
  start: number;
  chunks: Buffer[];
  /** Offset after the last chunk. */
  end: number;
  verifier: DigestVerifier;
  /** The temp file was removed. */
  fileReleased: boolean;
  /** Resumes the paused body once readers caught up. */
  resume: (() => void) | null;
  /** The last reader left: nobody is left to pass the blob to. */
  abandoned: boolean;
}

export class Fill {
  readonly digest: string;
  /** Total size once the first tier answered (null while unknown or if the tier never said). */
  size: number | null = null;
  /** Name of the tier that supplied the bytes (the last one, after a resume). */
  tier: string | null = null;
  /** Upstream opens this fill made: 1 for a clean fill, more after resumes. */
  attempts = 0;
  #state: State = 'opening';
  #verified = false;
  #error: Error | null = null;
  #writer: BlobWriter | null = null;
  #waiters: Array<() => void> = [];
  #pass: PassWindow | null = null;
  /** Readers of this fill and the next byte each one needs (pass-through drops what all have read). */
  readonly #readers = new Map<FillSource, number>();
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
    return new FillSource(this);
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
    const { digest, target, resolver, log, signal } = this.#opts;
    let tierIndex = 0;
    let lastError: unknown = null;
    try {
      while (this.attempts < FILL_MAX_ATTEMPTS) {
        signal.throwIfAborted();
        this.attempts++;
        const offset = this.written;
        let found;
        try {
          found = await resolver.first(target, (tier) => tier.openBlob(target, digest, offset, signal), tierIndex);
        } catch (err) {
          // No tier could be asked. Before any byte arrived that is the client's answer;
          // mid-blob it is one more failed attempt.
          if (offset === 0 && this.#writer === null) throw err;
          lastError = err;
          continue;
        }
        if (!found) {
          if (offset === 0 && this.#writer === null) {
            throw new OciError('BLOB_UNKNOWN', `blob ${digest} is not known upstream`, { detail: { digest } });
          }
          lastError = new CoveError('FILL_RESUME_FAILED', `no tier could resume ${digest} at byte ${offset}`);
          continue;
        }
        tierIndex = resolver.tiers.indexOf(found.tier);
        const body = found.value;
        this.tier = body.source ?? found.tier.name;
        try {
          await this.#accept(body, offset, markStarted);
          await this.#commit();
          return;
        } catch (err) {
          body.body.destroy();
          if (err instanceof DigestMismatchError) body.condemn?.(err.message);
          if (err instanceof DigestMismatchError || signal.aborted) throw err;
          if (err instanceof CoveError && err.code === 'FILL_ABANDONED') throw err;
          if (isDiskFull(err) && this.#pass === null && this.#writer !== null) {
            await this.#enterPassThrough();
            this.attempts--; // the disk failed, not the transfer
            continue;
          }
          lastError = err;
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
        body.destroy();
        reject(err);
      };
      body.on('data', (chunk: Buffer) => {
        if (settled) return;
        // The writer refuses bytes past the expected size (DigestMismatchError), failing the drain.
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
  async #enterPassThrough(): Promise<void> {
    const writer = this.#writer!;
    const base = writer.written;
    const verifier = new DigestVerifier(this.digest);
    const handle = await open(writer.tempPath, 'r');
    try {
      const buf = Buffer.allocUnsafe(1024 * 1024);
      for (let pos = 0; pos < base; ) {
        const { bytesRead } = await handle.read(buf, 0, Math.min(buf.length, base - pos), pos);
        if (bytesRead === 0) throw new CoveError('FILL_SHORT', `temp file of ${this.digest} ended at ${pos} of ${base} bytes`);
        verifier.update(buf.subarray(0, bytesRead));
        pos += bytesRead;
      }
    } finally {
      await handle.close();
    }
    this.#pass = { base, start: base, chunks: [], end: base, verifier, fileReleased: false, resume: null, abandoned: false };
    this.#opts.log.warn({ digest: this.digest, bytesInFile: base, size: this.size }, 'disk full: passing the blob through to its clients without storing it');
    this.#opts.onDiskFull?.(this.digest, base);
    this.#trim();
  }

  /** A pass-through's bytes: hashed and kept in memory until every reader has them. */
  #passInto(body: Readable, pass: PassWindow): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      body.on('data', (chunk: Buffer) => {
        if (settled) return;
        if (this.#readers.size === 0 && pass.abandoned) {
          settled = true;
          body.destroy();
          reject(new CoveError('FILL_ABANDONED', `every client of ${this.digest} left while it was passed through; it is not stored`));
          return;
        }
        if (this.size !== null && pass.end + chunk.length > this.size) {
          settled = true;
          body.destroy();
          reject(new DigestMismatchError(`more than the expected ${this.size} bytes for ${this.digest}`));
          return;
        }
        pass.verifier.update(chunk);
        pass.chunks.push(chunk);
        pass.end += chunk.length;
        this.#opts.onBytes?.(this.tier ?? 'unknown', chunk.length);
        this.#notify();
        if (pass.end - pass.start >= PASS_WINDOW_BYTES) {
          body.pause();
          pass.resume = () => body.resume();
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

  /** Bytes of a pass-through's memory window into `buf`; 0 when `pos` is not in it. */
  readWindow(buf: Buffer, pos: number, endExclusive: number): number {
    const pass = this.#pass;
    if (!pass || pos < pass.start) return 0;
    let offset = pass.start;
    let copied = 0;
    for (const chunk of pass.chunks) {
      const chunkEnd = offset + chunk.length;
      if (chunkEnd > pos + copied && offset < endExclusive) {
        const from = pos + copied - offset;
        const to = Math.min(chunk.length, endExclusive - offset);
        const n = chunk.copy(buf, copied, from, Math.min(to, from + buf.length - copied));
        copied += n;
        if (copied >= buf.length || pos + copied >= endExclusive) break;
      }
      offset = chunkEnd;
    }
    return copied;
  }

  /** Where a pass-through's bytes start in memory (bytes below it come from the temp file). */
  get passBase(): number | null {
    return this.#pass?.base ?? null;
  }

  /** A reader now needs bytes from `pos` on (null: the reader is done). */
  readerAt(reader: FillSource, pos: number | null): void {
    if (pos === null) this.#readers.delete(reader);
    else this.#readers.set(reader, pos);
    const pass = this.#pass;
    if (!pass) return;
    if (this.#readers.size === 0 && this.#state === 'filling') {
      // A pass-through serves only its clients: with none left, stop (see the body's data handler).
      pass.abandoned = true;
      pass.resume?.();
      pass.resume = null;
    }
    this.#trim();
  }

  /** Drops what every reader has read, removes the temp file once nobody needs it, resumes the body. */
  #trim(): void {
    const pass = this.#pass;
    if (!pass) return;
    const finished = this.#state === 'passed' || this.#state === 'failed';
    const lowest = this.#readers.size === 0 ? (finished ? Infinity : pass.start) : Math.min(...this.#readers.values());
    while (pass.chunks.length > 0 && pass.start + pass.chunks[0]!.length <= lowest) {
      pass.start += pass.chunks.shift()!.length;
    }
    if (!pass.fileReleased && (lowest >= pass.base || finished)) {
      pass.fileReleased = true;
      void this.#writer?.abort().catch(() => {});
    }
    if (pass.resume && pass.end - pass.start < PASS_WINDOW_BYTES / 2) {
      const resume = pass.resume;
      pass.resume = null;
      resume();
    }
  }

  async #commit(): Promise<void> {
    if (this.#pass) {
      const pass = this.#pass;
      if (this.size !== null && pass.end !== this.size) throw new DigestMismatchError(`expected ${this.size} bytes for ${this.digest}, got ${pass.end}`);
      const { ok, actual } = pass.verifier.finish();
      if (!ok) throw new DigestMismatchError(`expected ${this.digest}, got ${actual} (${pass.end} bytes)`);
      this.size = pass.end;
      this.#verified = true;
      this.#state = 'passed';
      this.#notify();
      this.#trim();
      return;
    }
    const writer = this.#writer!;
    await writer.commit(() => {
      // The digest checked out: readers may pass the last byte now, while fsync and rename run.
      this.#verified = true;
      this.#notify();
    });
    this.size = writer.written;
    await this.#opts.onCommitted(this.size, this.tier ?? 'unknown');
    this.#state = 'committed';
    this.#notify();
  }

  async #fail(err: Error): Promise<void> {
    this.#error = err;
    this.#state = 'failed';
    if (this.#pass) this.#pass.chunks = [];
    if (this.#writer) await this.#writer.abort().catch(() => {});
    this.#notify();
    if (err instanceof DigestMismatchError) {
      this.#opts.log.error({ digest: this.digest, tier: this.tier, err: err.message }, 'digest mismatch: blob discarded');
    }
  }
}

/** Reads a fill's growing file, waiting for bytes and never passing unverified ends. */
class FillSource implements ByteSource {
  readonly #fill: Fill;
  readonly #file: FileSource;

  constructor(fill: Fill) {
    this.#fill = fill;
    this.#file = new FileSource(() => this.#openFile(), fill.digest);
    fill.readerAt(this, 0);
  }

  async readAt(buf: Buffer, pos: number, endExclusive: number): Promise<number> {
    const fill = this.#fill;
    for (;;) {
      if (fill.state === 'failed') throw fill.error ?? new Error('fill failed');
      if (pos >= endExclusive) return 0;
      // Until the blob is verified, the reader's own last byte stays back.
      const limit = fill.verified ? endExclusive : Math.min(fill.written, endExclusive - 1);
      if (pos < limit) {
        const base = fill.passBase;
        const n =
          base !== null && pos >= base
            ? fill.readWindow(buf, pos, limit)
            : await this.#file.readAt(buf, pos, base !== null ? Math.min(limit, base) : limit);
        if (n === 0) throw new CoveError('FILL_PASSED', `bytes from ${pos} of ${fill.digest} are no longer held`);
        fill.readerAt(this, pos + n);
        return n;
      }
      await fill.nextChange();
    }
  }

  async #openFile(): Promise<FileHandle> {
    try {
      return await open(this.#fill.currentPath(), 'r');
    } catch (err) {
      // The fill committed between choosing the temp path and opening it: the rename moved it.
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return open(this.#fill.storePath(), 'r');
      throw err;
    }
  }

  close(): Promise<void> {
    this.#fill.readerAt(this, null);
    return this.#file.close();
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
