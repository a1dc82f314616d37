// The request entry point: route, dispatch to the endpoint's handler, answer errors as OCI JSON,
// and write one access log line per request when the response ends.
import { OciError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Counters } from '../metrics.js';
import type { BlobResolver } from '../resolve/blobs.js';
import type { ManifestResolver } from '../resolve/manifests.js';
import type { Resolver } from '../resolve/resolver.js';
import type { RouteMap } from '../routes.js';
import type { BlobStore } from '../store/blobs.js';
import type { PeerTable } from '../peers/table.js';
import type { Catalog } from '../store/catalog.js';
import type { Evictor } from '../store/eviction.js';
import { listImages } from '../store/inventory.js';
import type { Leases } from '../store/leases.js';
import type { PinStore } from '../store/pins.js';
import { handleBlob } from './blobs.js';
import { handleManifest } from './manifests.js';
import { handlePassThrough } from './passthrough.js';
import { originOf } from './peering.js';
import { API_HEADERS, sendError, sendJson, type Req, type RequestFacts, type Res } from './respond.js';
import { route } from './router.js';

export interface HandlerDeps {
  routes: RouteMap;
  manifests: ManifestResolver;
  blobs: BlobResolver;
  store: BlobStore;
  resolver: Resolver;
  catalog: Catalog;
  counters: Counters;
  log: Logger;
  /** This node as its siblings know it (GET /_cove/node). */
  node: { id: string; site: string; version: string };
  /** Sibling Coves, or null when none are configured or discovered. */
  peers: PeerTable | null;
  /** The site's peer key: peer requests must be signed with it when set. */
  peerKey: string | null;
  leases: Leases;
  pins: PinStore;
  evictor: Evictor;
  /** What /healthz reports besides status. */
  health: () => Record<string, unknown>;
}

/** Builds the request listener for the HTTP (or HTTP/2) server. */
export function createHandler(deps: HandlerDeps): (req: Req, res: Res) => void {
  const onServed = (tier: string, n: number) => deps.counters.add(deps.counters.bytesServed, tier, n);
  return (req, res) => {
    const started = process.hrtime.bigint();
    const facts: RequestFacts = { bytes: 0 };
    res.on('close', () => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      deps.counters.add(deps.counters.requests, facts.error ? 'error' : (facts.cache ?? 'other'));
      deps.log.info(
        {
          method: req.method,
          path: req.url,
          status: res.statusCode,
          bytes: facts.bytes,
          ms: Math.round(ms * 10) / 10,
          cache: facts.cache,
          tier: facts.tier,
          digest: facts.digest,
          upstream: facts.upstream,
          repo: facts.repo,
          peer: facts.peer,
          error: facts.error,
          complete: res.writableFinished,
          ua: req.headers['user-agent'],
        },
        'request',
      );
    });
    dispatch(deps, req, res, facts, onServed).catch((err: unknown) => {
      if (!(err instanceof Error && 'status' in err)) deps.log.debug({ err }, 'request failed');
      sendError(req, res, facts, err);
    });
  };
}

async function dispatch(deps: HandlerDeps, req: Req, res: Res, facts: RequestFacts, onServed: (tier: string, n: number) => void): Promise<void> {
  const head = req.method === 'HEAD';
  const { endpoint, ns } = route(req.method ?? 'GET', req.url ?? '/');
  switch (endpoint.kind) {
    case 'health':
      facts.bytes = sendJson(res, 200, { status: 'ok', ...deps.health() }, {}, head);
      return;
    case 'base':
      facts.bytes = sendJson(res, 200, {}, API_HEADERS, head);
      return;
    case 'node':
      facts.bytes = sendJson(res, 200, deps.node, {}, head);
      return;
    case 'peers':
      requireLoopback(req);
      facts.bytes = sendJson(res, 200, deps.peers?.snapshot() ?? { self: deps.node.id, site: deps.node.site, peers: [] }, {}, head);
      return;
    case 'gc': {
      requireLoopback(req);
      const report = await deps.evictor.run({ dryRun: endpoint.dryRun });
      facts.bytes = sendJson(res, 200, report, {}, false);
      return;
    }
    case 'pin': {
      requireLoopback(req);
      const target = deps.routes.resolve(endpoint.name, ns);
      const changed = endpoint.pin
        ? await deps.pins.add(target.upstream, target.repo, endpoint.reference)
        : await deps.pins.remove(target.upstream, target.repo, endpoint.reference);
      deps.log.info({ repo: target.repo, reference: endpoint.reference, pinned: endpoint.pin, changed }, endpoint.pin ? 'image pinned' : 'image unpinned');
      facts.bytes = sendJson(res, 200, { upstream: target.upstream, repo: target.repo, reference: endpoint.reference, pinned: endpoint.pin, changed }, {}, false);
      return;
    }
    case 'images':
      requireLoopback(req);
      facts.bytes = sendJson(res, 200, { bytes: deps.evictor.bytes, limit: deps.evictor.limits.maxBytes, images: await listImages(deps.catalog, deps.pins) }, {}, head);
      return;
    case 'invalidate': {
      requireLoopback(req);
      const target = deps.routes.resolve(endpoint.name, ns);
      const invalidated = await deps.manifests.invalidate(target, endpoint.tag);
      deps.log.info({ repo: target.repo, tag: endpoint.tag, invalidated }, 'tags invalidated: the next pull revalidates');
      facts.bytes = sendJson(res, 200, { upstream: target.upstream, repo: target.repo, tag: endpoint.tag, invalidated }, {}, false);
      return;
    }
  }
  const from = originOf(req, deps.node.id, deps.peerKey);
  const target = { ...deps.routes.resolve(endpoint.name, ns, from.fromCove), reach: from.reach, via: from.via };
  if (from.peer !== null) {
    facts.peer = from.peer;
    deps.peers?.recordServed(from.peer);
    deps.counters.add(deps.counters.peerRequests, from.reach === 'local' ? 'local' : 'fetch');
  }
  facts.upstream = target.upstream;
  facts.repo = target.repo;
  facts.ns = target.ns;
  if (target.ns) res.setHeader('oci-namespace', target.ns);
  switch (endpoint.kind) {
    case 'manifest':
      return handleManifest(deps.manifests, req, res, facts, target, endpoint);
    case 'blob':
      return handleBlob({ blobs: deps.blobs, store: deps.store, leases: deps.leases, onServed }, req, res, facts, target, endpoint.digest);
    case 'tags':
    case 'referrers':
      return handlePassThrough(deps, req, res, facts, target, endpoint);
  }
}

function requireLoopback(req: Req): void {
  if (!isLoopback(req.socket.remoteAddress)) throw new OciError('DENIED', 'admin endpoints answer only clients on this host (loopback)');
}

function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  return address === '::1' || address.startsWith('127.') || address.startsWith('::ffff:127.');
}
