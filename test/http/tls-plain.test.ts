// Plain HTTP sent to the TLS port: a quick 400 with an OCI error naming the https URL (not a hang,
// not a TLS alert a client prints as garbage); TLS on the same port still speaks HTTP/2 and 1.1.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { connect as h2connect } from 'node:http2';
import { Agent as HttpsAgent, get as httpsGet } from 'node:https';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { listen, type Listener } from '../../src/http/server.js';
import { defaultLimits } from './limits.js';

const dir = mkdtempSync(join(tmpdir(), 'cove-tlsplain-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const certFile = join(dir, 'cert.pem');
const keyFile = join(dir, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=cove-test', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
const ca = readFileSync(certFile);

async function start(t: { teardown(fn: () => unknown): void }): Promise<Listener> {
  const listener = await listen(
    (req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(`hello over HTTP/${req.httpVersion}`);
    },
    { host: '127.0.0.1', port: 0, tls: { cert: readFileSync(certFile, 'utf8'), key: readFileSync(keyFile, 'utf8') }, limits: defaultLimits() },
  );
  t.teardown(() => listener.stop(500));
  return listener;
}

function plainGet(port: number, headers: Record<string, string> = {}): Promise<{ status: number; type: string | undefined; body: string; ms: number }> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/v2/', headers, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: res.headers['content-type'], body, ms: Date.now() - t0 }));
    });
    req.on('timeout', () => req.destroy(new Error('plain request timed out (a hang)')));
    req.on('error', reject);
    req.end();
  });
}

t.test('plain HTTP on the TLS port gets a clear 400 quickly', async (t) => {
  const l = await start(t);
  const r = await plainGet(l.port);
  t.equal(r.status, 400);
  t.match(r.type, /application\/json/);
  t.ok(r.ms < 2000, `answered in ${r.ms} ms`);
  const body = JSON.parse(r.body) as { errors: Array<{ code: string; message: string }> };
  t.equal(body.errors[0]!.code, 'UNSUPPORTED');
  t.equal(body.errors[0]!.message, `this port speaks HTTPS; use https://127.0.0.1:${l.port}`);

  const named = await plainGet(l.port, { host: `harbor.test:${l.port}` });
  t.equal(named.status, 400);
  t.match(named.body, `this port speaks HTTPS; use https://harbor.test:${l.port}`, 'the URL uses the name the client asked for');

  // A POST with a body it has not finished sending still gets the answer.
  const post = await new Promise<number>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port: l.port, method: 'POST', path: '/v2/x/blobs/uploads/', headers: { 'content-length': '100000' }, timeout: 3000 }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.write(Buffer.alloc(1000));
  });
  t.equal(post, 400, 'a request with a body in flight gets the 400 too');
});

t.test('bytes that are neither TLS nor HTTP: the connection is closed', async (t) => {
  const l = await start(t);
  const closed = await new Promise<string>((resolve) => {
    const s = netConnect(l.port, '127.0.0.1', () => s.write(Buffer.from([0x00, 0x01, 0x02, 0x03])));
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString('latin1')));
    s.on('close', () => resolve(got));
    s.setTimeout(3000, () => s.destroy());
  });
  t.equal(closed, '', 'closed without an answer');
});

t.test('TLS on the same port: HTTP/1.1 and HTTP/2', async (t) => {
  const l = await start(t);
  const h1 = await new Promise<string>((resolve, reject) => {
    httpsGet({ host: '127.0.0.1', port: l.port, path: '/', agent: new HttpsAgent({ ca, ALPNProtocols: ['http/1.1'] }) }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
  t.equal(h1, 'hello over HTTP/1.1');
  const h2 = await new Promise<string>((resolve, reject) => {
    const session = h2connect(`https://127.0.0.1:${l.port}`, { ca });
    session.on('error', reject);
    const req = session.request({ ':path': '/' });
    let body = '';
    req.setEncoding('utf8').on('data', (d: string) => (body += d));
    req.on('end', () => {
      session.close();
      resolve(body);
    });
    req.end();
  });
  t.equal(h2, 'hello over HTTP/2.0');
});

t.test('stop() closes connections still sniffing and idle TLS sessions', async (t) => {
  const l = await start(t);
  const silent = netConnect(l.port, '127.0.0.1');
  await new Promise((r) => silent.once('connect', r));
  const session = h2connect(`https://127.0.0.1:${l.port}`, { ca });
  session.on('error', () => undefined);
  await new Promise((r) => session.once('connect', r));
  const t0 = Date.now();
  await l.stop(200);
  t.ok(Date.now() - t0 < 2000, 'stopped promptly');
  await new Promise((r) => (silent.destroyed ? r(null) : silent.once('close', r)));
  t.pass('the silent connection was closed');
  session.destroy();
});
