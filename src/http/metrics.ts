// GET /metrics: the Prometheus exposition of what /healthz reports. One Registry per Cove (never
// prom-client's global one: tests run several Coves in one process). Every metric reads the live
// Counters or health sources in its collect() callback, so a scrape sees the values of that moment;
// the counters only ever grow, so the *_total series are monotonic for the life of the process.
import { X509Certificate } from 'node:crypto';
import { statfs } from 'node:fs/promises';
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { Counters } from '../metrics.js';
import type { BreakerSnapshot } from '../upstream/breaker.js';

/** The states PeerTable.snapshot() gives an entry other than "self". */
const PEER_STATES = ['live', 'down', 'quarantined', 'unproven', 'unknown', 'other-site'];

/** What the exposition reads at scrape time besides the Counters. */
export interface MetricsSources {
  counters: Counters;
  /** Breaker snapshot per upstream (origins and parents), by name. */
  upstreams: () => Record<string, BreakerSnapshot>;
  cache: () => { bytes: number; limit: number | null; leased: number };
  activeFills: () => number;
  /** Live peers, or null when no peers are configured. */
  peers: () => number | null;
  /** The peer table's entries as PeerTable.snapshot() gives them, or null when no peers are configured. */
  peerTable: () => Array<Record<string, unknown>> | null;
  /** The data directory: its file system's free space is reported. */
  dataDir: string;
  /** The TLS certificate Cove serves (PEM, leaf first), or null without TLS. */
  certificate: string | null;
  /** Constant labels of cove_info. */
  info: { version: string; node: string; site: string };
}

export interface Metrics {
  registry: Registry;
  contentType: string;
  /** The Prometheus text format of every metric, read now. */
  render(): Promise<string>;
}

export function createMetrics(src: MetricsSources): Metrics {
  const registry = new Registry();
  const c = src.counters;
  const registers = [registry];

  /** A counter whose values are the entries of one of the Counters maps. */
  const byLabel = (name: string, help: string, label: string, map: Map<string, number>) =>
    new Counter({
      name,
      help,
      labelNames: [label],
      registers,
      collect() {
        this.reset();
        for (const [key, value] of map) this.inc({ [label]: key }, value);
      },
    });
  /** A counter that is one of the Counters totals. */
  const total = (name: string, help: string, read: () => number) =>
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read());
      },
    });
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read());
      },
    });

  byLabel('cove_requests_total', 'Requests answered, by cache result (hit, miss, joined, stale, revalidated, bypass, error, other).', 'result', c.requests);
  byLabel('cove_served_bytes_total', 'Bytes sent to clients, by the tier that supplied them ("local" for hits).', 'tier', c.bytesServed);
  byLabel('cove_fetched_bytes_total', 'Bytes received from upstream tiers, by tier ("origin", a parent, or "peer:<id>").', 'tier', c.bytesFetched);
  byLabel('cove_fetched_objects_total', 'Blobs and manifests brought into the store, by the tier that supplied them.', 'tier', c.objectsFetched);
  byLabel('cove_peer_requests_total', 'Requests from sibling Coves answered, by mode (local, fetch).', 'mode', c.peerRequests);
  total('cove_fills_total', 'Fills started (one per cold blob, however many clients joined it).', () => c.fills);
  total('cove_fill_resumes_total', 'Fills that resumed after a broken transfer.', () => c.resumes);
  total('cove_digest_mismatches_total', 'Blobs or manifests discarded because their bytes did not match the digest.', () => c.digestMismatches);
  total('cove_stale_served_total', 'Times a tag was served stale because the upstream could not be asked.', () => c.staleServed);
  total('cove_disk_full_total', 'Fills that found the disk full and passed their blob through without storing it.', () => c.diskFull);
  total('cove_fills_cancelled_total', 'Fills cancelled because nobody waited for them any more (their clients left).', () => c.fillsCancelled);
  total('cove_fills_refused_total', 'Requests refused with 429 because the fill caps were reached (COVE_MAX_FILLS, COVE_MAX_FILLS_PER_CLIENT).', () => c.fillsRefused);
  total('cove_evictions_total', 'Blobs and manifests removed by eviction.', () => c.evictions);
  total('cove_evicted_bytes_total', 'Bytes removed by eviction.', () => c.bytesEvicted);
  new Counter({
    name: 'cove_client_auth_decisions_total',
    help: 'Client auth decisions (COVE_CLIENT_AUTH=passthrough), by result (allowed, refused) and reason (origin, cached, grace, no-credentials, refused-by-origin, not-granted, outside-grace, origin-unreachable).',
    labelNames: ['result', 'reason'],
    registers,
    collect() {
      this.reset();
      for (const [key, value] of c.clientAuth) {
        const [result = '', reason = ''] = key.split(':');
        this.inc({ result, reason }, value);
      }
    },
  });
  total('cove_client_auth_cache_hits_total', 'Client auth decisions answered from the decision book within COVE_CLIENT_AUTH_TTL.', () => c.clientAuthCacheHits);

  /** A gauge per upstream; an upstream whose value is null (not known yet) has no sample. */
  const upstreamGauge = (name: string, help: string, read: (b: BreakerSnapshot) => number | null) =>
    new Gauge({
      name,
      help,
      labelNames: ['upstream'],
      registers,
      collect() {
        this.reset();
        for (const [upstream, breaker] of Object.entries(src.upstreams())) {
          const value = read(breaker);
          if (value !== null) this.set({ upstream }, value);
        }
      },
    });
  const seconds = (ms: number | null) => (ms === null ? null : ms / 1000);
  upstreamGauge('cove_upstream_breaker_open', 'Circuit breaker of each upstream: 1 open (marked down), 0 closed.', (b) => (b.state === 'open' ? 1 : 0));
  upstreamGauge('cove_upstream_reachable', 'Whether each upstream is reachable: 1 yes, 0 marked down (its breaker is open).', (b) => (b.state === 'open' ? 0 : 1));
  upstreamGauge('cove_upstream_stale_while_down', 'Stale answers given while each upstream was marked down: this outage so far, else the last one.', (b) => b.staleWhileDown);
  upstreamGauge('cove_upstream_state_since_seconds', 'Unix time since when each upstream has been marked down, or reachable again; absent while it was never marked down.', (b) => seconds(b.since));
  upstreamGauge('cove_upstream_last_error_timestamp_seconds', 'Unix time of the last failure of each upstream (unreachable, or an answer Cove could not use).', (b) => seconds(b.lastErrorAt));
  new Gauge({
    name: 'cove_upstream_last_error',
    help: 'The class of the last failure of each upstream (timeout, refused, reset, dns, tls, http-5xx, rate-limited, auth, other): 1 for that class.',
    labelNames: ['upstream', 'class'],
    registers,
    collect() {
      this.reset();
      for (const [upstream, breaker] of Object.entries(src.upstreams())) {
        if (breaker.lastErrorClass !== null) this.set({ upstream, class: breaker.lastErrorClass }, 1);
      }
    },
  });
  upstreamGauge('cove_upstream_consecutive_failures', 'Consecutive failures to reach each upstream.', (b) => b.consecutiveFailures);
  new Counter({
    name: 'cove_upstream_breaker_opened_total',
    help: 'Times each upstream breaker opened since start.',
    labelNames: ['upstream'],
    registers,
    collect() {
      this.reset();
      for (const [upstream, breaker] of Object.entries(src.upstreams())) this.inc({ upstream }, breaker.opened);
    },
  });

  gauge('cove_cache_bytes', 'Bytes of blobs and manifests in the store.', () => src.cache().bytes);
  gauge('cove_cache_limit_bytes', 'Configured cap of the store (COVE_MAX_CACHE_BYTES); 0 when there is none.', () => src.cache().limit ?? 0);
  gauge('cove_cache_leased_blobs', 'Blobs held by a response in progress (not evictable).', () => src.cache().leased);
  gauge('cove_active_fills', 'Fills running now.', src.activeFills);
  gauge('cove_peers_live', 'Live sibling Coves (0 when no peers are configured).', () => src.peers() ?? 0);
  new Gauge({
    name: 'cove_peers',
    help: `Entries of the peer table by state (${PEER_STATES.join(', ')}); no samples when no peers are configured.`,
    labelNames: ['state'],
    registers,
    collect() {
      this.reset();
      const entries = src.peerTable();
      if (entries === null) return;
      for (const state of PEER_STATES) this.set({ state }, entries.filter((e) => e.state === state).length);
    },
  });
  // Labelled by the directory, so a failed statfs leaves no sample rather than a false 0 bytes free.
  const dataDirGauge = (name: string, help: string, read: (fs: { bavail: number; blocks: number; bsize: number }) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['path'],
      registers,
      async collect() {
        this.reset();
        const fs = await statfs(src.dataDir).catch(() => null);
        if (fs !== null) this.set({ path: src.dataDir }, read(fs));
      },
    });
  dataDirGauge('cove_data_dir_free_bytes', "Bytes free for Cove on the data directory's file system (what /readyz checks).", (fs) => fs.bavail * fs.bsize);
  dataDirGauge('cove_data_dir_size_bytes', "Size of the data directory's file system in bytes.", (fs) => fs.blocks * fs.bsize);
  // Registered only with TLS: an unlabelled gauge without a value would read 0, an expiry in 1970.
  const notAfter = src.certificate === null ? null : certificateNotAfter(src.certificate);
  if (notAfter !== null) {
    new Gauge({
      name: 'cove_tls_certificate_expiry_timestamp_seconds',
      help: 'Unix time when the TLS certificate Cove serves (COVE_TLS_CERT, its first certificate) expires: its notAfter.',
      registers,
    }).set(notAfter / 1000);
  }
  new Gauge({ name: 'cove_info', help: 'Constant 1, labelled with the version, node id and site.', labelNames: ['version', 'node', 'site'], registers }).set(src.info, 1);

  // process_* and nodejs_* (memory, CPU, event loop, GC), registered on this registry only.
  collectDefaultMetrics({ register: registry });

  return { registry, contentType: registry.contentType, render: () => registry.metrics() };
}

/** The notAfter of the first certificate in `pem` (ms since epoch), or null when it does not parse. */
function certificateNotAfter(pem: string): number | null {
  try {
    const when = Date.parse(new X509Certificate(pem).validTo);
    return Number.isNaN(when) ? null : when;
  } catch {
    return null;
  }
}
