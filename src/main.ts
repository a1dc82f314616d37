// The composition root: the only place concrete parts are built and wired. Config in, a running
// Cove out: store and index, tiers, resolvers, the HTTP listener; and a graceful stop.
import type { Config } from './config.js';
import { createHandler } from './http/handler.js';
import { listen } from './http/server.js';
import { createLogger, type Logger } from './log.js';
import { Counters } from './metrics.js';
import { BlobResolver } from './resolve/blobs.js';
import { ManifestResolver } from './resolve/manifests.js';
import { Resolver } from './resolve/resolver.js';
import { RouteMap } from './routes.js';
import { BlobStore } from './store/blobs.js';
import { Catalog } from './store/catalog.js';
import { OriginTier } from './tiers/origin.js';
import { UpstreamClient } from './upstream/client.js';
import { VERSION } from './version.js';

/** A running Cove. */
export interface Cove {
  /** Base URL clients use, e.g. http://127.0.0.1:5000. */
  url: string;
  port: number;
  counters: Counters;
  log: Logger;
  /** Graceful stop: stop accepting, let transfers finish within the grace period, close the store. */
  stop(): Promise<void>;
}

export async function startCove(config: Config, options: { log?: Logger } = {}): Promise<Cove> {
  const log = options.log ?? createLogger(config.logLevel);
  const counters = new Counters();
  const store = new BlobStore(config.dataDir);
  const opened = await store.open();
  if (opened.tempFilesRemoved > 0) log.warn({ removed: opened.tempFilesRemoved }, 'removed unfinished temp files left by an earlier run');
  const catalog = await Catalog.open(config.dataDir, store, log);

  const clients = new Map(config.upstreams.map((u) => [u.name, new UpstreamClient(u, { logger: log, userAgent: `cove/${VERSION}`, offline: config.offline })]));
  const resolver = new Resolver([new OriginTier(clients)], log);
  const shutdown = new AbortController();
  const blobs = new BlobResolver({ store, catalog, resolver, counters, log, signal: shutdown.signal });
  const manifests = new ManifestResolver({
    store,
    catalog,
    resolver,
    counters,
    log,
    tagTtlMs: config.tagTtlMs,
    onUpstreamNotFound: config.onUpstreamNotFound,
    staleWhileRevalidate: config.staleWhileRevalidate,
  });
  const started = Date.now();

  const handler = createHandler({
    routes: new RouteMap(config),
    manifests,
    blobs,
    store,
    resolver,
    catalog,
    counters,
    log,
    health: () => ({
      version: VERSION,
      uptimeSeconds: Math.round((Date.now() - started) / 1000),
      activeFills: blobs.activeFills,
      upstreams: Object.fromEntries([...clients.values()].map((c) => [c.name, c.breaker])),
      memory: memoryMiB(),
      ...counters.snapshot(),
    }),
  });
  const listener = await listen(handler, { host: config.listen.host, port: config.listen.port, tls: config.tls });
  const scheme = config.tls ? 'https' : 'http';
  const host = listener.host.includes(':') ? `[${listener.host}]` : listener.host;
  const url = `${scheme}://${host === '0.0.0.0' ? '127.0.0.1' : host}:${listener.port}`;
  log.info({ listen: `${listener.host}:${listener.port}`, tls: Boolean(config.tls), offline: config.offline, upstreams: config.upstreams.map((u) => u.url), dataDir: config.dataDir, version: VERSION }, 'cove listening');

  let stopping: Promise<void> | null = null;
  return {
    url,
    port: listener.port,
    counters,
    log,
    stop() {
      stopping ??= (async () => {
        log.info({ graceMs: config.shutdownGraceMs }, 'stopping');
        await listener.stop(config.shutdownGraceMs);
        shutdown.abort();
        // Aborted fills clean up their temp files; one already committing finishes. Either way
        // nothing may touch the store or the index once stop() returns.
        await blobs.settled();
        await Promise.all([...clients.values()].map((c) => c.close()));
        await catalog.close();
        log.info('stopped');
      })();
      return stopping;
    },
  };
}

/** Process memory in MiB, for /healthz: an edge host has little to spare. */
function memoryMiB(): Record<string, number> {
  const m = process.memoryUsage();
  const mib = (n: number) => Math.round((n / 1048576) * 10) / 10;
  return { rss: mib(m.rss), heapUsed: mib(m.heapUsed), heapTotal: mib(m.heapTotal), external: mib(m.external), arrayBuffers: mib(m.arrayBuffers) };
}
