// tags/list and referrers: answered by the upstream and passed through, with the upstream's
// repository path in names and Link headers turned back into the name the client asked for. The
// last good answer is kept in the index (bounded: store/listings.ts) and served, marked stale,
// while the upstream is away or answers 5xx or 429.
import type { Logger } from '../log.js';
import type { Counters } from '../metrics.js';
import type { Resolver } from '../resolve/resolver.js';
import type { Catalog, Listing, ListingKey } from '../store/catalog.js';
import type { PassThroughResponse } from '../tiers/tier.js';
import type { RoutedTarget } from '../routes.js';
import type { Endpoint } from './router.js';
import { API_HEADERS, markCache, type Req, type RequestFacts, type Res } from './respond.js';
import { OciError, isUpstreamFailure } from '../errors.js';

type PassEndpoint = Extract<Endpoint, { kind: 'tags' | 'referrers' }>;

export interface PassThroughDeps {
  resolver: Resolver;
  catalog: Catalog;
  counters: Counters;
  log: Logger;
}

export async function handlePassThrough(
  deps: PassThroughDeps,
  req: Req,
  res: Res,
  facts: RequestFacts,
  target: RoutedTarget,
  endpoint: PassEndpoint,
): Promise<void> {
  const key: ListingKey = {
    upstream: target.upstream,
    repo: target.repo,
    kind: endpoint.kind,
    query: endpoint.kind === 'tags' ? `n=${endpoint.n ?? ''}&last=${endpoint.last ?? ''}` : `${endpoint.digest}&${endpoint.artifactType ?? ''}`,
  };
  let upstream: PassThroughResponse;
  let stale = false;
  try {
    const found = await deps.resolver.first<PassThroughResponse>(target, (tier) =>
      endpoint.kind === 'tags'
        ? tier.listTags(target, { n: endpoint.n, last: endpoint.last })
        : tier.referrers(target, endpoint.digest, endpoint.artifactType),
    );
    if (!found) throw new OciError('NAME_UNKNOWN', `repository ${endpoint.name} is not known upstream`);
    upstream = found.value;
    markCache(res, facts, 'bypass');
    facts.tier = found.tier.name;
    if (upstream.status === 200) {
      // Kept so that the listing can still be answered while the upstream is away.
      await deps.catalog.putListing(key, { status: 200, headers: upstream.headers, body: upstream.body.toString('base64'), fetchedAt: Date.now() });
    }
  } catch (err) {
    const kept = isUpstreamFailure(err) ? await deps.catalog.getListing(key) : null;
    if (!kept) throw err;
    upstream = serveStale(deps, res, facts, target, endpoint, kept, (err as Error).message);
    stale = true;
  }
  // Tiers pass listing answers through with their status, so a 5xx or 429 arrives here as an
  // answer, not as an error: it means "unavailable" as much as a refused connection does.
  if (!stale && isUnavailableStatus(upstream.status)) {
    const kept = await deps.catalog.getListing(key);
    if (kept) upstream = serveStale(deps, res, facts, target, endpoint, kept, `upstream answered ${upstream.status}`);
  }
  let body = upstream.body;
  const headers: Record<string, string> = { ...API_HEADERS, 'content-type': upstream.headers['content-type'] ?? 'application/json' };
  if (endpoint.kind === 'tags' && upstream.status === 200) body = renameTagList(body, endpoint.name);
  // A client told to slow down must hear for how long (Docker and containerd back off by it).
  if (upstream.status === 429) headers['retry-after'] = upstream.headers['retry-after'] ?? DEFAULT_RETRY_AFTER;
  const link = upstream.headers['link'];
  if (link) headers['link'] = rewriteLink(link, target.repo, endpoint.name, target.ns);
  headers['content-length'] = String(body.length);
  res.writeHead(upstream.status, headers);
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  facts.bytes = body.length;
  res.end(body);
}

/** Retry-After sent with a passed-through 429 whose upstream gave none (toOciResponse's too). */
const DEFAULT_RETRY_AFTER = '60';

/** Statuses that say "the upstream cannot answer now", as the serve-stale policy reads them. */
function isUnavailableStatus(status: number): boolean {
  return status >= 500 || status === 429;
}

/** The kept listing as the answer, marked stale and counted. */
function serveStale(
  deps: PassThroughDeps,
  res: Res,
  facts: RequestFacts,
  target: RoutedTarget,
  endpoint: PassEndpoint,
  kept: Listing,
  why: string,
): PassThroughResponse {
  deps.counters.staleServed++;
  deps.log.warn({ repo: target.repo, kind: endpoint.kind, err: why }, 'upstream unavailable: serving the last listing stale');
  markCache(res, facts, 'stale');
  facts.tier = 'local';
  return { status: kept.status, headers: { ...kept.headers }, body: Buffer.from(kept.body, 'base64') };
}

/** The tag list names the repository; the client knows it by its own name, not the upstream's. */
function renameTagList(body: Buffer, name: string): Buffer {
  try {
    const parsed = JSON.parse(body.toString('utf8')) as { name?: unknown; tags?: unknown };
    if (typeof parsed !== 'object' || parsed === null) return body;
    return Buffer.from(JSON.stringify({ ...parsed, name }));
  } catch {
    return body;
  }
}

/** `</v2/<upstream repo>/tags/list?last=x&n=2>; rel="next"` → the client's path (and its ns). */
export function rewriteLink(link: string, upstreamRepo: string, name: string, ns: string | null): string {
  return link.replace(/<([^>]*)>/g, (whole, url: string) => {
    const parsed = new URL(url, 'http://upstream.invalid');
    const prefix = `/v2/${upstreamRepo}/`;
    if (!parsed.pathname.startsWith(prefix)) return whole;
    parsed.pathname = `/v2/${name}/${parsed.pathname.slice(prefix.length)}`;
    if (ns) parsed.searchParams.set('ns', ns);
    return `<${parsed.pathname}${parsed.search}>`;
  });
}
