// Durations and sizes as people write them in configuration ("5m", "20GiB"), and back again for logs.

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
const DURATION_RE = /^(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h|d)?$/;

/**
 * Milliseconds in a duration such as `500ms`, `1.5s`, `5m`, `3h`, `14d`. A bare number means seconds,
 * the unit most people expect from a timeout. Negative values and other units are refused.
 */
export function parseDuration(text: string): number {
  const m = DURATION_RE.exec(String(text).trim());
  if (!m) {
    throw new Error(`"${text}" is not a duration (use 500ms, 30s, 5m, 14d; a bare number means seconds)`);
  }
  const ms = Math.round(Number(m[1]) * DURATION_UNITS[m[2] ?? 's']!);
  if (!Number.isSafeInteger(ms)) throw new Error(`"${text}" is too long a duration`);
  return ms;
}

// Decimal units are powers of 1000, binary (…iB) powers of 1024; matched case-insensitively
// except that the "i" decides which family a unit belongs to.
const SIZE_UNITS: Record<string, number> = {
  b: 1,
  kb: 1e3,
  mb: 1e6,
  gb: 1e9,
  tb: 1e12,
  kib: 1024,
  mib: 1024 ** 2,
  gib: 1024 ** 3,
  tib: 1024 ** 4,
};
const SIZE_RE = /^(\d+(?:\.\d*)?|\.\d+)\s*([a-z]+)?$/i;

/** Bytes in a size such as `20GiB`, `512MiB`, `1GB`, `10kB`, `300B`; a bare number means bytes. */
export function parseSize(text: string): number {
  const m = SIZE_RE.exec(String(text).trim());
  const factor = m ? SIZE_UNITS[(m[2] ?? 'b').toLowerCase()] : undefined;
  if (!m || factor === undefined) {
    throw new Error(`"${text}" is not a size (use 512MiB, 20GiB, 1GB, 10kB; a bare number means bytes)`);
  }
  const bytes = Math.round(Number(m[1]) * factor);
  if (!Number.isSafeInteger(bytes)) throw new Error(`"${text}" is too large a size`);
  return bytes;
}

const BYTE_UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** A byte count for people: "512 B", "12.3 MiB", "1.5 GiB". */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return `${n} B`;
  const sign = n < 0 ? '-' : '';
  let value = Math.abs(n);
  if (value < 1024) return `${sign}${Math.round(value)} B`;
  let unit = -1;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  // 1023.96 KiB would print as "1024.0 KiB"; move it up a unit instead.
  if (Number(value.toFixed(1)) >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${sign}${value.toFixed(1)} ${BYTE_UNITS[unit]}`;
}

/** A duration for people: "850 ms", "1.25 s", "2.5 min", "3.2 h", "14 d". */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return `${ms} ms`;
  const sign = ms < 0 ? '-' : '';
  const abs = Math.abs(ms);
  const trim = (value: number, digits: number) => String(Number(value.toFixed(digits)));
  if (Math.round(abs) < 1000) return `${sign}${Math.round(abs)} ms`;
  if (abs < 59_995) return `${sign}${trim(abs / 1000, 2)} s`;
  if (abs < 3_600_000) return `${sign}${trim(abs / 60_000, 1)} min`;
  if (abs < 86_400_000) return `${sign}${trim(abs / 3_600_000, 1)} h`;
  return `${sign}${trim(abs / 86_400_000, 1)} d`;
}
