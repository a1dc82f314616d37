// The HTTP edge: TLS with HTTP/2 and HTTP/1.1, graceful stop with a transfer in flight, and the
// one access log line per request.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { Agent as HttpsAgent, get as httpsGet } from 'node:https';
import { connect } from 'node:http2';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import t from 'tap';
import { pino } from 'pino';
import { loadConfig } from '../../src/config.js';
import { startCove } from '../../src/main.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

function makeCert(dir: string): { cert: string; key: string } {
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=cove-test', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
  return { cert, key };
}

t.test('TLS listener speaks HTTP/2 and HTTP/1.1', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100_000], seed: 'tls' });
  origin.putImage('proj/tls', '1', image);
  const dir = mkdtempSync(join(tmpdir(), 'cove-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { cert, key } = makeCert(dir);
  const cove = await startTestCove(t, origin.url, { COVE_TLS_CERT: cert, COVE_TLS_KEY: key });
  t.match(cove.url, /^https:/);
  const ca = readFileSync(cert);
  const digest = image.layers[0]!.digest;

  const h2body = await new Promise<Buffer>((resolve, reject) => {
    const session = connect(cove.url, { ca });
    session.on('error', reject);
    const req = session.request({ ':path': `/v2/proj/tls/blobs/${digest}` });
    const chunks: Buffer[] = [];
    req.on('response', (headers) => t.equal(headers[':status'], 200, 'HTTP/2 status'));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      session.close();
      resolve(Buffer.concat(chunks));
    });
    req.on('error', reject);
    req.end();
  });
  t.equal(sha256(h2body), digest, 'HTTP/2 bytes');

  const h1 = await new Promise<{ version: string; body: Buffer }>((resolve, reject) => {
    httpsGet(`${cove.url}/v2/proj/tls/blobs/${digest}`, { agent: new HttpsAgent({ ca, ALPNProtocols: ['http/1.1'] }) }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ version: res.httpVersion, body: Buffer.concat(chunks) }));
    }).on('error', reject);
  });
  t.equal(h1.version, '1.1');
  t.equal(sha256(h1.body), digest, 'HTTP/1.1 bytes');
});

t.test('graceful stop lets a running transfer finish', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [3_000_000], seed: 'graceful' });
  origin.putImage('proj/g', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 6_000_000 });
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-graceful-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const config = loadConfig({ env: { COVE_LISTEN: '127.0.0.1:0', COVE_DATA_DIR: dataDir, COVE_UPSTREAM: origin.url, COVE_SHUTDOWN_GRACE: '5s' } });
  const cove = await startCove(config, { log: pino({ level: 'silent' }) });
  const transfer = fetchAll(`${cove.url}/v2/proj/g/blobs/${layer.digest}`);
  await new Promise((r) => setTimeout(r, 150));
  const stopped = cove.stop();
  const r = await transfer;
  t.equal(r.status, 200);
  t.equal(sha256(r.body), layer.digest, 'the transfer in flight completed');
  await stopped;
  await t.rejects(fetchAll(`${cove.url}/v2/`), 'no longer accepting');
});

t.test('one JSON access line per request, credentials never logged', async (t) => {
  const origin = await OriginRegistry.start({ auth: 'basic', username: 'edge', password: 'hunter2' });
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [1000], seed: 'log' });
  origin.putImage('proj/log', '1', image);
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...chunk.toString().split('\n').filter(Boolean));
      cb();
    },
  });
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-log-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const config = loadConfig({
    env: { COVE_LISTEN: '127.0.0.1:0', COVE_DATA_DIR: dataDir, COVE_UPSTREAM: origin.url, COVE_UPSTREAM_USERNAME: 'edge', COVE_UPSTREAM_PASSWORD: 'hunter2', COVE_LOG_LEVEL: 'debug' },
  });
  const cove = await startCove(config, { log: pino({ level: 'debug' }, sink) });
  t.teardown(() => cove.stop());
  await fetchAll(`${cove.url}/v2/proj/log/manifests/1`, { headers: { authorization: 'Bearer client-secret', accept: '*/*' } });
  await fetchAll(`${cove.url}/v2/proj/log/blobs/${image.layers[0]!.digest}`);
  await new Promise((r) => setTimeout(r, 50));
  const access = lines.map((l) => JSON.parse(l)).filter((l) => l.msg === 'request');
  t.equal(access.length, 2, 'one line per request');
  t.match(access[0], { method: 'GET', path: '/v2/proj/log/manifests/1', status: 200, cache: 'miss', tier: 'origin' });
  t.match(access[1], { status: 200, bytes: 1000, cache: 'miss', digest: image.layers[0]!.digest });
  t.type(access[1].ms, 'number');
  const all = lines.join('\n');
  t.notMatch(all, /hunter2/, 'origin password never logged');
  t.notMatch(all, /client-secret/, 'client credentials never logged');
});

t.test('COVE_LISTEN_HTTP: a plain-HTTP listener beside the TLS one serves the same cache', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [50_000], seed: 'tls-plain-listener' });
  origin.putImage('proj/both', '1', image);
  const dir = mkdtempSync(join(tmpdir(), 'cove-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const { cert, key } = makeCert(dir);
  const cove = await startTestCove(t, origin.url, { COVE_TLS_CERT: cert, COVE_TLS_KEY: key, COVE_LISTEN_HTTP: '127.0.0.1:0' });
  t.ok(cove.httpPort, 'a second listener is up');
  const digest = image.layers[0]!.digest;
  const plain = await fetchAll(`http://127.0.0.1:${cove.httpPort}/v2/proj/both/blobs/${digest}`);
  t.equal(plain.status, 200);
  t.equal(sha256(plain.body), digest, 'plain HTTP serves the blob');
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 1);
  const tls = await new Promise<number>((resolve, reject) => {
    httpsGet(`${cove.url}/v2/proj/both/blobs/${digest}`, { ca: readFileSync(cert) }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject);
  });
  t.equal(tls, 200, 'and TLS serves the same cache');
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 1, 'one fetch for both listeners');
  t.throws(() => loadConfig({ env: { COVE_UPSTREAM: origin.url, COVE_LISTEN_HTTP: ':80' } }), /COVE_LISTEN_HTTP is set but COVE_TLS_CERT is not/);
});
