// In-process counters: what Cove did since start. The HTTP edge reports them at /healthz; a
// Prometheus exposition can read the same object.

export class Counters {
  /** Requests answered, by cache result (hit, miss, joined, stale, revalidated, bypass, error). */
  readonly requests = new Map<string, number>();
  /** Bytes sent to clients, by the tier that supplied them ("local" for hits). */
  readonly bytesServed = new Map<string, number>();
  /** Bytes received from upstream tiers, by tier name. */
  readonly bytesFetched = new Map<string, number>();
  /** Blobs and manifests brought into the store, by the tier (or peer) that supplied them. */
  readonly objectsFetched = new Map<string, number>();
  /** Requests from sibling Coves answered, by mode (local, fetch). */
  readonly peerRequests = new Map<string, number>();
  /** Fills started (one per cold blob, however many clients joined it). */
  fills = 0;
  /** Fills that resumed after a broken transfer. */
  resumes = 0;
  /** Blobs or manifests discarded because their bytes did not match the digest. */
  digestMismatches = 0;
  /** Times a tag was served stale because the upstream could not be asked. */
  staleServed = 0;
  /** Fills that found the disk full and passed their blob through without storing it. */
  diskFull = 0;
  /** Fills cancelled because nobody waited for them any more (their clients left). */
  fillsCancelled = 0;
  /** Requests refused with 429 because the fill caps were reached (COVE_MAX_FILLS, …_PER_CLIENT). */
  fillsRefused = 0;
  /** Blobs and manifests removed by eviction, and their bytes. */
  evictions = 0;
  bytesEvicted = 0;
  /** Client auth decisions (passthrough), by "allowed:<reason>" or "refused:<reason>". */
  readonly clientAuth = new Map<string, number>();
  /** Client auth decisions answered from the decision book within its TTL. */
  clientAuthCacheHits = 0;

  add(map: Map<string, number>, key: string, n = 1): void {
    map.set(key, (map.get(key) ?? 0) + n);
  }

  /** A plain object for JSON output. */
  snapshot(): Record<string, unknown> {
    return {
      requests: Object.fromEntries(this.requests),
      bytesServed: Object.fromEntries(this.bytesServed),
      bytesFetched: Object.fromEntries(this.bytesFetched),
      objectsFetched: Object.fromEntries(this.objectsFetched),
      peerRequests: Object.fromEntries(this.peerRequests),
      fills: this.fills,
      resumes: this.resumes,
      digestMismatches: this.digestMismatches,
      staleServed: this.staleServed,
      diskFull: this.diskFull,
      fillsCancelled: this.fillsCancelled,
      fillsRefused: this.fillsRefused,
      evictions: this.evictions,
      bytesEvicted: this.bytesEvicted,
      clientAuth: Object.fromEntries(this.clientAuth),
      clientAuthCacheHits: this.clientAuthCacheHits,
    };
  }
}
