// Hashing content against the digest that names it.
import { createHash, type Hash } from 'node:crypto';
import { parseDigest, type DigestAlgorithm } from './reference.js';

/** The digest of a buffer, e.g. "sha256:…". */
/** Whether `digest` names the empty blob (zero bytes) in its algorithm. */
export function isEmptyDigest(digest: string): boolean {
  const algorithm = digest.slice(0, digest.indexOf(':'));
  if (algorithm !== 'sha256' && algorithm !== 'sha512') return false;
  return digest === digestOf(Buffer.alloc(0), algorithm);
}

export function digestOf(bytes: Buffer, algorithm: DigestAlgorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/** Hashes a stream of chunks and tells whether they add up to the expected digest. */
export class DigestVerifier {
  readonly expected: string;
  readonly algorithm: DigestAlgorithm;
  readonly #hash: Hash;
  #length = 0;

  constructor(expected: string) {
    const parsed = parseDigest(expected);
    if (!parsed) throw new TypeError(`not a verifiable digest: ${expected}`);
    this.expected = expected;
    this.algorithm = parsed.algorithm;
    this.#hash = createHash(parsed.algorithm);
  }

  update(chunk: Buffer): void {
    this.#hash.update(chunk);
    this.#length += chunk.length;
  }

  get length(): number {
    return this.#length;
  }

  /** Finishes the hash; call once. */
  finish(): { ok: boolean; actual: string } {
    const actual = `${this.algorithm}:${this.#hash.digest('hex')}`;
    return { ok: actual === this.expected, actual };
  }
}
