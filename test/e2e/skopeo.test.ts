// skopeo pulls through Cove (port mode) from a real docker-registry origin, anonymous and behind
// htpasswd Basic auth: cold then warm, bytes checked against the manifest, and the warm pull must
// not send one blob request to the origin (counted in the origin's access log).
import t from 'tap';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  Cleanup,
  Registry,
  buildImage,
  httpGet,
  isBlobPath,
  pushImage,
  requireTools,
  skopeoPull,
  startCove,
  startRegistry,
  tempDir,
  verifyDirCopy,
} from './real.js';

const sha256File = (file: string) => `sha256:${createHash('sha256').update(readFileSync(file)).digest('hex')}`;

const TOOLS = ['docker-registry', 'skopeo', 'umoci', 'htpasswd'];

for (const mode of ['anonymous', 'htpasswd'] as const) {
  t.test(`skopeo cold then warm through Cove, origin ${mode}`, async (t) => {
    if (!requireTools(t, TOOLS)) return;
    const cleanup = Cleanup.forTest(t);
    const work = tempDir(cleanup);
    const auth = mode === 'htpasswd' ? { username: 'cove', password: 'e2e-secret' } : undefined;
    const origin = await startRegistry(cleanup, auth ? { auth } : {});
    if (auth) {
      const anon = await httpGet(`${origin.url}/v2/`);
      t.equal(anon.status, 401, 'the origin refuses anonymous clients');
    }
    const image = await buildImage(join(work, 'layout'), 'app', [1_500_000, 2_500_000], `skopeo-${mode}`);
    await pushImage(image, origin, 'proj/app:1');

    const coveEnv: Record<string, string> = { COVE_TAG_TTL: '1h' };
    if (auth) Object.assign(coveEnv, { COVE_UPSTREAM_USERNAME: auth.username, COVE_UPSTREAM_PASSWORD: auth.password });
    const cove = await startCove(cleanup, origin.url, coveEnv);
    const ref = `${cove.hostPort}/proj/app:1`;

    origin.markNow();
    const coldMs = await skopeoPull(ref, join(work, 'cold'));
    const coldOrigin = origin.since();
    const cold = verifyDirCopy(join(work, 'cold'));
    t.same(cold.problems, [], 'cold copy: every blob file hashes to its name and matches the manifest');
    t.equal(cold.manifest.config.digest, image.config.digest, 'cold copy has the pushed config');
    t.same(
      cold.manifest.layers.map((l) => l.digest),
      image.layers.map((l) => l.digest),
      'cold copy has the pushed layers',
    );
    t.equal(sha256File(join(work, 'cold', 'manifest.json')), image.manifestDigest, 'cold copy: manifest bytes are exactly the pushed ones');
    const coldBlobs = Registry.blobGets(coldOrigin);
    t.equal(coldBlobs.requests, 1 + image.layers.length, 'cold pull: one origin GET per blob');
    t.ok(
      coldOrigin.filter((e) => isBlobPath(e.path)).every((e) => e.path.startsWith('/v2/proj/app/')),
      'port mode: origin asked for the same repository path',
    );
    t.ok(
      coldOrigin.filter((e) => e.method === 'GET' && isBlobPath(e.path)).every((e) => e.status === 200),
      'every origin blob GET succeeded (with credentials when the origin wants them)',
    );

    origin.markNow();
    const warmMs = await skopeoPull(ref, join(work, 'warm'));
    const warmOrigin = origin.since();
    const warm = verifyDirCopy(join(work, 'warm'));
    t.same(warm.problems, [], 'warm copy: every blob file hashes to its name and matches the manifest');
    t.same(warm.files.sort(), cold.files.sort(), 'warm copy has the same blobs');
    t.equal(sha256File(join(work, 'warm', 'manifest.json')), image.manifestDigest, 'warm copy: manifest bytes are exactly the pushed ones');
    t.equal(Registry.blobGets(warmOrigin).requests, 0, 'warm pull made no blob requests to the origin');
    t.equal(
      warmOrigin.filter((e) => isBlobPath(e.path)).length,
      0,
      `warm pull: no blob requests of any method at the origin (saw ${JSON.stringify(warmOrigin.map((e) => `${e.method} ${e.path}`))})`,
    );

    const largest = image.layers.reduce((a, b) => (b.size > a.size ? b : a));
    const hit = await httpGet(`${cove.url}/v2/proj/app/blobs/${largest.digest}`);
    t.equal(hit.status, 200, 'blob GET after the pulls');
    t.equal(hit.sha256, largest.digest, 'blob bytes hash to the digest');
    t.match(String(hit.headers['cache-status']), /^cove; hit/, 'served from the cache (Cache-Status: cove; hit)');
    t.comment(`skopeo ${mode}: cold ${coldMs.toFixed(0)} ms, warm ${warmMs.toFixed(0)} ms, origin blob bytes cold ${coldBlobs.bytes}`);
  });
}
