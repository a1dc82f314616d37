// The grammar of names, tags and digests (OCI distribution spec). The router checks every
// request against it before any store or network I/O, so a bad path never costs a lookup.

/** Longest repository name accepted (distribution's limit, the whole path). */
export const NAME_MAX_LENGTH = 255;

const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const DIGEST = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

/** The algorithms Cove verifies, with the length of their lowercase hex encoding. */
const HEX_LENGTH: Record<string, number> = { sha256: 64, sha512: 128 };

export type DigestAlgorithm = 'sha256' | 'sha512';

export interface ParsedDigest {
  algorithm: DigestAlgorithm;
  hex: string;
}

export function isValidName(name: string): boolean {
  return name.length > 0 && name.length <= NAME_MAX_LENGTH && NAME.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

/**
 * A digest Cove can verify, or null. Syntactically valid digests of other algorithms are
 * refused too: a cache that cannot check bytes against their name must not store them.
 */
export function parseDigest(text: string): ParsedDigest | null {
  const m = DIGEST.exec(text);
  if (!m) return null;
  const algorithm = m[1]!;
  const hex = m[2]!;
  const length = HEX_LENGTH[algorithm];
  if (length === undefined || hex.length !== length || !/^[0-9a-f]+$/.test(hex)) return null;
  return { algorithm: algorithm as DigestAlgorithm, hex };
}

export function isDigest(text: string): boolean {
  return parseDigest(text) !== null;
}

/** A manifest reference is a digest when it contains ':' (tags cannot), else a tag. */
export function parseReference(text: string): { digest: string } | { tag: string } | null {
  if (text.includes(':')) return parseDigest(text) ? { digest: text } : null;
  return isValidTag(text) ? { tag: text } : null;
}

/**
 * Splits a registry host off an image name: the first component is a host when it contains "."
 * or ":" or is "localhost" (Docker's rule), e.g. "harbor.example.com/proj/app" or "localhost/app".
 */
export function splitRegistryHost(name: string): { host: string | null; path: string } {
  const slash = name.indexOf('/');
  if (slash <= 0) return { host: null, path: name };
  const first = name.slice(0, slash);
  const isHost = first.includes('.') || first.includes(':') || first === 'localhost';
  return isHost ? { host: first, path: name.slice(slash + 1) } : { host: null, path: name };
}
