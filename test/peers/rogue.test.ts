// A LAN stranger trying to join or steer a site, against real Coves on loopback: a rogue host
// that answers like a peer (no key, a wrong key, or a key holder's answers replaced on the way)
// must never get its image served for a tag; a captured signed request must not be usable again,
// nor at another node.
import { connect, createServer, type Socket } from 'node:net';
import t, { type Test } from 'tap';
import { makeImage, type Image } from '../helpers/images.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { FakePeer, type AnswerAuth } from '../helpers/fake-peer.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';
import { ACCEPT_ALL, health, pullImage, startSite, waitForPeerState, waitForPeers } from '../helpers/site.js';
import { signPeerRequest } from '../../src/peers/protocol.js';

const KEY = 'site-key-0123456789abcdef';

/** A rogue host holding its own image under proj/app:1 (and its blobs), as a peer would. */
async function rogueWith(t: Test, id: string, evil: Image, options: { key?: string } = {}): Promise<FakePeer> {
  const rogue = await FakePeer.start(id, options);
  t.teardown(() => rogue.close());
  rogue.tags.set('proj/app:1', { bytes: evil.manifest, mediaType: evil.mediaType });
  rogue.manifests.set(evil.manifestDigest, { bytes: evil.manifest, mediaType: evil.mediaType });
  rogue.putBlob(evil.config);
  for (const layer of evil.layers) rogue.putBlob(layer.bytes);
  return rogue;
}

/** An origin serving the real proj/app:1, already stopped when `down`. */
async function originWith(t: Test, image: Image): Promise<OriginRegistry> {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', image);
  return origin;
}

const tagOf = (url: string) => fetchAll(`${url}/v2/proj/app/manifests/1`, { headers: { accept: ACCEPT_ALL } });

t.test('a rogue peer answering a tag while the origin is down: its image is never served', async (t) => {
  const image = makeImage({ layers: [30_000], seed: 'rogue-real' });
  const evil = makeImage({ layers: [30_000], seed: 'rogue-evil' });

  t.test('no peer key: a peer is never asked for a tag', async (t) => {
    const origin = await originWith(t, image);
    const rogue = await rogueWith(t, 'rogue', evil);
    const cove = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-1', COVE_PEERS: rogue.url });
    await waitForPeers(cove, 1); // without a key a peer that says who it is serves content-addressed data
    await origin.stop();
    const m = await tagOf(cove.url);
    t.ok(m.status === 503 || m.status === 404, `the tag fails cleanly (${m.status})`);
    t.match(JSON.parse(m.body.toString()), { errors: [{ code: String }] }, 'with an OCI error body');
    t.not(sha256(m.body), evil.manifestDigest, "the rogue's manifest was not served");
    t.notOk(rogue.requests.some((r) => r.includes('/manifests/1')), 'the rogue was never asked for the tag');
    // The rogue's image by digest would still be verified content, but nothing points a client at it.
    t.equal((await health(cove)).staleServed, 0);
  });

  t.test('no peer key, tag cached: the cached answer, never the rogue\'s', async (t) => {
    const origin = await originWith(t, image);
    const rogue = await rogueWith(t, 'rogue', evil);
    const cove = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-1', COVE_PEERS: rogue.url, COVE_TAG_TTL: '0s' });
    await waitForPeers(cove, 1);
    await pullImage(cove.url, 'proj/app', '1', image);
    await origin.stop();
    const m = await tagOf(cove.url);
    t.equal(m.status, 200);
    t.equal(sha256(m.body), image.manifestDigest, 'the cached manifest, served stale');
    t.equal(m.headers.warning, '110 - "Response is Stale"');
  });

  for (const [what, key] of [
    ['a rogue without the key', undefined],
    ['a rogue with another key', 'another-key-0123456789'],
  ] as const) {
    t.test(`peer key set, ${what}: never admitted, never asked anything`, async (t) => {
      const origin = await originWith(t, image);
      const rogue = await rogueWith(t, 'rogue', evil, { key });
      const cove = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-1', COVE_PEERS: rogue.url, COVE_PEER_KEY: KEY });
      const row = await waitForPeerState(cove, 'rogue', 'unproven');
      t.match(row.refusal, /COVE_PEER_KEY/, 'the table says why');
      await origin.stop();
      const m = await tagOf(cove.url);
      t.ok(m.status === 503 || m.status === 404, `the tag fails cleanly (${m.status})`);
      t.not(sha256(m.body), evil.manifestDigest, "the rogue's manifest was not served");
      const blob = await fetchAll(`${cove.url}/v2/proj/app/blobs/${evil.layers[0]!.digest}`);
      t.not(blob.status, 200, 'nor any of its blobs');
      t.same(rogue.requests, [], 'the unproven peer was never sent a registry request');
    });
  }
});

t.test('a key holder\'s answers with a missing, forged or misdirected Cove-Peer-Answer are discarded', async (t) => {
  const image = makeImage({ layers: [40_000], seed: 'answer-real' });
  const evil = makeImage({ layers: [40_000], seed: 'answer-evil' });
  for (const auth of ['missing', 'forged', 'other-nonce'] as AnswerAuth[]) {
    t.test(`answer auth ${auth}`, async (t) => {
      const origin = await originWith(t, image);
      // It answers the challenge with the key (so it is admitted), but what comes back for a
      // request is not authenticated for that request: as if a host on the path replaced it.
      const rogue = await rogueWith(t, 'rogue', evil, { key: KEY });
      rogue.auth = auth;
      rogue.putBlob(image.layers[0]!.bytes);
      const cove = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-1', COVE_PEERS: rogue.url, COVE_PEER_KEY: KEY });
      await waitForPeers(cove, 1);
      await origin.stop();
      const m = await tagOf(cove.url);
      t.ok(rogue.requests.some((r) => r === 'GET /v2/proj/app/manifests/1'), 'the admitted peer was asked for the tag');
      t.ok(m.status === 503 || m.status === 404, `and its answer was discarded: the tag fails cleanly (${m.status})`);
      t.not(sha256(m.body), evil.manifestDigest, "the rogue's manifest was not served");
      t.equal((await health(cove)).bytesFetched['peer:rogue'] ?? 0, 0, 'nothing was taken from it');
    });
  }

  t.test('control: the same peer with authenticated answers is believed', async (t) => {
    const origin = await originWith(t, image);
    const peer = await rogueWith(t, 'sibling', image, { key: KEY });
    const cove = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-1', COVE_PEERS: peer.url, COVE_PEER_KEY: KEY });
    await waitForPeers(cove, 1);
    await origin.stop();
    const m = await tagOf(cove.url);
    t.equal(sha256(m.body), image.manifestDigest, "a key holder's tag answer is served (stale)");
    t.equal(m.headers.warning, '110 - "Response is Stale"');
  });
});

/** A TCP relay in front of `target` that keeps every byte the client side sent: a wiretap. */
async function wiretap(t: Test, target: string): Promise<{ url: string; sent: () => string }> {
  const { hostname, port } = new URL(target);
  const chunks: Buffer[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(Number(port), hostname);
    sockets.add(client).add(upstream);
    client.on('data', (c: Buffer) => chunks.push(c));
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}`, sent: () => Buffer.concat(chunks).toString('latin1') };
}

/** Sends raw request bytes to `url` on a fresh connection; resolves with the status code. */
function sendRaw(url: string, request: string): Promise<number> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), hostname, () => socket.write(request));
    let head = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('no answer within 5 s'));
    }, 5000);
    socket.on('data', (c: Buffer) => {
      head += c.toString('latin1');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(head);
      if (m) {
        clearTimeout(timer);
        socket.destroy();
        resolve(Number(m[1]));
      }
    });
    socket.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
}

t.test('a captured signed request is refused when replayed, and at any other node', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [20_000], seed: 'replay' });
  origin.putImage('proj/app', '1', image);
  const [a, c] = await startSite(t, origin.url, 2, { COVE_PEER_KEY: KEY });
  await pullImage(a!.url, 'proj/app', '1', image);
  await a!.fillsDone();
  // B reaches A through a wiretap: every byte B sends A is captured on the way.
  const tap = await wiretap(t, a!.url);
  const b = await startTestCove(t, origin.url, { COVE_NODE_ID: 'node-b', COVE_PEERS: tap.url, COVE_PEER_KEY: KEY });
  await waitForPeers(b, 1);
  const layer = image.layers[0]!.digest;
  const got = await fetchAll(`${b.url}/v2/proj/app/blobs/${layer}`);
  t.equal(sha256(got.body), layer, 'B took the blob from A through the tap');
  const captured = tap
    .sent()
    .split('\r\n\r\n')
    .map((r) => r.replace(/^\r?\n/, ''))
    .find((r) => r.startsWith(`GET /v2/proj/app/blobs/${layer}`) && /cove-peer-auth:/i.test(r));
  t.ok(captured, 'a signed peer request was captured');
  if (!captured) return;
  const request = `${captured}\r\n\r\n`;
  t.equal(await sendRaw(a!.url, request), 401, 'replayed to A, its target: refused');
  t.equal(await sendRaw(c!.url, request), 401, 'sent to node-2, another node of the site: refused');

  // A fresh request signed for node-1, sent to node-2, is refused too; the same sent to node-1 is not.
  const path = `/v2/proj/app/blobs/${layer}`;
  const forA = signPeerRequest(KEY, { asker: 'node-b', target: 'node-1', method: 'GET', path, mode: 'local', range: '' }).value;
  const headers = { 'cove-peer': 'local', 'cove-node': 'node-b', 'cove-peer-auth': forA };
  t.equal((await fetchAll(`${c!.url}${path}`, { headers })).status, 401, 'a request signed for node-1 is refused by node-2');
  t.equal((await fetchAll(`${a!.url}${path}`, { headers })).status, 200, 'and accepted once by node-1');
  t.equal((await fetchAll(`${a!.url}${path}`, { headers })).status, 401, 'but only once');
});
