// The resolvers of a Cove, built in the test the way src/main.ts builds them (store, catalog,
// origin tier, resolvers, routes), without the HTTP listener: prewarm needs only these.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config.js';
import { Counters } from '../../src/metrics.js';
import type { PrewarmDeps } from '../../src/prewarm/prewarm.js';
import { BlobResolver } from '../../src/resolve/blobs.js';
import { ManifestResolver } from '../../src/resolve/manifests.js';
import { Resolver } from '../../src/resolve/resolver.js';
import { RouteMap } from '../../src/routes.js';
import { BlobStore } from '../../src/store/blobs.js';
import { Catalog } from '../../src/store/catalog.js';
import { RegistryTier } from '../../src/tiers/registry.js';
import { UpstreamClient } from '../../src/upstream/client.js';

export interface PrewarmHarness {
  deps: PrewarmDeps;
  store: BlobStore;
  counters: Counters;
}

export async function startHarness(
  t: { teardown(fn: () => unknown): void },
  upstream: string,
  env: Record<string, string> = {},
): Promise<PrewarmHarness> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-prewarm-'));
  const config = loadConfig({
    env: { COVE_LISTEN: '127.0.0.1:0', COVE_DATA_DIR: dataDir, COVE_UPSTREAM: upstream, COVE_UPSTREAM_TIMEOUT: '2s', COVE_TAG_TTL: '1h', ...env },
  });
  const log = pino({ level: process.env.COVE_TEST_LOG ?? 'silent' });
  const counters = new Counters();
  const store = new BlobStore(config.dataDir);
  await store.open();
  const catalog = await Catalog.open(config.dataDir, store, log);
  const clients = new Map(config.upstreams.map((u) => [u.name, new UpstreamClient(u, { logger: log, userAgent: 'cove-test' })]));
  const resolver = new Resolver([RegistryTier.origin(clients)], log);
  const shutdown = new AbortController();
  const blobs = new BlobResolver({ store, catalog, resolver, counters, log, signal: shutdown.signal });
  const manifests = new ManifestResolver({ store, catalog, resolver, counters, log, tagTtlMs: config.tagTtlMs });
  t.teardown(async () => {
    shutdown.abort();
    await blobs.settled();
    await Promise.all([...clients.values()].map((c) => c.close()));
    await catalog.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  return { deps: { manifests, blobs, routes: new RouteMap(config), log, store }, store, counters };
}
