// GET/HEAD /v2/<name>/manifests/<tag|digest>: exact bytes with the true Content-Type, digest and
// length, whether the answer came from the store or the upstream.
import { parseAccept } from '../oci/mediatypes.js';
import type { ManifestResolver } from '../resolve/manifests.js';
import type { Target } from '../tiers/tier.js';
import type { Endpoint } from './router.js';
import { API_HEADERS, markCache, type Req, type RequestFacts, type Res } from './respond.js';

type ManifestEndpoint = Extract<Endpoint, { kind: 'manifest' }>;

export async function handleManifest(
  manifests: ManifestResolver,
  req: Req,
  res: Res,
  facts: RequestFacts,
  target: Target,
  endpoint: ManifestEndpoint,
): Promise<void> {
  const ref = endpoint.reference;
  const answer =
    ref.kind === 'digest'
      ? await manifests.byDigest(target, ref.digest)
      : await manifests.byTag(target, ref.tag, parseAccept(req.headers.accept));
  markCache(res, facts, answer.cache);
  facts.tier = answer.tier;
  facts.digest = answer.digest;
  res.writeHead(200, {
    ...API_HEADERS,
    'content-type': answer.mediaType,
    'content-length': String(answer.bytes.length),
    'docker-content-digest': answer.digest,
    etag: `"${answer.digest}"`,
  });
  if (req.method === 'HEAD') {
    res.end();
    return;
  }
  facts.bytes = answer.bytes.length;
  res.end(answer.bytes);
}
