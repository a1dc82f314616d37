// The upstream client: headers it always sends, redirects (Authorization never leaves the
// upstream's origin), failures as UpstreamUnavailableError, and proxy / NO_PROXY selection.
import { connect as netConnect } from 'node:net';
import t from 'tap';
import { UpstreamStatusError, UpstreamUnavailableError } from '../../src/errors.js';
import { noProxyMatches, proxyFor } from '../../src/upstream/dispatcher.js';
import { basic, readAll, startServer, testClient } from './servers.js';

t.test('sends Accept-Encoding: identity, User-Agent, and never a caller Authorization', async (t) => {
  const s = await startServer((_req, res) => res.writeHead(200, { 'content-length': '2' }).end('ok'));
  t.teardown(() => s.close());
  const client = testClient(t, s.url);
  const res = await client.request({ method: 'GET', path: '/v2/', headers: { Authorization: 'Bearer client-secret', 'Accept-Encoding': 'gzip', accept: 'x/y' } });
  t.equal((await readAll(res.body)).toString(), 'ok');
  const h = s.requests[0]!.headers;
  t.equal(h['accept-encoding'], 'identity');
  t.equal(h['user-agent'], 'cove-test/1');
  t.equal(h.accept, 'x/y');
  t.equal(h.authorization, undefined);
  t.equal(res.url, `${s.url}/v2/`);
});

t.test('307 to another host: followed without Authorization; same-origin hops keep it', async (t) => {
  const storage = await startServer((_req, res) => res.writeHead(200, { 'content-length': '4' }).end('blob'), '127.0.0.2');
  t.teardown(() => storage.close());
  const origin = await startServer((req, res) => {
    if (req.headers.authorization !== basic('edge', 'pw')) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="r"' }).end();
      return;
    }
    if (req.url === '/v2/x/blobs/sha256:a') res.writeHead(302, { location: '/v2/x/blobs/sha256:a/moved' }).end();
    else res.writeHead(307, { location: `${storage.url}/bucket/obj?X-Amz-Signature=abc` }).end('redirect body');
  });
  t.teardown(() => origin.close());
  const client = testClient(t, origin.url, { username: 'edge', password: 'pw' });
  const res = await client.request({ method: 'GET', path: '/v2/x/blobs/sha256:a', repo: 'x', followRedirects: true, headers: { range: 'bytes=1-' } });
  t.equal(res.status, 200);
  t.equal((await readAll(res.body)).toString(), 'blob');
  t.equal(res.url, `${storage.url}/bucket/obj?X-Amz-Signature=abc`);
  t.equal(storage.requests.length, 1);
  t.equal(storage.requests[0]!.headers.authorization, undefined, 'storage host never saw Authorization');
  t.equal(storage.requests[0]!.headers.range, 'bytes=1-', 'Range carried over');
  t.equal(storage.requests[0]!.headers['accept-encoding'], 'identity');
  const moved = origin.requests.find((r) => r.url === '/v2/x/blobs/sha256:a/moved');
  t.equal(moved?.headers.authorization, basic('edge', 'pw'), 'same-origin hop kept Authorization');
});

t.test('redirects not followed unless asked', async (t) => {
  const s = await startServer((_req, res) => res.writeHead(307, { location: 'http://127.0.0.2:1/x' }).end());
  t.teardown(() => s.close());
  const client = testClient(t, s.url);
  const res = await client.request({ method: 'GET', path: '/v2/x/blobs/sha256:a' });
  res.body.resume();
  t.equal(res.status, 307);
  t.equal(res.headers.location, 'http://127.0.0.2:1/x');
});

t.test('a redirect loop ends with UpstreamStatusError after 5 hops', async (t) => {
  const s = await startServer((req, res) => res.writeHead(302, { location: `${req.url}x` }).end());
  t.teardown(() => s.close());
  const client = testClient(t, s.url);
  await t.rejects(client.request({ method: 'GET', path: '/a', followRedirects: true }), UpstreamStatusError);
  t.equal(s.requests.length, 6);
});

t.test('no response headers within timeoutMs → UpstreamUnavailableError naming the upstream', async (t) => {
  const s = await startServer(() => undefined); // never answers
  t.teardown(() => s.close());
  const client = testClient(t, s.url, { timeoutMs: 200 });
  const started = Date.now();
  const err = await client.request({ method: 'GET', path: '/v2/' }).catch((e: unknown) => e);
  t.type(err, UpstreamUnavailableError);
  t.match((err as Error).message, /upstream origin at http:\/\/127\.0\.0\.1:\d+ unavailable: .*timeout/i);
  t.ok(Date.now() - started < 1500, 'gave up quickly');
});

t.test('a stalled body ends with an error after bodyTimeoutMs', async (t) => {
  const s = await startServer((_req, res) => {
    res.writeHead(200, { 'content-length': '100' });
    res.write('partial');
  });
  t.teardown(() => s.close());
  const client = testClient(t, s.url, { bodyTimeoutMs: 200 });
  const res = await client.request({ method: 'GET', path: '/v2/' });
  await t.rejects(readAll(res.body), /timeout/i);
});

t.test('connection refused → UpstreamUnavailableError', async (t) => {
  const s = await startServer(() => undefined);
  const url = s.url;
  await s.close();
  const client = testClient(t, url);
  const err = await client.request({ method: 'GET', path: '/v2/' }).catch((e: unknown) => e);
  t.type(err, UpstreamUnavailableError);
  t.match((err as Error).message, /ECONNREFUSED/);
  t.equal((err as UpstreamUnavailableError).upstream, 'origin');
});

t.test('an aborted signal rejects with the abort, not as an upstream failure', async (t) => {
  const s = await startServer(() => undefined);
  t.teardown(() => s.close());
  const client = testClient(t, s.url);
  const ac = new AbortController();
  setTimeout(() => ac.abort(), 50);
  const err = await client.request({ method: 'GET', path: '/v2/', signal: ac.signal }).catch((e: unknown) => e);
  t.notOk(err instanceof UpstreamUnavailableError);
});

t.test('NO_PROXY matching', async (t) => {
  const cases: Array<[string, string | null, boolean]> = [
    ['https://harbor.example.com', null, false],
    ['https://harbor.example.com', '', false],
    ['https://harbor.example.com', '*', true],
    ['https://harbor.example.com', 'harbor.example.com', true],
    ['https://HARBOR.example.com', 'harbor.EXAMPLE.com', true],
    ['https://harbor.example.com', 'example.com', true],
    ['https://harbor.example.com', '.example.com', true],
    ['https://example.com', '.example.com', true],
    ['https://harbor.example.com', '*.example.com', true],
    ['https://badexample.com', 'example.com', false],
    ['https://badexample.com', '.example.com', false],
    ['https://harbor.example.com', 'other.com, example.org', false],
    ['https://harbor.example.com', 'other.com,harbor.example.com', true],
    ['https://harbor.example.com', 'other.com harbor.example.com', true],
    ['https://harbor.example.com', 'harbor.example.com:443', true],
    ['https://harbor.example.com', 'harbor.example.com:8443', false],
    ['https://harbor.example.com:8443', 'harbor.example.com:8443', true],
    ['http://harbor.example.com', 'harbor.example.com:80', true],
    ['http://127.0.0.1:5000', '127.0.0.1', true],
    ['http://127.0.0.1:5000', '127.0.0.2', false],
    ['http://127.0.0.1:5000', '127.0.0.1:5000', true],
    ['http://[::1]:5000', '::1', true],
    ['http://[::1]:5000', '[::1]:5000', true],
    ['http://[::1]:5000', '[::1]:6000', false],
    ['https://harbor.example.com', 'example.com.', true],
  ];
  for (const [url, noProxy, want] of cases) t.equal(noProxyMatches(new URL(url), noProxy), want, `${url} with NO_PROXY=${JSON.stringify(noProxy)}`);
});

t.test('proxy selection by scheme', async (t) => {
  const proxy = { httpProxy: 'http://p:3128', httpsProxy: 'http://sp:3128', noProxy: 'internal' };
  t.equal(proxyFor(new URL('https://h.example'), proxy), 'http://sp:3128');
  t.equal(proxyFor(new URL('http://h.example'), proxy), 'http://p:3128');
  t.equal(proxyFor(new URL('http://a.internal'), proxy), null);
  t.equal(proxyFor(new URL('https://h.example'), { httpProxy: 'http://p:3128', httpsProxy: null, noProxy: null }), 'http://p:3128', 'HTTPS falls back to HTTP_PROXY');
  t.equal(proxyFor(new URL('http://h.example'), { httpProxy: null, httpsProxy: 'http://sp:3128', noProxy: null }), null);
});

t.test('requests go through HTTP_PROXY unless NO_PROXY matches', async (t) => {
  const target = await startServer((_req, res) => res.writeHead(200, { 'content-length': '2' }).end('ok'));
  t.teardown(() => target.close());
  let tunnels = 0;
  let forwarded = 0;
  const proxy = await startServer((req, res) => {
    // Absolute-form request through a plain HTTP proxy.
    forwarded++;
    const u = new URL(req.url!);
    const upstream = netConnect(Number(u.port), u.hostname, () => {
      upstream.write(`${req.method} ${u.pathname}${u.search} HTTP/1.1\r\nhost: ${u.host}\r\nconnection: close\r\n\r\n`);
      upstream.pipe(res.socket!);
    });
  });
  proxy.server.on('connect', (req, socket, head) => {
    tunnels++;
    const [host, port] = req.url!.split(':');
    const upstream = netConnect(Number(port), host, () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
  });
  t.teardown(() => proxy.close());

  const proxied = testClient(t, target.url, { proxy: { httpProxy: proxy.url, httpsProxy: null, noProxy: 'example.com' } });
  const r1 = await proxied.request({ method: 'GET', path: '/v2/' });
  t.equal((await readAll(r1.body)).toString(), 'ok');
  t.equal(tunnels + forwarded, 1, 'went through the proxy');

  const direct = testClient(t, target.url, { proxy: { httpProxy: proxy.url, httpsProxy: null, noProxy: '127.0.0.1' } });
  const r2 = await direct.request({ method: 'GET', path: '/v2/' });
  t.equal((await readAll(r2.body)).toString(), 'ok');
  t.equal(tunnels + forwarded, 1, 'NO_PROXY host connected directly');
});
