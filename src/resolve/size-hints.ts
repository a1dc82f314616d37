// Blob sizes learnt before a fill, from a tier's HEAD: kept a short while in memory so that a fill
// whose tier sends no length is still bounded by what the tiers said the blob weighs. A size from
// a cached manifest's descriptor lives in the catalog instead (it outlasts a restart).

/** How many sizes are kept; the oldest go first. */
export const SIZE_HINTS_MAX = 4096;

export class SizeHints {
  readonly #sizes = new Map<string, number>();

  /** Notes a size a tier gave for `digest`; the larger of two words is kept (a bound, not a fact). */
  learnt(digest: string, size: number): void {
    if (!Number.isSafeInteger(size) || size < 0) return;
    const before = this.#sizes.get(digest);
    this.#sizes.delete(digest);
    this.#sizes.set(digest, Math.max(size, before ?? 0));
    if (this.#sizes.size > SIZE_HINTS_MAX) this.#sizes.delete(this.#sizes.keys().next().value!);
  }

  get(digest: string): number | null {
    return this.#sizes.get(digest) ?? null;
  }
}

/** The [digest, size] of each blob a manifest lists (config, layers, artifact blobs). */
export function descriptorSizes(bytes: Buffer): Array<{ digest: string; size: number }> {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    return [];
  }
  if (!doc || typeof doc !== 'object' || Array.isArray(doc)) return [];
  const d = doc as Record<string, unknown>;
  const out: Array<{ digest: string; size: number }> = [];
  const add = (desc: unknown) => {
    const e = desc as { digest?: unknown; size?: unknown } | null;
    if (!e || typeof e !== 'object' || typeof e.digest !== 'string' || !/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(e.digest)) return;
    if (typeof e.size !== 'number' || !Number.isSafeInteger(e.size) || e.size < 0) return;
    out.push({ digest: e.digest, size: e.size });
  };
  add(d.config);
  for (const list of [d.layers, d.blobs]) if (Array.isArray(list)) list.forEach(add);
  return out;
}
