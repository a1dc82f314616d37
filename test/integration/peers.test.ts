// A site of Coves sharing blobs on loopback with static peers: what one node fetched, the others
// take from it; a simultaneous cold pull crosses the uplink once; peer requests never go upstream.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { ACCEPT_ALL, freePort, health, pullImage, startSite, waitForPeerState, waitForPeers } from '../helpers/site.js';
import { startTestCove } from '../helpers/cove.js';
import { signPeerRequest } from '../../src/peers/protocol.js';

const KEY = 'site-key-0123456789abcdef';

t.test('a node pulls from its sibling when the origin is gone, tag included with the site key (stale, flagged)', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [400_000, 1_200_000], seed: 'peer-share' });
  origin.putImage('proj/app', '1', image);
  // A fills its cache before B joins the site (B would otherwise own some blobs and fetch them).
  // A tag is taken from a sibling only over the keyed channel (the sibling proved it holds the key).
  const a = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-1', COVE_PEER_KEY: KEY });
  await pullImage(a.url, 'proj/app', '1', image);
  await a.fillsDone();
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 3, 'node A fetched each blob from the origin once');
  await origin.stop();
  // The site's one peer list names B too: B must recognise itself and skip it.
  const port = await freePort();
  const b = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-2', COVE_LISTEN: `127.0.0.1:${port}`, COVE_PEERS: `${a.url},http://127.0.0.1:${port}`, COVE_PEER_KEY: KEY });
  await waitForPeers(b, 1);

  const pulled = await pullImage(b.url, 'proj/app', '1', image);
  t.match(pulled.manifest.cache, /detail=stale/, "the tag came from A's copy and is flagged stale");
  for (const blob of pulled.blobs) t.equal(blob.cache, 'cove; fwd=miss; stored', `blob ${blob.digest.slice(7, 15)} filled on B`);
  const hb = await health(b);
  t.equal(hb.bytesFetched['peer:node-1'], image.totalBytes, 'every byte B holds (manifest and blobs) came from A');
  t.equal(hb.bytesFetched.origin ?? 0, 0, 'nothing came from the origin');
  t.equal(hb.staleServed, 1, 'the peer tag counts as stale');
  const ha = await health(a);
  t.ok((ha.peerRequests.local ?? 0) >= 3, 'A answered B as a peer');

  const m = await fetchAll(`${b.url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT_ALL } });
  t.equal(m.headers.warning, '110 - "Response is Stale"', 'a second pull is still flagged: the tag was never validated');
  const table = (await (await fetch(`${b.url}/_cove/peers`)).json()) as { self: string; peers: Array<{ id: string; state: string; hits: number; bytes: number }> };
  const peerA = table.peers.find((p) => p.id === 'node-1')!;
  t.equal(table.self, 'node-2');
  t.ok(peerA.hits >= 4 && peerA.bytes >= image.totalBytes - image.manifest.length, 'hits and bytes by peer are in the table');
  t.equal(table.peers.find((p) => p.id === 'node-2')?.state, 'self', 'the shared list names B itself; B skips it');
});

t.test('five nodes pulling one cold image at once fetch it from the origin once', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [2_000_000, 1_000_000, 3_000_000], seed: 'site-cold' });
  origin.putImage('proj/big', '1', image);
  // Slow enough that every node asks while the first transfer is still running.
  for (const layer of image.layers) origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 8_000_000 }, 1);
  const nodes = await startSite(t, origin.url, 5);
  await Promise.all(nodes.map((n) => pullImage(n.url, 'proj/big', '1', image)));
  await Promise.all(nodes.map((n) => n.fillsDone()));
  const blobBytes = image.totalBytes - image.manifest.length;
  t.equal(origin.blobBytesServed, blobBytes, `origin served ${origin.blobBytesServed} blob bytes for a ${blobBytes}-byte image: 1.00×`);
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 4, 'one GET per blob for the whole site');
  let fromPeers = 0;
  for (const n of nodes) {
    const h = await health(n);
    fromPeers += Object.entries(h.bytesFetched).filter(([k]) => k.startsWith('peer:')).reduce((s, [, v]) => s + v, 0);
  }
  t.equal(fromPeers, 4 * blobBytes, 'the other four nodes took every byte from their siblings');
});

t.test('peer-marked requests are answered from the local store only', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [50_000], seed: 'local-only' });
  origin.putImage('proj/app', '1', image);
  const [a] = await startSite(t, origin.url, 1);
  const before = origin.requests.length;
  const local = { 'cove-peer': 'local', 'cove-node': 'node-9' };
  const blob = await fetchAll(`${a!.url}/v2/proj/app/blobs/${image.layers[0]!.digest}`, { headers: local });
  t.equal(blob.status, 404);
  t.match(JSON.parse(blob.body.toString()), { errors: [{ code: 'BLOB_UNKNOWN' }] });
  const head = await fetchAll(`${a!.url}/v2/proj/app/blobs/${image.layers[0]!.digest}`, { method: 'HEAD', headers: local });
  t.equal(head.status, 404);
  const byDigest = await fetchAll(`${a!.url}/v2/proj/app/manifests/${image.manifestDigest}`, { headers: local });
  t.equal(byDigest.status, 404);
  const byTag = await fetchAll(`${a!.url}/v2/proj/app/manifests/1`, { headers: { ...local, accept: ACCEPT_ALL } });
  t.equal(byTag.status, 404);
  const tags = await fetchAll(`${a!.url}/v2/proj/app/tags/list`, { headers: local });
  t.equal(tags.status, 404);
  t.equal(origin.requests.length, before, 'none of them reached the origin');

  const bad = await fetchAll(`${a!.url}/v2/proj/app/blobs/${image.layers[0]!.digest}`, { headers: { 'cove-peer': 'everything' } });
  t.equal(bad.status, 405, 'an unknown peer mode is refused');

  // Once A holds the image, a peer gets it, and its cached tag even past the TTL.
  await pullImage(a!.url, 'proj/app', '1', image);
  await a!.fillsDone();
  const held = await fetchAll(`${a!.url}/v2/proj/app/blobs/${image.layers[0]!.digest}`, { headers: local });
  t.equal(sha256(held.body), image.layers[0]!.digest);
  const tag = await fetchAll(`${a!.url}/v2/proj/app/manifests/1`, { headers: { ...local, accept: ACCEPT_ALL } });
  t.equal(sha256(tag.body), image.manifestDigest);
});

t.test('with COVE_PEER_KEY, peers sign their requests and unsigned ones are refused', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [300_000], seed: 'keyed' });
  origin.putImage('proj/app', '1', image);
  const [a, b] = await startSite(t, origin.url, 2, { COVE_PEER_KEY: KEY });
  await pullImage(a!.url, 'proj/app', '1', image);
  await a!.fillsDone();
  const digest = image.layers[0]!.digest;
  const path = `/v2/proj/app/blobs/${digest}`;

  const signed = (key: string, target: string, opts: { now?: number; asker?: string } = {}) => {
    const asker = opts.asker ?? 'node-2';
    const { value } = signPeerRequest(key, { asker, target, method: 'GET', path, mode: 'local', range: '' }, opts.now);
    return { 'cove-peer': 'local', 'cove-node': asker, 'cove-peer-auth': value };
  };

  const unsigned = await fetchAll(`${a!.url}${path}`, { headers: { 'cove-peer': 'local', 'cove-node': 'node-2' } });
  t.equal(unsigned.status, 401, 'an unsigned peer request is refused');
  t.match(unsigned.body.toString(), /COVE_PEER_KEY/);
  const wrongKey = await fetchAll(`${a!.url}${path}`, { headers: signed('another-key-0123456789', 'node-1') });
  t.equal(wrongKey.status, 401, 'a request signed with another key is refused');
  const old = await fetchAll(`${a!.url}${path}`, { headers: signed(KEY, 'node-1', { now: Date.now() - 3_600_000 }) });
  t.equal(old.status, 401, 'an old signature is refused');
  const good = signed(KEY, 'node-1');
  const ok = await fetchAll(`${a!.url}${path}`, { headers: good });
  t.equal(sha256(ok.body), digest, 'a signed request is answered');
  t.match(String(ok.headers['cove-peer-answer']), /^[0-9a-f]{64}$/, 'and its answer is authenticated');
  const asOther = { ...good, 'cove-node': 'node-3' };
  t.equal((await fetchAll(`${a!.url}${path}`, { headers: asOther })).status, 401, 'the signature names its asker: another Cove-Node is refused');

  const before = origin.count({ method: 'GET', kind: 'blob' });
  await pullImage(b.url, 'proj/app', '1', image);
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), before, 'B (same key) took the blobs from A');
});

t.test('a node with the wrong key is refused by its peers and falls back to the origin', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [200_000], seed: 'wrong-key' });
  origin.putImage('proj/app', '1', image);
  const [a] = await startSite(t, origin.url, 1, { COVE_PEER_KEY: KEY });
  await pullImage(a!.url, 'proj/app', '1', image);
  const b = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-x', COVE_PEERS: a!.url, COVE_PEER_KEY: 'not-the-site-key-000' });
  // A answers B's challenge with the site's key, not B's: B never admits it.
  await waitForPeerState(b, 'node-1', 'unproven');
  const pulled = await pullImage(b.url, 'proj/app', '1', image);
  t.equal(pulled.blobs.length, 2);
  const hb = await health(b);
  t.equal(hb.bytesFetched['peer:node-1'] ?? 0, 0, 'nothing came from the peer that refused');
  t.equal(hb.bytesFetched.origin, image.totalBytes, 'the origin supplied manifest and blobs');
});

t.test('cove peers prints the running node\'s peer table', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const [a] = await startSite(t, origin.url, 2);
  const cli = new URL('../../src/cli.js', import.meta.url).pathname;
  const run = promisify(execFile);
  const out = await run(process.execPath, [cli, 'peers', '--url', a!.url], { timeout: 20_000 });
  t.match(out.stdout, /^node node-1, site default: 2 peer\(s\)$/m);
  t.match(out.stdout, /^node-2\s+http:\/\/127\.0\.0\.1:\d+\s+static\s+live\s/m, 'the sibling, found in COVE_PEERS, live');
  t.match(out.stdout, /^node-1\s+http:\/\/127\.0\.0\.1:\d+\s+static\s+self\s/m, 'itself, recognised in the shared list');
  const json = JSON.parse((await run(process.execPath, [cli, 'peers', '--json', '--url', a!.url], { timeout: 20_000 })).stdout) as { self: string; peers: unknown[] };
  t.equal(json.self, 'node-1');
  t.equal(json.peers.length, 2);
  const down = await run(process.execPath, [cli, 'peers', '--url', 'http://127.0.0.1:9'], { timeout: 20_000 }).catch((err: { code: number; stderr: string }) => err);
  t.equal((down as { code: number }).code, 1);
  t.match((down as { stderr: string }).stderr, /no Cove answered at http:\/\/127\.0\.0\.1:9/);
});

t.test('an owner whose own origin fetch fails is not taken for a dead peer', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100_000, 100_000, 100_000, 100_000], seed: 'owner-503' });
  origin.putImage('proj/app', '1', image);
  const nodes = await startSite(t, origin.url, 2);
  await origin.stop();
  for (const layer of image.layers) {
    const got = await fetchAll(`${nodes[0]!.url}/v2/proj/app/blobs/${layer.digest}`);
    t.equal(got.status, 503, 'no tier could be asked: 503, not a hang');
  }
  const table = (await (await fetch(`${nodes[0]!.url}/_cove/peers`)).json()) as { peers: Array<{ id: string; state: string }> };
  t.equal(table.peers.find((p) => p.id === 'node-2')?.state, 'live', 'the sibling stays live: its 503 was about the origin');
});
