// The compression of an archive stream: gzip is undone on the fly; zstd, xz and bzip2 are
// recognised by their magic bytes and refused with a message that says so. What comes out is
// bounded: in all (COVE_IMPORT_MAX_BYTES), and per compressed byte read (COVE_IMPORT_MAX_RATIO),
// so a small gzip of zeros (a decompression bomb: 1 MiB becomes 1 GiB) is refused after a few MiB
// instead of filling the disk with a temp file.
import { Transform, type TransformCallback } from 'node:stream';
import { createGunzip, type Gunzip } from 'node:zlib';
import { ArchiveError } from './common.js';

/** Bounds on what an import may decompress to. */
export interface ImportLimits {
  /** Decompressed bytes in all (the tar stream itself for a plain archive). */
  maxBytes: number;
  /** Decompressed bytes per compressed byte read so far; 0 turns the check off. */
  maxRatio: number;
}

/** Used when the caller sets none: 64 GiB in all, 100 times the compressed size. */
export const DEFAULT_IMPORT_LIMITS: ImportLimits = Object.freeze({ maxBytes: 64 * 1024 ** 3, maxRatio: 100 });
/**
 * The ratio is checked only past this many decompressed bytes: a small archive may compress very
 * well (a few JSON files and an empty layer), and the first gzip output may arrive before the
 * input that made it has been counted.
 */
export const RATIO_FLOOR_BYTES = 16 * 1024 * 1024;

/**
 * Passes a tar through, or gunzips it when it starts with the gzip magic; counts input bytes.
 * Other compressions are refused with a clear message rather than "invalid tar header".
 */
export class Decompressor extends Transform {
  readonly #count: (n: number) => void;
  readonly #limits: ImportLimits;
  #head: Buffer | null = Buffer.alloc(0);
  #gunzip: Gunzip | null = null;
  /** Bytes read from the input, and bytes passed on (decompressed). */
  #in = 0;
  #out = 0;
  #refused = false;

  constructor(count: (n: number) => void, limits: ImportLimits = DEFAULT_IMPORT_LIMITS) {
    super();
    this.#count = count;
    this.#limits = limits;
  }

  /** Decompressed bytes passed on so far. */
  get bytesOut(): number {
    return this.#out;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#count(chunk.length);
    this.#in += chunk.length;
    if (this.#head === null) return this.#forward(chunk, cb);
    const head = Buffer.concat([this.#head, chunk]);
    if (head.length < 6) {
      this.#head = head;
      return cb();
    }
    this.#head = null;
    const err = this.#decide(head);
    if (err) return cb(err);
    this.#forward(head, cb);
  }

  override _flush(cb: TransformCallback): void {
    if (this.#head !== null) {
      // Fewer than 6 bytes in all: not an archive of anything, but let tar say so.
      const head = this.#head;
      this.#head = null;
      const err = this.#decide(head);
      if (err) return cb(err);
      if (!this.#gunzip) this.push(head);
      else this.#gunzip.write(head);
    }
    if (!this.#gunzip) return cb();
    this.#gunzip.once('end', () => cb());
    this.#gunzip.end();
  }

  override _read(size: number): void {
    this.#gunzip?.resume();
    super._read(size);
  }

  #decide(head: Buffer): Error | null {
    if (head[0] === 0x1f && head[1] === 0x8b) {
      const gunzip = createGunzip({ chunkSize: 64 * 1024 });
      gunzip.on('data', (data: Buffer) => {
        if (!this.#passed(data.length)) return;
        if (!this.push(data)) gunzip.pause();
      });
      gunzip.on('error', (err) => this.destroy(err));
      this.#gunzip = gunzip;
      return null;
    }
    const other = compressionOf(head);
    if (other) return new ArchiveError('ARCHIVE_COMPRESSION', `the archive is ${other}-compressed; Cove reads plain or gzip-compressed tar archives (decompress it first)`);
    return null;
  }

  #forward(chunk: Buffer, cb: TransformCallback): void {
    if (!this.#gunzip) {
      if (!this.#passed(chunk.length)) return cb();
      this.push(chunk);
      return cb();
    }
    if (this.#gunzip.write(chunk)) cb();
    else this.#gunzip.once('drain', () => cb());
  }

  /** Counts `n` more bytes out; false (and the stream destroyed with the reason) past a limit. */
  #passed(n: number): boolean {
    if (this.#refused) return false;
    this.#out += n;
    const { maxBytes, maxRatio } = this.#limits;
    let why: string | null = null;
    if (this.#out > maxBytes) {
      why = `the archive is larger than ${maxBytes} bytes once decompressed (COVE_IMPORT_MAX_BYTES); ${this.#in} bytes read`;
    } else if (maxRatio > 0 && this.#gunzip && this.#out > RATIO_FLOOR_BYTES && this.#out > maxRatio * this.#in) {
      why = `the archive expands more than ${maxRatio} times (COVE_IMPORT_MAX_RATIO): ${this.#out} bytes from ${this.#in} bytes of gzip so far; refused as a decompression bomb`;
    }
    if (why === null) return true;
    this.#refused = true;
    this.#gunzip?.pause();
    this.destroy(new ArchiveError('ARCHIVE_LIMIT', why));
    return false;
  }

  override _destroy(err: Error | null, cb: (error: Error | null) => void): void {
    this.#gunzip?.destroy();
    cb(err);
  }
}

function compressionOf(head: Buffer): string | null {
  if (head.length >= 4 && head.readUInt32BE(0) === 0x28b52ffd) return 'zstd';
  if (head.length >= 6 && head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return 'xz';
  if (head.length >= 3 && head.subarray(0, 3).toString('latin1') === 'BZh') return 'bzip2';
  return null;
}
