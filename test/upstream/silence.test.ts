// An upstream that goes silent: one timeout marks it down, a request with no headers past the
// silence deadline makes Cove probe /v2/, a silent probe releases every request waiting on the
// upstream at once (503, not the full upstream timeout), and an upstream that is only slow for
// one request keeps being waited for. The failure's class is what the status page shows.
import { createServer, type Server, type Socket } from 'node:net';
import t from 'tap';
import { UpstreamUnavailableError, isMarkedDown, toOciResponse } from '../../src/errors.js';
import { errorClass } from '../../src/upstream/breaker.js';
import { readAll, startServer, testClient } from './servers.js';

/** A TCP server that accepts every connection and never sends a byte (HTTP and TLS alike stall). */
async function blackHole(t: { teardown(fn: () => unknown): void }): Promise<{ port: number; accepted: () => number }> {
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer((socket) => {
    accepted++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { port: (server.address() as { port: number }).port, accepted: () => accepted };
}

for (const scheme of ['http', 'https'] as const) {
  t.test(`${scheme} black hole: requests are released after about two silence deadlines, not the upstream timeout`, async (t) => {
    const hole = await blackHole(t);
    const client = testClient(t, `${scheme}://127.0.0.1:${hole.port}`, { timeoutMs: 20_000 }, { silenceMs: 300 });
    const started = Date.now();
    const results = await Promise.allSettled([1, 2, 3].map((n) => client.request({ method: 'GET', path: `/v2/proj/app/manifests/${n}` })));
    const took = Date.now() - started;
    for (const r of results) {
      t.equal(r.status, 'rejected');
      const err = (r as PromiseRejectedResult).reason;
      t.ok(err instanceof UpstreamUnavailableError, 'unavailable');
      t.ok(isMarkedDown(err), 'released because the upstream was marked down');
      const answer = toOciResponse(err);
      t.equal(answer.status, 503);
      t.ok(Number(answer.headers['retry-after']) >= 1, `Retry-After ${answer.headers['retry-after']}`);
    }
    t.ok(took >= 550 && took < 5000, `released together after the deadline and the probe's (${took} ms; upstream timeout 20 s)`);
    const b = client.breaker;
    t.equal(b.state, 'open');
    t.equal(b.lastErrorClass, 'timeout');
    t.ok(b.since !== null && b.since >= started, 'since when it is marked down');

    const again = Date.now();
    await t.rejects(client.request({ method: 'GET', path: '/v2/proj/app/manifests/4' }), UpstreamUnavailableError);
    t.ok(Date.now() - again < 100, 'while marked down a request fails at once');
  });
}

t.test('an upstream slow on one request but answering /v2/ is waited for, and stays reachable', async (t) => {
  const s = await startServer((req, res) => {
    if (req.url === '/v2/') res.writeHead(200, { 'content-length': '2' }).end('{}');
    else setTimeout(() => res.writeHead(200, { 'content-length': '4' }).end('slow'), 900);
  });
  t.teardown(() => s.close());
  const client = testClient(t, s.url, { timeoutMs: 5000 }, { silenceMs: 300 });
  const res = await client.request({ method: 'GET', path: '/v2/proj/app/manifests/1' });
  t.equal(res.status, 200);
  t.equal((await readAll(res.body)).toString(), 'slow', 'the slow answer arrived');
  t.equal(client.breaker.state, 'closed', 'not marked down');
  t.equal(s.requests.filter((r) => r.url === '/v2/').length, 1, 'one probe of /v2/ checked it');
});

t.test('a revalidation deadline suspects a slow upstream: marked down at once, reachable again when /v2/ answers, the slow request still answered', async (t) => {
  const s = await startServer((req, res) => {
    if (req.url === '/v2/') setTimeout(() => res.writeHead(200, { 'content-length': '2' }).end('{}'), 150);
    else setTimeout(() => res.writeHead(200, { 'content-length': '4' }).end('late'), 700);
  });
  t.teardown(() => s.close());
  const client = testClient(t, s.url, { timeoutMs: 5000 }, { silenceMs: 0 });
  const sent = Date.now();
  const pending = client.request({ method: 'HEAD', path: '/v2/proj/app/manifests/1' });
  await new Promise((r) => setTimeout(r, 100));
  client.suspect('no answer within the revalidation deadline', sent);
  t.equal(client.breaker.state, 'open', 'marked down at once: later requests do not wait');
  await t.rejects(client.request({ method: 'GET', path: '/v2/other/manifests/1' }), UpstreamUnavailableError);
  const res = await pending;
  t.equal(res.status, 200, 'the request already waiting was not released: a slow answer still counts');
  t.equal(client.breaker.state, 'closed', 'the answers show it reachable');
});

t.test('one upstream timeout marks the upstream down', async (t) => {
  const hole = await blackHole(t);
  const client = testClient(t, `http://127.0.0.1:${hole.port}`, { timeoutMs: 300 }, { silenceMs: 0 });
  const err = await client.request({ method: 'GET', path: '/v2/x/manifests/1' }).catch((e: unknown) => e);
  t.ok(err instanceof UpstreamUnavailableError && !isMarkedDown(err), 'the timeout itself');
  t.equal(client.breaker.state, 'open', 'one timeout was enough');
  t.equal(client.breaker.lastErrorClass, 'timeout');
  t.equal(client.breaker.consecutiveFailures, 1);
});

t.test('error classes: refused, DNS (in-process lookup), 5xx and 429 answers', async (t) => {
  const closed = await startServer((_req, res) => res.end());
  const port = closed.port;
  await closed.close();
  const refused = testClient(t, `http://127.0.0.1:${port}`);
  await t.rejects(refused.request({ method: 'GET', path: '/v2/' }), UpstreamUnavailableError);
  t.equal(refused.breaker.lastErrorClass, 'refused');

  const lookups: string[] = [];
  const dns = testClient(t, 'http://origin.test:5000', {}, {
    lookup: (hostname, _options, callback) => {
      lookups.push(hostname);
      callback(Object.assign(new Error(`getaddrinfo EAI_AGAIN ${hostname}`), { code: 'EAI_AGAIN' }), '', 4);
    },
  });
  const dnsErr = await dns.request({ method: 'GET', path: '/v2/' }).catch((e: unknown) => e);
  t.ok(dnsErr instanceof UpstreamUnavailableError);
  t.equal(dns.breaker.lastErrorClass, 'dns');
  t.same(lookups, ['origin.test'], 'the name went to the in-process lookup, never a real resolver');
  t.match(toOciResponse(dnsErr).body.errors[0]!.message, /EAI_AGAIN/, 'the client is told what failed');

  let status = 503;
  const s = await startServer((_req, res) => res.writeHead(status, status === 429 ? { 'retry-after': '1' } : {}).end());
  t.teardown(() => s.close());
  const answering = testClient(t, s.url);
  (await answering.request({ method: 'GET', path: '/v2/x/manifests/1' })).body.resume();
  t.equal(answering.breaker.lastErrorClass, 'http-5xx');
  t.equal(answering.breaker.state, 'closed', 'an answer, even a 503, is not unreachable');
  status = 429;
  (await answering.request({ method: 'GET', path: '/v2/x/manifests/1' })).body.resume();
  t.equal(answering.breaker.lastErrorClass, 'rate-limited');
  t.ok(answering.breaker.lastErrorAt !== null);
});

t.test('errorClass names TLS and reset failures by their codes', async (t) => {
  const coded = (code: string) => Object.assign(new Error(code), { code });
  t.equal(errorClass(new UpstreamUnavailableError('origin', 'x', { cause: coded('ECONNRESET') })), 'reset');
  t.equal(errorClass(new UpstreamUnavailableError('origin', 'x', { cause: coded('UND_ERR_SOCKET') })), 'reset');
  t.equal(errorClass(new UpstreamUnavailableError('origin', 'x', { cause: coded('ERR_TLS_CERT_ALTNAME_INVALID') })), 'tls');
  t.equal(errorClass(new UpstreamUnavailableError('origin', 'x', { cause: coded('DEPTH_ZERO_SELF_SIGNED_CERT') })), 'tls');
  t.equal(errorClass(new UpstreamUnavailableError('origin', 'x', { cause: coded('UND_ERR_HEADERS_TIMEOUT') })), 'timeout');
  t.equal(errorClass(new Error('what')), 'other');
});

t.test('after an idle spell, the first request with nothing cached waits for a probe instead of being refused; a revalidation does not wait', async (t) => {
  let up = false;
  const s = await startServer((req, res) => {
    if (!up) {
      req.socket.destroy();
      return;
    }
    res.writeHead(200, { 'content-length': '2' }).end('ok');
  });
  t.teardown(() => s.close());
  const client = testClient(t, s.url, { timeoutMs: 5000 }, { silenceMs: 800 });
  for (let i = 0; i < 3; i++) await client.request({ method: 'GET', path: '/v2/x/manifests/1' }).catch(() => undefined);
  t.equal(client.breaker.state, 'open', 'three resets marked it down');
  up = true;
  // Nobody asked while it came back; the back-off's first probe is not due yet (0.5–1 s).
  await new Promise((r) => setTimeout(r, 300));
  t.equal(client.breaker.state, 'open', 'still marked down: no probe ran');
  const started = Date.now();
  const impatient = await client.request({ method: 'HEAD', path: '/v2/x/manifests/1' }).catch((e: unknown) => e);
  t.ok(impatient instanceof UpstreamUnavailableError, 'a revalidation fails at once (its cached answer goes out)');
  t.ok(Date.now() - started < 100, `at once (${Date.now() - started} ms)`);
  await new Promise((r) => setTimeout(r, 1100));
  t.equal(client.breaker.state, 'closed', 'the probe it started found the origin back');

  up = false;
  for (let i = 0; i < 3; i++) await client.request({ method: 'GET', path: '/v2/x/manifests/1' }).catch(() => undefined);
  t.equal(client.breaker.state, 'open');
  up = true;
  await new Promise((r) => setTimeout(r, 300));
  const res = await client.request({ method: 'GET', path: '/v2/x/manifests/1', patient: true });
  t.equal(res.status, 200, 'a request with nothing cached waited for the probe and went through');
  t.equal((await readAll(res.body)).toString(), 'ok');

  up = false;
  for (let i = 0; i < 3; i++) await client.request({ method: 'GET', path: '/v2/x/manifests/1' }).catch(() => undefined);
  await new Promise((r) => setTimeout(r, 300));
  const before = Date.now();
  await t.rejects(client.request({ method: 'GET', path: '/v2/x/manifests/2', patient: true }), UpstreamUnavailableError, 'still down: refused after the probe');
  t.ok(Date.now() - before < 900, `within the silence deadline (${Date.now() - before} ms)`);
});
