// A ByteSource is what the HTTP layer sends a blob body from: a committed blob file, or the
// growing temp file of a fill (src/resolve/fill-reader.ts). Reads go into buffers the caller owns and
// reuses, so serving a blob allocates nothing per chunk.
import { open, type FileHandle } from 'node:fs/promises';
import { CoveError } from '../errors.js';

export interface ByteSource {
  /**
   * Reads bytes at `pos` into `buf`, at most `buf.length` and never at or past `endExclusive`.
   * Waits when those bytes are not there yet; resolves 0 only when `pos >= endExclusive`; rejects
   * when the source failed.
   */
  readAt(buf: Buffer, pos: number, endExclusive: number): Promise<number>;
  /**
   * Resolves once the whole blob is known good (its digest checked out); rejects when it proved
   * wrong. A response ends only after this, whatever its length: a zero-length body has no last
   * byte to hold back.
   */
  verified(): Promise<void>;
  close(): Promise<void>;
}

/** A file read at offsets through one handle, opened on the first read. */
export class FileSource implements ByteSource {
  readonly #open: () => Promise<FileHandle>;
  readonly #name: string;
  #handle: Promise<FileHandle> | null = null;

  /** A path, or a function that opens the file (a fill's temp file may move while it is read). */
  constructor(file: string | (() => Promise<FileHandle>), name = typeof file === 'string' ? file : 'blob') {
    this.#open = typeof file === 'string' ? () => open(file, 'r') : file;
    this.#name = name;
  }

  /** A source over a file opened already; close() closes the handle, read or not. */
  static of(handle: FileHandle, name: string): FileSource {
    const source = new FileSource(() => Promise.resolve(handle), name);
    source.#handle = Promise.resolve(handle);
    return source;
  }

  async readAt(buf: Buffer, pos: number, endExclusive: number): Promise<number> {
    const want = Math.min(buf.length, endExclusive - pos);
    if (want <= 0) return 0;
    this.#handle ??= this.#open();
    const { bytesRead } = await (await this.#handle).read(buf, 0, want, pos);
    if (bytesRead === 0) throw new CoveError('BLOB_SHORT', `${this.#name} ends before byte ${pos}`);
    return bytesRead;
  }

  /** A stored blob was verified before it was renamed into the store. */
  verified(): Promise<void> {
    return Promise.resolve();
  }

  async close(): Promise<void> {
    const handle = this.#handle;
    this.#handle = null;
    if (handle) await (await handle).close().catch(() => {});
  }
}
