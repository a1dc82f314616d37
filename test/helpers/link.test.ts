// Self-test of the link relay the outage tests stand on: each mode does to a connection what it
// says (relay, hold, refuse, reset), switching back restores the link, and a link without a target
// is a TLS black hole.
import { request } from 'node:http';
import { connect } from 'node:tls';
import t from 'tap';
import { Link } from './link.js';
import { OriginRegistry } from './origin-registry.js';
import { makeImage } from './images.js';
import { fetchAll, sha256 } from './http.js';

t.test('up, blackhole, refuse, reset and back to up', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [300_000], seed: 'link' });
  origin.putImage('proj/app', '1', image);
  const link = await Link.start({ port: origin.port });
  t.teardown(() => link.close());
  const blob = `${link.url()}/v2/proj/app/blobs/${image.layers[0]!.digest}`;

  const up = await fetchAll(blob);
  t.equal(sha256(up.body), image.layers[0]!.digest, 'up: bytes relayed intact');
  t.equal(link.relayed, 1);

  await link.setMode('blackhole');
  const origins = origin.requests.length;
  await t.rejects(fetchAll(blob, { timeoutMs: 300 }), /no answer/, 'blackhole: accepted, never answered');
  t.equal(origin.requests.length, origins, 'nothing reached the origin');
  t.equal(link.accepted, 2, 'the connection was accepted');
  for (let i = 0; i < 100 && link.open > 0; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(link.open, 0, 'a held connection whose client gave up is gone (not relayed later)');

  // A transfer in flight freezes: the origin drips the blob, the link goes dark part way, and
  // at most what was already in flight reaches the client afterwards.
  await link.setMode('up');
  origin.setFault({ kind: 'blob' }, { type: 'slow', bytesPerSecond: 200_000 }, 1);
  let received = 0;
  const req = request(blob, { agent: false }, (res) => res.on('data', (c: Buffer) => (received += c.length)));
  req.on('error', () => {});
  req.end();
  t.teardown(() => req.destroy());
  await new Promise((r) => setTimeout(r, 300));
  await link.setMode('blackhole');
  const atDark = received;
  await new Promise((r) => setTimeout(r, 600));
  t.ok(atDark > 0, `bytes came while up (${atDark})`);
  t.ok(received - atDark < 100_000, `a relayed connection freezes (${received - atDark} bytes moved while dark)`);
  t.ok(received < image.layers[0]!.bytes.length, `the transfer did not finish (${received} bytes)`);
  req.destroy();

  await link.setMode('refuse');
  await t.rejects(fetchAll(blob), /ECONNREFUSED/, 'refuse: connection refused');
  await link.setMode('up');
  t.equal(sha256((await fetchAll(blob)).body), image.layers[0]!.digest, 'listening again on the same port');

  await link.setMode('reset');
  await t.rejects(fetchAll(blob), /ECONNRESET/, 'reset: connection reset');
  await link.setMode('up');
  t.equal(sha256((await fetchAll(blob)).body), image.layers[0]!.digest, 'up again');
  await link.close();
  t.equal(link.open, 0, 'close leaves no connection');
});

t.test('reset kills relayed connections in flight', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [200_000], seed: 'link-reset' });
  origin.putImage('proj/app', '1', image);
  const link = await Link.start({ port: origin.port });
  t.teardown(() => link.close());
  origin.setFault({ kind: 'blob' }, { type: 'slow', bytesPerSecond: 100_000 }, 1);
  const pending = fetchAll(`${link.url()}/v2/proj/app/blobs/${image.layers[0]!.digest}`);
  await new Promise((r) => setTimeout(r, 300));
  await link.setMode('reset');
  await t.rejects(pending, /ECONNRESET|broke|closed before|cut off/, 'the transfer breaks');
  t.equal(link.open, 0);
});

t.test('a link without a target is a TLS black hole', async (t) => {
  const hole = await Link.blackhole();
  t.teardown(() => hole.close());
  t.match(hole.url('https'), /^https:\/\/127\.0\.0\.1:\d+$/);
  const started = Date.now();
  const outcome = await new Promise<string>((resolve) => {
    const socket = connect({ host: '127.0.0.1', port: hole.port, rejectUnauthorized: false });
    socket.on('secureConnect', () => resolve('handshake completed'));
    socket.on('error', (err) => resolve(`error ${err.message}`));
    setTimeout(() => {
      socket.destroy();
      resolve('no handshake');
    }, 500);
  });
  t.equal(outcome, 'no handshake', 'the handshake never completes');
  t.ok(Date.now() - started >= 450);
  t.equal(hole.accepted, 1, 'the TCP connection was accepted');
  await t.rejects(hole.setMode('up'), /cannot be up/);
});
