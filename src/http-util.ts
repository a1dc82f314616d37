// Small helpers for HTTP bodies and headers, shared by the upstream client, the tiers and the
// peer table: the floor below all of them, so their imports only point down.
import type { Readable } from 'node:stream';

/** Reads a small body fully, refusing more than `limit` bytes. */
export async function readSmall(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of body) {
    const buf = chunk as Buffer;
    length += buf.length;
    if (length > limit) {
      dropBody(body);
      throw new Error(`response body larger than ${limit} bytes`);
    }
    chunks.push(buf);
  }
  return Buffer.concat(chunks);
}

/** `bytes START-END/TOTAL` → numbers (total null for `*`), or null when malformed. */
export function parseContentRange(value: string | undefined): { start: number; end: number; total: number | null } | null {
  if (value === undefined) return null;
  const m = /^\s*bytes\s+(\d+)-(\d+)\/(\d+|\*)\s*$/i.exec(value);
  if (!m) return null;
  const start = Number(m[1]);
  const end = Number(m[2]);
  const total = m[3] === '*' ? null : Number(m[3]);
  if (end < start || (total !== null && end >= total)) return null;
  return { start, end, total };
}

/** A well-formed Content-Length as a number, else null. */
export function contentLength(headers: Record<string, string>): number | null {
  const v = headers['content-length'];
  if (v === undefined || !/^\s*\d+\s*$/.test(v)) return null;
  return Number(v);
}

/**
 * Drops a response body we will not read. undici reports a body destroyed before its end as an
 * error event; without a listener that error would be uncaught and end the process.
 */
export function dropBody(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}
