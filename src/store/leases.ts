// Leases: which blobs are being read right now. A response holds a lease on its blob from before
// it looks the blob up until its last byte is sent, and eviction never removes a leased blob.

export class Leases {
  readonly #held = new Map<string, number>();

  /** Takes a lease on a digest; call the returned function once to give it back. */
  acquire(digest: string): () => void {
    this.#held.set(digest, (this.#held.get(digest) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.#held.get(digest) ?? 1) - 1;
      if (left <= 0) this.#held.delete(digest);
      else this.#held.set(digest, left);
    };
  }

  held(digest: string): boolean {
    return this.#held.has(digest);
  }

  /** How many blobs are leased now. */
  get size(): number {
    return this.#held.size;
  }
}
