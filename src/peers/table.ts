// The peer table: the sibling Coves of this site that this node may ask, from the static
// COVE_PEERS list (the same list on every node, so a node finds and skips itself by node id)
// and from mDNS. It tracks which peers answer (a failing peer is left alone for a while), which
// served wrong bytes (quarantined and logged), what each one sent, and which owns a digest.
import type { Logger } from '../log.js';
import { readSmall } from '../http-util.js';
import type { PeerClient } from './client.js';
import type { PeerInfo } from './peer.js';
import { NODE_ID_PATTERN, rankOwners } from './protocol.js';

/** How long a peer that served wrong bytes is not asked. */
export const QUARANTINE_MS = 10 * 60_000;
/** A peer that failed is skipped for this long, doubling per failure up to DOWN_MAX_MS. */
const DOWN_BASE_MS = 2_000;
const DOWN_MAX_MS = 60_000;
/** A discovered peer not heard of again for this long is dropped. */
export const DISCOVERED_TTL_MS = 120_000;
/** How often static peers are asked who they are; sooner while some have not answered yet. */
const PROBE_INTERVAL_MS = 15_000;
const PROBE_UNKNOWN_MS = 1_000;

/** Where the node describes itself: GET /_cove/node → { id, site, version }. */
export const NODE_INFO_PATH = '/_cove/node';

export interface PeerEntry {
  /** Node id; null for a static peer that has not answered yet. */
  id: string | null;
  url: string;
  site: string | null;
  version: string | null;
  source: 'static' | 'mdns';
  /** Last time the peer answered or was announced (ms since epoch), 0 if never. */
  lastSeen: number;
  /** Consecutive failures; the peer is skipped until downUntil. */
  failures: number;
  downUntil: number;
  quarantinedUntil: number;
  quarantineReason: string | null;
  /** True for a static entry that turned out to be this node. */
  self: boolean;
  /** Blobs and manifests this node took from the peer. */
  hits: number;
  /** Requests the peer made of this node that were answered. */
  served: number;
}

export interface PeerTableOptions {
  selfId: string;
  site: string;
  staticUrls: readonly string[];
  client: PeerClient;
  log: Logger;
  /** Bytes taken from a peer so far (the fill counts them as they arrive). */
  fetchedBytes?: (id: string) => number;
  now?: () => number;
}

export class PeerTable {
  readonly selfId: string;
  readonly site: string;
  /** Keyed by URL: a static peer is known by its URL before it tells its id. */
  readonly #byUrl = new Map<string, PeerEntry>();
  readonly #o: PeerTableOptions;
  readonly #now: () => number;
  #timer: NodeJS.Timeout | null = null;
  #probing: Promise<void> | null = null;
  #stopped = false;

  constructor(options: PeerTableOptions) {
    this.#o = options;
    this.selfId = options.selfId;
    this.site = options.site;
    this.#now = options.now ?? Date.now;
    for (const url of options.staticUrls) this.#byUrl.set(url, blank(url, 'static'));
  }

  /** Starts asking static peers who they are, now and on an interval; never waits for them. */
  start(): void {
    if (this.#timer !== null || this.#stopped || this.#staticEntries().length === 0) return;
    const round = () => {
      this.#probing = this.probe().finally(() => {
        this.#probing = null;
        if (this.#stopped) return;
        // Nodes of a site start in any order: ask the silent ones again soon.
        const waiting = this.#staticEntries().some((e) => e.id === null || e.failures > 0);
        this.#timer = setTimeout(round, waiting ? PROBE_UNKNOWN_MS : PROBE_INTERVAL_MS);
        this.#timer.unref();
      });
    };
    round();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    await this.#probing?.catch(() => undefined);
  }

  /** Asks every static peer for its node id and site (GET /_cove/node). */
  async probe(): Promise<void> {
    await Promise.all(
      this.#staticEntries().map(async (entry) => {
        try {
          const res = await this.#o.client.request(entry.url, 'GET', NODE_INFO_PATH, null);
          const text = (await readSmall(res.body, 64 * 1024)).toString('utf8');
          if (res.status !== 200) throw new Error(`answered ${res.status}`);
          const info = JSON.parse(text) as { id?: unknown; site?: unknown; version?: unknown };
          if (typeof info.id !== 'string' || !NODE_ID_PATTERN.test(info.id) || typeof info.site !== 'string') throw new Error('answered no node id');
          this.#learn(entry, info.id, info.site, typeof info.version === 'string' ? info.version : null);
          this.markUp(info.id);
        } catch (err) {
          this.#fail(entry, `probe failed: ${(err as Error).message}`);
        }
      }),
    );
  }

  /** A peer announced by discovery; refreshes its expiry. Self and other sites are ignored. */
  upsertDiscovered(info: PeerInfo): void {
    if (info.id === this.selfId || info.site !== this.site || !NODE_ID_PATTERN.test(info.id)) return;
    // A static entry for the same node wins: its URL is the one the operator chose.
    const known = this.#entryById(info.id);
    if (known && known.source === 'static') return;
    if (known && known.url !== info.url) this.#byUrl.delete(known.url);
    const entry = this.#byUrl.get(info.url) ?? blank(info.url, 'mdns');
    if (!this.#byUrl.has(info.url)) this.#o.log.info({ peer: info.id, url: info.url }, 'peer discovered');
    entry.id = info.id;
    entry.site = info.site;
    entry.version = info.version ?? null;
    entry.lastSeen = this.#now();
    this.#byUrl.set(info.url, entry);
  }

  /** A discovered peer said goodbye: drop it (a static peer stays; its probe will tell). */
  forgetDiscovered(id: string): void {
    const entry = this.#entryById(id);
    if (!entry || entry.source !== 'mdns') return;
    this.#byUrl.delete(entry.url);
    this.#o.log.info({ peer: id, url: entry.url }, 'peer left (mDNS goodbye)');
  }

  /** Peers that may be asked now: known id, this site, not this node, not failing or quarantined. */
  live(): Array<PeerEntry & { id: string }> {
    const now = this.#now();
    const out: Array<PeerEntry & { id: string }> = [];
    for (const entry of [...this.#byUrl.values()]) {
      if (entry.source === 'mdns' && now - entry.lastSeen > DISCOVERED_TTL_MS) {
        this.#byUrl.delete(entry.url);
        this.#o.log.info({ peer: entry.id, url: entry.url }, 'peer expired: not announced lately');
        continue;
      }
      if (entry.id === null || entry.self || entry.site !== this.site) continue;
      if (entry.downUntil > now || entry.quarantinedUntil > now) continue;
      out.push(entry as PeerEntry & { id: string });
    }
    return out;
  }

  /** The live nodes of the site (this one included) ranked as owners of a digest. */
  owners(digest: string): string[] {
    return rankOwners([this.selfId, ...this.live().map((p) => p.id)], digest);
  }

  byId(id: string): PeerEntry | undefined {
    return this.#entryById(id);
  }

  markUp(id: string): void {
    const entry = this.#entryById(id);
    if (!entry) return;
    entry.lastSeen = this.#now();
    if (entry.failures > 0) this.#o.log.info({ peer: id }, 'peer answers again');
    entry.failures = 0;
    entry.downUntil = 0;
  }

  /** The peer could not be reached or broke a transfer: skip it for a while. */
  markDown(id: string, why: string): void {
    const entry = this.#entryById(id);
    if (entry) this.#fail(entry, why);
  }

  /** The peer sent bytes that do not match their digest: distrust it for QUARANTINE_MS. */
  quarantine(id: string, why: string): void {
    const entry = this.#entryById(id);
    if (!entry) return;
    entry.quarantinedUntil = this.#now() + QUARANTINE_MS;
    entry.quarantineReason = why;
    this.#o.log.error({ peer: id, url: entry.url, reason: why, minutes: QUARANTINE_MS / 60_000 }, 'peer quarantined: it served wrong bytes');
  }

  /** Counts a blob or manifest taken from a peer (its bytes are counted where they arrive). */
  recordHit(id: string): void {
    const entry = this.#entryById(id);
    if (entry) entry.hits++;
  }

  /** Counts a request a peer made of this node. */
  recordServed(id: string): void {
    const entry = this.#entryById(id);
    if (entry) entry.served++;
  }

  /** The table as `cove peers` and /_cove/peers show it. */
  snapshot(): { self: string; site: string; peers: Array<Record<string, unknown>> } {
    const now = this.#now();
    const live = new Set(this.live().map((p) => p.url));
    return {
      self: this.selfId,
      site: this.site,
      peers: [...this.#byUrl.values()].map((e) => ({
        id: e.id,
        url: e.url,
        site: e.site,
        version: e.version,
        source: e.source,
        state: e.self ? 'self' : e.quarantinedUntil > now ? 'quarantined' : e.downUntil > now ? 'down' : e.id === null ? 'unknown' : e.site !== this.site ? 'other-site' : live.has(e.url) ? 'live' : 'down',
        lastSeenAgoS: e.lastSeen === 0 ? null : Math.round((now - e.lastSeen) / 1000),
        failures: e.failures,
        quarantineReason: e.quarantinedUntil > now ? e.quarantineReason : null,
        hits: e.hits,
        bytes: e.id !== null ? (this.#o.fetchedBytes?.(e.id) ?? 0) : 0,
        served: e.served,
      })),
    };
  }

  #staticEntries(): PeerEntry[] {
    return [...this.#byUrl.values()].filter((e) => e.source === 'static' && !e.self);
  }

  #entryById(id: string): PeerEntry | undefined {
    for (const entry of this.#byUrl.values()) if (entry.id === id) return entry;
    return undefined;
  }

  #learn(entry: PeerEntry, id: string, site: string, version: string | null): void {
    const first = entry.id === null;
    entry.id = id;
    entry.site = site;
    entry.version = version;
    if (id === this.selfId) {
      if (!entry.self) this.#o.log.info({ url: entry.url }, 'COVE_PEERS entry is this node: skipped');
      entry.self = true;
      return;
    }
    if (site !== this.site) {
      if (first) this.#o.log.warn({ url: entry.url, peer: id, site, ours: this.site }, 'COVE_PEERS entry belongs to another site: not asked');
      return;
    }
    if (first) this.#o.log.info({ url: entry.url, peer: id }, 'peer known');
  }

  #fail(entry: PeerEntry, why: string): void {
    entry.failures++;
    const wait = Math.min(DOWN_MAX_MS, DOWN_BASE_MS * 2 ** (entry.failures - 1));
    entry.downUntil = this.#now() + wait;
    if (entry.failures === 1) this.#o.log.warn({ peer: entry.id, url: entry.url, reason: why, retryInMs: wait }, 'peer not answering: skipped for now');
  }
}

function blank(url: string, source: 'static' | 'mdns'): PeerEntry {
  return {
    id: null,
    url,
    site: null,
    version: null,
    source,
    lastSeen: 0,
    failures: 0,
    downUntil: 0,
    quarantinedUntil: 0,
    quarantineReason: null,
    self: false,
    hits: 0,
    served: 0,
  };
}
