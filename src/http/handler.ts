// The request entry point: route, dispatch to the endpoint's handler, answer errors as OCI JSON,
// and write one access log line per request when the response ends.
import type { Logger } from '../log.js';
import type { Counters } from '../metrics.js';
import type { BlobResolver } from '../resolve/blobs.js';
import type { ManifestResolver } from '../resolve/manifests.js';
import type { Resolver } from '../resolve/resolver.js';
import type { RouteMap } from '../routes.js';
import type { BlobStore } from '../store/blobs.js';
import type { PeerTable } from '../peers/table.js';
import type { Catalog } from '../store/catalog.js';
import type { Leases } from '../store/leases.js';
import type { Reach, Target } from '../tiers/tier.js';
import type { ClientAuth } from '../client-auth/gate.js';
import type { RepoScope } from '../client-auth/repo-scope.js';
import { OciError } from '../errors.js';
import { handleAdmin, handleSitePrewarm, hasAdminToken, type AdminDeps } from './admin.js';
import type { AdminChannel } from './admin-gate.js';
import { handleBlob } from './blobs.js';
import { handleManifest } from './manifests.js';
import type { Metrics } from './metrics.js';
import type { Readiness } from './readiness.js';
import { handlePassThrough } from './passthrough.js';
import { authenticateAnswer, challengeAnswer, originOf, type PeerAuth } from './peering.js';
import { NonceLog } from '../peers/nonces.js';
import { PEER_NODE_HEADER } from '../peers/protocol.js';
import { API_HEADERS, sendError, sendJson, type Req, type RequestFacts, type Res } from './respond.js';
import { route, type Endpoint } from './router.js';
import type { Status } from './status.js';
import { STATUS_PAGE, STATUS_PAGE_HEADERS } from './status-page.js';

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
  admin: AdminDeps;
  /** What /healthz reports besides status. */
  health: () => Record<string, unknown>;
  /** GET /readyz: 200 when ready, 503 with reasons when not. */
  ready: () => Promise<Readiness>;
  /** GET /metrics: the Prometheus exposition. */
  metrics: Metrics;
  /** GET / and /_cove/status.json: the operator's status page and its data. */
  status: Status;
  /** Pull authorization (COVE_CLIENT_AUTH=passthrough), or null when every client may pull (open). */
  clientAuth: ClientAuth | null;
  /** Which digests belong to which repository; asked only with client auth on. */
  repoScope: RepoScope | null;
}

const STATUS_PAGE_BYTES = Buffer.from(STATUS_PAGE);

type PullEndpoint = Extract<Endpoint, { kind: 'manifest' | 'blob' | 'tags' | 'referrers' }>;

/**
 * Builds the request listener for the HTTP (or HTTP/2) server, or (channel "socket") for the
 * admin socket, which answers the admin and status endpoints without a token and nothing else.
 */
export function createHandler(deps: HandlerDeps, channel: AdminChannel = 'tcp'): (req: Req, res: Res) => void {
  const onServed = (tier: string, n: number) => deps.counters.add(deps.counters.bytesServed, tier, n);
  // One log of seen request nonces per running node: a signed peer request is accepted once.
  const peerAuth: PeerAuth | null = deps.peerKey === null ? null : { key: deps.peerKey, nonces: new NonceLog() };
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
          subject: facts.subject,
          error: facts.error,
          complete: res.writableFinished,
          ua: req.headers['user-agent'],
        },
        'request',
      );
    });
    dispatch(deps, peerAuth, req, res, facts, onServed, channel).catch((err: unknown) => {
      if (!(err instanceof Error && 'status' in err)) deps.log.debug({ err }, 'request failed');
      sendError(req, res, facts, err);
    });
  };
}

/** What the admin socket answers: the operator's endpoints, not the pull API. */
const SOCKET_ENDPOINTS: ReadonlySet<Endpoint['kind']> = new Set(['admin', 'health', 'ready', 'metrics', 'node', 'status', 'status-page']);

async function dispatch(
  deps: HandlerDeps,
  peerAuth: PeerAuth | null,
  req: Req,
  res: Res,
  facts: RequestFacts,
  onServed: (tier: string, n: number) => void,
  channel: AdminChannel,
): Promise<void> {
  const head = req.method === 'HEAD';
  const { endpoint, ns } = route(req.method ?? 'GET', req.url ?? '/');
  if (channel === 'socket' && !SOCKET_ENDPOINTS.has(endpoint.kind)) {
    throw new OciError('NAME_UNKNOWN', 'the admin socket answers /admin/ and the status endpoints only; pull through Cove\'s listener (COVE_LISTEN)');
  }
  switch (endpoint.kind) {
    case 'health':
      facts.bytes = sendJson(res, 200, { status: 'ok', ...deps.health() }, {}, head);
      return;
    case 'ready': {
      const { ready, body } = await deps.ready();
      facts.bytes = sendJson(res, ready ? 200 : 503, body, { 'cache-control': 'no-store' }, head);
      return;
    }
    case 'metrics': {
      const text = Buffer.from(await deps.metrics.render());
      res.writeHead(200, { 'content-type': deps.metrics.contentType, 'content-length': String(text.length), 'cache-control': 'no-store' });
      if (head) res.end();
      else res.end(text);
      facts.bytes = head ? 0 : text.length;
      return;
    }
    case 'status-page':
      res.writeHead(200, { ...STATUS_PAGE_HEADERS, 'content-length': String(STATUS_PAGE_BYTES.length) });
      if (head) res.end();
      else res.end(STATUS_PAGE_BYTES);
      facts.bytes = head ? 0 : STATUS_PAGE_BYTES.length;
      return;
    case 'status': {
      // With client auth on, what is cached is nobody's business but the operator's.
      const names = deps.clientAuth === null || channel === 'socket' || hasAdminToken(req.headers.authorization, deps.admin.adminToken);
      facts.bytes = sendJson(res, 200, await deps.status.json({ names }), { 'cache-control': 'no-store' }, head);
      return;
    }
    case 'token': {
      if (deps.clientAuth === null) throw new OciError('NAME_UNKNOWN', 'no token endpoint: this Cove lets every client pull (COVE_CLIENT_AUTH=open)');
      const body = await deps.clientAuth.token(req, endpoint.query);
      facts.bytes = sendJson(res, 200, body, { 'cache-control': 'no-store' }, head);
      return;
    }
    case 'base':
      if (deps.clientAuth !== null) facts.subject = (await deps.clientAuth.authorizeAny(req)).subject;
      facts.bytes = sendJson(res, 200, {}, API_HEADERS, head);
      return;
    case 'node': {
      // A sibling asking who this node is has just come up (or back): count it in at once.
      const asker = req.headers[PEER_NODE_HEADER];
      if (typeof asker === 'string') deps.peers?.heard(asker);
      facts.bytes = sendJson(res, 200, deps.node, challengeAnswer(req, deps.peerKey, deps.node), head);
      return;
    }
    case 'admin':
      return handleAdmin(deps.admin, req, res, facts, endpoint.action, ns, channel);
    case 'site-prewarm': {
      // Only a sibling that holds the site's key may steer this node's cache.
      if (peerAuth === null) throw new OciError('UNAUTHORIZED', 'site prewarm refused: this node has no COVE_PEER_KEY, so it takes a prewarm only from its operator');
      const from = originOf(req, deps.node.id, peerAuth);
      if (from.peer === null || from.nonce === null) throw new OciError('UNAUTHORIZED', 'site prewarm refused: it must come from a sibling Cove as a signed peer request (Cove-Peer, Cove-Node, Cove-Peer-Auth)');
      authenticateAnswer(res, peerAuth.key, from.nonce, deps.node.id, from.peer);
      facts.peer = from.peer;
      return handleSitePrewarm(deps.admin, res, facts, endpoint.query, from.peer);
    }
  }
  const from = originOf(req, deps.node.id, peerAuth);
  if (peerAuth !== null && from.nonce !== null && from.peer !== null) authenticateAnswer(res, peerAuth.key, from.nonce, deps.node.id, from.peer);
  const target = { ...deps.routes.resolve(endpoint.name, ns, from.fromCove), reach: from.reach, via: from.via };
  if (from.peer !== null) {
    facts.peer = from.peer;
    deps.peers?.recordServed(from.peer);
    deps.peers?.heard(from.peer);
    deps.counters.add(deps.counters.peerRequests, from.reach === 'local' ? 'local' : 'fetch');
  }
  facts.upstream = target.upstream;
  facts.repo = target.repo;
  facts.ns = target.ns;
  if (deps.clientAuth !== null) await authorizePull(deps, req, facts, target, { reach: from.reach, fromCove: from.fromCove, ns }, endpoint);
  if (target.ns) res.setHeader('oci-namespace', target.ns);
  if (endpoint.kind === 'manifest' && endpoint.reference.kind === 'tag' && from.peer === null) {
    // A pull, for the status page's "most pulled": a client resolving a tag, answered with success.
    res.once('finish', () => {
      if (res.statusCode < 300) deps.status.recordPull(target.upstream, target.repo);
    });
  }
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


/**
 * COVE_CLIENT_AUTH=passthrough: a client pulls only what the origin lets it, and a digest only
 * under a repository it belongs to. Sibling Coves pass on the keyed peer channel alone.
 */
async function authorizePull(
  deps: HandlerDeps,
  req: Req,
  facts: RequestFacts,
  target: Target,
  from: { reach: Reach; fromCove: boolean; ns: string | null },
  endpoint: PullEndpoint,
): Promise<void> {
  const { reach, fromCove, ns } = from;
  if (reach !== 'all') {
    // originOf() checked the signature when a peer key is set; without one the header proves nothing.
    if (deps.peerKey === null) throw new OciError('UNAUTHORIZED', 'peer requests need COVE_PEER_KEY when client auth is on');
    return;
  }
  facts.subject = (await deps.clientAuth!.authorize(req, { name: endpoint.name, ns, fromCove, upstream: target.upstream, repo: target.repo })).subject;
  if (endpoint.kind === 'blob') await deps.repoScope!.check(target, endpoint.digest, 'blob');
  else if (endpoint.kind === 'manifest' && endpoint.reference.kind === 'digest') await deps.repoScope!.check(target, endpoint.reference.digest, 'manifest');
  else if (endpoint.kind === 'referrers') await deps.repoScope!.check(target, endpoint.digest, 'manifest');
}
