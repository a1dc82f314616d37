// The router's table: every endpoint shape and every way a request is refused before any I/O.
import t from 'tap';
import { OciError } from '../../src/errors.js';
import { route } from '../../src/http/router.js';
import { rewriteLink } from '../../src/http/passthrough.js';
import { RouteMap } from '../../src/routes.js';

const D = `sha256:${'a'.repeat(64)}`;

t.test('endpoints', async (t) => {
  const cases: Array<[string, string, unknown]> = [
    ['GET', '/v2/', { kind: 'base' }],
    ['HEAD', '/v2', { kind: 'base' }],
    ['GET', '/healthz', { kind: 'health' }],
    ['GET', '/readyz', { kind: 'ready' }],
    ['GET', '/metrics', { kind: 'metrics' }],
    ['GET', '/v2/a/b/c/manifests/latest', { kind: 'manifest', name: 'a/b/c', reference: { kind: 'tag', tag: 'latest' } }],
    ['GET', `/v2/a/manifests/${D}`, { kind: 'manifest', name: 'a', reference: { kind: 'digest', digest: D } }],
    ['HEAD', `/v2/x/blobs/${D}`, { kind: 'blob', name: 'x', digest: D }],
    ['GET', '/v2/x/y/tags/list?n=10&last=v1', { kind: 'tags', name: 'x/y', n: 10, last: 'v1' }],
    ['GET', `/v2/x/referrers/${D}?artifactType=application/x`, { kind: 'referrers', name: 'x', digest: D, artifactType: 'application/x' }],
    // A repository may itself be named like an endpoint segment.
    ['GET', '/v2/manifests/manifests/1', { kind: 'manifest', name: 'manifests', reference: { kind: 'tag', tag: '1' } }],
  ];
  for (const [method, path, endpoint] of cases) t.same(route(method, path).endpoint, endpoint, `${method} ${path}`);
  t.equal(route('GET', '/v2/x/manifests/1?ns=docker.io').ns, 'docker.io');
});

t.test('refusals', async (t) => {
  const cases: Array<[string, string, string, number]> = [
    ['PUT', '/v2/x/manifests/1', 'UNSUPPORTED', 405],
    ['POST', '/v2/x/blobs/uploads/', 'UNSUPPORTED', 405],
    ['GET', '/v2/x/blobs/uploads', 'UNSUPPORTED', 405],
    ['GET', '/v2/X/manifests/1', 'NAME_INVALID', 400],
    ['GET', '/v2/x/manifests/.bad', 'MANIFEST_INVALID', 400],
    ['GET', '/v2/x/blobs/sha256:xyz', 'DIGEST_INVALID', 400],
    ['GET', `/v2/x/blobs/sha512:${'a'.repeat(64)}`, 'DIGEST_INVALID', 400],
    ['GET', '/v2/x/tags/list?n=-1', 'PAGINATION_NUMBER_INVALID', 400],
    ['GET', '/v2/x/unknown/1', 'NAME_UNKNOWN', 404],
    ['GET', '/other', 'NAME_UNKNOWN', 404],
    ['GET', `/v2/${'a'.repeat(5000)}/manifests/1`, 'NAME_INVALID', 400],
  ];
  for (const [method, path, code, status] of cases) {
    try {
      route(method, path);
      t.fail(`${method} ${path.slice(0, 60)} should be refused`);
    } catch (err) {
      t.ok(err instanceof OciError, 'an OciError');
      t.equal((err as OciError).code, code, `${method} ${path.slice(0, 60)}: ${code}`);
      t.equal((err as OciError).status, status);
    }
  }
});

t.test('route map', async (t) => {
  const map = new RouteMap({
    upstreams: [{ name: 'origin' } as never],
    routes: [
      { match: 'docker.io', upstream: 'origin', prefix: 'dockerhub/', libraryPrefix: true },
      { match: 'ghcr.io', upstream: 'origin', prefix: 'ghcr/', libraryPrefix: false },
    ],
    defaultNs: null,
  });
  t.same(map.resolve('proj/app', null), { upstream: 'origin', repo: 'proj/app', ns: null });
  t.same(map.resolve('nginx', 'docker.io'), { upstream: 'origin', repo: 'dockerhub/library/nginx', ns: 'docker.io' });
  t.same(map.resolve('bitnami/redis', 'docker.io'), { upstream: 'origin', repo: 'dockerhub/bitnami/redis', ns: 'docker.io' });
  t.same(map.resolve('owner/tool', 'GHCR.IO'), { upstream: 'origin', repo: 'ghcr/owner/tool', ns: 'GHCR.IO' });
  t.throws(() => map.resolve('x', 'quay.io'), { code: 'NAME_UNKNOWN' });
  const mirror = new RouteMap({ upstreams: [{ name: 'origin' } as never], routes: [{ match: 'docker.io', upstream: 'origin', prefix: 'dockerhub/', libraryPrefix: true }], defaultNs: 'docker.io' });
  t.same(mirror.resolve('library/alpine', null), { upstream: 'origin', repo: 'dockerhub/library/alpine', ns: null }, 'default ns applies without echo');
});

t.test('tags/list Link rewrite', async (t) => {
  t.equal(
    rewriteLink('</v2/dockerhub/library/x/tags/list?last=b&n=2>; rel="next"', 'dockerhub/library/x', 'library/x', 'docker.io'),
    '</v2/library/x/tags/list?last=b&n=2&ns=docker.io>; rel="next"',
  );
  t.equal(rewriteLink('</v2/p/tags/list?last=b&n=2>; rel="next"', 'p', 'p', null), '</v2/p/tags/list?last=b&n=2>; rel="next"');
});
