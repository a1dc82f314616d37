// Sends a byte range of a blob to a client from a ByteSource, with two pooled buffers per
// response: one is being filled while the other is on its way to the socket. A buffer is reused
// only after the socket took it, so memory stays flat however many gigabytes pass (Node has no
// sendfile; fresh buffers per chunk would leave RSS to the garbage collector's timing).
import type { ByteSource } from '../store/source.js';
import { breakResponse, type RequestFacts, type Res } from './respond.js';

/**
 * Size of one read and one socket write for a response sent alone. 256 KiB keeps both buffers of
 * a response in a core's cache between the file read and the socket write, and is past the size
 * where syscalls per byte stop mattering on loopback and LAN.
 */
export const SEND_CHUNK_BYTES = 256 * 1024;
/** The smallest chunk, when many responses share SEND_BUDGET_BYTES. */
export const SEND_CHUNK_MIN_BYTES = 64 * 1024;
/**
 * What the buffers of all responses under way may take together: past SEND_BUDGET_BYTES / (2 ×
 * SEND_CHUNK_BYTES) concurrent responses each one's chunks shrink (to SEND_CHUNK_MIN_BYTES), so 64
 * clients of a warm blob cost the node no more memory than 16 do.
 */
export const SEND_BUDGET_BYTES = 8 * 1024 * 1024;
/** Idle bytes kept in buffers for the next responses. */
const POOL_MAX_BYTES = 2 * 1024 * 1024;
const pools = new Map<number, Buffer[]>();
let pooledBytes = 0;
/** Responses sending now. */
let active = 0;

/** The chunk size for a response starting while `n` responses (itself included) are sending. */
export function chunkBytesFor(n: number): number {
  let size = SEND_CHUNK_BYTES;
  while (size > SEND_CHUNK_MIN_BYTES && 2 * size * n > SEND_BUDGET_BYTES) size /= 2;
  return size;
}

function acquire(size: number): Buffer {
  const buf = pools.get(size)?.pop();
  if (!buf) return Buffer.allocUnsafe(size);
  pooledBytes -= size;
  return buf;
}

function release(buf: Buffer): void {
  if (pooledBytes + buf.length > POOL_MAX_BYTES) return;
  let pool = pools.get(buf.length);
  if (!pool) pools.set(buf.length, (pool = []));
  pool.push(buf);
  pooledBytes += buf.length;
}

/**
 * Writes bytes [start, endExclusive) and ends the response once the source is verified (an empty
 * range too). A source failure breaks the response
 * (the client sees a reset, never a short body that looks whole); a client that goes away stops
 * only this sender (see CLIENT_DISCONNECT_POLICY in resolve/fill.ts).
 */
export async function sendBytes(
  source: ByteSource,
  res: Res,
  start: number,
  endExclusive: number,
  facts: RequestFacts,
  count: (n: number) => void,
): Promise<void> {
  let gone = false;
  const closed = new Promise<void>((resolve) => res.once('close', () => {
    gone = true;
    resolve();
  }));
  active++;
  const size = chunkBytesFor(active);
  const buffers = [acquire(size), acquire(size)];
  // Each buffer's last write: settled once the socket has taken it (or the client is gone).
  const inFlight: Array<Promise<void> | null> = [null, null];
  let reusable = true;
  let pos = start;
  let i = 0;
  try {
    while (pos < endExclusive && !gone) {
      if (inFlight[i]) await inFlight[i];
      if (gone) break;
      const buf = buffers[i]!;
      const n = await source.readAt(buf, pos, endExclusive);
      if (n === 0) throw new Error(`source ended at byte ${pos} of ${endExclusive}`);
      pos += n;
      facts.bytes += n;
      count(n);
      const chunk = n === buf.length ? buf : buf.subarray(0, n);
      inFlight[i] = Promise.race([new Promise<void>((resolve) => (res as NodeJS.WritableStream).write(chunk, () => resolve())), closed]);
      i ^= 1;
    }
    await Promise.all(inFlight);
    // The end of the response says "complete": only once the blob checked out, whatever the length.
    if (!gone) await source.verified();
    if (gone) reusable = false;
    else res.end();
  } catch (err) {
    facts.error = (err as Error).message;
    reusable = false;
    breakResponse(res);
  } finally {
    active--;
    await source.close();
    // A buffer the socket may still hold is left to the garbage collector, never reused.
    if (reusable) buffers.forEach(release);
  }
}
