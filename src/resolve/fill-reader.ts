// The reader of a fill: what the HTTP layer sends a cold blob from. It reads the growing temp
// file (or, after the disk filled up, the pass-through window), waits for bytes that are not
// there yet, and never passes the last byte of its range before the whole blob is verified.
import { open, type FileHandle } from 'node:fs/promises';
import { CoveError } from '../errors.js';
import { FileSource, type ByteSource } from '../store/source.js';

/** What a reader needs to see of a fill (Fill implements it; this file does not import fill.ts). */
export interface FillView {
  readonly digest: string;
  readonly state: string;
  readonly error: Error | null;
  /** True once every byte is in and the digest checked out. */
  readonly verified: boolean;
  /** Bytes received and readable so far. */
  readonly written: number;
  /** Where a pass-through's memory starts (bytes below it are in the temp file); null otherwise. */
  readonly passBase: number | null;
  /** Bytes of the pass-through window into `buf`; 0 when `pos` is not in it. */
  readWindow(buf: Buffer, pos: number, endExclusive: number): number;
  /** This reader now needs bytes from `pos` on (null: it is done). */
  readerAt(reader: FillReader, pos: number | null): void;
  /** Resolves at the next change: more bytes, commit or failure. */
  nextChange(): Promise<void>;
  /** Path of the temp file while filling; the store path once committed. */
  currentPath(): string;
  /** Where the blob lives once committed. */
  storePath(): string;
}

/**
 * Reads a fill's growing file, waiting for bytes and never passing unverified ends — unless it
 * serves a span already in the file (`holdLastByte` false): a Range answered before the blob is
 * whole, trusted as far as a span passed through from the tier would be (see resolve/span.ts).
 */
export class FillReader implements ByteSource {
  readonly #fill: FillView;
  readonly #file: FileSource;
  readonly #holdLastByte: boolean;

  constructor(fill: FillView, holdLastByte = true) {
    this.#fill = fill;
    this.#holdLastByte = holdLastByte;
    this.#file = new FileSource(() => this.#openFile(), fill.digest);
    fill.readerAt(this, 0);
  }

  async readAt(buf: Buffer, pos: number, endExclusive: number): Promise<number> {
    const fill = this.#fill;
    for (;;) {
      if (fill.state === 'failed') throw fill.error ?? new Error('fill failed');
      if (pos >= endExclusive) return 0;
      // Until the blob is verified, the reader's own last byte stays back.
      const limit = fill.verified ? endExclusive : Math.min(fill.written, this.#holdLastByte ? endExclusive - 1 : endExclusive);
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

  async verified(): Promise<void> {
    const fill = this.#fill;
    // A span served from the file before the blob is whole was read in full: nothing to wait for.
    if (!this.#holdLastByte) return;
    for (;;) {
      if (fill.state === 'failed') throw fill.error ?? new Error('fill failed');
      if (fill.verified) return;
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
