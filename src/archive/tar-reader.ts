// An archive stream read entry by entry, once, front to back: decompressed (decompress.ts),
// untarred, and its failures (an input gone away, truncation, a bad header, a corrupt gzip)
// named as ArchiveErrors that say how far the reading got.
import { posix } from 'node:path';
import type { Readable } from 'node:stream';
import * as tar from 'tar-stream';
import { ArchiveError, describeError } from './common.js';
import { Decompressor, type ImportLimits } from './decompress.js';

/** One entry as tar-stream's extractor yields it. */
export type TarEntry = AsyncIterable<Buffer> & { header: tar.Header };

export class TarReader {
  readonly #onProgress: ((bytesRead: number) => void) | undefined;
  readonly #limits: ImportLimits | undefined;
  #bytesRead = 0;
  #entries = 0;
  /** The path of the entry being read, for messages. */
  #current = '';

  /** `onProgress` is called as the input is read, with the (compressed) bytes read so far. */
  constructor(onProgress?: (bytesRead: number) => void, limits?: ImportLimits) {
    this.#onProgress = onProgress;
    this.#limits = limits;
  }

  /** Bytes read from the input so far (compressed size for a gzip archive). */
  get bytesRead(): number {
    return this.#bytesRead;
  }

  /** Entries seen so far. */
  get entries(): number {
    return this.#entries;
  }

  /** Reads `input` to its end, handing each entry and its normalized path to `onEntry` in turn. */
  async read(input: Readable, onEntry: (entry: TarEntry, name: string) => Promise<void>): Promise<void> {
    const decoder = new Decompressor((n) => {
      this.#bytesRead += n;
      this.#onProgress?.(this.#bytesRead);
    }, this.#limits);
    const extract = tar.extract();
    let inputError: Error | null = null;
    let extractError: Error | null = null;
    extract.on('error', (err: Error) => {
      extractError ??= err;
    });
    const onInputError = (err: Error) => {
      inputError = err;
      extract.destroy(err);
    };
    const onDecoderError = (err: Error) => extract.destroy(err);
    // A stream destroyed without an error (an aborted upload) would otherwise leave the extractor
    // waiting for more bytes forever.
    const onInputClose = () => {
      if (!input.readableEnded && !inputError) onInputError(new Error('the input was closed before the end of the archive'));
    };
    input.on('error', onInputError);
    input.on('close', onInputClose);
    decoder.on('error', onDecoderError);
    input.pipe(decoder).pipe(extract);
    try {
      for await (const entry of extract) {
        this.#entries++;
        const tarEntry = entry as unknown as TarEntry;
        this.#current = normalize(tarEntry.header.name);
        await onEntry(tarEntry, this.#current);
      }
    } catch (err) {
      // An entry stream torn down by its extractor fails with a bare "Stream was destroyed";
      // the reason (truncation, a bad header) is the extractor's error, reported as it closes.
      if ((err as { code?: unknown }).code === 'STREAM_DESTROYED' && !extractError) {
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 1000);
          const done = () => {
            clearTimeout(timer);
            resolve();
          };
          if (extract.destroyed) setImmediate(done);
          else extract.once('close', done);
        });
      }
      throw this.#classify((err as { code?: unknown }).code === 'STREAM_DESTROYED' ? (extractError ?? err) : err, inputError);
    } finally {
      input.unpipe(decoder);
      input.off('error', onInputError);
      input.off('close', onInputClose);
      decoder.destroy();
      // Late errors from a torn-down pipe must not surface as unhandled.
      decoder.on('error', () => {});
      extract.on('error', () => {});
    }
    if (inputError) throw this.#classify(inputError, inputError);
  }

  /** Maps a failure of the tar/gzip machinery to an ArchiveError naming the problem. */
  #classify(err: unknown, inputError: Error | null): unknown {
    if (err instanceof ArchiveError) return err;
    if (inputError && (err === inputError || !(err instanceof Error))) {
      return new ArchiveError('ARCHIVE_READ', `reading the archive failed after ${this.#bytesRead} bytes: ${describeError(inputError)}`, { cause: inputError });
    }
    if (!(err instanceof Error)) return err;
    const code = (err as NodeJS.ErrnoException).code;
    if (err.message === 'Unexpected end of data' || code === 'Z_BUF_ERROR' || /unexpected end of file/i.test(err.message)) {
      return new ArchiveError('ARCHIVE_TRUNCATED', `the archive is truncated: it ends ${this.#entries === 0 ? 'in its first entry' : `in or after entry ${this.#entries} (${this.#current})`}, ${this.#bytesRead} bytes read`, { cause: err });
    }
    if (/Invalid tar header/i.test(err.message)) {
      if (this.#entries === 0) return new ArchiveError('ARCHIVE_NOT_TAR', 'the input is not a tar archive (nor a gzip-compressed one)', { cause: err });
      return new ArchiveError('ARCHIVE_CORRUPT', `the archive is corrupt after entry ${this.#entries} (${this.#bytesRead} bytes read): ${err.message}`, { cause: err });
    }
    if (code === 'Z_DATA_ERROR' || code === 'Z_STREAM_ERROR') {
      return new ArchiveError('ARCHIVE_CORRUPT', `the gzip stream is corrupt (${this.#bytesRead} bytes read): ${err.message}`, { cause: err });
    }
    return err;
  }
}

/** A tar path as a key: no leading "./" or "/", no "." or ".." segments, no trailing "/". */
export function normalize(name: string): string {
  const n = posix.normalize(`/${name}`).replace(/^\/+/, '').replace(/\/+$/, '');
  return n === '.' ? '' : n;
}

/** Reads an entry to its end, keeping nothing. */
export async function drain(entry: TarEntry): Promise<void> {
  for await (const _ of entry) {
    // discard
  }
}

/** An entry's bytes in memory; one longer than its header's `size` is refused. */
export async function readAll(entry: TarEntry, size: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of entry) {
    length += chunk.length;
    if (length > size) throw new ArchiveError('ARCHIVE_CORRUPT', `tar entry longer than its header says (${size} bytes)`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, length);
}
