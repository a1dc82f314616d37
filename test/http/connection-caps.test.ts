// Connection caps, tried for real on loopback against a Cove with both listeners (TLS and the
// plain one beside it): a flood from one address hits the per-client cap while a client on
// another loopback address still pulls a blob with the right digest; the overall cap refuses
// everyone once reached, and lets them in again when connections close.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startTestCove, type TestCove } from '../helpers/cove.js';
import { sha256 } from '../helpers/http.js';
import { makeImage } from '../helpers/images.js';
import { OriginRegistry } from '../helpers/origin-registry.js';

const dir = mkdtempSync(join(tmpdir(), 'cove-caps-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const certFile = join(dir, 'cert.pem');
const keyFile = join(dir, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=cove-test', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
const ca = readFileSync(certFile);

const image = makeImage({ layers: [400_000], seed: 'caps' });
const layer = image.layers[0]!;

type Kind = 'plain' | 'tls';

async function startCove(t: Parameters<typeof startTestCove>[0], env: Record<string, string>): Promise<TestCove> {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', image);
  // Idle connections are kept 10 s, longer than each test needs its flood to stay open.
  return startTestCove(t, origin.url, { COVE_TLS_CERT: certFile, COVE_TLS_KEY: keyFile, COVE_LISTEN_HTTP: '127.0.0.1:0', COVE_HEADERS_TIMEOUT: '10s', ...env });
}

function portOf(cove: TestCove, kind: Kind): number {
  return kind === 'tls' ? cove.port : cove.httpPort!;
}

/** Opens `n` TCP connections from `from` and waits until each is connected; they stay idle. */
async function flood(t: { teardown(fn: () => unknown): void }, port: number, from: string, n: number): Promise<Socket[]> {
  const sockets = await Promise.all(
    Array.from({ length: n }, () => {
      const s = netConnect({ port, host: '127.0.0.1', localAddress: from });
      s.on('error', () => undefined);
      return new Promise<Socket>((resolve) => s.once('connect', () => resolve(s)));
    }),
  );
  t.teardown(() => sockets.forEach((s) => s.destroy()));
  // Give the listener time to admit (and count) every one.
  await new Promise((r) => setTimeout(r, 200));
  return sockets;
}

/** One more connection from `from`: what it reads after sending a request, and how soon it was closed. */
async function oneMore(port: number, from: string): Promise<{ got: string; ms: number }> {
  const t0 = Date.now();
  const s = netConnect({ port, host: '127.0.0.1', localAddress: from });
  let got = '';
  s.on('data', (d: Buffer) => (got += d.toString('latin1')));
  s.on('error', () => undefined);
  s.once('connect', () => s.write('GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n'));
  setTimeout(() => s.destroy(), 5_000).unref();
  await new Promise((r) => s.once('close', r));
  return { got, ms: Date.now() - t0 };
}

/** GETs the layer from `from` over the listener `kind`: status and the digest of the bytes. */
function pullLayer(cove: TestCove, kind: Kind, from: string): Promise<{ status: number; digest: string }> {
  const send = kind === 'tls' ? httpsRequest : httpRequest;
  const url = `${kind === 'tls' ? 'https' : 'http'}://127.0.0.1:${portOf(cove, kind)}/v2/proj/app/blobs/${layer.digest}`;
  return new Promise((resolve, reject) => {
    const req = send(url, { localAddress: from, ca, agent: false, timeout: 10_000 }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, digest: sha256(Buffer.concat(chunks)) }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('no answer in time')));
    req.on('error', reject);
    req.end();
  });
}

for (const [kind, flooder, other] of [['plain', '127.0.0.3', '127.0.0.4'], ['tls', '127.0.0.5', '127.0.0.6']] as const) {
  t.test(`${kind}: a flood from one address hits the per-client cap; another client still pulls`, async (t) => {
    const cove = await startCove(t, { COVE_MAX_CONNECTIONS_PER_CLIENT: '8', COVE_MAX_CONNECTIONS: '100' });
    const port = portOf(cove, kind);
    const held = await flood(t, port, flooder, 8);
    t.ok(held.every((s) => !s.destroyed), 'the flood\'s first 8 connections are open');

    const refused = await oneMore(port, flooder);
    t.ok(refused.ms < 1_500, `the 9th connection was closed promptly (${refused.ms} ms)`);
    if (kind === 'plain') {
      t.match(refused.got, /^HTTP\/1\.1 429 Too Many Requests\r\n/, 'plain HTTP says why: 429');
      t.match(refused.got, /\r\nretry-after: 1\r\n/);
      const body = JSON.parse(refused.got.slice(refused.got.indexOf('\r\n\r\n') + 4)) as { errors: Array<{ code: string }> };
      t.equal(body.errors[0]!.code, 'TOOMANYREQUESTS');
    } else {
      t.equal(refused.got, '', 'TLS: closed without a handshake');
    }

    // Meanwhile a client on another address pulls (twice: cold, then from the cache).
    for (const pass of ['cold', 'warm']) {
      const pulled = await pullLayer(cove, kind, other);
      t.equal(pulled.status, 200, `${pass}: 200`);
      t.equal(pulled.digest, layer.digest, `${pass}: the bytes hash to the layer's digest`);
    }
    t.ok(held.every((s) => !s.destroyed), 'the flood\'s admitted connections were left alone');

    // The flood's own address gets in again once its connections close.
    held.forEach((s) => s.destroy());
    await new Promise((r) => setTimeout(r, 200));
    const again = await pullLayer(cove, kind, flooder);
    t.equal(again.digest, layer.digest, 'the flooder pulls again after closing its connections');
  });

  t.test(`${kind}: the overall cap refuses every address once reached`, async (t) => {
    const cove = await startCove(t, { COVE_MAX_CONNECTIONS_PER_CLIENT: '6', COVE_MAX_CONNECTIONS: '10' });
    const port = portOf(cove, kind);
    const first = await flood(t, port, '127.0.0.7', 6);
    const second = await flood(t, port, '127.0.0.8', 4);
    const refused = await oneMore(port, '127.0.0.9');
    t.ok(refused.ms < 1_500, `an 11th connection from a third address was closed promptly (${refused.ms} ms)`);
    if (kind === 'plain') {
      t.match(refused.got, /^HTTP\/1\.1 503 Service Unavailable\r\n/, '503');
      t.match(refused.got, /"code":"UNAVAILABLE"/);
    } else {
      t.equal(refused.got, '');
    }
    [...first, ...second].forEach((s) => s.destroy());
    await new Promise((r) => setTimeout(r, 200));
    const pulled = await pullLayer(cove, kind, '127.0.0.9');
    t.equal(pulled.digest, layer.digest, 'once connections closed, the third address pulls');
  });
}

t.test('the two listeners share one set of caps', async (t) => {
  const cove = await startCove(t, { COVE_MAX_CONNECTIONS_PER_CLIENT: '6', COVE_MAX_CONNECTIONS: '100' });
  await flood(t, cove.port, '127.0.0.10', 3);
  await flood(t, cove.httpPort!, '127.0.0.10', 3);
  const refused = await oneMore(cove.httpPort!, '127.0.0.10');
  t.match(refused.got, /^HTTP\/1\.1 429 /, 'three on each listener make six: the seventh is refused');
});
