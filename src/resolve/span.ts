// A span of a blob fetched from a tier for a client's Range while the blob's fill goes on.
// Lazy-pull snapshotters (stargz, SOCI) read the end of a layer first: waiting for a whole cold
// layer to arrive before answering its last kilobytes turns origin latency into full-download
// time. The span is passed to the client as it arrives and is never stored; its length and
// position are checked exactly (Content-Range by the tier, byte count here), and the response
// ends only when the tier's body ended on the span's last byte.
import type { Readable } from 'node:stream';
import { CoveError } from '../errors.js';
import type { ByteSource } from '../store/source.js';
import { dropBody } from '../http-util.js';

/**
 * A span that starts within this many bytes of the fill's progress is read from the fill: one
 * more upstream request (auth, a second stream on the uplink) costs more than waiting for that
 * little, and the bytes come verified.
 */
export const RANGE_WAIT_AHEAD_BYTES = 2 * 1024 * 1024;
/**
 * Longer spans are read from the fill: a span is fetched besides the whole blob, and a long one
 * would nearly double what crosses the uplink. Lazy pullers read small pieces.
 */
export const RANGE_PASSTHROUGH_MAX_BYTES = 16 * 1024 * 1024;

/** Reads a tier's span body in order into the caller's buffers, holding it to its exact length. */
export class SpanSource implements ByteSource {
  readonly #body: Readable;
  readonly #endExclusive: number;
  readonly #onBytes: (n: number) => void;
  readonly #onClose: () => void;
  #pos: number;
  /** Part of a chunk the last read did not take. */
  #leftover: Buffer | null = null;
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  #closed = false;

  /** `body` yields bytes [start, endExclusive) of the blob; `onBytes` hears each chunk received. */
  constructor(body: Readable, start: number, endExclusive: number, onBytes: (n: number) => void, onClose: () => void) {
    this.#body = body;
    this.#pos = start;
    this.#endExclusive = endExclusive;
    this.#onBytes = onBytes;
    this.#onClose = onClose;
    const wake = () => {
      const w = this.#wake;
      this.#wake = null;
      w?.();
    };
    body.on('readable', wake);
    body.on('end', () => {
      this.#ended = true;
      wake();
    });
    body.on('error', (err: Error) => {
      this.#error ??= err;
      wake();
    });
  }

  async readAt(buf: Buffer, pos: number, endExclusive: number): Promise<number> {
    if (pos >= endExclusive) return 0;
    // The body is a stream: a sender reads it front to back, once.
    if (pos !== this.#pos) throw new CoveError('SPAN_ORDER', `span read at ${pos}, expected ${this.#pos}`);
    for (;;) {
      const chunk = this.#next();
      if (chunk) {
        const n = Math.min(chunk.length, buf.length, endExclusive - pos);
        chunk.copy(buf, 0, 0, n);
        if (n < chunk.length) this.#leftover = chunk.subarray(n);
        this.#pos += n;
        return n;
      }
      if (this.#ended) throw new CoveError('SPAN_SHORT', `the tier's span ended at byte ${this.#pos}, before ${this.#endExclusive}`);
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** Resolves once the tier's body ended exactly at the span's end; rejects on a short or long body. */
  async verified(): Promise<void> {
    for (;;) {
      const extra = this.#next();
      if (extra) throw new CoveError('SPAN_LONG', `the tier sent more than the ${this.#endExclusive}-byte end of the span`);
      if (this.#ended) {
        if (this.#pos !== this.#endExclusive) throw new CoveError('SPAN_SHORT', `the tier's span ended at byte ${this.#pos}, before ${this.#endExclusive}`);
        return;
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
    }
  }

  /** The next bytes received, checked against the span's end; null when none are waiting. */
  #next(): Buffer | null {
    if (this.#error) throw this.#error;
    if (this.#leftover) {
      const rest = this.#leftover;
      this.#leftover = null;
      return rest;
    }
    const chunk = this.#body.read() as Buffer | null;
    if (chunk === null) return null;
    this.#onBytes(chunk.length);
    if (this.#pos + chunk.length > this.#endExclusive) {
      this.#error = new CoveError('SPAN_LONG', `the tier sent more than the ${this.#endExclusive - this.#pos} bytes left of the span`);
      throw this.#error;
    }
    return chunk;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Releases the upstream connection when the client left before the span's end.
    if (!this.#ended) dropBody(this.#body);
    this.#onClose();
  }
}
