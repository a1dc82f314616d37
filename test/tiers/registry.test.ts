// The origin tier against an in-process registry: statuses mapped to null or to error classes,
// manifest digests checked, blob resumes via 206 and via a server that ignores Range.
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import t, { type Test } from 'tap';
import { DigestMismatchError, UpstreamAuthError, UpstreamStatusError } from '../../src/errors.js';
import { parseContentRange } from '../../src/http-util.js';
import { RegistryTier } from '../../src/tiers/registry.js';
import { parseRetryAfter } from '../../src/upstream/retry-after.js';
import type { UpstreamClient } from '../../src/upstream/client.js';
import { readAll, startServer, testClient } from '../upstream/servers.js';

const sha = (b: Buffer): string => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const MT = 'application/vnd.oci.image.manifest.v1+json';
const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MT, config: {}, layers: [] }));
const blob = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));
const target = { upstream: 'origin', repo: 'proj/app' };

async function tierFor(t: Test, handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const s = await startServer(handler);
  t.teardown(() => s.close());
  const client = testClient(t, s.url);
  return { tier: RegistryTier.origin(new Map<string, UpstreamClient>([['origin', client]])), server: s };
}

t.test('404 → null everywhere', async (t) => {
  const { tier } = await tierFor(t, (_req, res) => res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}'));
  t.equal(await tier.headManifest(target, 'latest', [MT]), null);
  t.equal(await tier.getManifest(target, 'latest', [MT]), null);
  t.equal(await tier.headBlob(target, sha(blob)), null);
  t.equal(await tier.openBlob(target, sha(blob), 0), null);
});

t.test('503 with Retry-After → UpstreamStatusError carrying both', async (t) => {
  const { tier } = await tierFor(t, (_req, res) => res.writeHead(503, { 'retry-after': '7' }).end('down'));
  const err = await tier.getManifest(target, 'latest', [MT]).catch((e: unknown) => e);
  t.type(err, UpstreamStatusError);
  t.equal((err as UpstreamStatusError).status, 503);
  t.equal((err as UpstreamStatusError).retryAfter, '7');
  await t.rejects(tier.openBlob(target, sha(blob), 0), { name: 'UpstreamStatusError', status: 503 });
});

t.test('429 → UpstreamStatusError, and nothing more is sent until Retry-After has passed', async (t) => {
  const { tier, server } = await tierFor(t, (_req, res) => res.writeHead(429, { 'retry-after': '30' }).end());
  await t.rejects(tier.headManifest(target, 'latest', [MT]), { name: 'UpstreamStatusError', status: 429, retryAfter: '30' });
  await t.rejects(tier.getManifest(target, 'other', [MT]), { name: 'UpstreamStatusError', status: 429 });
  t.equal(server.requests.length, 1, 'the second request was held back by Cove');
});

t.test('403 → UpstreamAuthError; 400 → UpstreamStatusError', async (t) => {
  let status = 403;
  const { tier } = await tierFor(t, (_req, res) => res.writeHead(status).end());
  await t.rejects(tier.getManifest(target, 'latest', [MT]), UpstreamAuthError);
  status = 400;
  await t.rejects(tier.headBlob(target, sha(blob)), { name: 'UpstreamStatusError', status: 400 });
});

t.test('getManifest: exact bytes, Content-Type as sent, Accept joined', async (t) => {
  const { tier, server } = await tierFor(t, (_req, res) =>
    res.writeHead(200, { 'content-type': ` ${MT} `, 'docker-content-digest': sha(manifest), 'content-length': String(manifest.length) }).end(manifest),
  );
  const got = await tier.getManifest(target, 'latest', [MT, 'application/vnd.oci.image.index.v1+json']);
  t.same(got, { digest: sha(manifest), mediaType: MT, size: manifest.length, bytes: manifest });
  t.equal(server.requests[0]!.headers.accept, `${MT}, application/vnd.oci.image.index.v1+json`);
  t.equal(server.requests[0]!.url, '/v2/proj/app/manifests/latest');
  const byDigest = await tier.getManifest(target, sha(manifest), [MT]);
  t.equal(byDigest?.digest, sha(manifest));
  const head = await tier.headManifest(target, 'latest', [MT]);
  t.same(head, { digest: sha(manifest), mediaType: MT, size: manifest.length });
});

t.test('getManifest: Docker-Content-Digest that does not match the bytes → DigestMismatchError', async (t) => {
  const { tier } = await tierFor(t, (_req, res) => res.writeHead(200, { 'content-type': MT, 'docker-content-digest': sha(Buffer.from('other')) }).end(manifest));
  await t.rejects(tier.getManifest(target, 'latest', [MT]), DigestMismatchError);
});

t.test('getManifest by digest: bytes must hash to the digest asked', async (t) => {
  const { tier } = await tierFor(t, (_req, res) => res.writeHead(200, { 'content-type': MT }).end(manifest));
  await t.rejects(tier.getManifest(target, sha(Buffer.from('wanted')), [MT]), DigestMismatchError);
});

t.test('getManifest: over 4 MiB → error, not buffered', async (t) => {
  const big = Buffer.alloc(4 * 1024 * 1024 + 1, 0x20);
  const { tier } = await tierFor(t, (_req, res) => {
    res.writeHead(200, { 'content-type': MT, 'transfer-encoding': 'chunked' });
    res.end(big);
  });
  await t.rejects(tier.getManifest(target, 'latest', [MT]), { name: 'UpstreamStatusError', message: /limit/ });
});

t.test('headBlob: size from Content-Length', async (t) => {
  const { tier } = await tierFor(t, (_req, res) => res.writeHead(200, { 'content-length': String(blob.length) }).end());
  t.same(await tier.headBlob(target, sha(blob)), { size: blob.length });
});

t.test('openBlob: whole blob, and resume via 206', async (t) => {
  const { tier, server } = await tierFor(t, (req, res) => {
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (!m) {
      res.writeHead(200, { 'content-length': String(blob.length) }).end(blob);
      return;
    }
    const start = Number(m[1]);
    if (start >= blob.length) {
      res.writeHead(416, { 'content-range': `bytes */${blob.length}` }).end();
      return;
    }
    res.writeHead(206, { 'content-range': `bytes ${start}-${blob.length - 1}/${blob.length}`, 'content-length': String(blob.length - start) }).end(blob.subarray(start));
  });
  const whole = await tier.openBlob(target, sha(blob), 0);
  t.equal(whole?.offset, 0);
  t.equal(whole?.size, blob.length);
  t.same(await readAll(whole!.body), blob);
  t.equal(server.requests[0]!.headers.range, undefined, 'no Range at offset 0');

  const resumed = await tier.openBlob(target, sha(blob), 300);
  t.equal(resumed?.offset, 300);
  t.equal(resumed?.size, blob.length, 'size is the Content-Range total');
  t.same(await readAll(resumed!.body), blob.subarray(300));
  t.equal(server.requests[1]!.headers.range, 'bytes=300-');

  await t.rejects(tier.openBlob(target, sha(blob), 5000), { name: 'UpstreamStatusError', status: 416 });
});

t.test('openBlob: a server that ignores Range (200) is skipped to the offset', async (t) => {
  const { tier } = await tierFor(t, (_req, res) => {
    res.writeHead(200, { 'content-length': String(blob.length) });
    // Several chunks so the skip crosses chunk boundaries.
    for (let i = 0; i < blob.length; i += 128) res.write(blob.subarray(i, i + 128));
    res.end();
  });
  const got = await tier.openBlob(target, sha(blob), 300);
  t.equal(got?.offset, 300, 'reports the requested offset');
  t.equal(got?.size, blob.length);
  t.same(await readAll(got!.body), blob.subarray(300));
});

t.test('openBlob follows a redirect to the storage host', async (t) => {
  const storage = await startServer((_req, res) => res.writeHead(200, { 'content-length': String(blob.length) }).end(blob), '127.0.0.2');
  t.teardown(() => storage.close());
  const { tier } = await tierFor(t, (_req, res) => res.writeHead(307, { location: `${storage.url}/obj` }).end());
  const got = await tier.openBlob(target, sha(blob), 0);
  t.same(await readAll(got!.body), blob);
});

t.test('listTags and referrers pass through status, content-type, link and body', async (t) => {
  const { tier, server } = await tierFor(t, (req, res) => {
    if (req.url!.includes('/tags/list')) {
      res.writeHead(200, { 'content-type': 'application/json', link: '</v2/proj/app/tags/list?n=2&last=b>; rel="next"', 'x-other': '1' }).end('{"name":"proj/app","tags":["a","b"]}');
    } else {
      res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[]}');
    }
  });
  const tags = await tier.listTags(target, { n: 2, last: 'a' });
  t.equal(tags.status, 200);
  t.same(tags.headers, { 'content-type': 'application/json', link: '</v2/proj/app/tags/list?n=2&last=b>; rel="next"' });
  t.equal(tags.body.toString(), '{"name":"proj/app","tags":["a","b"]}');
  t.equal(server.requests[0]!.url, '/v2/proj/app/tags/list?n=2&last=a');
  const refs = await tier.referrers(target, sha(manifest), 'application/vnd.example+json');
  t.equal(refs.status, 404);
  t.equal(server.requests[1]!.url, `/v2/proj/app/referrers/${sha(manifest)}?artifactType=application%2Fvnd.example%2Bjson`);
});

t.test('helpers: Retry-After and Content-Range parsing', async (t) => {
  t.equal(parseRetryAfter('120'), '120');
  t.equal(parseRetryAfter(undefined), undefined);
  t.equal(parseRetryAfter('soon'), undefined);
  const now = Date.parse('2025-01-01T00:00:00Z');
  t.equal(parseRetryAfter('Wed, 01 Jan 2025 00:00:30 GMT', now), '30');
  t.same(parseContentRange('bytes 5-9/10'), { start: 5, end: 9, total: 10 });
  t.same(parseContentRange('bytes 5-9/*'), { start: 5, end: 9, total: null });
  t.equal(parseContentRange('bytes 5-10/10'), null);
  t.equal(parseContentRange('items 1-2/3'), null);
});
