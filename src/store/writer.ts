// One blob on its way into the store: bytes go to a temp file beside the store (same file system,
// so the final move is an atomic rename), hashed as they are written (a large blob by the hash
// thread, behind the writes: file-digest.ts), and published under their digest only once length
// and digest are right. Nothing partial is ever visible under a digest.
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { DigestMismatchError } from '../errors.js';
import { DigestVerifier } from '../oci/digest.js';
import { FileDigest, OFF_THREAD_HASH_MIN_BYTES } from './file-digest.js';

type State = 'open' | 'committing' | 'committed' | 'aborted';

/** Where a writer puts its bytes; built by BlobStore.createWriter. */
export interface BlobWriterPaths {
  /** The temp file, created exclusively (it must not exist yet). */
  tempPath: string;
  /** The final content-addressed path. */
  finalPath: string;
}

export class BlobWriter {
  readonly digest: string;
  readonly expectedSize: number | null;
  /** The growing temp file; readers joining a fill read it by path while it grows. */
  readonly tempPath: string;
  readonly #finalPath: string;
  /** Hashes chunks as they are written (small blobs, and blobs of unknown size)… */
  readonly #verifier: DigestVerifier;
  /** …or the hash thread hashes the file behind the writes (large blobs; see file-digest.ts). */
  readonly #fileDigest: FileDigest | null;
  readonly #handle: FileHandle;
  #written = 0;
  #state: State = 'open';
  /** Chunks accepted by write() and not yet in the file, in order. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /** The loop moving pending chunks into the file, while one runs. */
  #draining: Promise<void> | null = null;
  #error: Error | null = null;
  /** Called each time more bytes are in the file (a fill wakes its readers). */
  onProgress: (() => void) | null = null;
  #aborting: Promise<void> | null = null;
  #committing: Promise<boolean> | null = null;

  private constructor(digest: string, expectedSize: number | null, paths: BlobWriterPaths, handle: FileHandle) {
    this.digest = digest;
    this.expectedSize = expectedSize;
    this.tempPath = paths.tempPath;
    this.#finalPath = paths.finalPath;
    this.#verifier = new DigestVerifier(digest);
    this.#handle = handle;
    this.#fileDigest = expectedSize !== null && expectedSize >= OFF_THREAD_HASH_MIN_BYTES ? FileDigest.tryStart(paths.tempPath, this.#verifier.algorithm) : null;
  }

  /** Opens a new temp file for `digest`; use BlobStore.createWriter rather than calling this. */
  static async create(digest: string, expectedSize: number | null, paths: BlobWriterPaths): Promise<BlobWriter> {
    if (expectedSize !== null && (!Number.isSafeInteger(expectedSize) || expectedSize < 0)) {
      throw new TypeError(`expectedSize must be a non-negative integer or null, got ${expectedSize}`);
    }
    // Validates the digest before any file exists.
    new DigestVerifier(digest);
    // Owner-only whatever the umask: a cached private layer is no other local user's business.
    const handle = await open(paths.tempPath, 'wx', 0o600);
    return new BlobWriter(digest, expectedSize, paths, handle);
  }

  /** A unique temp file name for `hex` inside `tmpDir`. */
  static tempName(hex: string): string {
    return `${hex.slice(0, 16)}.${process.pid}.${randomBytes(6).toString('hex')}.part`;
  }

  /** Bytes already in the temp file (readers may read up to here). */
  get written(): number {
    return this.#written;
  }

  /** Bytes accepted by write() but not yet in the file. */
  get pendingBytes(): number {
    return this.#pendingBytes;
  }

  /**
   * Appends a chunk; resolves once the bytes are in the file (not necessarily on disk). Chunks
   * that arrive while a write is under way go to the file together in one writev, so a fill does
   * not pay a thread-pool round trip per network chunk. The hash sees chunks in call order.
   */
  write(chunk: Buffer): Promise<void> {
    if (this.#error) return Promise.reject(this.#error);
    if (this.#state !== 'open' || this.#committing || this.#aborting) return Promise.reject(new Error(`blob writer for ${this.digest} is ${this.#state}`));
    const total = this.#written + this.#pendingBytes + chunk.length;
    if (this.expectedSize !== null && total > this.expectedSize) {
      return Promise.reject(new DigestMismatchError(`more than the expected ${this.expectedSize} bytes for ${this.digest} (${total} so far)`));
    }
    if (!this.#fileDigest) this.#verifier.update(chunk);
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    this.#draining ??= this.#drain().finally(() => {
      this.#draining = null;
    });
    return this.#draining;
  }

  async #drain(): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        const batch = this.#pending;
        const bytes = this.#pendingBytes;
        this.#pending = [];
        await writeAll(this.#handle, batch, bytes, this.#written);
        this.#pendingBytes -= bytes;
        this.#written += bytes;
        this.#fileDigest?.advance(this.#written);
        this.onProgress?.();
      }
    } catch (err) {
      this.#error = err as Error;
      throw err;
    }
  }

  /** Waits for every accepted chunk to be in the file; rejects if a write failed. */
  flush(): Promise<void> {
    return this.#settled();
  }

  async #settled(): Promise<void> {
    if (this.#draining) await this.#draining;
    if (this.#error) throw this.#error;
  }

  /**
   * Checks length and digest, then fsyncs and renames the temp file into place. On a mismatch
   * the temp file is removed and DigestMismatchError names expected and actual. A blob already
   * in the store (another writer of the same digest won) is success: the content is the same.
   * `onVerified` runs as soon as the bytes are known good, before the slower fsync and rename.
   * Resolves true when this writer added the blob, false when it was in the store already.
   */
  commit(onVerified?: () => void): Promise<boolean> {
    this.#committing ??= this.#commit(onVerified);
    return this.#committing;
  }

  async #commit(onVerified?: () => void): Promise<boolean> {
    await this.#settled();
    if (this.#state !== 'open') throw new Error(`blob writer for ${this.digest} is ${this.#state}`);
    this.#state = 'committing';
    try {
      if (this.expectedSize !== null && this.#written !== this.expectedSize) {
        throw new DigestMismatchError(`expected ${this.expectedSize} bytes for ${this.digest}, got ${this.#written}`);
      }
      const { ok, actual } = this.#fileDigest ? this.#checkFile(await this.#fileDigest.finish(this.#written)) : this.#verifier.finish();
      if (!ok) throw new DigestMismatchError(`expected ${this.digest}, got ${actual} (${this.#written} bytes)`);
      onVerified?.();
      await this.#handle.sync();
      await this.#handle.close();
      const added = await publish(this.tempPath, this.#finalPath);
      this.#state = 'committed';
      return added;
    } catch (err) {
      this.#state = 'aborted';
      this.#fileDigest?.close();
      await this.#handle.close().catch(() => {});
      // The caller needs the mismatch, not a secondary unlink failure.
      await unlinkQuiet(this.tempPath).catch(() => {});
      throw err;
    }
  }

  #checkFile(hex: string): { ok: boolean; actual: string } {
    const actual = `${this.#verifier.algorithm}:${hex}`;
    return { ok: actual === this.digest, actual };
  }

  /** Closes and removes the temp file. Idempotent; a no-op after a successful commit. */
  abort(): Promise<void> {
    if (this.#state === 'committed') return Promise.resolve();
    this.#aborting ??= (async () => {
      await this.#settled().catch(() => {});
      // An abort racing a commit lets the commit finish or clean up on its own.
      await this.#committing?.catch(() => {});
      if (this.#state === 'committed' || this.#state === 'aborted') return;
      this.#state = 'aborted';
      this.#fileDigest?.close();
      await this.#handle.close().catch(() => {});
      await unlinkQuiet(this.tempPath);
    })();
    return this.#aborting;
  }
}

/**
 * Renames a verified, fsynced temp file to its content-addressed path and makes the rename
 * durable. When the blob is there already (another writer of the same digest won) the temp file
 * is removed instead and the result is false: the content is the same.
 */
export async function publish(tempPath: string, finalPath: string): Promise<boolean> {
  const dir = dirname(finalPath);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  // link() creates the name only if it is absent, atomically: of two writers of one digest
  // exactly one learns it added the blob, so the cache's byte count never counts it twice.
  try {
    await link(tempPath, finalPath);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      await unlinkQuiet(tempPath);
      return false;
    }
    // A file system without hard links: check, then rename (a racing writer's rename would
    // replace a file of the same bytes; readers holding the old file open keep reading it).
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'EXDEV') throw err;
    if (await exists(finalPath)) {
      await unlinkQuiet(tempPath);
      return false;
    }
    await rename(tempPath, finalPath);
    await fsyncDir(dir);
    return true;
  }
  await unlinkQuiet(tempPath);
  await fsyncDir(dir);
  return true;
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** Removes a file; one that is already gone is fine. */
export async function unlinkQuiet(path: string): Promise<void> {
  await unlink(path).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/** Makes a rename durable. Best effort: some file systems refuse fsync on a directory. */
export async function fsyncDir(dir: string): Promise<void> {
  let handle: FileHandle | null = null;
  try {
    handle = await open(dir, 'r');
    await handle.sync();
  } catch {
    // Not every platform lets a directory be fsynced (EISDIR/EPERM/EINVAL); the rename stands.
  } finally {
    await handle?.close().catch(() => {});
  }
}

/** Writes `buffers` (`bytes` in all) at `position`, finishing any partial write. */
export async function writeAll(handle: FileHandle, buffers: Buffer[], bytes: number, position: number): Promise<void> {
  const { bytesWritten } = await handle.writev(buffers, position);
  if (bytesWritten === bytes) return;
  const rest = Buffer.concat(buffers).subarray(bytesWritten);
  let offset = 0;
  while (offset < rest.length) {
    const r = await handle.write(rest, offset, rest.length - offset, position + bytesWritten + offset);
    offset += r.bytesWritten;
  }
}
