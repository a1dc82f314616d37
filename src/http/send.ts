// Sends a byte range of a blob to a client from a ByteSource, with two pooled buffers per
// response: one is being filled while the other is on its way to the socket. A buffer is reused
// only after the socket took it, so memory stays flat however many gigabytes pass (Node has no
// sendfile; fresh buffers per chunk would leave RSS to the garbage collector's timing).
import type { ByteSource } from '../store/source.js';
import { breakResponse, type RequestFacts, type Res } from './respond.js';

/**
 * Size of one read and one socket write for a response sent alone: each round of read and write
 * costs a thread-pool hop and a socket write whatever its size, so a lone client is served in
 * large rounds (measured: 256 KiB rounds took twice the CPU of 1 MiB rounds for a warm blob).
 */
export const SEND_CHUNK_BYTES = 1024 * 1024;
/**
 * The chunk of a response that starts while another holds the budget. Smaller chunks cost more
 * CPU per byte and, measured, more memory too (more writes in flight, more garbage per byte).
 */
export const SEND_CHUNK_MIN_BYTES = 256 * 1024;
/**
 * What the buffers of the responses under way may take before later ones get the small chunk:
 * one client alone is served in full-size rounds, and 8 clients of a warm blob hold 5.5 MiB of
 * buffers, not the 16 MiB that full-size pairs for each would.
 */
export const SEND_BUDGET_BYTES = 2 * 1024 * 1024;
/** Idle bytes kept in buffers for the next responses. */
const POOL_MAX_BYTES = 2 * 1024 * 1024;
const pools = new Map<number, Buffer[]>();
let pooledBytes = 0;
/** Bytes in the buffers of responses sending now. */
let liveBytes = 0;

/** The chunk size for a response starting while `live` bytes are in other responses' buffers. */
export function chunkBytesFor(live: number): number {
  let size = SEND_CHUNK_BYTES;
  while (size > SEND_CHUNK_MIN_BYTES && live + 2 * size > SEND_BUDGET_BYTES) size /= 2;
  return size;
}

function acquire(size: number): Buffer {
  liveBytes += size;
  const buf = pools.get(size)?.pop();
  if (!buf) return Buffer.allocUnsafe(size);
  pooledBytes -= size;
  return buf;
}

/** The response is done with `buf`; `reusable`: the socket no longer holds it. */
function release(buf: Buffer, reusable: boolean): void {
  liveBytes -= buf.length;
  if (!reusable || pooledBytes + buf.length > POOL_MAX_BYTES) return;
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
  const size = chunkBytesFor(liveBytes);
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
    await source.close();
    // A buffer the socket may still hold is left to the garbage collector, never reused.
    for (const buf of buffers) release(buf, reusable);
  }
}
