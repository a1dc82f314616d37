// The peer table: the sibling Coves of this site that this node may ask, from the static
// COVE_PEERS list (the same list on every node, so a node finds and skips itself by node id)
// and from mDNS. It tracks which peers answer (a failing peer is left alone for a while), which
// served wrong bytes (quarantined and logged), what each one sent, and which owns a digest.
//
// Ownership is ranked over the site's membership — every peer admitted once, whether it answered
// its last probe or not — so that a late answer under load or a node that booted a second later
// does not give two nodes two different owners (and the origin two requests). Liveness only
// decides whom to skip on the way down the ranking: a member whose connection was refused (or
// never opened) is passed over until it answers again; one that merely answered late is still
// asked, and each asker moves on only when its own request to it fails.
//
// A peer is used only once admitted: it answered GET /_cove/node with the id it is known by and,
// with a peer key, proved it holds the key by answering this node's fresh challenge. mDNS is one
// unauthenticated datagram, so discovered peers are held to more: at most `maxDiscovered` of them
// (static ones are always kept), one per address, only at addresses on this node's own subnets,
// and an id keeps the URL it was first found at until that URL stops answering.
import type { Logger } from '../log.js';
import { discoveredAddressRefusal, hostAddress, localNets, type LocalNet } from './address.js';
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
/** How often an admitted peer is asked who it is again; a peer not (yet) admitted, every PROBE_TICK_MS. */
const PROBE_INTERVAL_MS = 15_000;
const PROBE_TICK_MS = 1_000;
/** Discovered peers kept at most (static COVE_PEERS entries are not counted and always kept). */
export const MAX_DISCOVERED_PEERS = 32;
/** A discovered URL that failed this many times in a row no longer holds its id or address. */
const RELEASE_AFTER_FAILURES = 2;
/** A discovered peer never admitted may give its place to a new announcement after this long. */
const PENDING_MIN_MS = 5_000;
/** An entry is probed on hearsay at most this often (see heard()): a flood of hellos is not a flood of probes. */
const HEARD_PROBE_MIN_MS = 20;
/** Each kind of ignored announcement is logged as a warning at most this often. */
const IGNORED_LOG_MS = 60_000;

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
  /**
   * The last failure was a connection that could not be made (refused, unreachable, no answer
   * to the connect): nobody listens there now, so it is not asked to fetch as an owner until
   * downUntil. A late answer or a broken transfer leaves this false.
   */
  unreachable: boolean;
  /** One probe of this entry has finished (answered or failed): the first round of probes is done. */
  probed: boolean;
  /** When heard() last probed it (ms since epoch). */
  heardAt: number;
  /** heard() came while a probe was running: if that one fails, probe once more at once. */
  probeAgain: boolean;
  quarantinedUntil: number;
  quarantineReason: string | null;
  /** True for a static entry that turned out to be this node. */
  self: boolean;
  /** Answered GET /_cove/node as `id` (and, with a peer key, proved it holds the key): may be asked. */
  admitted: boolean;
  /** Why the last admission probe failed, for the table's readers. */
  refusal: string | null;
  /** A probe of this entry is running. */
  probing: boolean;
  /** When its next probe is due (ms since epoch). */
  nextProbeAt: number;
  /** When the entry was added (ms since epoch). */
  addedAt: number;
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
  /** Discovered peers kept at most (default MAX_DISCOVERED_PEERS). */
  maxDiscovered?: number;
  /** This host's subnets, where discovered peers must be (default: from os.networkInterfaces()). */
  localNets?: () => LocalNet[];
  /** Accept discovered peers on loopback: only when this node itself is on loopback only. */
  loopbackOk?: boolean;
  now?: () => number;
}

export class PeerTable {
  readonly selfId: string;
  readonly site: string;
  /** Keyed by URL: a static peer is known by its URL before it tells its id. */
  readonly #byUrl = new Map<string, PeerEntry>();
  readonly #o: PeerTableOptions;
  readonly #now: () => number;
  readonly #maxDiscovered: number;
  readonly #probes = new Set<Promise<void>>();
  #timer: NodeJS.Timeout | null = null;
  #stopped = false;
  /**
   * Ids that said goodbye lately, with the URL they had: a goodbye is one unauthenticated datagram
   * too, so for DISCOVERED_TTL_MS the id may come back at that URL only. Bounded (oldest dropped).
   */
  readonly #departed = new Map<string, { url: string; until: number }>();
  /** Per message: when it was last logged as a warning, and how many were ignored since. */
  readonly #ignoredLog = new Map<string, { at: number; since: number }>();
  /** Who waits for the first round of probes of the static peers (see settled()). */
  #settleWaiters: Array<() => void> = [];
  /** A wait for the first round ran out: nobody waits for it any more. */
  #waitedOut = false;

  constructor(options: PeerTableOptions) {
    this.#o = options;
    this.selfId = options.selfId;
    this.site = options.site;
    this.#now = options.now ?? Date.now;
    this.#maxDiscovered = options.maxDiscovered ?? MAX_DISCOVERED_PEERS;
    for (const url of options.staticUrls) this.#byUrl.set(url, blank(url, 'static', 0));
  }

  /** True when the site has a peer key: peers are admitted by challenge, and may be asked for tags. */
  get keyed(): boolean {
    return this.#o.client.keyed;
  }

  /** Starts asking peers who they are, now and on a tick; never waits for them. */
  start(): void {
    if (this.#timer !== null || this.#stopped) return;
    const tick = () => {
      if (this.#stopped) return;
      this.#probeDue();
      this.#timer = setTimeout(tick, PROBE_TICK_MS);
      this.#timer.unref();
    };
    tick();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    await Promise.all([...this.#probes]);
  }

  /** Asks every peer (static and discovered) who it is now, and waits for the answers. */
  async probe(): Promise<void> {
    for (const entry of [...this.#byUrl.values()]) if (!entry.self) void this.#probeOne(entry);
    // Probes already running (a new announcement's) count too: the caller wants every answer in.
    await Promise.all([...this.#probes]);
  }

  /**
   * A peer announced by discovery; refreshes its expiry. Self, other sites, addresses off this
   * node's subnets, an id already found at another URL that still answers, an address another
   * discovered id holds, and announcements past the cap are ignored. A new entry is probed at once
   * and used only once admitted.
   */
  upsertDiscovered(info: PeerInfo): void {
    if (this.#stopped || info.id === this.selfId || info.site !== this.site || !NODE_ID_PATTERN.test(info.id)) return;
    const address = hostAddress(info.url);
    const refusal = address === null ? 'not an IP address' : discoveredAddressRefusal(address, (this.#o.localNets ?? localNets)(), this.#o.loopbackOk ?? false);
    if (refusal !== null) {
      this.#ignored({ peer: info.id, url: info.url, reason: refusal }, 'announced peer ignored: its address is not acceptable');
      return;
    }
    const now = this.#now();
    const departed = this.#departed.get(info.id);
    if (departed && departed.until > now && departed.url !== info.url) {
      this.#ignored({ peer: info.id, url: info.url, known: departed.url }, 'announcement moving a peer that just said goodbye to another URL ignored');
      return;
    }
    const known = this.#entryById(info.id);
    if (known && known.source === 'static') return; // the operator's URL for it wins
    if (known && known.url === info.url) {
      known.lastSeen = now;
      known.version = info.version ?? known.version;
      return;
    }
    if (known) {
      if (!this.#released(known, now)) {
        this.#ignored({ peer: info.id, url: info.url, known: known.url }, 'announcement moving a known peer to another URL ignored: its first URL still answers');
        return;
      }
      this.#byUrl.delete(known.url);
      this.#o.log.warn({ peer: info.id, from: known.url, to: info.url }, 'peer moved: its old URL stopped answering');
    }
    const atUrl = this.#byUrl.get(info.url);
    if (atUrl) {
      if (atUrl.source === 'static' || !this.#released(atUrl, now)) {
        this.#ignored({ peer: info.id, url: info.url, holder: atUrl.id }, 'announcement of another id at a known URL ignored');
        return;
      }
      this.#byUrl.delete(info.url);
    }
    const sameHost = [...this.#byUrl.values()].find((e) => e.source === 'mdns' && hostAddress(e.url) === address);
    if (sameHost) {
      if (!this.#released(sameHost, now)) {
        this.#ignored({ peer: info.id, url: info.url, holder: sameHost.id }, 'announcement ignored: another discovered peer holds that address');
        return;
      }
      this.#byUrl.delete(sameHost.url);
    }
    const discovered = [...this.#byUrl.values()].filter((e) => e.source === 'mdns');
    if (discovered.length >= this.#maxDiscovered) {
      // Only a place held by an announcement that never proved itself, and long enough to have
      // had its chance, is given up; admitted peers are never pushed out by announcements.
      const spare = discovered
        .filter((e) => !e.admitted && !e.probing && e.failures > 0 && now - e.addedAt >= PENDING_MIN_MS)
        .sort((a, b) => a.addedAt - b.addedAt)[0];
      if (!spare) {
        this.#ignored({ peer: info.id, url: info.url, max: this.#maxDiscovered }, 'peer table full: announcement ignored');
        return;
      }
      this.#byUrl.delete(spare.url);
    }
    const entry = blank(info.url, 'mdns', now);
    entry.id = info.id;
    entry.site = info.site;
    entry.version = info.version ?? null;
    entry.lastSeen = now;
    this.#byUrl.set(info.url, entry);
    this.#o.log.info({ peer: info.id, url: info.url }, 'peer discovered; asking it who it is');
    void this.#probeOne(entry);
  }

  /**
   * A discovered peer said goodbye: drop it (a static peer stays; its probe will tell). Its id may
   * come back only at the same URL for a while, so a forged goodbye cannot hand the id to another.
   */
  forgetDiscovered(id: string): void {
    const entry = this.#entryById(id);
    if (!entry || entry.source !== 'mdns') return;
    this.#byUrl.delete(entry.url);
    const now = this.#now();
    for (const [gone, d] of this.#departed) if (d.until <= now) this.#departed.delete(gone);
    this.#departed.delete(id);
    this.#departed.set(id, { url: entry.url, until: now + DISCOVERED_TTL_MS });
    // Only ids that held a place can be here, but places are reused: keep the newest.
    while (this.#departed.size > 2 * this.#maxDiscovered) this.#departed.delete(this.#departed.keys().next().value!);
    this.#o.log.info({ peer: id, url: entry.url }, 'peer left (mDNS goodbye)');
  }

  /**
   * The site's other members: admitted peers of this site, answering lately or not (a discovered
   * peer not announced for DISCOVERED_TTL_MS leaves the table). Owners are ranked over these.
   */
  members(): Array<PeerEntry & { id: string }> {
    const now = this.#now();
    const out: Array<PeerEntry & { id: string }> = [];
    for (const entry of [...this.#byUrl.values()]) {
      if (entry.source === 'mdns' && now - entry.lastSeen > DISCOVERED_TTL_MS) {
        this.#byUrl.delete(entry.url);
        this.#o.log.info({ peer: entry.id, url: entry.url }, 'peer expired: not announced lately');
        continue;
      }
      if (entry.id === null || entry.self || !entry.admitted || entry.site !== this.site) continue;
      out.push(entry as PeerEntry & { id: string });
    }
    return out;
  }

  /** Members that may be asked now: not failing lately, not quarantined. */
  live(): Array<PeerEntry & { id: string }> {
    const now = this.#now();
    return this.members().filter((entry) => entry.downUntil <= now && entry.quarantinedUntil <= now);
  }

  /** The site's members (this node included) ranked as owners of a digest, best first. */
  owners(digest: string): string[] {
    return rankOwners([this.selfId, ...this.members().map((p) => p.id)], digest);
  }

  /**
   * The member `id` when it may be asked to fetch for the site now: not quarantined, and not
   * known to be unreachable (a refused connection). A member that answered a probe late is still
   * asked: only its answer to this request may send the asker to the next owner.
   */
  askableOwner(id: string): (PeerEntry & { id: string }) | null {
    const now = this.#now();
    const entry = this.members().find((p) => p.id === id);
    if (!entry || entry.quarantinedUntil > now || (entry.unreachable && entry.downUntil > now)) return null;
    return entry;
  }

  /**
   * Resolves once every static peer has been asked who it is at least once (answered or failed),
   * or after `maxWaitMs`: owners picked before that would be picked from a partial membership.
   */
  settled(maxWaitMs: number): Promise<void> {
    if (this.#waitedOut || this.#firstRoundDone()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        // Waited once for peers that never answered: later pulls do not wait for them again.
        this.#waitedOut = true;
        done();
      }, maxWaitMs);
      timer.unref();
      function done(): void {
        clearTimeout(timer);
        resolve();
      }
      this.#settleWaiters.push(done);
    });
  }

  /**
   * A node of this site asked this node something (a probe, a peer request): it is up. Entries
   * that do not count it as a live member yet — a static URL never answered, that id marked down —
   * are probed now rather than on the next tick, so a node that just booted is a member everywhere
   * within moments and every node ranks owners over the same membership.
   */
  heard(id: string): void {
    if (this.#stopped || id === this.selfId || !NODE_ID_PATTERN.test(id)) return;
    const now = this.#now();
    const known = this.#entryById(id);
    for (const entry of [...this.#byUrl.values()]) {
      if (entry.self) continue;
      if (known) {
        // That member: probed again when it is not counted as up.
        if (entry !== known || (entry.admitted && entry.failures === 0)) continue;
      } else if (entry.source !== 'static' || (entry.id !== null && entry.admitted)) {
        // An id not in the table: one of the static URLs not yet heard from may be it.
        continue;
      }
      if (entry.probing) {
        // A probe running now may have been refused just before the node started listening.
        entry.probeAgain = true;
        continue;
      }
      if (now - entry.heardAt < HEARD_PROBE_MIN_MS) continue;
      entry.heardAt = now;
      void this.#probeOne(entry);
    }
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
    entry.unreachable = false;
  }

  /**
   * The peer could not be reached or broke a transfer: skip it for a while. `unreachable`: no
   * connection could be made at all (see PeerEntry.unreachable).
   */
  markDown(id: string, why: string, unreachable = false): void {
    const entry = this.#entryById(id);
    if (entry) this.#fail(entry, why, unreachable);
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
        state: e.self
          ? 'self'
          : e.quarantinedUntil > now
            ? 'quarantined'
            : e.id === null
              ? 'unknown'
              : e.site !== this.site
                ? 'other-site'
                : !e.admitted
                  ? 'unproven'
                  : live.has(e.url)
                    ? 'live'
                    : 'down',
        admitted: e.admitted,
        refusal: e.admitted ? null : e.refusal,
        lastSeenAgoS: e.lastSeen === 0 ? null : Math.round((now - e.lastSeen) / 1000),
        failures: e.failures,
        unreachable: e.unreachable,
        quarantineReason: e.quarantinedUntil > now ? e.quarantineReason : null,
        hits: e.hits,
        bytes: e.id !== null ? (this.#o.fetchedBytes?.(e.id) ?? 0) : 0,
        served: e.served,
      })),
    };
  }

  /** Starts the probes that are due: new and failing peers every tick, admitted ones every PROBE_INTERVAL_MS. */
  #probeDue(): void {
    const now = this.#now();
    for (const entry of [...this.#byUrl.values()]) {
      if (!entry.self && !entry.probing && now >= entry.nextProbeAt) void this.#probeOne(entry);
    }
  }

  /** Asks one peer who it is (with a challenge when keyed) and admits, refuses or drops it. */
  #probeOne(entry: PeerEntry): Promise<void> {
    if (entry.probing || entry.self || this.#stopped) return Promise.resolve();
    entry.probing = true;
    const run = (async () => {
      try {
        const info = await this.#o.client.nodeInfo(entry.url);
        if (this.#byUrl.get(entry.url) !== entry) return; // dropped while asked
        if (entry.source === 'mdns' && (info.id !== entry.id || info.site !== entry.site)) {
          // The announcement named someone the URL is not: a stale record, or a lie.
          this.#byUrl.delete(entry.url);
          this.#o.log.warn({ peer: entry.id, url: entry.url, answered: info.id, site: info.site }, 'discovered peer answered as another node: dropped');
          return;
        }
        this.#learn(entry, info.id, info.site, info.version);
        const now = this.#now();
        entry.nextProbeAt = now + PROBE_INTERVAL_MS;
        if (entry.self || info.site !== this.site) {
          entry.admitted = false;
          return;
        }
        if (this.keyed && !info.proven) {
          entry.admitted = false;
          entry.refusal = 'did not prove it holds COVE_PEER_KEY (another key, or a Cove without one): not used';
          entry.nextProbeAt = now + PROBE_TICK_MS;
          this.#fail(entry, entry.refusal);
          return;
        }
        if (!entry.admitted) this.#o.log.info({ peer: info.id, url: entry.url, proven: info.proven }, 'peer admitted');
        entry.admitted = true;
        entry.refusal = null;
        entry.lastSeen = now;
        if (entry.failures > 0) this.#o.log.info({ peer: info.id }, 'peer answers again');
        entry.failures = 0;
        entry.downUntil = 0;
        entry.unreachable = false;
      } catch (err) {
        entry.refusal = `probe failed: ${(err as Error).message}`;
        entry.nextProbeAt = this.#now() + PROBE_TICK_MS;
        this.#fail(entry, entry.refusal, isUnreachable(err));
      } finally {
        entry.probing = false;
        entry.probed = true;
        const again = entry.probeAgain && (!entry.admitted || entry.failures > 0) && !this.#stopped && this.#byUrl.get(entry.url) === entry;
        entry.probeAgain = false;
        if (again) void this.#probeOne(entry);
        if (this.#settleWaiters.length > 0 && this.#firstRoundDone()) {
          const waiters = this.#settleWaiters;
          this.#settleWaiters = [];
          for (const wake of waiters) wake();
        }
      }
    })();
    this.#probes.add(run);
    void run.finally(() => this.#probes.delete(run));
    return run;
  }

  /** Whether a discovered entry stopped answering, so its id and address may go to someone else. */
  #released(entry: PeerEntry, now: number): boolean {
    return entry.failures >= RELEASE_AFTER_FAILURES || now - entry.lastSeen > DISCOVERED_TTL_MS;
  }

  /** Logs an ignored announcement: each at debug, and a warning per kind at most once per IGNORED_LOG_MS. */
  #ignored(fields: Record<string, unknown>, msg: string): void {
    this.#o.log.debug(fields, msg);
    const now = this.#now();
    const seen = this.#ignoredLog.get(msg) ?? { at: -Infinity, since: 0 };
    seen.since++;
    this.#ignoredLog.set(msg, seen);
    if (now - seen.at < IGNORED_LOG_MS) return;
    this.#o.log.warn({ ...fields, ignored: seen.since }, msg);
    seen.at = now;
    seen.since = 0;
  }

  #entryById(id: string): PeerEntry | undefined {
    for (const entry of this.#byUrl.values()) if (entry.id === id) return entry;
    return undefined;
  }

  #learn(entry: PeerEntry, id: string, site: string, version: string | null): void {
    const first = entry.id === null;
    if (entry.source === 'static') {
      // The operator's URL for a node wins over whatever discovery found for the same id.
      for (const other of [...this.#byUrl.values()]) if (other.source === 'mdns' && other.id === id) this.#byUrl.delete(other.url);
    }
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

  /** Every static entry has been probed once (or turned out to be this node). */
  #firstRoundDone(): boolean {
    for (const entry of this.#byUrl.values()) if (entry.source === 'static' && !entry.self && !entry.probed) return false;
    return true;
  }

  #fail(entry: PeerEntry, why: string, unreachable = false): void {
    entry.unreachable = unreachable;
    entry.failures++;
    const wait = Math.min(DOWN_MAX_MS, DOWN_BASE_MS * 2 ** (entry.failures - 1));
    entry.downUntil = this.#now() + wait;
    if (entry.failures === 1) this.#o.log.warn({ peer: entry.id, url: entry.url, reason: why, retryInMs: wait }, 'peer not answering: skipped for now');
  }
}

/** Connection errors that mean nobody listens at the peer's address now (not a slow answer). */
const UNREACHABLE_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'EADDRNOTAVAIL', 'UND_ERR_CONNECT_TIMEOUT']);

/** True when `err` (or its cause) says the connection could not be made at all. */
export function isUnreachable(err: unknown): boolean {
  for (let e = err as { code?: unknown; cause?: unknown } | null | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && UNREACHABLE_CODES.has(e.code)) return true;
    // An AggregateError (every address of a name refused) carries its causes in `errors`.
    const many = (e as { errors?: unknown }).errors;
    if (Array.isArray(many) && many.length > 0 && many.every((x) => isUnreachable(x))) return true;
  }
  return false;
}

function blank(url: string, source: 'static' | 'mdns', now: number): PeerEntry {
  return {
    admitted: false,
    refusal: null,
    probing: false,
    nextProbeAt: 0,
    addedAt: now,
    id: null,
    url,
    site: null,
    version: null,
    source,
    lastSeen: 0,
    failures: 0,
    downUntil: 0,
    unreachable: false,
    probed: false,
    heardAt: 0,
    probeAgain: false,
    quarantinedUntil: 0,
    quarantineReason: null,
    self: false,
    hits: 0,
    served: 0,
  };
}
