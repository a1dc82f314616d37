// Regression: a narrow Accept used to change a tag for everyone. The first request for a
// multi-platform tag from a client without list support (Accept: schema 2 only, or no Accept at
// all) got the origin's linux/amd64 child, Cove recorded that child as the tag, and every later
// client — containerd, dockerd, skopeo, arm64 nodes — was served the amd64 child as a hit.
// Tags now resolve per Accept class: list-capable clients always get the list, single-manifest
// clients the registry's pick for them, neither replaces the other, in every order, for HEAD and
// GET alike, through revalidation, stale serving and peers.
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage, makeIndex, type Image, type Index } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

const LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const V2 = 'application/vnd.docker.distribution.manifest.v2+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const SCHEMA1 = 'application/vnd.docker.distribution.manifest.v1+prettyjws';
const CONTAINERD_ACCEPT = `${V2}, ${LIST}, ${OCI_MANIFEST}, ${OCI_INDEX}, */*`;
const DOCKER_ACCEPT = [OCI_INDEX, LIST, OCI_MANIFEST, V2];

function multiArch(seed: string): { amd: Image; arm: Image; list: Index } {
  const amd = makeImage({ layers: [1000], seed: `${seed}-amd`, architecture: 'amd64' });
  const arm = makeImage({ layers: [1000], seed: `${seed}-arm`, architecture: 'arm64' });
  const list = makeIndex(
    [
      { image: amd, platform: { architecture: 'amd64', os: 'linux' } },
      { image: arm, platform: { architecture: 'arm64', os: 'linux' } },
    ],
    'docker',
  );
  return { amd, arm, list };
}

async function get(url: string, accept: string | string[] | undefined, method = 'GET') {
  return fetchAll(url, { method, headers: accept === undefined ? {} : { accept } });
}

t.test('narrow client first: the tag still means the list for list-capable clients', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const { amd, list } = multiArch('narrow-first');
  origin.putIndex('proj/multi', '1', list, [amd]);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h' });
  const url = `${cove.url}/v2/proj/multi/manifests/1`;

  const narrow = await get(url, V2);
  t.equal(narrow.status, 200);
  t.equal(narrow.headers['content-type'], V2);
  t.equal(sha256(narrow.body), amd.manifestDigest, 'the single-manifest client gets the origin\'s pick');

  for (const [name, accept] of [['containerd', CONTAINERD_ACCEPT], ['docker', DOCKER_ACCEPT]] as const) {
    const wide = await get(url, accept);
    t.equal(wide.status, 200);
    t.equal(wide.headers['content-type'], LIST, `${name} gets the list`);
    t.equal(sha256(wide.body), list.digest, `${name}: the list's bytes`);
    t.equal(wide.headers['docker-content-digest'], list.digest);
  }
  const again = await get(url, V2);
  t.equal(sha256(again.body), amd.manifestDigest, 'the narrow client still gets its child');
  t.equal(again.headers['cache-status'], 'cove; hit', 'from the cache');
  t.equal(origin.count({ kind: 'manifest', method: 'GET' }), 2, 'one origin GET per Accept class');
});

t.test('a client that sends no Accept (curl) gets a schema 2 manifest, never a 502, and changes nothing', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const { amd, list } = multiArch('no-accept');
  origin.putIndex('proj/multi', '1', list, [amd]);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h' });
  const url = `${cove.url}/v2/proj/multi/manifests/1`;

  const curl = await get(url, undefined);
  t.equal(curl.status, 200);
  t.equal(curl.headers['content-type'], V2);
  t.equal(sha256(curl.body), amd.manifestDigest);
  const asked = origin.requests.find((r) => r.kind === 'manifest');
  t.match(asked?.accept ?? '', V2, 'the origin was asked for schema 2, not left to pick schema 1');

  const wide = await get(url, CONTAINERD_ACCEPT);
  t.equal(sha256(wide.body), list.digest, 'the list for containerd');
});

t.test('HEAD and GET agree for each class, in both orders', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const { amd, list } = multiArch('head-get');
  origin.putIndex('proj/multi', '1', list, [amd]);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h' });
  const url = `${cove.url}/v2/proj/multi/manifests/1`;

  const headNarrow = await get(url, V2, 'HEAD');
  const headWide = await get(url, CONTAINERD_ACCEPT, 'HEAD');
  const getWide = await get(url, CONTAINERD_ACCEPT);
  const getNarrow = await get(url, V2);
  t.equal(headNarrow.headers['docker-content-digest'], amd.manifestDigest);
  t.equal(headNarrow.headers['content-type'], V2);
  t.equal(headWide.headers['docker-content-digest'], list.digest);
  t.equal(headWide.headers['content-type'], LIST);
  t.equal(getWide.headers['docker-content-digest'], list.digest);
  t.equal(sha256(getWide.body), list.digest);
  t.equal(getNarrow.headers['docker-content-digest'], amd.manifestDigest);
  t.equal(headNarrow.headers['content-length'], String(getNarrow.body.length));
  t.equal(headWide.headers['content-length'], String(getWide.body.length));
});

t.test('revalidation asks with the record\'s own Accept, so a narrow client never moves the tag', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const { amd, arm, list } = multiArch('reval');
  origin.putIndex('proj/multi', '1', list, [amd, arm]);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '200ms' });
  const url = `${cove.url}/v2/proj/multi/manifests/1`;

  t.equal(sha256((await get(url, CONTAINERD_ACCEPT)).body), list.digest);
  t.equal(sha256((await get(url, V2)).body), amd.manifestDigest);
  await new Promise((r) => setTimeout(r, 250));
  // The narrow client comes first after the TTL: it revalidates its own answer only.
  const narrow = await get(url, V2);
  t.equal(sha256(narrow.body), amd.manifestDigest);
  t.equal(narrow.headers['cache-status'], 'cove; hit; detail=revalidated');
  const wide = await get(url, CONTAINERD_ACCEPT);
  t.equal(sha256(wide.body), list.digest, 'the list is still the tag for list-capable clients');
  t.equal(wide.headers['cache-status'], 'cove; hit; detail=revalidated');
  const heads = origin.requests.filter((r) => r.kind === 'manifest' && r.method === 'HEAD');
  t.equal(heads.length, 2, 'one HEAD per record');
  t.match(heads[1]!.accept ?? '', LIST, 'the tag\'s own record is revalidated with list types');
  t.notMatch(heads[0]!.accept ?? '', LIST, 'the narrow record with the narrow class');
});

t.test('origin down: each class gets its own stale answer; an unseen narrow class gets the cached amd64 child', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const { amd, arm, list } = multiArch('stale');
  origin.putIndex('proj/multi', '1', list, [amd, arm]);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '100ms' });
  const url = `${cove.url}/v2/proj/multi/manifests/1`;
  await get(url, CONTAINERD_ACCEPT);
  await get(url, V2);
  await origin.stop();
  await new Promise((r) => setTimeout(r, 150));

  const wide = await get(url, CONTAINERD_ACCEPT);
  t.equal(wide.status, 200);
  t.equal(sha256(wide.body), list.digest, 'list-capable clients get the list, stale');
  t.match(wide.headers['cache-status'], /detail=stale/);
  const narrow = await get(url, V2);
  t.equal(sha256(narrow.body), amd.manifestDigest, 'the narrow client gets its child, stale');
  t.match(narrow.headers['cache-status'], /detail=stale/);
  // A class never seen before: the cached list's linux/amd64 child, which is what the origin picks.
  const unseen = await get(url, `${OCI_MANIFEST}, ${V2}`);
  t.equal(unseen.status, 200);
  t.equal(sha256(unseen.body), amd.manifestDigest);
  t.match(unseen.headers['cache-status'], /detail=stale/);
  const wideAgain = await get(url, DOCKER_ACCEPT);
  t.equal(sha256(wideAgain.body), list.digest, 'and the tag still means the list');
});

t.test('a peer asking for a tag is answered by the same rule', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const { amd, list } = multiArch('peer');
  origin.putIndex('proj/multi', '1', list, [amd]);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h' });
  const url = `${cove.url}/v2/proj/multi/manifests/1`;
  await get(url, V2);
  const peerWide = await fetchAll(url, { headers: { accept: CONTAINERD_ACCEPT, 'cove-peer': 'local' } });
  t.equal(peerWide.status, 404, 'a list-capable peer is not handed the narrow answer');
  const peerNarrow = await fetchAll(url, { headers: { accept: V2, 'cove-peer': 'local' } });
  t.equal(sha256(peerNarrow.body), amd.manifestDigest, 'a narrow peer gets the narrow answer');
  await get(url, CONTAINERD_ACCEPT);
  const peerWide2 = await fetchAll(url, { headers: { accept: CONTAINERD_ACCEPT, 'cove-peer': 'local' } });
  t.equal(sha256(peerWide2.body), list.digest, 'once the list is cached, a list-capable peer gets it');
});

t.test('schema 1 is refused by name, not as a digest mismatch', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const schema1 = Buffer.from(JSON.stringify({ schemaVersion: 1, name: 'proj/old', tag: '1', architecture: 'amd64', fsLayers: [], history: [], signatures: [] }));
  origin.putManifest('proj/old', '1', schema1, SCHEMA1);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h' });
  for (const method of ['GET', 'HEAD']) {
    const r = await get(`${cove.url}/v2/proj/old/manifests/1`, SCHEMA1, method);
    t.equal(r.status, 404, `${method}: 404, not 502`);
    t.equal(r.headers['content-type'], 'application/json');
    if (method === 'GET') {
      const body = JSON.parse(r.body.toString()) as { errors: Array<{ code: string; message: string; detail: { schema: number } }> };
      t.equal(body.errors[0]!.code, 'MANIFEST_UNKNOWN');
      t.match(body.errors[0]!.message, /schema 1/);
      t.equal(body.errors[0]!.detail.schema, 1);
    }
  }
});

t.test('a manifest declared over the size limit is refused and Cove stays up', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  // Declared at 5 MiB, over the 4 MiB limit: the body is dropped unread (an undici body destroyed
  // before its end emits an error, which must never go unheard: the schema 1 refusal found that).
  const big = Buffer.alloc(5 * 1024 * 1024, 0x20);
  big.write('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"');
  origin.putManifest('proj/big', '1', big, OCI_MANIFEST);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h' });
  const r = await get(`${cove.url}/v2/proj/big/manifests/1`, CONTAINERD_ACCEPT);
  t.equal(r.status, 502);
  t.match(r.body.toString(), /over the 4194304-byte limit/);
  const base = await fetchAll(`${cove.url}/v2/`);
  t.equal(base.status, 200, 'Cove still answers');
});
