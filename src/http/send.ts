// Sends a byte range of a blob to a client from a ByteSource, with two pooled buffers per
// response: one is being filled while the other is on its way to the socket. A buffer is reused
// only after the socket took it, so memory stays flat however many gigabytes pass (Node has no
// sendfile; fresh buffers per chunk would leave RSS to the garbage collector's timing).
import type { ByteSource } from '../store/source.js';
import { breakResponse, type RequestFacts, type Res } from './respond.js';

/** Size of one read and one socket write: large enough for full loopback and LAN speed. */
export const SEND_CHUNK_BYTES = 1024 * 1024;
/** Idle buffers kept for the next response; more concurrent responses allocate their own. */
const POOL_MAX = 8;
const pool: Buffer[] = [];

function acquire(): Buffer {
  return pool.pop() ?? Buffer.allocUnsafe(SEND_CHUNK_BYTES);
}

function release(buf: Buffer): void {
  if (pool.length < POOL_MAX) pool.push(buf);
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
  const buffers = [acquire(), acquire()];
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
    if (reusable) buffers.forEach(release);
  }
}
