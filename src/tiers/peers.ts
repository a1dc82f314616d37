// The LAN peer tier: sibling Coves of the same site. Peers are asked for content-addressed data
// (blobs, manifests by digest); a tag only when the site has a peer key (every live peer then
// proved it holds it), and only when nobody above can be asked — a tag is a name, not a hash, so
// without the key nothing would tell a sibling's answer from a stranger's. For a blob, a peer that already holds it (or
// is filling it) streams it; otherwise the digest's owner — picked by rendezvous hashing over the
// live nodes, the same pick on every node — is asked to fetch it from above once for the whole
// site. When this node is the owner, the tier answers "not here" and the fill goes upward itself.
// Everything a peer sends is verified: manifests here, blobs by the fill; wrong bytes quarantine
// the peer.
import type { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import { digestOf } from '../oci/digest.js';
import { ALL_MANIFEST_ACCEPT, MANIFEST_MAX_BYTES, sniffMediaType } from '../oci/mediatypes.js';
import { parseDigest } from '../oci/reference.js';
import type { PeerClient, PeerResponse } from '../peers/client.js';
import { parseContentRange, readSmall } from '../http-util.js';
import type { PeerMode } from '../peers/protocol.js';
import { isUnreachable, type PeerEntry, type PeerTable } from '../peers/table.js';
import type { BlobBody, FetchedManifest, ManifestHead, PassThroughResponse, Target, Tier } from './tier.js';

type LivePeer = PeerEntry & { id: string };

/**
 * What asking one peer for a blob came to: its body; "not there" (a 404: nothing above it has
 * it); "its own fetch from above failed" (an owner's 5xx: it is up, its uplink is not); or "could
 * not ask" (marked down).
 */
type Asked = BlobBody | 'absent' | 'declined' | 'failed';

export interface PeerTierOptions {
  /**
   * How long a blob waits at start-up for the first answers of the static peers, so that the
   * first owners are ranked over the whole site rather than over whoever answered first.
   */
  settleMs?: number;
}

/** Default wait for the first round of probes (three peer timeouts of 1 s: connect, headers, body). */
export const DEFAULT_SETTLE_MS = 3_000;

/** A manifest a peer held for a tag, served only when nobody above can be asked. */
export interface PeerTagAnswer {
  manifest: FetchedManifest;
  peer: string;
}

export class PeerTier implements Tier {
  readonly name = 'peers';
  readonly kind = 'peer' as const;
  readonly #table: PeerTable;
  readonly #client: PeerClient;
  readonly #log: Logger;
  readonly #settleMs: number;

  constructor(table: PeerTable, client: PeerClient, log: Logger, options: PeerTierOptions = {}) {
    this.#table = table;
    this.#client = client;
    this.#log = log;
    this.#settleMs = options.settleMs ?? DEFAULT_SETTLE_MS;
  }

  async headManifest(target: Target, reference: string, _accept: readonly string[], signal?: AbortSignal): Promise<ManifestHead | null> {
    const found = await this.getManifest(target, reference, ALL_MANIFEST_ACCEPT, signal);
    return found && { digest: found.digest, mediaType: found.mediaType, size: found.size };
  }

  /** By digest only: every live peer is asked at once and the first verified copy wins. */
  async getManifest(target: Target, reference: string, _accept: readonly string[], signal?: AbortSignal): Promise<FetchedManifest | null> {
    if (!parseDigest(reference)) return null;
    const found = await firstFound(this.#table.live().map((peer) => this.#manifestFrom(peer, target, reference, ALL_MANIFEST_ACCEPT, signal)));
    return found && found.manifest;
  }

  /**
   * A tag as peers hold it, for when every parent and the origin are away: the caller serves it
   * stale and flags it. The bytes are checked against the digest the peer names.
   */
  async tagFromPeers(target: Target, tag: string, accept: readonly string[], signal?: AbortSignal): Promise<PeerTagAnswer | null> {
    // Without a peer key a peer is never asked for a tag, so no answer for one can be believed.
    if (!this.#table.keyed) return null;
    return firstFound(this.#table.live().map((peer) => this.#manifestFrom(peer, target, tag, accept, signal)));
  }

  /** The size of a blob a peer holds (or is filling); null when no live peer has it. */
  async headBlob(target: Target, digest: string, signal?: AbortSignal): Promise<{ size: number } | null> {
    const holder = await this.#holder(target, digest, signal);
    return holder && { size: holder.size };
  }

  async openBlob(target: Target, digest: string, offset: number, signal?: AbortSignal): Promise<BlobBody | null> {
    await this.#table.settled(this.#settleMs);
    if (this.#table.members().length === 0) return null;
    const holder = await this.#holder(target, digest, signal);
    if (holder) {
      const body = await this.#openFrom(holder.peer, 'local', target, digest, offset, signal);
      if (typeof body === 'object') return body;
    }
    // Nobody holds it: the owner fetches it once for the site. Past an owner that cannot be
    // reached, the next in rank; this node's own turn means the fill goes up itself.
    for (const owner of this.#table.owners(digest)) {
      if (owner === this.#table.selfId) {
        // This node's turn: it goes up itself, unless it tried that already and failed.
        if (target.pastSelf) continue;
        return null;
      }
      const peer = this.#table.askableOwner(owner);
      if (!peer) continue;
      const asked = await this.#openFrom(peer, 'fetch', target, digest, offset, signal);
      if (typeof asked === 'object') return asked;
      // A 404 from the owner: nothing above it has the blob, and nothing above this node will.
      if (asked === 'absent') return null;
      // 'declined' (the owner's own fetch from above failed) or 'failed': the next in rank is
      // asked, as every other asker does — not each asker upward on its own, which would send
      // the origin one request per node the moment the owner's link hiccups.
    }
    return null;
  }

  /** A span from a peer that holds the blob; owners are not asked to fetch for a span. */
  async openBlobSpan(target: Target, digest: string, start: number, end: number, signal?: AbortSignal): Promise<BlobBody | null> {
    if (this.#table.live().length === 0) return null;
    const holder = await this.#holder(target, digest, signal);
    if (!holder) return null;
    const res = await this.#ask(holder.peer, 'GET', `/v2/${target.repo}/blobs/${digest}`, 'local', { range: `bytes=${start}-${end}` }, signal);
    if (res === null) return null;
    const range = res.status === 206 ? parseContentRange(res.headers['content-range']) : null;
    const length = Number(res.headers['content-length']);
    if (!range || range.start !== start || range.end !== end || (Number.isSafeInteger(length) && length !== end - start + 1)) {
      discard(res);
      // A Cove answers a Range with the exact span; anything else from a peer is a fault.
      if (res.status !== 404) this.#table.markDown(holder.peer.id, `answered bytes=${start}-${end} of ${digest} with ${res.status} ${res.headers['content-range'] ?? ''}`);
      return null;
    }
    this.#table.recordHit(holder.peer.id);
    res.body.once('error', (err: Error) => this.#table.markDown(holder.peer.id, `span of ${digest} broke: ${err.message}`));
    return { size: range.total, offset: start, body: res.body, source: `peer:${holder.peer.id}` };
  }

  async listTags(): Promise<PassThroughResponse | null> {
    return null;
  }

  async referrers(): Promise<PassThroughResponse | null> {
    return null;
  }

  /** The first live peer that says it holds the blob, with its size. */
  async #holder(target: Target, digest: string, signal?: AbortSignal): Promise<{ peer: LivePeer; size: number } | null> {
    return firstFound(
      this.#table.live().map(async (peer) => {
        const res = await this.#ask(peer, 'HEAD', `/v2/${target.repo}/blobs/${digest}`, 'local', {}, signal);
        if (res === null) return null;
        res.body.resume();
        const size = Number(res.headers['content-length']);
        return res.status === 200 && Number.isSafeInteger(size) ? { peer, size } : null;
      }),
    );
  }

  /** A blob body from one peer; 'absent' when it answered without it, 'failed' (and marked down) when it could not be asked. */
  async #openFrom(peer: LivePeer, mode: PeerMode, target: Target, digest: string, offset: number, signal?: AbortSignal): Promise<Asked> {
    const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
    const res = await this.#ask(peer, 'GET', `/v2/${target.repo}/blobs/${digest}`, mode, headers, signal);
    if (res === null) return 'failed';
    let size: number | null;
    if (offset > 0) {
      const range = res.status === 206 ? parseContentRange(res.headers['content-range']) : null;
      if (!range || range.start !== offset) {
        discard(res);
        if (res.status >= 500 && mode === 'fetch') return 'declined';
        if (res.status === 404) return 'absent';
        this.#table.markDown(peer.id, `answered a resume of ${digest} at ${offset} with ${res.status}`);
        return 'failed';
      }
      size = range.total;
    } else {
      if (res.status !== 200) {
        discard(res);
        // An owner's 5xx says its own fetch from above failed, not that the owner is gone.
        if (res.status >= 500 && mode === 'fetch') return 'declined';
        if (res.status >= 500) {
          this.#table.markDown(peer.id, `answered ${res.status} for ${digest}`);
          return 'failed';
        }
        return 'absent';
      }
      const length = Number(res.headers['content-length']);
      size = Number.isSafeInteger(length) ? length : null;
    }
    this.#table.recordHit(peer.id);
    const body = res.body;
    // A body that breaks mid-way sends the fill to the next peer or tier; this one rests a while.
    body.once('error', (err: Error) => this.#table.markDown(peer.id, `transfer of ${digest} broke: ${err.message}`));
    return {
      size,
      offset,
      body,
      source: `peer:${peer.id}`,
      condemn: (reason) => this.#table.quarantine(peer.id, `${digest}: ${reason}`),
    };
  }

  async #manifestFrom(peer: LivePeer, target: Target, reference: string, accept: readonly string[], signal?: AbortSignal): Promise<PeerTagAnswer | null> {
    const res = await this.#ask(peer, 'GET', `/v2/${target.repo}/manifests/${reference}`, 'local', { accept: accept.join(', ') }, signal);
    if (res === null) return null;
    if (res.status !== 200) {
      discard(res);
      return null;
    }
    let bytes: Buffer;
    try {
      bytes = await readSmall(res.body, MANIFEST_MAX_BYTES);
    } catch (err) {
      this.#table.markDown(peer.id, `manifest ${reference}: ${(err as Error).message}`);
      return null;
    }
    const asked = parseDigest(reference);
    const named = asked ? reference : res.headers['docker-content-digest']?.trim();
    const expected = named ? parseDigest(named) : null;
    if (!expected) {
      this.#log.warn({ peer: peer.id, reference }, 'peer answered a manifest without a digest: ignored');
      return null;
    }
    const actual = digestOf(bytes, expected.algorithm);
    if (actual !== named) {
      this.#table.quarantine(peer.id, `manifest ${reference} hashes to ${actual}, not ${named}`);
      return null;
    }
    this.#table.recordHit(peer.id);
    const mediaType = res.headers['content-type']?.trim() || sniffMediaType(bytes) || 'application/octet-stream';
    return { peer: peer.id, manifest: { digest: digestOf(bytes), mediaType, size: bytes.length, bytes, source: `peer:${peer.id}` } };
  }

  /** One request to a peer; null (and the peer marked down) when it could not be asked. */
  async #ask(peer: LivePeer, method: 'GET' | 'HEAD', path: string, mode: PeerMode, headers: Record<string, string>, signal?: AbortSignal): Promise<PeerResponse | null> {
    try {
      const res = await this.#client.request(peer, method, path, mode, headers, signal);
      if (res.status === 401 || res.status === 403) {
        discard(res);
        this.#table.markDown(peer.id, `refused a peer request (${res.status}): is COVE_PEER_KEY the same on every node?`);
        return null;
      }
      if (res.status < 500) this.#table.markUp(peer.id);
      return res;
    } catch (err) {
      if (signal?.aborted) throw err;
      this.#table.markDown(peer.id, (err as Error).message, isUnreachable(err));
      return null;
    }
  }
}

function discard(res: { body: Readable }): void {
  res.body.on('error', () => undefined);
  res.body.resume();
}

/** The first non-null result of several attempts; null when all answered null or failed. */
async function firstFound<T>(attempts: Array<Promise<T | null>>): Promise<T | null> {
  if (attempts.length === 0) return null;
  return new Promise<T | null>((resolve) => {
    let left = attempts.length;
    for (const attempt of attempts) {
      attempt.then(
        (value) => {
          if (value !== null) resolve(value);
          else if (--left === 0) resolve(null);
        },
        () => {
          if (--left === 0) resolve(null);
        },
      );
    }
  });
}
