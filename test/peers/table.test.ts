// The peer table against announcements a LAN stranger can send (mDNS is one unauthenticated
// datagram): floods of fake ids, a known id moved to another URL, addresses off this node's
// subnets, and peers that cannot prove the site's key. Announcements go straight into the table
// (discovery's own filter has its own test); every peer lives on loopback, so this node's
// "subnets" are 127.0.0.0/8 here and loopback is allowed as for a node on loopback only.
import t, { type Test } from 'tap';
import { pino } from 'pino';
import { PeerClient } from '../../src/peers/client.js';
import { PeerTable, MAX_DISCOVERED_PEERS } from '../../src/peers/table.js';
import { rankOwners } from '../../src/peers/protocol.js';
import { FakePeer } from '../helpers/fake-peer.js';
import { freePort } from '../helpers/site.js';

const silent = pino({ level: process.env.COVE_TEST_LOG ?? 'silent' });
const KEY = 'site-key-0123456789abcdef';
const LOOPBACK_NETS = () => [{ cidr: '127.0.0.0/8', internal: false }];

function tableFor(t: Test, options: { key?: string; now?: () => number; loopbackOk?: boolean; nets?: () => Array<{ cidr: string; internal: boolean }> } = {}) {
  const client = new PeerClient({ selfId: 'self', key: options.key ?? null, timeoutMs: 500, fetchTimeoutMs: 1000, bodyTimeoutMs: 1000 });
  const table = new PeerTable({
    selfId: 'self',
    site: 'default',
    staticUrls: [],
    client,
    log: silent,
    localNets: options.nets ?? LOOPBACK_NETS,
    loopbackOk: options.loopbackOk ?? true,
    now: options.now,
  });
  t.teardown(async () => {
    await table.stop();
    await client.close();
  });
  return table;
}

async function fakePeer(t: Test, id: string, options: { key?: string; host?: string } = {}): Promise<FakePeer> {
  const peer = await FakePeer.start(id, options);
  t.teardown(() => peer.close());
  return peer;
}

const discovered = (table: PeerTable) => table.snapshot().peers.filter((p) => p.source === 'mdns');
const liveIds = (table: PeerTable) => table.live().map((p) => p.id).sort();

t.test('5,000 fake announcements: the table holds at most the cap, and digests still go to real peers', async (t) => {
  let now = Date.now();
  const table = tableFor(t, { now: () => now });
  const real = await fakePeer(t, 'real-1');
  table.upsertDiscovered({ id: 'real-1', site: 'default', url: real.url });
  await table.probe();
  t.same(liveIds(table), ['real-1'], 'the real sibling is admitted');

  // Every fake at its own loopback address and a port where nothing listens: each probe is refused.
  const closed = await freePort();
  const flood = () => {
    for (let i = 0; i < 5000; i++) {
      table.upsertDiscovered({ id: `fake-${i}`, site: 'default', url: `http://127.1.${i >> 8}.${(i & 255) + 1}:${closed}` });
    }
  };
  flood();
  t.ok(discovered(table).length <= MAX_DISCOVERED_PEERS, `the table holds ${discovered(table).length} discovered peers (cap ${MAX_DISCOVERED_PEERS})`);
  await table.probe();
  t.same(liveIds(table), ['real-1'], 'no fake is live: none answered who it is');
  const digests = Array.from({ length: 200 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`);
  const owners = new Set(digests.map((d) => table.owners(d)[0]));
  t.same([...owners].sort(), ['real-1', 'self'], 'every digest is owned by this node or the real sibling');

  // A second real sibling announced during a flood takes the place of a fake that failed its
  // chance, once that place is old enough; once admitted, the flood cannot push it out.
  const late = await fakePeer(t, 'real-2', { host: '127.0.0.5' });
  table.upsertDiscovered({ id: 'real-2', site: 'default', url: late.url });
  t.equal(table.byId('real-2'), undefined, 'right after the flood every place is young: the newcomer waits');
  now += 6_000;
  table.upsertDiscovered({ id: 'real-2', site: 'default', url: late.url });
  flood();
  t.ok(discovered(table).length <= MAX_DISCOVERED_PEERS, 'still within the cap');
  await table.probe();
  t.ok(table.byId('real-2')?.admitted, 'the late real sibling got a place and was admitted');
  now += 6_000;
  flood();
  await table.probe();
  t.same(liveIds(table), ['real-1', 'real-2'], 'both real siblings stay live through the flood');
  t.ok(discovered(table).length <= MAX_DISCOVERED_PEERS, `${discovered(table).length} discovered peers at most`);
});

t.test('an announcement moving a known id to a new URL is ignored while the first URL answers', async (t) => {
  const table = tableFor(t);
  const first = await fakePeer(t, 'peer-a');
  const impostor = await fakePeer(t, 'peer-a', { host: '127.0.0.2' });
  table.upsertDiscovered({ id: 'peer-a', site: 'default', url: first.url });
  await table.probe();
  table.upsertDiscovered({ id: 'peer-a', site: 'default', url: impostor.url });
  await table.probe();
  t.equal(table.byId('peer-a')?.url, first.url, 'the id keeps its first URL');
  t.same(table.live().map((p) => p.url), [first.url]);
  t.equal(impostor.seen.length, 0, 'the new URL was never even asked');

  // Another id announced at the first URL does not take it over either.
  table.upsertDiscovered({ id: 'peer-b', site: 'default', url: first.url });
  t.equal(table.byId('peer-b'), undefined, 'another id at a known URL is ignored');

  // Once the first URL stops answering, the id may move.
  await first.close();
  await table.probe();
  await table.probe();
  table.upsertDiscovered({ id: 'peer-a', site: 'default', url: impostor.url });
  await table.probe();
  t.equal(table.byId('peer-a')?.url, impostor.url, 'after its first URL failed, the id moves');
});

t.test('a goodbye (as forgeable as an announcement) does not hand a known id to another URL', async (t) => {
  const table = tableFor(t);
  const real = await fakePeer(t, 'peer-a');
  const impostor = await fakePeer(t, 'peer-a', { host: '127.0.0.2' });
  table.upsertDiscovered({ id: 'peer-a', site: 'default', url: real.url });
  await table.probe();
  table.forgetDiscovered('peer-a');
  t.equal(table.byId('peer-a'), undefined, 'a goodbye drops the peer at once');
  table.upsertDiscovered({ id: 'peer-a', site: 'default', url: impostor.url });
  await table.probe();
  t.equal(table.byId('peer-a'), undefined, 'an announcement of that id at another URL right after is ignored');
  t.equal(impostor.seen.length, 0, 'and the other URL is never asked');
  table.upsertDiscovered({ id: 'peer-a', site: 'default', url: real.url });
  await table.probe();
  t.same(table.live().map((p) => p.url), [real.url], 'at its own URL the id comes back (a forged goodbye costs a moment)');
});

t.test('announcements at link-local, metadata, foreign or loopback addresses are ignored', async (t) => {
  const table = tableFor(t, { nets: () => [{ cidr: '10.20.30.5/24', internal: false }, { cidr: '127.0.0.1/8', internal: true }], loopbackOk: false });
  const refused = [
    'http://169.254.169.254:80',
    'http://169.254.10.1:5000',
    'http://10.99.0.1:5000',
    'http://192.168.1.1:5000',
    'http://[fe80::1]:5000',
    'http://[fd00:ec2::254]:80',
    'http://127.0.0.1:5000',
    'http://224.0.0.251:5353',
    'http://cove.example.com:5000',
  ];
  for (const [i, url] of refused.entries()) table.upsertDiscovered({ id: `bad-${i}`, site: 'default', url });
  t.same(table.snapshot().peers, [], 'none of them entered the table (so none was ever asked anything)');
});

t.test('one discovered peer per address, and an id the URL does not answer with is dropped', async (t) => {
  const table = tableFor(t);
  const peer = await fakePeer(t, 'peer-a');
  const port = Number(new URL(peer.url).port);
  table.upsertDiscovered({ id: 'peer-a', site: 'default', url: peer.url });
  table.upsertDiscovered({ id: 'peer-z', site: 'default', url: `http://127.0.0.1:${port + 1}` });
  await table.probe();
  t.same(discovered(table).map((p) => p.id), ['peer-a'], 'a second id at the same address is ignored');
  const liar = await fakePeer(t, 'someone-else', { host: '127.0.0.3' });
  table.upsertDiscovered({ id: 'peer-c', site: 'default', url: liar.url });
  await table.probe();
  t.equal(table.byId('peer-c'), undefined, 'announced as peer-c, answered as someone-else: dropped');
  t.same(liveIds(table), ['peer-a']);
});

t.test('with a peer key, only a peer that answers the challenge with the key is used', async (t) => {
  const table = tableFor(t, { key: KEY });
  const good = await fakePeer(t, 'good', { key: KEY });
  const noKey = await fakePeer(t, 'no-key', { host: '127.0.0.2' });
  const wrongKey = await fakePeer(t, 'wrong-key', { key: 'another-key-0123456789', host: '127.0.0.3' });
  for (const p of [good, noKey, wrongKey]) table.upsertDiscovered({ id: p.id, site: 'default', url: p.url });
  await table.probe();
  t.same(liveIds(table), ['good'], 'only the key holder is live');
  const rows = table.snapshot().peers;
  for (const id of ['no-key', 'wrong-key']) {
    const row = rows.find((p) => p.id === id)!;
    t.equal(row.state, 'unproven', `${id} is listed as unproven`);
    t.match(row.refusal, /COVE_PEER_KEY/, `${id}: the reason names the key`);
  }
  t.ok(table.keyed, 'a keyed table may ask its peers for tags');
  const digests = Array.from({ length: 50 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`);
  t.ok(digests.every((d) => ['self', 'good'].includes(table.owners(d)[0]!)), 'unproven peers own nothing');
  t.same(rankOwners(['self', 'good'], digests[0]!), table.owners(digests[0]!));
});
