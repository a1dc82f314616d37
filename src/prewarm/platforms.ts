// Platform filters for prewarming: COVE_PLATFORMS="linux/arm64,linux/amd64,linux/arm/v7" names the
// platforms this node runs; from a multi-arch index only those children are fetched. An empty
// filter means every platform.
import { ConfigError } from '../errors.js';

/** A platform as an OCI index descriptor (or an image config) names it. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** One component of a platform: lowercase letters, digits, '_', '.', '-' (as Go's GOOS/GOARCH). */
const COMPONENT = /^[a-z0-9][a-z0-9._-]{0,31}$/;

/** Longest COVE_PLATFORMS value accepted, and most entries. */
const FILTER_MAX_LENGTH = 1024;
const FILTER_MAX_ENTRIES = 32;

/**
 * Parses "os/arch[/variant],..." into a list. Whitespace around entries is ignored, duplicates are
 * dropped, "" gives [] (every platform). `label` names the setting in the error message.
 */
export function parsePlatforms(text: string, label = 'COVE_PLATFORMS'): Platform[] {
  const bad = (why: string): never => {
    throw new ConfigError(`${label}: ${why}`);
  };
  if (text.length > FILTER_MAX_LENGTH) bad(`is longer than ${FILTER_MAX_LENGTH} characters`);
  const platforms: Platform[] = [];
  const seen = new Set<string>();
  for (const raw of text.split(',')) {
    const entry = raw.trim();
    if (entry === '') continue;
    const platform = parsePlatform(entry, label);
    const key = formatPlatform(normalizePlatform(platform));
    if (seen.has(key)) continue;
    seen.add(key);
    platforms.push(platform);
  }
  if (platforms.length > FILTER_MAX_ENTRIES) bad(`names more than ${FILTER_MAX_ENTRIES} platforms`);
  return platforms;
}

/** One "os/arch[/variant]" entry; the error names the entry and what is wrong with it. */
export function parsePlatform(entry: string, label = 'platform'): Platform {
  const text = entry.trim();
  const parts = text.toLowerCase().split('/');
  const example = 'e.g. linux/arm64 or linux/arm/v7';
  if (parts.length < 2 || parts.length > 3) {
    throw new ConfigError(`${label}: ${JSON.stringify(text)} is not OS/ARCH or OS/ARCH/VARIANT (${example})`);
  }
  for (const part of parts) {
    if (!COMPONENT.test(part)) {
      throw new ConfigError(`${label}: ${JSON.stringify(text)} has an invalid component ${JSON.stringify(part)} (${example})`);
    }
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return variant === undefined ? { os, architecture } : { os, architecture, variant };
}

/** "linux/arm64", "linux/arm/v7". */
export function formatPlatform(p: Platform | null | undefined): string {
  if (!p) return 'unknown';
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/**
 * The spelling registries use: Go's architecture names (x86_64 → amd64, aarch64 → arm64) and the
 * default variants (arm64 is v8, arm is v7), so "linux/arm64" and "linux/arm64/v8" are one platform.
 */
export function normalizePlatform(p: Platform): Required<Platform> {
  const os = p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = (p.variant ?? '').toLowerCase();
  switch (architecture) {
    case 'x86_64':
    case 'x86-64':
      architecture = 'amd64';
      break;
    case 'aarch64':
      architecture = 'arm64';
      break;
    case 'armhf':
      architecture = 'arm';
      variant ||= 'v7';
      break;
    case 'armel':
      architecture = 'arm';
      variant ||= 'v6';
      break;
    case 'i386':
    case 'i686':
      architecture = '386';
      break;
  }
  if (architecture === 'arm64' && (variant === '' || variant === '8')) variant = 'v8';
  if (architecture === 'arm' && variant === '') variant = 'v7';
  if (architecture === 'arm' && /^[5-8]$/.test(variant)) variant = `v${variant}`;
  return { os, architecture, variant };
}

/**
 * Whether `platform` is wanted by `filter`. An empty filter takes every platform. A filter entry
 * without a variant takes every variant of its architecture ("linux/arm" takes v6 and v7); one
 * with a variant takes only that variant.
 */
export function matches(platform: Platform, filter: readonly Platform[]): boolean {
  if (filter.length === 0) return true;
  const p = normalizePlatform(platform);
  return filter.some((entry) => {
    const f = normalizePlatform(entry);
    if (f.os !== p.os || f.architecture !== p.architecture) return false;
    // An entry as written without a variant matches any variant.
    return entry.variant === undefined || entry.variant === '' ? true : f.variant === p.variant;
  });
}

/** A platform field from JSON (index descriptor or image config), or null when it is not one. */
export function platformFrom(value: unknown): Platform | null {
  if (!value || typeof value !== 'object') return null;
  const v = value as Record<string, unknown>;
  if (typeof v.os !== 'string' || typeof v.architecture !== 'string' || v.os === '' || v.architecture === '') return null;
  return typeof v.variant === 'string' && v.variant !== ''
    ? { os: v.os, architecture: v.architecture, variant: v.variant }
    : { os: v.os, architecture: v.architecture };
}
