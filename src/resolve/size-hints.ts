// Blob sizes learnt before a fill, from a tier's HEAD: kept a short while in memory so that a fill
// whose tier sends no length is still bounded by what the tiers said the blob weighs. A size from
// a cached manifest's descriptor (oci/mediatypes.ts descriptorSizes) lives in the catalog instead
// (it outlasts a restart).

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
