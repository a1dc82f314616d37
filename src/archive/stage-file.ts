// One archive entry on its way to a temp file beside the store. Bytes are gathered into 1 MiB
// batches, and one batch is written while the next is read (the archive is read on, not held up
// by each write). Once the entry ends the file is fsynced in the background, while the importer
// reads the next entries; the blob is adopted into the store only after that sync is done.
import { randomBytes } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { unlinkQuiet, writeAll } from '../store/writer.js';

/** Bytes gathered before one write to a staging file. */
const STAGE_BATCH = 1024 * 1024;

export class StageFile {
  readonly path: string;
  readonly #handle: FileHandle;
  #batch: Buffer[] = [];
  #batchBytes = 0;
  /** Bytes handed to writes so far: where the next batch goes. */
  #offset = 0;
  /** The write under way, if any; at most one at a time. */
  #writing: Promise<void> | null = null;
  /** The first failed write; every later call fails with it. */
  #error: Error | null = null;
  /** The fsync and close after end(); null until then. */
  #synced: Promise<void> | null = null;
  #closed = false;

  private constructor(path: string, handle: FileHandle) {
    this.path = path;
    this.#handle = handle;
  }

  /** A new, empty temp file in `dir` (owner-only, created exclusively). */
  static async create(dir: string): Promise<StageFile> {
    const path = join(dir, `import-${randomBytes(8).toString('hex')}.part`);
    return new StageFile(path, await open(path, 'wx', 0o600));
  }

  /** Bytes in the file once end() has resolved. */
  get size(): number {
    return this.#offset + this.#batchBytes;
  }

  /**
   * Takes a chunk (kept by reference: the caller must not reuse it). Returns a promise only when
   * the caller should wait before the next chunk: a batch is full and the previous write is still
   * under way.
   */
  add(chunk: Buffer): Promise<void> | null {
    if (this.#error) return Promise.reject(this.#error);
    this.#batch.push(chunk);
    this.#batchBytes += chunk.length;
    if (this.#batchBytes < STAGE_BATCH) return null;
    if (this.#writing === null) {
      this.#startWrite();
      return null;
    }
    return this.#writing.then(() => this.#startWrite());
  }

  #startWrite(): void {
    if (this.#batchBytes === 0) return;
    const batch = this.#batch;
    const bytes = this.#batchBytes;
    const at = this.#offset;
    this.#batch = [];
    this.#batchBytes = 0;
    this.#offset += bytes;
    const writing: Promise<void> = writeAll(this.#handle, batch, bytes, at).then(
      () => {
        if (this.#writing === writing) this.#writing = null;
      },
      (err: Error) => {
        this.#error ??= err;
        throw err;
      },
    );
    // A failure surfaces at the next add() that waits, or at end(); never as an unhandled rejection.
    writing.catch(() => {});
    this.#writing = writing;
  }

  /** Writes what is left; then starts the fsync (and close) without waiting for it: see synced(). */
  async end(): Promise<void> {
    if (this.#writing) await this.#writing;
    if (this.#error) throw this.#error;
    this.#startWrite();
    if (this.#writing) await this.#writing;
    const synced = this.#handle.sync().finally(() => this.#close());
    synced.catch(() => {});
    this.#synced = synced;
  }

  /** Resolves once the file's bytes are on disk and the file is closed; rejects if the fsync failed. */
  synced(): Promise<void> {
    if (this.#synced === null) return Promise.reject(new Error(`${this.path} was not ended`));
    return this.#synced;
  }

  /** Waits for any write or fsync under way, closes the file and removes it. Never throws. */
  async discard(): Promise<void> {
    await this.#writing?.catch(() => {});
    await this.#synced?.catch(() => {});
    await this.#close().catch(() => {});
    await unlinkQuiet(this.path).catch(() => {});
  }

  async #close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#handle.close();
  }
}
