// Single byte ranges (RFC 9110 §14) for blob GETs: `bytes=N-`, `bytes=N-M`, `bytes=-S`.
// A header Cove does not understand (other units, several ranges, bad syntax) is ignored and the
// whole blob is sent, as the RFC allows; a well-formed range outside the blob is unsatisfiable.

export interface ByteRange {
  start: number;
  /** Inclusive. */
  end: number;
}

const SINGLE = /^bytes=(\d*)-(\d*)$/;

/** The range to serve, 'unsatisfiable' for a 416, or null to serve the whole body. */
export function parseRange(header: string | undefined, size: number): ByteRange | 'unsatisfiable' | null {
  if (header === undefined) return null;
  const m = SINGLE.exec(header.trim().replace(/\s+/g, ''));
  if (!m) return null;
  const [, first = '', last = ''] = m;
  if (first === '' && last === '') return null;
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  if (last !== '' && Number(last) < start) return null;
  if (start >= size) return 'unsatisfiable';
  const end = last === '' ? size - 1 : Math.min(Number(last), size - 1);
  return { start, end };
}

export function contentRange(start: number, end: number, size: number): string {
  return `bytes ${start}-${end}/${size}`;
}

export function unsatisfiedRange(size: number): string {
  return `bytes */${size}`;
}
