// The operator's status page: GET / (and /_cove/) is one self-contained HTML page that polls
// GET /_cove/status.json every 5 s. The JSON is built here from the same live sources as /healthz and
// /metrics, plus two small things of its own: a ring of per-minute samples of bytes served and
// fetched by tier (the last 60 minutes), and a count of pulls per repository. Readable by anyone who
// can reach the port, like /metrics: it carries no credentials, no upstream URLs and no peer key.
import type { Counters } from '../metrics.js';
import type { ImageRow } from '../store/inventory.js';
import type { BreakerSnapshot } from '../upstream/breaker.js';

/** Minutes of history the ring keeps. */
export const HISTORY_MINUTES = 60;
/** Repositories whose pulls are counted; past this, new repositories are not counted. */
const MAX_REPOS = 2000;
/** How long one images listing is reused (several open pages poll every 5 s). */
const IMAGES_TTL_MS = 2000;
/** Rows in each images table. */
const TOP = 10;

/** Cache results that were answered from the store, and those that had to go upstream. */
const HIT_RESULTS = ['hit', 'revalidated', 'stale'];
const MISS_RESULTS = ['miss', 'joined', 'vary-miss'];

export interface StatusSources {
  counters: Counters;
  node: { id: string; site: string; version: string };
  started: number;
  /** Breaker snapshot per upstream (origins and parents), by name. */
  upstreams: () => Record<string, BreakerSnapshot>;
  /** Names of the configured origins (the rest of upstreams() are parents). */
  origins: string[];
  cache: () => { bytes: number; limit: number | null; leased: number };
  activeFills: () => number;
  /** The peer table as /_cove/peers shows it, or null when no peers are configured. */
  peers: () => { peers: Array<Record<string, unknown>> } | null;
  images: () => Promise<ImageRow[]>;
}

interface Sample {
  /** Start of the minute this sample closes (ms since epoch). */
  t: number;
  served: Record<string, number>;
  fetched: Record<string, number>;
}

export class Status {
  readonly #src: StatusSources;
  readonly #now: () => number;
  readonly #intervalMs: number;
  /** Cumulative counters at each minute boundary, oldest first. */
  readonly #ring: Sample[] = [];
  readonly #pulls = new Map<string, { upstream: string; repo: string; pulls: number; last: number }>();
  #timer: NodeJS.Timeout | null = null;
  #images: { at: number; rows: Promise<ImageRow[]> } | null = null;

  constructor(src: StatusSources, options: { now?: () => number; intervalMs?: number } = {}) {
    this.#src = src;
    this.#now = options.now ?? Date.now;
    this.#intervalMs = options.intervalMs ?? 60_000;
    this.sample();
  }

  /** Starts the per-minute sampler (unref'd: it never keeps the process alive). */
  start(): void {
    this.#timer ??= setInterval(() => this.sample(), this.#intervalMs).unref();
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
  }

  /** Takes one sample of the cumulative byte counters; the ring keeps HISTORY_MINUTES + 1. */
  sample(): void {
    const c = this.#src.counters;
    this.#ring.push({ t: this.#now(), served: Object.fromEntries(c.bytesServed), fetched: Object.fromEntries(c.bytesFetched) });
    while (this.#ring.length > HISTORY_MINUTES + 1) this.#ring.shift();
  }

  /** Counts one pull of a repository: a manifest request by tag answered with success. */
  recordPull(upstream: string, repo: string): void {
    const key = `${upstream}\n${repo}`;
    const entry = this.#pulls.get(key);
    if (entry) {
      entry.pulls++;
      entry.last = this.#now();
    } else if (this.#pulls.size < MAX_REPOS) {
      this.#pulls.set(key, { upstream, repo, pulls: 1, last: this.#now() });
    }
  }

  /** Per-minute bytes by tier, oldest first; the last entry is the minute in progress. */
  series(): Array<Sample & { partial: boolean }> {
    const c = this.#src.counters;
    const now: Sample = { t: this.#now(), served: Object.fromEntries(c.bytesServed), fetched: Object.fromEntries(c.bytesFetched) };
    const points = [...this.#ring, now];
    const out: Array<Sample & { partial: boolean }> = [];
    for (let i = 1; i < points.length; i++) {
      const a = points[i - 1]!;
      const b = points[i]!;
      out.push({ t: a.t, served: delta(a.served, b.served), fetched: delta(a.fetched, b.fetched), partial: i === points.length - 1 });
    }
    return out.slice(-HISTORY_MINUTES);
  }

  /**
   * The page's data. Without `names` (client auth on, no admin token) no repository name, tag or
   * digest is in it: the images section gives only counts and sizes.
   */
  async json(options: { names?: boolean } = {}): Promise<Record<string, unknown>> {
    const names = options.names ?? true;
    const c = this.#src.counters;
    const requests = Object.fromEntries(c.requests);
    const count = (results: string[]) => results.reduce((n, r) => n + (c.requests.get(r) ?? 0), 0);
    const hits = count(HIT_RESULTS);
    const misses = count(MISS_RESULTS);
    const served = Object.fromEntries(c.bytesServed);
    const fetched = Object.fromEntries(c.bytesFetched);
    const servedTotal = sum(served);
    const fromCache = c.bytesServed.get('local') ?? 0;
    const upstreams = this.#src.upstreams();
    const peers = this.#src.peers();
    const rows = await this.#imageRows();
    const image = (r: ImageRow) => ({ upstream: r.upstream, repo: r.repo, tag: r.tag, digest: r.digest, size: r.size, lastAccess: r.lastAccess, pinned: r.pinned });
    return {
      node: this.#src.node,
      now: this.#now(),
      uptimeSeconds: Math.round((this.#now() - this.#src.started) / 1000),
      requests,
      hitRatio: { hits, misses, ratio: hits + misses > 0 ? hits / (hits + misses) : null, counts: 'hits = hit+revalidated+stale, misses = miss+joined+vary-miss' },
      bytes: {
        served,
        fetched,
        servedTotal,
        fetchedTotal: sum(fetched),
        fromCache,
        fromOrigin: this.#src.origins.reduce((n, o) => n + (c.bytesFetched.get(o) ?? 0), 0),
        // Every byte served from the store is a byte that did not cross the uplink again.
        saved: fromCache,
        savedRatio: servedTotal > 0 ? fromCache / servedTotal : null,
      },
      series: this.series(),
      upstreams: Object.entries(upstreams).map(([name, b]) => ({
        name,
        kind: this.#src.origins.includes(name) ? 'origin' : 'parent',
        state: b.state,
        consecutiveFailures: b.consecutiveFailures,
        opened: b.opened,
        probeAt: b.probeAt,
        retryAfterUntil: b.retryAfterUntil,
        since: b.since,
        staleWhileDown: b.staleWhileDown,
        lastErrorClass: b.lastErrorClass,
        lastErrorAt: b.lastErrorAt,
        lastError: b.lastError === null ? null : redact(b.lastError),
      })),
      peers:
        peers === null
          ? null
          : peers.peers.map((p) => ({
              id: p.id ?? null,
              address: typeof p.url === 'string' ? address(p.url) : null,
              site: p.site ?? null,
              state: p.state ?? null,
              lastSeenAgoS: p.lastSeenAgoS ?? null,
              hits: p.hits ?? 0,
              bytes: p.bytes ?? 0,
              served: p.served ?? 0,
            })),
      cache: { ...this.#src.cache(), activeFills: this.#src.activeFills(), fills: c.fills, evictions: c.evictions, bytesEvicted: c.bytesEvicted },
      images: names
        ? {
            count: rows.length,
            largest: [...rows].sort((a, b) => b.size - a.size).slice(0, TOP).map(image),
            // Pulls counted since start (a manifest request by tag answered 2xx, not from a sibling Cove).
            mostPulled: [...this.#pulls.values()].sort((a, b) => b.pulls - a.pulls || b.last - a.last).slice(0, TOP),
          }
        : { count: rows.length, largest: [], mostPulled: [], hidden: 'repository names need the admin token (COVE_CLIENT_AUTH=passthrough)' },
    };
  }

  #imageRows(): Promise<ImageRow[]> {
    const now = this.#now();
    if (this.#images === null || now - this.#images.at > IMAGES_TTL_MS) {
      const rows = this.#src.images();
      this.#images = { at: now, rows };
      rows.catch(() => {
        if (this.#images?.rows === rows) this.#images = null;
      });
    }
    return this.#images.rows;
  }
}

function delta(a: Record<string, number>, b: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(b)) {
    const d = v - (a[k] ?? 0);
    if (d > 0) out[k] = d;
  }
  return out;
}

function sum(m: Record<string, number>): number {
  return Object.values(m).reduce((n, v) => n + v, 0);
}

/** scheme://host:port of a URL, never its user info, path or query. */
function address(url: string): string | null {
  try {
    const u = new URL(url);
    return `${u.protocol}//${u.host}`;
  } catch {
    return null;
  }
}

/** An error message without URL user info or query strings (tokens travel there), bounded. */
function redact(text: string): string {
  const cleaned = text.replace(/(\w+:\/\/)[^/\s@]*@/g, '$1').replace(/(\w+:\/\/[^\s?]*)\?\S*/g, '$1?…');
  return cleaned.length > 300 ? `${cleaned.slice(0, 300)}…` : cleaned;
}
