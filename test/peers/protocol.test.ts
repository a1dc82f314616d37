// The peer protocol's small parts: request, answer and challenge MACs, the nonce log, the Via
// hop list, rendezvous ranking.
import t from 'tap';
import { NonceLog } from '../../src/peers/nonces.js';
import {
  PEER_AUTH_WINDOW_S,
  checkPeerRequest,
  formatVia,
  fromCove,
  parsePeerAuth,
  parseVia,
  provePeer,
  rankOwners,
  signPeerAnswer,
  signPeerRequest,
  verifyPeerAnswer,
  verifyPeerProof,
} from '../../src/peers/protocol.js';

const KEY = 'a-site-key-of-some-length';
const PATH = '/v2/proj/app/blobs/sha256:' + 'a'.repeat(64);

t.test('signatures bind key, asker, target, method, path, mode, range, nonce and time', async (t) => {
  const now = 1_800_000_000_000;
  const facts = { asker: 'node-a', target: 'node-b', method: 'GET', path: PATH, mode: 'local', range: '' };
  const { value, nonce } = signPeerRequest(KEY, facts, now);
  const signed = parsePeerAuth(value);
  t.equal(signed?.nonce, nonce, 'the nonce travels in the header');
  t.equal(signed?.target, 'node-b', 'so does the target node');
  t.equal(checkPeerRequest(KEY, signed, facts, now), null);
  t.equal(checkPeerRequest(KEY, signed, facts, now + 299_000), null, 'within the clock window');
  t.match(checkPeerRequest(KEY, signed, facts, now + 301_000), /clock window/, 'too old');
  t.match(checkPeerRequest(KEY, signed, facts, now - 301_000), /clock window/, 'from the future');
  t.match(checkPeerRequest('another-key-of-length', signed, facts, now), /does not match/, 'another key');
  t.match(checkPeerRequest(KEY, signed, { ...facts, target: 'node-c' }, now), /signed for node node-b/, 'another target node');
  const variants: Array<[string, Partial<typeof facts>]> = [
    ['another asker', { asker: 'node-x' }],
    ['another method', { method: 'HEAD' }],
    ['another path', { path: PATH + 'b' }],
    ['another mode', { mode: 'fetch' }],
    ['another range', { range: 'bytes=5-' }],
  ];
  for (const [what, change] of variants) t.match(checkPeerRequest(KEY, signed, { ...facts, ...change }, now), /does not match/, what);
  const otherNonce = value.replace(nonce, nonce.replace(/^./, (c) => (c === '0' ? '1' : '0')));
  t.match(checkPeerRequest(KEY, parsePeerAuth(otherNonce), facts, now), /does not match/, 'another nonce');
  for (const junk of [undefined, '', 'x', '123.abc', `${Math.floor(now / 1000)}.${'g'.repeat(64)}`, `${Math.floor(now / 1000)}.${'a'.repeat(64)}`]) {
    t.equal(parsePeerAuth(junk), null, `malformed: ${String(junk)}`);
  }
  t.match(checkPeerRequest(KEY, null, facts, now), /no valid/);
});

t.test('answers and challenge proofs are bound to the request, the nodes and the content', async (t) => {
  const answer = { nonce: 'a'.repeat(32), answerer: 'node-b', asker: 'node-a', status: 200, digest: 'sha256:' + 'b'.repeat(64), contentType: 'application/octet-stream', contentLength: '10', contentRange: '' };
  const mac = signPeerAnswer(KEY, answer);
  t.ok(verifyPeerAnswer(KEY, mac, answer));
  t.notOk(verifyPeerAnswer(KEY, undefined, answer), 'missing');
  t.notOk(verifyPeerAnswer('another-key-of-length', mac, answer), 'another key');
  for (const change of [{ nonce: 'c'.repeat(32) }, { answerer: 'node-x' }, { asker: 'node-x' }, { status: 404 }, { digest: 'sha256:' + 'c'.repeat(64) }, { contentType: 'text/html' }, { contentLength: '11' }, { contentRange: 'bytes 0-9/10' }]) {
    t.notOk(verifyPeerAnswer(KEY, mac, { ...answer, ...change }), `changed ${Object.keys(change)[0]}`);
  }
  const proof = provePeer(KEY, 'd'.repeat(32), 'node-b', 'node-a', 'default');
  t.ok(verifyPeerProof(KEY, proof, 'd'.repeat(32), 'node-b', 'node-a', 'default'));
  t.notOk(verifyPeerProof(KEY, proof, 'e'.repeat(32), 'node-b', 'node-a', 'default'), 'another nonce');
  t.notOk(verifyPeerProof(KEY, proof, 'd'.repeat(32), 'node-c', 'node-a', 'default'), 'another answering id');
  t.notOk(verifyPeerProof(KEY, proof, 'd'.repeat(32), 'node-b', 'node-c', 'default'), 'another asker');
  t.notOk(verifyPeerProof(KEY, mac, 'd'.repeat(32), 'node-b', 'node-a', 'default'), 'an answer MAC is no proof');
});

t.test('the nonce log refuses a replay and stays bounded', async (t) => {
  let now = 1_800_000_000_000;
  const log = new NonceLog({ max: 3, now: () => now });
  const s = Math.floor(now / 1000);
  t.equal(log.record('n1', s), 'ok');
  t.equal(log.record('n1', s), 'replay', 'the same nonce again');
  t.equal(log.record('n2', s), 'ok');
  t.equal(log.record('n3', s), 'ok');
  t.equal(log.record('n4', s), 'full', 'past the bound a new request is refused, not a nonce forgotten');
  t.equal(log.size, 3);
  now += (PEER_AUTH_WINDOW_S + 2) * 1000;
  t.equal(log.record('n4', Math.floor(now / 1000)), 'ok', 'expired nonces make room');
  t.equal(log.size, 1);
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
