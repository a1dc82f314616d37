// Site prewarm: one prewarm (cove prewarm, Harbor's webhook) sent to one node of a site warms the
// whole site with one origin copy of each blob, COVE_PREWARM_COPIES of them kept in the site; the
// forwarded request is taken only signed with the site's key.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage, type Image } from '../helpers/images.js';
import { fetchAll } from '../helpers/http.js';
import { pullImage, startSite, type SiteNode } from '../helpers/site.js';
import { startTestCove } from '../helpers/cove.js';
import { rankOwners, signPeerRequest } from '../../src/peers/protocol.js';
import { NOT_FORWARDED_NO_KEY } from '../../src/prewarm/site.js';

const run = promisify(execFile);
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;
const KEY = 'site-prewarm-key-0123456789abcdef';

/** True when the node's store holds the blob (the file the store layout names). */
function holds(node: SiteNode, digest: string): boolean {
  const hex = digest.slice('sha256:'.length);
  return existsSync(join(node.dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex));
}

function blobsOf(image: Image): Array<{ digest: string; size: number }> {
  return [{ digest: image.configDigest, size: image.config.length }, ...image.layers.map((l) => ({ digest: l.digest, size: l.bytes.length }))];
}

/** Waits (bounded) until every node's fills are done and `check` holds. */
async function settle(nodes: SiteNode[], check: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !check(); i++) await new Promise((r) => setTimeout(r, 25));
  for (const node of nodes) await node.fillsDone();
}

t.test('a prewarm sent to one node of four warms the site: one origin copy, two copies kept, the owner may go', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [700_000, 300_000, 500_000, 200_000], seed: 'site-prewarm' });
  origin.putImage('proj/app', '1', image);
  const nodes = await startSite(t, origin.url, 4, { COVE_PEER_KEY: KEY, COVE_PREWARM_COPIES: '2' });
  const ids = nodes.map((n) => n.id);
  const blobs = blobsOf(image);

  const out = await run(process.execPath, [CLI, 'prewarm', 'proj/app:1', '--socket', nodes[0]!.adminSocket!], { timeout: 60_000 });
  t.match(out.stdout, /^site: forwarded to 3 member\(s\), taken by node-2, node-3, node-4; each blob kept on 2 node\(s\)$/m, 'the answer names the members it went to and which took it');
  for (const id of ['node-2', 'node-3', 'node-4']) t.match(out.stdout, new RegExp(`^site member ${id}: done, holds \\d blob\\(s\\)`, 'm'), `${id} reported its part`);
  t.match(out.stdout, /^proj\/app:1: sha256:\w+ ready, \d blob\(s\) \(0 cached\), \d more on other site members, /m);

  await settle(nodes, () => blobs.every((b) => nodes.filter((n) => holds(n, b.digest)).length >= 2));
  const blobBytes = blobs.reduce((n, b) => n + b.size, 0);
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), blobs.length, 'one origin GET per blob for the whole site');
  for (const b of blobs) t.equal(origin.count({ method: 'GET', kind: 'blob', digest: b.digest }), 1, `blob ${b.digest.slice(7, 15)} fetched from the origin once`);
  t.equal(origin.blobBytesServed, blobBytes, `the origin served ${origin.blobBytesServed} blob bytes for ${blobBytes}: 1.00×`);
  for (const b of blobs) {
    const top = rankOwners(ids, b.digest).slice(0, 2);
    const holders = nodes.filter((n) => holds(n, b.digest)).map((n) => n.id);
    t.ok(holders.length >= 2, `blob ${b.digest.slice(7, 15)} is on ${holders.length} nodes (${holders.join(', ')})`);
    t.ok(top.every((id) => holders.includes(id)), `its two first owners (${top.join(', ')}) hold it`);
  }
  for (const n of nodes) t.ok(holds(n, image.manifestDigest), `${n.id} holds the manifest`);

  // The first owner of the largest layer goes away; a node that holds none of that layer pulls.
  const big = image.layers[0]!.digest;
  const ranked = rankOwners(ids, big);
  const owner = nodes.find((n) => n.id === ranked[0])!;
  const puller = nodes.find((n) => n.id === ranked[3])!;
  t.notOk(holds(puller, big), `${puller.id} does not hold the largest layer`);
  await owner.stop();
  const before = origin.requests.length;
  const pulled = await pullImage(puller.url, 'proj/app', '1', image);
  t.equal(pulled.blobs.length, blobs.length, 'every blob pulled, bytes checked');
  t.equal(origin.requests.length, before, `with ${owner.id} gone, the pull on ${puller.id} cost the origin nothing`);
});

t.test("Harbor's webhook with more copies than nodes: every node holds every blob, the origin serves each once", async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [400_000, 250_000], seed: 'site-prewarm-all' });
  origin.putImage('proj/app', '2', image);
  const nodes = await startSite(t, origin.url, 3, { COVE_PEER_KEY: KEY, COVE_PREWARM_COPIES: '5' });
  const blobs = blobsOf(image);
  const event = {
    type: 'PUSH_ARTIFACT',
    occur_at: 1700000000,
    operator: 'robot$ci',
    event_data: {
      resources: [{ digest: image.manifestDigest, tag: '2', resource_url: 'harbor.example.com/proj/app:2' }],
      repository: { name: 'app', namespace: 'proj', repo_full_name: 'proj/app', repo_type: 'private' },
    },
  };
  const res = await nodes[1]!.adminFetch('/admin/webhook/harbor', { method: 'POST', body: JSON.stringify(event) });
  t.equal(res.status, 202);
  const body = (await res.json()) as { site: { local: string | null; copies: number; forwarded: string[]; accepted: string[] } };
  t.same(body.site, { copies: 5, local: null, forwarded: ['node-1', 'node-3'], accepted: ['node-1', 'node-3'], refused: [] }, 'the 202 says where the push went');
  await settle(nodes, () => blobs.every((b) => nodes.every((n) => holds(n, b.digest))));
  for (const b of blobs) t.same(nodes.filter((n) => holds(n, b.digest)).map((n) => n.id), ['node-1', 'node-2', 'node-3'], `blob ${b.digest.slice(7, 15)} on every node`);
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), blobs.length, 'still one origin GET per blob');
  t.equal(origin.blobBytesServed, blobs.reduce((n, b) => n + b.size, 0));
});

t.test('without a peer key the prewarm stays on the node that got it, and says so', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [300_000, 100_000], seed: 'site-prewarm-nokey' });
  origin.putImage('proj/app', '3', image);
  const nodes = await startSite(t, origin.url, 3, { COVE_PREWARM_COPIES: '2' });
  const blobs = blobsOf(image);
  const out = await run(process.execPath, [CLI, 'prewarm', 'proj/app:3', '--socket', nodes[0]!.adminSocket!], { timeout: 60_000 });
  t.match(out.stdout, `site: ${NOT_FORWARDED_NO_KEY}`, 'the answer says why it was not forwarded');
  t.match(out.stdout, /^proj\/app:3: sha256:\w+ ready, 3 blob\(s\) \(0 cached\), /m, 'this node took every blob');
  await settle(nodes, () => true);
  t.ok(blobs.every((b) => holds(nodes[0]!, b.digest)), 'node-1 holds the whole image');
  // The others were not asked to prewarm; a blob they own came through them as usual (the owner
  // fetches from above for the site and keeps a copy), nothing else.
  const ids = nodes.map((n) => n.id);
  for (const n of nodes.slice(1)) {
    t.notOk(holds(n, image.manifestDigest), `${n.id} was not asked for the image`);
    t.ok(blobs.every((b) => !holds(n, b.digest) || rankOwners(ids, b.digest)[0] === n.id), `${n.id} holds only blobs it owns`);
  }
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), blobs.length);
});

t.test('a forwarded prewarm is taken only as a signed peer request', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [50_000], seed: 'site-prewarm-auth' });
  origin.putImage('proj/app', '4', image);
  const [node] = await startSite(t, origin.url, 1, { COVE_PEER_KEY: KEY });
  const path = `/_cove/site-prewarm?${new URLSearchParams({ ref: 'proj/app:4', copies: '1', names: 'client' })}`;
  const signed = (key: string, p = path) => ({
    'cove-peer': 'local',
    'cove-node': 'node-9',
    'cove-peer-auth': signPeerRequest(key, { asker: 'node-9', target: 'node-1', method: 'GET', path: p, mode: 'local', range: '' }).value,
  });

  const refused: Array<[string, Record<string, string>]> = [
    ['no peer headers', {}],
    ['a peer mark without a signature', { 'cove-peer': 'local', 'cove-node': 'node-9' }],
    ['signed with another key', signed('not-the-site-key-0123456789')],
  ];
  for (const [what, headers] of refused) {
    const res = await fetchAll(`${node!.url}${path}`, { headers });
    t.equal(res.status, 401, `${what}: 401`);
    t.match(res.body.toString(), /UNAUTHORIZED/);
  }
  const other = signed(KEY, path.replace('proj%2Fapp%3A4', 'proj%2Fother%3A1'));
  t.equal((await fetchAll(`${node!.url}${path}`, { headers: other })).status, 401, 'a signature for another query: 401');
  t.equal(origin.requests.length, 0, 'no refused request reached the origin');

  const good = signed(KEY);
  const ok = await fetchAll(`${node!.url}${path}`, { headers: good });
  t.equal(ok.status, 200, 'a signed request is taken');
  const lines = ok.body.toString().trim().split('\n').map((l) => JSON.parse(l) as { accepted?: { node: string }; result?: { ok: boolean } });
  t.equal(lines[0]?.accepted?.node, 'node-1', 'accepted first');
  t.equal(lines.at(-1)?.result?.ok, true, 'the result last');
  t.ok(typeof ok.headers['cove-peer-answer'] === 'string', 'the answer is authenticated for the asker');
  t.equal((await fetchAll(`${node!.url}${path}`, { headers: good })).status, 401, 'the same signature again (a replay): 401');

  const badCopies = `/_cove/site-prewarm?${new URLSearchParams({ ref: 'proj/app:4', copies: '0' })}`;
  const bad = await fetchAll(`${node!.url}${badCopies}`, { headers: signed(KEY, badCopies) });
  t.equal(bad.status, 400, 'copies=0: 400');
  t.match(bad.body.toString(), /copies must be a whole number from 1 to 256/);
  t.equal((await fetchAll(`${node!.url}${path}`, { method: 'POST', headers: signed(KEY) })).status, 405, 'only GET');
  const socket = await node!.adminFetch(path, { headers: signed(KEY) });
  t.equal(socket.status, 404, 'the admin socket does not answer it');

  // A node without a key takes no forwarded prewarm at all.
  const keyless = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-5' });
  const res = await fetchAll(`${keyless.url}${path}`, { headers: signed(KEY) });
  t.equal(res.status, 401, 'a node without COVE_PEER_KEY refuses it');
  t.match(res.body.toString(), /no COVE_PEER_KEY/);
});

t.test('a member that refuses is named, and the node that got the prewarm stands in for it', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [200_000, 300_000, 100_000, 250_000, 150_000], seed: 'site-prewarm-refuse' });
  origin.putImage('proj/app', '5', image);
  // One job at a time and one waiting: two slow local prewarms fill node-3's queue, so it
  // refuses the forwarded one (429).
  const nodes = await startSite(t, origin.url, 3, { COVE_PEER_KEY: KEY, COVE_PREWARM_JOBS: '1', COVE_PREWARM_QUEUE: '1' });
  const ids = nodes.map((n) => n.id);
  const blobs = blobsOf(image);
  for (const tag of ['1', '2']) origin.putImage('proj/filler', tag, makeImage({ layers: [150_000], seed: `site-prewarm-filler-${tag}` }));
  origin.setFault({ repo: 'proj/filler', kind: 'blob' }, { type: 'slow', bytesPerSecond: 150_000 });
  const filler = nodes[2]!.adminFetch('/admin/prewarm', { method: 'POST', body: JSON.stringify({ refs: ['proj/filler:1', 'proj/filler:2'], local: true }) });
  // The filler's first job is running once its manifest was asked for.
  for (let i = 0; i < 200 && origin.count({ repo: 'proj/filler', kind: 'blob' }) === 0; i++) await new Promise((r) => setTimeout(r, 25));

  const res = await nodes[0]!.adminFetch('/admin/prewarm', { method: 'POST', body: JSON.stringify({ refs: ['proj/app:5'] }) });
  type Line = { site?: { accepted: string[]; refused: Array<{ node: string; reason: string }> }; result?: { ok: boolean; site: { members: Array<{ node: string; ok: boolean }> } } };
  const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as Line);
  await (await filler).text();
  const site = lines.find((l) => l.site)?.site;
  t.same(site?.accepted, ['node-2'], 'node-2 took it');
  t.equal(site?.refused.length, 1);
  t.equal(site?.refused[0]?.node, 'node-3', 'node-3 refused it');
  t.match(site?.refused[0]?.reason, /answered 429: the prewarm queue is full/, 'with its reason');
  const result = lines.at(-1)?.result;
  t.equal(result?.ok, true, 'the site prewarm succeeded');
  t.same(result?.site.members.map((m) => [m.node, m.ok]), [['node-2', true]]);

  await settle(nodes, () => blobs.every((b) => nodes.some((n) => holds(n, b.digest))));
  const standIn = blobs.filter((b) => rankOwners(ids, b.digest)[0] === 'node-3');
  t.ok(standIn.length > 0, `${standIn.length} of ${blobs.length} blobs rank node-3 first`);
  for (const b of standIn) t.ok(holds(nodes[0]!, b.digest), `node-1 filled ${b.digest.slice(7, 15)} in node-3's place`);
  for (const b of blobs) t.ok(nodes.some((n) => holds(n, b.digest)), `blob ${b.digest.slice(7, 15)} is in the site`);
  for (const b of blobs) t.equal(origin.count({ method: 'GET', kind: 'blob', digest: b.digest }), 1, `blob ${b.digest.slice(7, 15)} fetched from the origin once`);
});

t.test("a member's long part keeps its answer alive past the forwarding node's body timeout", async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [600_000], seed: 'site-prewarm-slow' });
  origin.putImage('proj/app', '6', image);
  // The layer takes some 3 s; the peer client gives up on a body silent for 2 s.
  origin.setFault({ kind: 'blob', digest: image.layers[0]!.digest }, { type: 'slow', bytesPerSecond: 200_000 });
  const nodes = await startSite(t, origin.url, 2, { COVE_PEER_KEY: KEY, COVE_PREWARM_COPIES: '2', COVE_UPSTREAM_BODY_TIMEOUT: '2s' });
  const started = Date.now();
  const res = await nodes[0]!.adminFetch('/admin/prewarm', { method: 'POST', body: JSON.stringify({ refs: ['proj/app:6'] }) });
  const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l) as { result?: { ok: boolean; site: { members: Array<{ node: string; ok: boolean; error?: string }> } } });
  const result = lines.at(-1)?.result;
  t.ok(Date.now() - started > 2000, 'the prewarm outlasted the body timeout');
  t.same(result?.site.members, [{ node: 'node-2', ok: true, refs: [{ ref: 'proj/app:6', ok: true, digest: image.manifestDigest, blobs: 2, bytes: image.config.length + 600_000 }] }], "node-2's outcome arrived");
  t.equal(result?.ok, true);
  await settle(nodes, () => true);
  for (const n of nodes) t.ok(holds(n, image.layers[0]!.digest), `${n.id} holds the layer`);
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 2, 'one origin GET per blob');
});
