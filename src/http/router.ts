// The router turns a request line into a validated endpoint. Names, tags and digests are checked
// here, before anything touches the disk or the network: a request that fails never gets further.
import { OciError } from '../errors.js';
import { isValidName, isValidTag, parseDigest } from '../oci/reference.js';

/** Longest request target Cove reads; a name may be 255 characters, so this is generous. */
const MAX_TARGET_LENGTH = 4096;

/** A pull-API endpoint with its validated parts. */
export type Endpoint =
  | { kind: 'base' }
  | { kind: 'health' }
  | { kind: 'ready' }
  | { kind: 'metrics' }
  | { kind: 'node' }
  | { kind: 'status-page' }
  | { kind: 'status' }
  | { kind: 'token'; query: URLSearchParams }
  | { kind: 'site-prewarm'; query: URLSearchParams }
  | { kind: 'admin'; action: AdminAction }
  | { kind: 'manifest'; name: string; reference: { kind: 'tag'; tag: string } | { kind: 'digest'; digest: string } }
  | { kind: 'blob'; name: string; digest: string }
  | { kind: 'tags'; name: string; n: number | undefined; last: string | undefined }
  | { kind: 'referrers'; name: string; digest: string; artifactType: string | undefined };

/** Operator endpoints under /admin/ (and the peer table): the admin socket, or the admin token (admin-gate.ts). */
export type AdminAction =
  | { kind: 'peers' }
  | { kind: 'invalidate'; name: string; tag: string | null }
  | { kind: 'gc'; dryRun: boolean }
  | { kind: 'pin'; name: string; reference: string; pin: boolean }
  | { kind: 'images' }
  | { kind: 'prewarm' }
  | { kind: 'harbor-webhook' }
  | { kind: 'import'; tags: string[]; pin: boolean }
  | { kind: 'export'; refs: string[] };

/** The endpoint and query of one request. */
export interface RoutedRequest {
  endpoint: Endpoint;
  /** The `ns` query parameter (containerd mirror requests), or null. */
  ns: string | null;
}

const ITEM = /^\/v2\/(.+)\/(manifests|blobs|referrers)\/([^/]+)$/;
const TAGS = /^\/v2\/(.+)\/tags\/list$/;
const DOT_SEGMENT = /(?:^|\/)(?:\.|%2e){1,2}(?:\/|$)/i;

/** Parses and validates a request. Throws OciError (400/404/405) for anything Cove will not serve. */
export function route(method: string, target: string): RoutedRequest {
  if (target.length > MAX_TARGET_LENGTH) throw new OciError('NAME_INVALID', 'request path too long');
  // URL parsing would resolve "/v2/a/../b" to "/v2/b"; a client that sends dot segments gets no
  // name at all rather than a different one.
  if (DOT_SEGMENT.test(target.split('?')[0]!)) throw new OciError('NAME_INVALID', 'request path contains "." or ".." segments');
  let url: URL;
  try {
    url = new URL(target, 'http://cove.invalid');
  } catch {
    throw new OciError('NAME_INVALID', 'request path is not a valid URL path');
  }
  const path = url.pathname;
  const q = url.searchParams;
  const ns = q.get('ns');

  if (path === '/healthz') return { endpoint: { kind: 'health' }, ns: null };
  if (path === '/readyz') return { endpoint: { kind: 'ready' }, ns: null };
  if (path === '/metrics') return { endpoint: { kind: 'metrics' }, ns: null };
  if (path === '/_cove/node') return { endpoint: { kind: 'node' }, ns: null };
  if (path === '/' || path === '/_cove/' || path === '/_cove') return { endpoint: { kind: 'status-page' }, ns: null };
  if (path === '/_cove/status.json') return { endpoint: { kind: 'status' }, ns: null };
  if (path === '/_cove/token') {
    if (method !== 'GET' && method !== 'HEAD') throw new OciError('UNSUPPORTED', 'the token endpoint answers GET', { headers: { allow: 'GET' } });
    return { endpoint: { kind: 'token', query: q }, ns: null };
  }
  if (path === '/_cove/site-prewarm') {
    if (method !== 'GET') throw new OciError('UNSUPPORTED', 'a site prewarm is a signed GET from a sibling Cove', { headers: { allow: 'GET' } });
    return { endpoint: { kind: 'site-prewarm', query: q }, ns: null };
  }
  if (path === '/_cove/peers') {
    if (method !== 'GET' && method !== 'HEAD') throw new OciError('UNSUPPORTED', 'use GET /_cove/peers', { headers: { allow: 'GET, HEAD' } });
    return { endpoint: { kind: 'admin', action: { kind: 'peers' } }, ns: null };
  }
  if (path.startsWith('/admin/')) return { endpoint: { kind: 'admin', action: adminAction(method, path, q) }, ns };
  if (!path.startsWith('/v2/') && path !== '/v2') {
    throw new OciError('NAME_UNKNOWN', `no such endpoint: ${truncate(path)}`);
  }
  if (method !== 'GET' && method !== 'HEAD') {
    throw new OciError('UNSUPPORTED', 'Cove is a pull-through cache and accepts only GET and HEAD; push to the origin registry instead', {
      headers: { allow: 'GET, HEAD' },
    });
  }
  if (path === '/v2/' || path === '/v2') return { endpoint: { kind: 'base' }, ns };

  const tags = TAGS.exec(path);
  if (tags) {
    const name = checkName(tags[1]!);
    return { endpoint: { kind: 'tags', name, n: parsePageSize(q.get('n')), last: parseLast(q.get('last')) }, ns };
  }
  const item = ITEM.exec(path);
  if (!item) throw new OciError('NAME_UNKNOWN', `no such endpoint: ${truncate(path)}`);
  const name = checkName(item[1]!);
  const what = item[2]!;
  const ref = item[3]!;
  if (what === 'manifests') {
    if (ref.includes(':')) return { endpoint: { kind: 'manifest', name, reference: { kind: 'digest', digest: checkDigest(ref) } }, ns };
    if (!isValidTag(ref)) throw new OciError('MANIFEST_INVALID', `invalid tag "${truncate(ref)}"`, { detail: { tag: truncate(ref) } });
    return { endpoint: { kind: 'manifest', name, reference: { kind: 'tag', tag: ref } }, ns };
  }
  if (what === 'blobs') {
    if (ref === 'uploads') throw new OciError('UNSUPPORTED', 'Cove does not accept uploads; push to the origin registry instead');
    return { endpoint: { kind: 'blob', name, digest: checkDigest(ref) }, ns };
  }
  const artifactType = q.get('artifactType') ?? undefined;
  return { endpoint: { kind: 'referrers', name, digest: checkDigest(ref), artifactType }, ns };
}

function adminAction(method: string, path: string, q: URLSearchParams): AdminAction {
  const post = (usage: string) => {
    if (method !== 'POST') throw new OciError('UNSUPPORTED', `use POST ${usage}`, { headers: { allow: 'POST' } });
  };
  // Reads change nothing; a POST (what an HTML form can send) to one is refused all the same.
  const get = (usage: string) => {
    if (method !== 'GET' && method !== 'HEAD') throw new OciError('UNSUPPORTED', `use GET ${usage}`, { headers: { allow: 'GET, HEAD' } });
  };
  switch (path) {
    case '/admin/invalidate': {
      post('/admin/invalidate?repo=NAME[&tag=TAG][&ns=REGISTRY]');
      const name = checkName(q.get('repo') ?? '');
      const tag = q.get('tag');
      if (tag !== null && !isValidTag(tag)) throw new OciError('MANIFEST_INVALID', `invalid tag "${truncate(tag)}"`);
      return { kind: 'invalidate', name, tag };
    }
    case '/admin/gc':
      post('/admin/gc[?dryRun=1]');
      return { kind: 'gc', dryRun: ['1', 'true'].includes(q.get('dryRun') ?? '') };
    case '/admin/pin':
    case '/admin/unpin': {
      post(`${path}?repo=NAME&ref=TAG|DIGEST`);
      const name = checkName(q.get('repo') ?? '');
      const ref = q.get('ref') ?? '';
      const reference = ref.includes(':') ? checkDigest(ref) : isValidTag(ref) ? ref : null;
      if (reference === null) throw new OciError('MANIFEST_INVALID', `ref must be a tag or a digest, got "${truncate(ref)}"`);
      return { kind: 'pin', name, reference, pin: path === '/admin/pin' };
    }
    case '/admin/images':
      get('/admin/images');
      return { kind: 'images' };
    case '/admin/prewarm':
      post('/admin/prewarm with a JSON body {"refs": ["proj/app:1"], "platforms": "linux/arm64"}');
      return { kind: 'prewarm' };
    case '/admin/import':
      post('/admin/import[?tag=REPO:TAG][&pin=1] with the archive as the body');
      return { kind: 'import', tags: q.getAll('tag'), pin: ['1', 'true'].includes(q.get('pin') ?? '') };
    case '/admin/export': {
      get('/admin/export?ref=REPO:TAG[&ref=...]');
      const refs = q.getAll('ref');
      if (refs.length === 0) throw new OciError('NAME_INVALID', 'export needs at least one ?ref=REPO:TAG (or REPO@DIGEST)');
      return { kind: 'export', refs };
    }
    case '/admin/webhook/harbor':
      post('/admin/webhook/harbor with a Harbor webhook body');
      return { kind: 'harbor-webhook' };
    default:
      throw new OciError('NAME_UNKNOWN', `no such endpoint: ${truncate(path)}`);
  }
}

function checkName(name: string): string {
  if (!isValidName(name)) throw new OciError('NAME_INVALID', `invalid repository name "${truncate(name)}"`, { detail: { name: truncate(name) } });
  return name;
}

function checkDigest(text: string): string {
  if (!parseDigest(text)) {
    throw new OciError('DIGEST_INVALID', `invalid digest "${truncate(text)}" (want sha256:<64 lowercase hex>)`, {
      detail: { digest: truncate(text) },
    });
  }
  return text;
}

function parsePageSize(text: string | null): number | undefined {
  if (text === null || text === '') return undefined;
  if (!/^\d{1,6}$/.test(text)) throw new OciError('PAGINATION_NUMBER_INVALID', `tags/list: n must be a whole number, got "${truncate(text)}"`);
  return Number(text);
}

function parseLast(text: string | null): string | undefined {
  if (text === null || text === '') return undefined;
  if (!isValidTag(text)) throw new OciError('MANIFEST_INVALID', `tags/list: last must be a tag, got "${truncate(text)}"`);
  return text;
}

function truncate(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}
