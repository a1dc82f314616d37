// The in-memory tail of a fill that found the disk full (see DISK_FULL_POLICY): bytes [0, base)
// are in the temp file, bytes from base on arrive into this window, are hashed on the way in,
// and are dropped once every reader has them. The window never holds more than
// PASS_WINDOW_BYTES ahead of the slowest reader: past that the body is paused.
import { CoveError } from '../errors.js';
import { DigestVerifier } from '../oci/digest.js';
import { readPrefix } from '../store/file-digest.js';

/**
 * Named decision: when the disk fills up mid-blob (ENOSPC), the fill turns into a pass-through.
 * Its clients keep receiving the blob — the part already in the temp file from there, the rest
 * from memory as it arrives, never more than PASS_WINDOW_BYTES ahead of the slowest of them — and
 * the blob is verified but not stored. The partial file is removed once no client needs it.
 */
export const DISK_FULL_POLICY = 'pass-through' as const;
export const PASS_WINDOW_BYTES = 4 * 1024 * 1024;
/**
 * Code of the CoveError a fill ends with when the disk is full and no client is left to pass the
 * blob to (its clients left, or nobody read it: a prewarm). The blob is not stored; the fill
 * releases the upstream at once instead of fetching bytes for no one.
 */
export const FILL_DISK_FULL = 'FILL_DISK_FULL';

export class PassWindow {
  /** Bytes [0, base) are in the temp file. */
  readonly base: number;
  /** Offset of chunks[0]; bytes before it (and at or past base) were dropped once read. */
  start: number;
  /** Offset after the last chunk. */
  end: number;
  /** The temp file was removed. */
  fileReleased = false;
  /** The last reader left: nobody is left to pass the blob to. */
  abandoned = false;
  #chunks: Buffer[] = [];
  readonly #verifier: DigestVerifier;
  /** Resumes the paused body once readers caught up. */
  #resume: (() => void) | null = null;

  private constructor(base: number, verifier: DigestVerifier) {
    this.base = base;
    this.start = base;
    this.end = base;
    this.#verifier = verifier;
  }

  /**
   * A window after the first `base` bytes of `tempPath`. Those bytes are hashed once more: the
   * writer's hash is gone with the writer.
   */
  static async after(tempPath: string, base: number, digest: string): Promise<PassWindow> {
    const verifier = new DigestVerifier(digest);
    await readPrefix(tempPath, base, (bytes) => verifier.update(bytes), (pos) => new CoveError('FILL_SHORT', `temp file of ${digest} ended at ${pos} of ${base} bytes`));
    return new PassWindow(base, verifier);
  }

  /** Takes the next chunk of the blob; true when the window is full and the body should pause. */
  append(chunk: Buffer): boolean {
    this.#verifier.update(chunk);
    this.#chunks.push(chunk);
    this.end += chunk.length;
    return this.end - this.start >= PASS_WINDOW_BYTES;
  }

  /** Remembers how to resume a body paused because the window was full. */
  pausedUntilRoom(resume: () => void): void {
    this.#resume = resume;
  }

  /** Resumes a paused body now (the last reader left: the body must see that and stop). */
  resumeNow(): void {
    const resume = this.#resume;
    this.#resume = null;
    resume?.();
  }

  /** Bytes of the window into `buf`; 0 when `pos` is not in it. */
  read(buf: Buffer, pos: number, endExclusive: number): number {
    if (pos < this.start) return 0;
    let offset = this.start;
    let copied = 0;
    for (const chunk of this.#chunks) {
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

  /** Drops the chunks every reader is past (`lowest`), and resumes the body once half is free. */
  dropBelow(lowest: number): void {
    while (this.#chunks.length > 0 && this.start + this.#chunks[0]!.length <= lowest) {
      this.start += this.#chunks.shift()!.length;
    }
    if (this.#resume && this.end - this.start < PASS_WINDOW_BYTES / 2) this.resumeNow();
  }

  /** Forgets every held byte (the fill failed). */
  clear(): void {
    this.#chunks = [];
  }

  /** The digest check of everything that passed, once the body ended. */
  finish(): { ok: boolean; actual: string } {
    return this.#verifier.finish();
  }
}
