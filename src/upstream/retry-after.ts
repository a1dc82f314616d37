// Retry-After (RFC 9110 §10.2.3): delta-seconds or an HTTP-date.

/** Retry-After as seconds (delta-seconds kept; an HTTP-date turned into seconds from now). */
export function parseRetryAfter(value: string | undefined, now = Date.now()): string | undefined {
  if (value === undefined) return undefined;
  const text = value.trim();
  if (/^\d+$/.test(text)) return String(Number(text));
  const when = Date.parse(text);
  if (Number.isNaN(when)) return undefined;
  return String(Math.max(0, Math.ceil((when - now) / 1000)));
}
