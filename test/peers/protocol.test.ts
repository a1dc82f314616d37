// The peer protocol's small parts: request signatures, the Via hop list, rendezvous ranking.
import t from 'tap';
import { formatVia, fromCove, parseVia, rankOwners, signPeerRequest, verifyPeerRequest } from '../../src/peers/protocol.js';

const KEY = 'a-site-key-of-some-length';
const PATH = '/v2/proj/app/blobs/sha256:' + 'a'.repeat(64);

t.test('signatures bind key, method, path, mode and time', async (t) => {
  const now = 1_800_000_000_000;
  const sig = signPeerRequest(KEY, 'GET', PATH, 'local', now);
  t.ok(verifyPeerRequest(KEY, sig, 'GET', PATH, 'local', now));
  t.ok(verifyPeerRequest(KEY, sig, 'GET', PATH, 'local', now + 299_000), 'within the clock window');
  t.notOk(verifyPeerRequest(KEY, sig, 'GET', PATH, 'local', now + 301_000), 'too old');
  t.notOk(verifyPeerRequest(KEY, sig, 'GET', PATH, 'local', now - 301_000), 'from the future');
  t.notOk(verifyPeerRequest('another-key-of-length', sig, 'GET', PATH, 'local', now), 'another key');
  t.notOk(verifyPeerRequest(KEY, sig, 'HEAD', PATH, 'local', now), 'another method');
  t.notOk(verifyPeerRequest(KEY, sig, 'GET', PATH + 'b', 'local', now), 'another path');
  t.notOk(verifyPeerRequest(KEY, sig, 'GET', PATH, 'fetch', now), 'another mode');
  for (const junk of [undefined, '', 'x', '123.abc', `${Math.floor(now / 1000)}.${'g'.repeat(64)}`]) {
    t.notOk(verifyPeerRequest(KEY, junk, 'GET', PATH, 'local', now), `malformed: ${String(junk)}`);
  }
});

t.test('Via: Cove hops by node id, other proxies as "?"', async (t) => {
  t.same(parseVia(undefined), []);
  t.same(parseVia('1.1 edge-1 (cove), 1.1 squid, 1.0 regional (cove)'), ['edge-1', '?', 'regional']);
  t.same(parseVia(['1.1 a (cove)', '1.1 b (cove)']), ['a', 'b']);
  t.equal(formatVia(['edge-1', '?'], 'regional'), '1.1 edge-1 (cove), 1.1 regional (cove)');
  t.same(parseVia(formatVia(['edge-1'], 'regional')), ['edge-1', 'regional'], 'what one Cove writes the next reads');
  t.ok(fromCove('1.1 edge-1 (cove)'));
  t.notOk(fromCove('1.1 squid'));
});

t.test('rendezvous: every node ranks the same, and a departure moves only its own digests', async (t) => {
  const nodes = ['node-1', 'node-2', 'node-3', 'node-4', 'node-5'];
  const digests = Array.from({ length: 500 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`);
  t.same(rankOwners([...nodes].reverse(), digests[0]!), rankOwners(nodes, digests[0]!), 'order of the input does not matter');
  const owners = new Map<string, number>();
  let moved = 0;
  for (const d of digests) {
    const owner = rankOwners(nodes, d)[0]!;
    owners.set(owner, (owners.get(owner) ?? 0) + 1);
    const without = rankOwners(nodes.filter((n) => n !== 'node-3'), d)[0]!;
    if (owner !== 'node-3' && without !== owner) moved++;
    if (owner === 'node-3') t.equal(without, rankOwners(nodes, d)[1], 'a gone owner is replaced by the next in rank');
  }
  t.equal(moved, 0, "digests of the nodes that stayed keep their owner");
  for (const n of nodes) t.ok((owners.get(n) ?? 0) > 60, `${n} owns a fair share (${owners.get(n)} of 500)`);
});
