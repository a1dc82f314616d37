// Who owns a digest, under the timing an edge site has at boot and under load: owners are ranked
// over the site's membership, so a member that answered a probe late still owns what it owned
// (only a refused connection passes it over), a node that comes up is counted in as soon as it
// asks anyone anything, and the first owners wait for the static peers' first answers.
import t, { type Test } from 'tap';
import { createServer, type Socket } from 'node:net';
import { pino } from 'pino';
import { PeerClient } from '../../src/peers/client.js';
import { isUnreachable, PeerTable } from '../../src/peers/table.js';
import { rankOwners } from '../../src/peers/protocol.js';
import { FakePeer } from '../helpers/fake-peer.js';
import { freePort } from '../helpers/site.js';

const silent = pino({ level: process.env.COVE_TEST_LOG ?? 'silent' });
const DIGESTS = Array.from({ length: 40 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`);

function tableFor(t: Test, staticUrls: string[], timeoutMs = 300) {
  const client = new PeerClient({ selfId: 'self', key: null, timeoutMs, fetchTimeoutMs: 1000, bodyTimeoutMs: 1000 });
  const table = new PeerTable({ selfId: 'self', site: 'default', staticUrls, client, log: silent });
  t.teardown(async () => {
    await table.stop();
    await client.close();
  });
  return table;
}

async function fakePeer(t: Test, id: string, port?: number): Promise<FakePeer> {
  const peer = await FakePeer.start(id, { port });
  t.teardown(() => peer.close());
  return peer;
}

t.test('a member that answers a probe late keeps its digests; one that refuses connections is passed over', async (t) => {
  const peers = await Promise.all(['node-a', 'node-b', 'node-c'].map((id) => fakePeer(t, id)));
  const table = tableFor(t, peers.map((p) => p.url));
  await table.probe();
  const before = DIGESTS.map((d) => table.owners(d));
  t.same(before[0], rankOwners(['self', 'node-a', 'node-b', 'node-c'], DIGESTS[0]!), 'ranked over the whole site');

  // node-b is busy: its probe times out. It is down for the liveness table, not for ownership.
  peers[1]!.slowProbes = true;
  await table.probe();
  t.notOk(table.live().some((p) => p.id === 'node-b'), 'the late peer is not live (no "do you have it" asks)');
  t.same(DIGESTS.map((d) => table.owners(d)), before, 'every digest keeps its owner');
  t.equal(table.askableOwner('node-b')?.id, 'node-b', 'and it is still asked to fetch what it owns');

  // node-c is gone: connections are refused. Still a member (the ranking does not move), but not asked.
  await peers[2]!.close();
  await table.probe();
  t.same(DIGESTS.map((d) => table.owners(d)), before, 'the ranking is the membership, not the liveness');
  t.equal(table.askableOwner('node-c'), null, 'a member that refuses connections is passed over');
  const row = table.snapshot().peers.find((p) => p.id === 'node-c');
  t.equal(row?.unreachable, true, 'the peer table says why');

  // Any answer makes a member askable again.
  peers[1]!.slowProbes = false;
  await table.probe();
  t.ok(table.live().some((p) => p.id === 'node-b'), 'the busy peer is live again once it answers');
});

t.test('a node that comes up is counted in as soon as it asks: no wait for the next probe tick', async (t) => {
  const up = await fakePeer(t, 'node-a');
  const latePort = await freePort();
  const table = tableFor(t, [up.url, `http://127.0.0.1:${latePort}`]);
  await table.probe();
  t.same(table.members().map((p) => p.id), ['node-a'], 'the node not yet started is no member');
  await fakePeer(t, 'node-late', latePort);
  // Its own probe of this node names it; the table asks the static URLs it does not know yet.
  table.heard('node-late');
  for (let i = 0; i < 100 && !table.members().some((p) => p.id === 'node-late'); i++) await new Promise((r) => setTimeout(r, 10));
  t.same(table.members().map((p) => p.id).sort(), ['node-a', 'node-late'], 'counted in at once (the table\'s tick never ran)');
  const before = table.snapshot().peers.find((p) => p.id === 'node-late');
  table.heard('node-late');
  table.heard('not-a-member');
  await new Promise((r) => setTimeout(r, 50));
  t.same(table.snapshot().peers.find((p) => p.id === 'node-late'), before, 'a member already live is not probed again by hearsay');
  table.heard('../../etc');
  table.heard('self');
  t.equal(table.members().length, 2, 'malformed ids and this node\'s own id change nothing');
});

t.test('the first owners wait for the static peers\' first answers, bounded', async (t) => {
  const peer = await fakePeer(t, 'node-a');
  // A host that accepts and never answers: its probe takes the whole peer timeout.
  const sockets = new Set<Socket>();
  const hung = createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => hung.listen(0, '127.0.0.1', r));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    hung.close();
  });
  const table = tableFor(t, [peer.url, `http://127.0.0.1:${(hung.address() as { port: number }).port}`], 300);
  let settled = false;
  const waiting = table.settled(5000).then(() => (settled = true));
  await new Promise((r) => setTimeout(r, 20));
  t.notOk(settled, 'not settled before any probe ran');
  table.start();
  const started = Date.now();
  await waiting;
  const took = Date.now() - started;
  t.ok(took < 4000, `settled once the hung peer's probe timed out (${took} ms), not at the 5 s bound`);
  t.same(table.members().map((p) => p.id), ['node-a'], 'the answering peer is a member by then');
  const again = Date.now();
  await table.settled(5000);
  t.ok(Date.now() - again < 50, 'later calls return at once');

  const lonely = tableFor(t, [`http://127.0.0.1:${(hung.address() as { port: number }).port}`], 60_000);
  const bounded = Date.now();
  await lonely.settled(200);
  t.ok(Date.now() - bounded < 2000, 'with no probe finished, the wait ends at its bound');
});

t.test('refused and unreachable connections are told apart from slow answers', async (t) => {
  const port = await freePort();
  const client = new PeerClient({ selfId: 'self', key: null, timeoutMs: 300, fetchTimeoutMs: 300, bodyTimeoutMs: 300 });
  t.teardown(() => client.close());
  const refused = await client.nodeInfo(`http://127.0.0.1:${port}`).catch((e: unknown) => e);
  t.ok(isUnreachable(refused), 'connection refused: unreachable');
  const slow = await FakePeer.start('node-slow');
  t.teardown(() => slow.close());
  slow.slowProbes = true;
  const late = await client.nodeInfo(slow.url).catch((e: unknown) => e);
  t.ok(late instanceof Error, 'the late answer failed');
  t.notOk(isUnreachable(late), 'a headers timeout is a slow peer, not a dead one');
  t.notOk(isUnreachable(new Error('x')), 'a plain error is not');
  t.ok(isUnreachable(Object.assign(new Error('all refused'), { errors: [Object.assign(new Error('a'), { code: 'ECONNREFUSED' })] })), 'every address refused: unreachable');
});
