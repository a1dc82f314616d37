// The composition root: the only place concrete parts are built and wired. Config in, a running
// Cove out: store and index, the tier chain (LAN peers, parents, origin), resolvers, the HTTP
// listener, peer discovery; and a graceful stop.
import type { LookupFunction } from 'node:net';
import type { Config } from './config.js';
import { ClientAuth } from './client-auth/gate.js';
import { DecisionBook } from './client-auth/decisions.js';
import { OriginCheck } from './client-auth/origin-check.js';
import { RepoScope } from './client-auth/repo-scope.js';
import { TokenSigner } from './client-auth/token.js';
import { AdminGate, certificateNames } from './http/admin-gate.js';
import { openAdminSocket, type AdminSocket } from './http/admin-socket.js';
import { createHandler } from './http/handler.js';
import { createMetrics } from './http/metrics.js';
import { checkReadiness } from './http/readiness.js';
import { listen } from './http/server.js';
import { ConnectionGate } from './http/connection-gate.js';
import { Status } from './http/status.js';
import { listImages } from './store/inventory.js';
import { createLogger, type Logger } from './log.js';
import { Counters } from './metrics.js';
import { BlobResolver } from './resolve/blobs.js';
import { ManifestResolver } from './resolve/manifests.js';
import { RevalidationPace } from './resolve/revalidation-pace.js';
import { Resolver } from './resolve/resolver.js';
import { startMdns, type Mdns } from './discovery/mdns.js';
import { loadNodeId } from './node.js';
import { PeerClient } from './peers/client.js';
import { formatVia } from './peers/protocol.js';
import { PeerTable } from './peers/table.js';
import { PeerTier } from './tiers/peers.js';
import { PrewarmQueue } from './prewarm/queue.js';
import { PrewarmSchedule } from './prewarm/schedule.js';
import type { Tier } from './tiers/tier.js';
import { RouteMap } from './routes.js';
import { BlobStore } from './store/blobs.js';
import { Catalog } from './store/catalog.js';
import { Evictor, cacheCap } from './store/eviction.js';
import { Leases } from './store/leases.js';
import { PinStore } from './store/pins.js';
import { RegistryTier } from './tiers/registry.js';
import { UpstreamClient } from './upstream/client.js';
import { VERSION } from './version.js';

/** A running Cove. */
export interface Cove {
  /** Base URL clients use, e.g. http://127.0.0.1:5000. */
  url: string;
  port: number;
  /** Port of the plain-HTTP listener beside TLS (COVE_LISTEN_HTTP), or null. */
  httpPort: number | null;
  /** Path of the admin socket the `cove` command uses (COVE_ADMIN_SOCKET), or null when off. */
  adminSocket: string | null;
  counters: Counters;
  log: Logger;
  /** Graceful stop: stop accepting, let transfers finish within the grace period, close the store. */
  stop(): Promise<void>;
}

export interface StartOptions {
  log?: Logger;
  /** Free-space floor of /readyz, overriding its defaults (tests; not a setting). */
  readiness?: { minFreeBytes?: number; minFreeRatio?: number };
  /** Name resolution for upstream connections instead of the system's (tests simulate DNS failures; not a setting). */
  upstreamLookup?: LookupFunction;
}

export async function startCove(config: Config, options: StartOptions = {}): Promise<Cove> {
  const log = options.log ?? createLogger(config.logLevel);
  const counters = new Counters();
  const store = new BlobStore(config.dataDir);
  const opened = await store.open();
  if (opened.tempFilesRemoved > 0) log.warn({ removed: opened.tempFilesRemoved }, 'removed unfinished temp files left by an earlier run');
  const catalog = await Catalog.open(config.dataDir, store, log);
  // Unset, the cap is a share of the data directory's file system, worked out now.
  const cacheLimits = { ...config.cache, maxBytes: await cacheCap(config.cache, config.dataDir) };
  if (config.cache.maxBytes === null) {
    if (cacheLimits.maxBytes === null) log.warn('COVE_MAX_CACHE_BYTES=off: the cache has no byte cap and may fill its disk');
    else log.info({ maxBytes: cacheLimits.maxBytes, share: config.cache.maxShare, dataDir: config.dataDir }, 'cache cap: a share of the data directory\'s file system');
  }

  const nodeId = await loadNodeId(config.dataDir, config.node.id);
  const upstreamClient = (u: (typeof config.upstreams)[number]) =>
    new UpstreamClient(u, {
      logger: log,
      userAgent: `cove/${VERSION}`,
      offline: config.offline,
      lookup: options.upstreamLookup,
      silenceMs: config.revalidateDeadlineMs,
      staleCount: () => counters.staleServed,
    });
  const clients = new Map(config.upstreams.map((u) => [u.name, upstreamClient(u)]));
  const parentClients = config.parents.map(upstreamClient);

  // The tier chain, nearest first: LAN peers, parents in the configured order, the origin.
  const tiers: Tier[] = [];
  let peers: { table: PeerTable; client: PeerClient; tier: PeerTier } | null = null;
  if (config.peers.urls.length > 0 || config.peers.mdns) {
    const client = new PeerClient({
      selfId: nodeId,
      key: config.peers.key,
      timeoutMs: config.peers.timeoutMs,
      // An owner answers once its own fetch from above has started.
      fetchTimeoutMs: config.peers.timeoutMs + Math.max(config.upstreams[0]!.timeoutMs, ...config.parents.map((p) => p.timeoutMs)),
      bodyTimeoutMs: config.upstreams[0]!.bodyTimeoutMs,
    });
    const table = new PeerTable({ selfId: nodeId, site: config.node.site, staticUrls: config.peers.urls, client, log, fetchedBytes: (id) => counters.bytesFetched.get(`peer:${id}`) ?? 0, maxDiscovered: config.peers.mdnsMaxPeers });
    // At start-up a pull waits for the static peers' first answers (a probe is three peer timeouts at most).
    peers = { table, client, tier: new PeerTier(table, client, log, { settleMs: 3 * config.peers.timeoutMs }) };
    tiers.push(peers.tier);
  }
  for (const client of parentClients) {
    tiers.push(new RegistryTier({ name: client.name, kind: 'parent', clientFor: () => client, headers: (target) => ({ via: formatVia(target.via ?? [], nodeId) }) }));
  }
  tiers.push(RegistryTier.origin(clients));
  const resolver = new Resolver(tiers, log);
  const shutdown = new AbortController();
  let lastDiskFullAt: number | null = null;
  let stopping: Promise<void> | null = null;
  const leases = new Leases();
  const pins = await PinStore.open(config.dataDir);
  // Fills tell eviction what they stored; eviction asks the fills what is in flight. The callbacks
  // run only once requests arrive, after both exist.
  const blobs = new BlobResolver({
    store,
    catalog,
    resolver,
    counters,
    log,
    signal: shutdown.signal,
    onStored: (n) => evictor.added(n),
    onDiskFull: (_digest, needed) => {
      lastDiskFullAt = Date.now();
      evictor.diskFull(needed);
    },
    admission: {
      max: config.fills.max,
      maxPerClient: config.fills.maxPerClient,
      queueWaitMs: config.fills.queueWaitMs,
      // A sibling's fetch counts against its address only when nobody could forge the header.
      peersSigned: config.peers.key !== null,
    },
    abandonGraceMs: config.fills.abandonGraceMs,
    maxBlobBytes: config.fills.maxBlobBytes,
  });
  const evictor = new Evictor({ store, catalog, pins, leases, filling: () => blobs.activeDigests(), limits: cacheLimits, log, counters });
  await evictor.start();
  const manifests = new ManifestResolver({
    store,
    catalog,
    resolver,
    counters,
    log,
    tagTtlMs: config.tagTtlMs,
    onUpstreamNotFound: config.onUpstreamNotFound,
    staleWhileRevalidate: config.staleWhileRevalidate,
    revalidateDeadlineMs: config.revalidateDeadlineMs,
    // A spread past the TTL would still be spreading when the tags expire again.
    // Spread only where a pull never waits for it: with no deadline, a client would wait its share.
    revalidationPace: new RevalidationPace({
      concurrency: config.revalidateConcurrency,
      spreadMs: config.revalidateDeadlineMs > 0 ? Math.min(config.recoverySpreadMs, config.tagTtlMs) : 0,
    }),
    peerTags: peers ? (target, tag, accept) => peers.tier.tagFromPeers(target, tag, accept) : undefined,
    onStored: (n) => evictor.added(n),
    // Which repository holds what matters only when clients are told apart (client-auth/repo-scope).
    onFetchedFor: config.clientAuth.mode === 'passthrough' ? (target, digest) => catalog.putRepoManifest(target.upstream, target.repo, digest) : undefined,
  });
  const routes = new RouteMap(config);
  const clientAuth = config.clientAuth.mode === 'passthrough' ? await openClientAuth(config, clients, routes, counters, log, nodeId) : null;
  const repoScope = clientAuth ? new RepoScope(catalog, resolver) : null;
  const started = Date.now();
  const upstreams = () => Object.fromEntries([...clients.values(), ...parentClients].map((c) => [c.name, c.breaker]));
  const cache = () => ({ bytes: evictor.bytes, limit: cacheLimits.maxBytes, leased: leases.size });
  const metrics = createMetrics({
    counters,
    upstreams,
    cache,
    activeFills: () => blobs.activeFills,
    peers: () => peers?.table.live().length ?? null,
    peerTable: () => peers?.table.snapshot().peers ?? null,
    dataDir: config.dataDir,
    certificate: config.tls?.cert ?? null,
    info: { version: VERSION, node: nodeId, site: config.node.site },
  });

  const status = new Status({
    counters,
    node: { id: nodeId, site: config.node.site, version: VERSION },
    started,
    upstreams,
    origins: [...clients.keys()],
    cache,
    activeFills: () => blobs.activeFills,
    peers: () => peers?.table.snapshot() ?? null,
    images: () => listImages(catalog, pins),
  });

  // With peers, a site prewarm fills only this node's part of the blobs (prewarm/site.ts).
  const prewarmDeps = { manifests, blobs, routes, log: log.child({ component: 'prewarm' }), store, ...(peers ? { site: peers.table } : {}) };
  const prewarmQueue = new PrewarmQueue(prewarmDeps, { concurrency: config.prewarm.jobs, maxQueued: config.prewarm.queueMax });
  const prewarmList = new PrewarmSchedule(config.prewarm.refs, prewarmQueue, { platforms: config.prewarm.platforms, intervalMs: config.prewarm.intervalMs, log });
  const handlerDeps: Parameters<typeof createHandler>[0] = {
    clientAuth,
    repoScope,
    routes,
    manifests,
    blobs,
    store,
    resolver,
    catalog,
    counters,
    log,
    node: { id: nodeId, site: config.node.site, version: VERSION },
    peers: peers?.table ?? null,
    peerKey: config.peers.key,
    leases,
    admin: {
      routes,
      manifests,
      store,
      catalog,
      pins,
      evictor,
      peers: peers?.table ?? null,
      node: { id: nodeId, site: config.node.site },
      prewarmQueue,
      importLimits: config.import,
      platforms: config.prewarm.platforms,
      site: peers ? { table: peers.table, client: peers.client, log: prewarmDeps.log } : null,
      prewarmCopies: config.prewarm.copies,
      adminToken: config.adminToken,
      gate: new AdminGate({ token: config.adminToken, names: adminNames(config), socketPath: config.adminSocket }),
      log,
      signal: shutdown.signal,
    },
    health: () => ({
      version: VERSION,
      uptimeSeconds: Math.round((Date.now() - started) / 1000),
      activeFills: blobs.activeFills,
      node: nodeId,
      site: config.node.site,
      upstreams: upstreams(),
      peers: peers?.table.live().length ?? null,
      cache: cache(),
      memory: memoryMiB(),
      ...counters.snapshot(),
    }),
    ready: () =>
      checkReadiness({ dataDir: config.dataDir, upstreams, lastDiskFullAt: () => lastDiskFullAt, stopping: () => stopping !== null, ...options.readiness }),
    metrics,
    status,
  };
  const handler = createHandler(handlerDeps);
  // The admin socket first: a path Cove must not take stops start-up before anything listens.
  let adminSocket: AdminSocket | null = null;
  if (config.adminSocket !== null) {
    try {
      adminSocket = await openAdminSocket(config.adminSocket, createHandler(handlerDeps, 'socket'), log);
    } catch (err) {
      await evictor.stop();
      await Promise.all([...clients.values(), ...parentClients].map((c) => c.close()));
      await clientAuth?.close();
      await catalog.close();
      throw err;
    }
  }
  // Both listeners count against one set of connection caps.
  const connectionGate = new ConnectionGate(config.listenLimits);
  const shared = { limits: config.listenLimits, gate: connectionGate, log };
  // A port Cove cannot take ends start-up; the admin socket must not keep the process alive then.
  const listener = await listen(handler, { host: config.listen.host, port: config.listen.port, tls: config.tls, ...shared }).catch(async (err: unknown) => {
    await adminSocket?.stop(0);
    throw err;
  });
  // With TLS on :443, clients that only speak plain HTTP (or an operator's curl) may use :80.
  const plainListener = config.listenHttp
    ? await listen(handler, { host: config.listenHttp.host, port: config.listenHttp.port, tls: null, ...shared }).catch(async (err: unknown) => {
        await Promise.all([listener.stop(0), adminSocket?.stop(0)]);
        throw err;
      })
    : null;
  const scheme: 'http' | 'https' = config.tls ? 'https' : 'http';
  const host = listener.host.includes(':') ? `[${listener.host}]` : listener.host;
  const url = `${scheme}://${host === '0.0.0.0' ? '127.0.0.1' : host}:${listener.port}`;
  log.info(
    {
      listen: `${listener.host}:${listener.port}`,
      listenHttp: plainListener ? `${plainListener.host}:${plainListener.port}` : null,
      adminSocket: adminSocket?.path ?? null,
      adminHttp: config.adminToken !== null,
      tls: Boolean(config.tls),
      offline: config.offline,
      upstreams: config.upstreams.map((u) => u.url),
      parents: config.parents.map((p) => p.url),
      node: nodeId,
      site: config.node.site,
      peers: config.peers.urls.length,
      mdns: config.peers.mdns,
      dataDir: config.dataDir,
      version: VERSION,
    },
    'cove listening',
  );
  prewarmList.start();
  status.start();
  // Discovery runs beside serving: start-up never waits for peers.
  peers?.table.start();
  let mdns: Mdns | null = null;
  const loopbackOnly = /^(127\.|::1$|localhost$)/.test(listener.host);
  if (peers && config.peers.mdns && loopbackOnly) {
    log.warn({ listen: listener.host }, 'COVE_MDNS is on but Cove listens on loopback only, where no sibling can reach it: not advertising');
  }
  if (peers && config.peers.mdns && !loopbackOnly) {
    const table = peers.table;
    mdns = startMdns({
      id: nodeId,
      site: config.node.site,
      port: listener.port,
      scheme,
      version: VERSION,
      interfaces: config.peers.mdnsInterfaces.length > 0 ? config.peers.mdnsInterfaces : undefined,
      log,
      onPeer: (peer) => table.upsertDiscovered(peer),
      onGone: (id) => table.forgetDiscovered(id),
    });
  }

  return {
    url,
    port: listener.port,
    httpPort: plainListener?.port ?? null,
    adminSocket: adminSocket?.path ?? null,
    counters,
    log,
    stop() {
      stopping ??= (async () => {
        log.info({ graceMs: config.shutdownGraceMs }, 'stopping');
        await mdns?.stop();
        status.stop();
        await evictor.stop();
        prewarmQueue.close();
        await prewarmList.stop();
        await peers?.table.stop();
        await Promise.all([listener.stop(config.shutdownGraceMs), plainListener?.stop(config.shutdownGraceMs), adminSocket?.stop(config.shutdownGraceMs)]);
        shutdown.abort();
        // Aborted fills clean up their temp files; one already committing finishes. Either way
        // nothing may touch the store or the index once stop() returns.
        await blobs.settled();
        await Promise.all([...clients.values(), ...parentClients].map((c) => c.close()));
        await peers?.client.close();
        await clientAuth?.close();
        await catalog.close();
        log.info('stopped');
      })();
      return stopping;
    },
  };
}

/** Pull authorization for clients: the token key and decisions in the data directory, one origin judge per upstream. */
async function openClientAuth(config: Config, clients: Map<string, UpstreamClient>, routes: RouteMap, counters: Counters, log: Logger, nodeId: string): Promise<ClientAuth> {
  const signer = await TokenSigner.forDataDir(config.dataDir, `cove:${nodeId}`);
  const book = await DecisionBook.open(config.dataDir, log);
  const checks = new Map([...clients].map(([name, client]) => [name, new OriginCheck(client)]));
  log.info({ ttlMs: config.clientAuth.ttlMs, graceMs: config.clientAuth.graceMs, decisions: book.size }, 'client auth: passthrough (each client pulls what the origin lets it)');
  return new ClientAuth({
    signer,
    book,
    checks,
    defaultUpstream: config.upstreams[0]!.name,
    resolve: (name, ns, fromCove) => routes.resolve(name, ns, fromCove),
    ttlMs: config.clientAuth.ttlMs,
    graceMs: config.clientAuth.graceMs,
    counters,
    log,
  });
}

/**
 * Names admin requests may carry in Host besides loopback, the node's addresses and host name
 * (admin-gate.ts): the TLS certificate's names, the upstream hosts and routed registry hosts
 * (clients reach Cove under those by /etc/hosts), the listen address, and COVE_ADMIN_HOSTS.
 */
function adminNames(config: Config): string[] {
  const hostOf = (url: string) => new URL(url).hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  const names = [
    ...(config.tls ? certificateNames(config.tls.cert) : []),
    ...config.upstreams.map((u) => hostOf(u.url)),
    ...config.routes.map((r) => r.match.replace(/:\d+$/, '')),
    config.listen.host.toLowerCase(),
    ...config.adminHosts,
  ];
  return [...new Set(names.filter((n) => n !== '' && n !== '0.0.0.0' && n !== '::'))];
}

/** Process memory in MiB, for /healthz: an edge host has little to spare. */
function memoryMiB(): Record<string, number> {
  const m = process.memoryUsage();
  const mib = (n: number) => Math.round((n / 1048576) * 10) / 10;
  return { rss: mib(m.rss), heapUsed: mib(m.heapUsed), heapTotal: mib(m.heapTotal), external: mib(m.external), arrayBuffers: mib(m.arrayBuffers) };
}
