// Peers that fail: one cut off mid-blob (the fill resumes from the next tier at the next byte),
// one sending wrong bytes (quarantined; no client ever gets a complete wrong body), and one that
// never answers (skipped after the short peer timeout, so a pull does not stall).
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { FakePeer } from '../helpers/fake-peer.js';
import { health, waitForPeers } from '../helpers/site.js';
import { startTestCove } from '../helpers/cove.js';

async function peerState(url: string, id: string): Promise<{ state: string; quarantineReason: string | null }> {
  const table = (await (await fetch(`${url}/_cove/peers`)).json()) as { peers: Array<{ id: string; state: string; quarantineReason: string | null }> };
  return table.peers.find((p) => p.id === id)!;
}

t.test('a peer cut off mid-blob: the fill resumes from the origin at the next byte', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [2_000_000], seed: 'peer-cut' });
  origin.putImage('proj/app', '1', image);
  const layer = image.layers[0]!;
  const peer = await FakePeer.start('fake-1');
  t.teardown(() => peer.close());
  peer.putBlob(layer.bytes);
  peer.behaviour = 'truncate';
  const cove = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-1', COVE_PEERS: peer.url });
  await waitForPeers(cove, 1);

  const got = await fetchAll(`${cove.url}/v2/proj/app/blobs/${layer.digest}`);
  t.equal(got.status, 200);
  t.equal(sha256(got.body), layer.digest, 'the client got the whole blob, correct');
  t.equal(peer.requests.filter((r) => r.startsWith('GET')).length, 1, 'the peer was asked once');
  const ranged = origin.requests.filter((r) => r.kind === 'blob' && r.method === 'GET');
  t.equal(ranged.length, 1, 'the origin was asked once, for the rest');
  t.match(ranged[0]!.range, /^bytes=[1-9]\d*-$/, `the origin was asked from the next byte (${ranged[0]!.range})`);
  t.ok(origin.blobBytesServed < layer.bytes.length, 'the origin sent only the bytes the peer did not');
  const h = await health(cove);
  t.equal((h.bytesFetched['peer:fake-1'] ?? 0) + (h.bytesFetched.origin ?? 0), layer.bytes.length, 'peer bytes + origin bytes = the blob');
  t.equal((await peerState(cove.url, 'fake-1')).state, 'down', 'the peer that broke off rests a while');
});

t.test('a peer serving wrong bytes is quarantined; no client gets a complete wrong body', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [500_000], seed: 'peer-wrong' });
  origin.putImage('proj/app', '1', image);
  const layer = image.layers[0]!;
  const peer = await FakePeer.start('fake-2');
  t.teardown(() => peer.close());
  peer.putBlob(layer.bytes);
  peer.manifests.set(image.manifestDigest, { bytes: Buffer.concat([image.manifest, Buffer.from(' ')]), mediaType: image.mediaType });
  peer.behaviour = 'wrong-bytes';
  const cove = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-1', COVE_PEERS: peer.url });
  await waitForPeers(cove, 1);

  // A manifest is checked before it is served: the same request falls through to the origin.
  const m = await fetchAll(`${cove.url}/v2/proj/app/manifests/${image.manifestDigest}`);
  t.equal(m.status, 200);
  t.equal(sha256(m.body), image.manifestDigest, 'the manifest is right, from the origin');
  const after = await peerState(cove.url, 'fake-2');
  t.equal(after.state, 'quarantined');
  t.match(after.quarantineReason, /hashes to/);

  // A second Cove for the blob: the peer's wrong blob is found out at the end of the transfer.
  const cove2 = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-2', COVE_PEERS: peer.url });
  await waitForPeers(cove2, 1);
  const first = await fetchAll(`${cove2.url}/v2/proj/app/blobs/${layer.digest}`).then(
    (r) => ({ complete: true, r }),
    (err: Error) => ({ complete: false, err }),
  );
  t.notOk(first.complete, 'the transfer fed by wrong bytes was broken off, never completed');
  t.equal((await peerState(cove2.url, 'fake-2')).state, 'quarantined', 'the peer is quarantined');
  const second = await fetchAll(`${cove2.url}/v2/proj/app/blobs/${layer.digest}`);
  t.equal(sha256(second.body), layer.digest, "the client's retry gets the right bytes from the origin");
  t.equal((await health(cove2)).bytesFetched.origin, layer.bytes.length);
  const gets = peer.requests.filter((r) => r.startsWith('GET') && r.includes('/blobs/')).length;
  await fetchAll(`${cove2.url}/v2/proj/app/blobs/${layer.digest}`);
  t.equal(peer.requests.filter((r) => r.startsWith('GET') && r.includes('/blobs/')).length, gets, 'a quarantined peer is not asked again');
});

t.test('a peer that never answers costs the peer timeout, not the pull', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100_000], seed: 'peer-hang' });
  origin.putImage('proj/app', '1', image);
  const peer = await FakePeer.start('fake-3');
  t.teardown(() => peer.close());
  const cove = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-1', COVE_PEERS: peer.url, COVE_PEER_TIMEOUT: '300ms' });
  await waitForPeers(cove, 1);
  peer.behaviour = 'hang';
  const started = Date.now();
  const got = await fetchAll(`${cove.url}/v2/proj/app/blobs/${image.layers[0]!.digest}`);
  const ms = Date.now() - started;
  t.equal(sha256(got.body), image.layers[0]!.digest);
  t.ok(ms < 3_000, `the blob came from the origin after ${ms} ms (peer timeout 300 ms)`);
  t.equal((await peerState(cove.url, 'fake-3')).state, 'down');
  const again = Date.now();
  await fetchAll(`${cove.url}/v2/proj/app/blobs/${image.configDigest}`);
  t.ok(Date.now() - again < 250, 'a peer marked down is not waited on again');
});
