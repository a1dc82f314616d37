// The compression of an archive stream: gzip is undone on the fly; zstd, xz and bzip2 are
// recognised by their magic bytes and refused with a message that says so.
import { Transform, type TransformCallback } from 'node:stream';
import { createGunzip, type Gunzip } from 'node:zlib';
import { ArchiveError } from './common.js';

/**
 * Passes a tar through, or gunzips it when it starts with the gzip magic; counts input bytes.
 * Other compressions are refused with a clear message rather than "invalid tar header".
 */
export class Decompressor extends Transform {
  readonly #count: (n: number) => void;
  #head: Buffer | null = Buffer.alloc(0);
  #gunzip: Gunzip | null = null;

  constructor(count: (n: number) => void) {
    super();
    this.#count = count;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.#count(chunk.length);
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
      this.push(chunk);
      return cb();
    }
    if (this.#gunzip.write(chunk)) cb();
    else this.#gunzip.once('drain', () => cb());
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
