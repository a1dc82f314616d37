// Regression, against the real docker-registry holding a Docker manifest list (made by `skopeo
// copy --all --format v2s2`): a client that accepts only schema 2 (or sends no Accept) must not
// turn the tag into the linux/amd64 child for everyone else. Tried in both orders, with skopeo
// as the list-capable client pulling the arm64 image, and schema 1 asked for on purpose.
import t from 'tap';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, buildImage, httpGet, requireTools, run, startCove, startRegistry, tempDir, verifyDirCopy, type Registry, type TestImage } from './real.js';

const LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const V2 = 'application/vnd.docker.distribution.manifest.v2+json';
const SCHEMA1 = 'application/vnd.docker.distribution.manifest.v1+prettyjws';
const TOOLS = ['docker-registry', 'skopeo', 'umoci'];

const sha256 = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

/** Writes an OCI index of `children` (amd64, arm64) into the layout under `tag`. */
function writeIndex(layout: string, tag: string, children: Array<{ image: TestImage; architecture: string }>): void {
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: children.map(({ image, architecture }) => {
        const bytes = readFileSync(join(layout, 'blobs', 'sha256', image.manifestDigest.slice(7)));
        return { mediaType: image.manifestMediaType, digest: image.manifestDigest, size: bytes.length, platform: { architecture, os: 'linux' } };
      }),
    }),
  );
  const digest = sha256(index);
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  writeFileSync(join(layout, 'blobs', 'sha256', digest.slice(7)), index);
  const top = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: unknown[] };
  top.manifests.push({ mediaType: 'application/vnd.oci.image.index.v1+json', digest, size: index.length, annotations: { 'org.opencontainers.image.ref.name': tag } });
  writeFileSync(join(layout, 'index.json'), JSON.stringify(top));
}

/** The list's digest and its children by architecture, as the origin serves them. */
async function listAt(origin: Registry, repo: string): Promise<{ digest: string; amd64: string; arm64: string }> {
  const r = await httpGet(`${origin.url}/v2/${repo}/manifests/1`, { headers: { accept: LIST }, keep: true });
  if (r.headers['content-type'] !== LIST) throw new Error(`origin answered ${String(r.headers['content-type'])}, not a manifest list`);
  const list = JSON.parse(r.body.toString()) as { manifests: Array<{ digest: string; platform: { architecture: string } }> };
  const child = (arch: string) => list.manifests.find((m) => m.platform.architecture === arch)!.digest;
  return { digest: r.sha256, amd64: child('amd64'), arm64: child('arm64') };
}

t.test('a Docker manifest list at the real registry: narrow and wide clients in both orders', async (t) => {
  if (!requireTools(t, TOOLS)) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup);
  const layout = join(work, 'layout');
  const amd = await buildImage(layout, 'amd', [300_000], 'accept-amd');
  const arm = await buildImage(layout, 'arm', [300_000], 'accept-arm');
  writeIndex(layout, 'multi', [
    { image: amd, architecture: 'amd64' },
    { image: arm, architecture: 'arm64' },
  ]);
  const origin = await startRegistry(cleanup);
  for (const repo of ['proj/narrow-first', 'proj/wide-first']) {
    await run('skopeo', ['copy', '-q', '--all', '--format', 'v2s2', '--dest-tls-verify=false', `oci:${layout}:multi`, `docker://${origin.hostPort}/${repo}:1`], { timeoutMs: 300_000 });
  }
  const cove = await startCove(cleanup, origin.url, { COVE_TAG_TTL: '1h' });

  const narrow = (repo: string, accept?: string) => httpGet(`${cove.url}/v2/${repo}/manifests/1`, { headers: accept ? { accept } : {}, keep: true });
  // skopeo prints the raw manifest (ASCII JSON) and may end it with a newline of its own.
  const inspect = async (repo: string) => {
    const { stdout } = await run('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${cove.hostPort}/${repo}:1`]);
    return [sha256(Buffer.from(stdout)), sha256(Buffer.from(stdout.replace(/\n$/, '')))];
  };
  const pullArm = async (repo: string, out: string) => {
    await run('skopeo', ['copy', '-q', '--override-arch', 'arm64', '--src-tls-verify=false', `docker://${cove.hostPort}/${repo}:1`, `dir:${out}`], { timeoutMs: 300_000 });
    t.same(verifyDirCopy(out).problems, [], `${repo}: the arm64 copy is whole`);
    return sha256(readFileSync(join(out, 'manifest.json')));
  };

  // Narrow first: schema 2 only, then no Accept at all (curl), then the list-capable clients.
  const a = await listAt(origin, 'proj/narrow-first');
  const v2 = await narrow('proj/narrow-first', V2);
  t.equal(v2.status, 200);
  t.equal(v2.headers['content-type'], V2);
  t.equal(v2.sha256, a.amd64, 'schema-2-only client: the amd64 child, as the registry picks');
  const curl = await narrow('proj/narrow-first');
  t.equal(curl.status, 200, 'no Accept: 200, not a digest-mismatch 502');
  t.equal(curl.sha256, a.amd64, 'no Accept: the amd64 child in schema 2');
  t.ok((await inspect('proj/narrow-first')).includes(a.digest), 'skopeo inspect --raw gets the list afterwards');
  t.equal(await pullArm('proj/narrow-first', join(work, 'arm-a')), a.arm64, 'an arm64 client gets the arm64 image, not the amd64 child');
  t.equal((await narrow('proj/narrow-first', V2)).sha256, a.amd64, 'and the narrow client still gets its child');

  // Wide first.
  const b = await listAt(origin, 'proj/wide-first');
  t.ok((await inspect('proj/wide-first')).includes(b.digest), 'skopeo gets the list');
  t.equal((await narrow('proj/wide-first', V2)).sha256, b.amd64, 'then the narrow client gets the amd64 child');
  t.equal(await pullArm('proj/wide-first', join(work, 'arm-b')), b.arm64, 'and arm64 still gets its image');

  // Schema 1 asked for on purpose: refused by name.
  const s1 = await narrow('proj/wide-first', SCHEMA1);
  const direct = await httpGet(`${origin.url}/v2/proj/wide-first/manifests/1`, { headers: { accept: SCHEMA1 } });
  if (String(direct.headers['content-type']).startsWith(SCHEMA1)) {
    t.equal(s1.status, 404, 'the origin sent schema 1: Cove answers 404, not 502');
    t.match(s1.body.toString(), /schema 1/, 'and says why');
  } else {
    t.comment(`this docker-registry answers a schema-1-only Accept with ${String(direct.headers['content-type'])}; Cove passes it on`);
    t.equal(s1.status, direct.status, 'Cove answers as the origin does');
  }
});
