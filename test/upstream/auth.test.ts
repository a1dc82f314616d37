// The auth flow against real in-process registries: Bearer tokens (fetched with credentials,
// cached per scope until expiry, shared by concurrent requests), Basic, Harbor's Basic challenge
// for an expired token, and realms on foreign hosts refused.
import type { IncomingMessage, ServerResponse } from 'node:http';
import t from 'tap';
import { UpstreamAuthError } from '../../src/errors.js';
import { realmAllowed } from '../../src/upstream/auth.js';
import { basic, readAll, startServer, testClient, type TestServer } from './servers.js';

interface Registry {
  server: TestServer;
  tokenFetches: URL[];
  tokenAuth: Array<string | undefined>;
  challenges: number;
  /** Tokens the registry accepts; clearing it makes every token "expired". */
  valid: Set<string>;
}

/**
 * A Bearer registry: /v2/* needs a valid token; /token issues one (requires Basic `user:pass`
 * when `creds` is set). `expiresIn` undefined leaves the field out.
 */
async function bearerRegistry(
  t: { teardown(fn: () => unknown): void },
  opts: { creds?: [string, string]; expiresIn?: number; field?: 'token' | 'access_token'; realm?: (self: string) => string; expiredChallenge?: 'basic' | 'bearer' } = {},
): Promise<Registry> {
  let n = 0;
  const reg: Registry = { server: undefined as unknown as TestServer, tokenFetches: [], tokenAuth: [], challenges: 0, valid: new Set() };
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url!, 'http://x');
    if (url.pathname === '/token') {
      reg.tokenFetches.push(url);
      reg.tokenAuth.push(req.headers.authorization);
      if (opts.creds && req.headers.authorization !== basic(...opts.creds)) {
        res.writeHead(401, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
        return;
      }
      const token = `tok-${++n}`;
      reg.valid.add(token);
      const body: Record<string, unknown> = { [opts.field ?? 'token']: token };
      if (opts.field === 'access_token') body.token = '';
      if (opts.expiresIn !== undefined) body.expires_in = opts.expiresIn;
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      return;
    }
    const auth = req.headers.authorization;
    if (auth?.startsWith('Bearer ') && reg.valid.has(auth.slice(7))) {
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' }).end('ok');
      return;
    }
    reg.challenges++;
    const repo = /^\/v2\/(.+)\/(manifests|blobs|tags)\//.exec(url.pathname)?.[1];
    const realm = opts.realm ? opts.realm(reg.server.url) : `${reg.server.url}/token`;
    const challenge =
      auth?.startsWith('Bearer ') && opts.expiredChallenge === 'basic'
        ? 'Basic realm="harbor"'
        : `Bearer realm="${realm}",service="test-registry"${repo ? `,scope="repository:${repo}:pull"` : ''}`;
    res.writeHead(401, { 'www-authenticate': challenge, 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}');
  };
  reg.server = await startServer(handler);
  t.teardown(() => reg.server.close());
  return reg;
}

async function get(client: ReturnType<typeof testClient>, path: string, repo?: string): Promise<{ status: number; body: string }> {
  const res = await client.request({ method: 'GET', path, repo });
  return { status: res.status, body: (await readAll(res.body)).toString() };
}

t.test('Bearer: token fetched with Basic credentials, service and scope; reused for the repository', async (t) => {
  const reg = await bearerRegistry(t, { creds: ['robot$edge', 's3cret'], expiresIn: 1800 });
  const client = testClient(t, reg.server.url, { username: 'robot$edge', password: 's3cret' });
  t.same(await get(client, '/v2/proj/app/manifests/1', 'proj/app'), { status: 200, body: 'ok' });
  t.same(await get(client, '/v2/proj/app/blobs/sha256:aa', 'proj/app'), { status: 200, body: 'ok' });
  t.same(await get(client, '/v2/proj/app/blobs/sha256:bb', 'proj/app'), { status: 200, body: 'ok' });
  t.equal(reg.tokenFetches.length, 1, 'one token fetch');
  t.equal(reg.challenges, 1, 'only the first request went anonymous; later ones sent the token up front');
  t.equal(reg.tokenFetches[0]!.searchParams.get('service'), 'test-registry');
  t.equal(reg.tokenFetches[0]!.searchParams.get('scope'), 'repository:proj/app:pull');
  t.equal(reg.tokenAuth[0], basic('robot$edge', 's3cret'), 'credentials sent to the token endpoint');
  t.equal(client.authMode, 'bearer');
});

t.test('Bearer: a second repository gets its own scope', async (t) => {
  const reg = await bearerRegistry(t, { expiresIn: 1800 });
  const client = testClient(t, reg.server.url);
  await get(client, '/v2/a/manifests/1', 'a');
  await get(client, '/v2/b/manifests/1', 'b');
  await get(client, '/v2/b/manifests/2', 'b');
  t.same(reg.tokenFetches.map((u) => u.searchParams.get('scope')), ['repository:a:pull', 'repository:b:pull']);
  t.equal(reg.challenges, 1, 'the second repository got its token up front');
  t.equal(reg.tokenAuth[0], undefined, 'anonymous token request without credentials');
});

t.test('Bearer: concurrent requests share one token fetch', async (t) => {
  const reg = await bearerRegistry(t, { expiresIn: 1800 });
  const client = testClient(t, reg.server.url);
  const all = await Promise.all(Array.from({ length: 6 }, () => get(client, '/v2/proj/app/manifests/1', 'proj/app')));
  t.ok(all.every((r) => r.status === 200));
  t.equal(reg.tokenFetches.length, 1);
});

t.test('Bearer: access_token used when token is empty', async (t) => {
  const reg = await bearerRegistry(t, { field: 'access_token', expiresIn: 300 });
  const client = testClient(t, reg.server.url);
  t.equal((await get(client, '/v2/x/manifests/1', 'x')).status, 200);
});

t.test('Bearer: expires_in honoured; a token is re-fetched after it expires', async (t) => {
  const reg = await bearerRegistry(t, { expiresIn: 1 });
  const client = testClient(t, reg.server.url);
  await get(client, '/v2/x/manifests/1', 'x');
  await get(client, '/v2/x/manifests/1', 'x');
  t.equal(reg.tokenFetches.length, 1, 'cached while fresh');
  await new Promise((r) => setTimeout(r, 1000));
  await get(client, '/v2/x/manifests/1', 'x');
  t.equal(reg.tokenFetches.length, 2, 're-fetched once expired (refreshed a little early)');
  t.equal(reg.challenges, 1, 'the refresh happened up front, without a 401');
});

t.test('Bearer: no expires_in means the 60 s default, not "expired"', async (t) => {
  const reg = await bearerRegistry(t, {});
  const client = testClient(t, reg.server.url);
  for (let i = 0; i < 3; i++) await get(client, '/v2/x/manifests/1', 'x');
  t.equal(reg.tokenFetches.length, 1);
});

t.test('Bearer: an expired token answered with a Basic challenge (Harbor) is re-fetched', async (t) => {
  const reg = await bearerRegistry(t, { creds: ['u', 'p'], expiresIn: 1800, expiredChallenge: 'basic' });
  const client = testClient(t, reg.server.url, { username: 'u', password: 'p' });
  await get(client, '/v2/x/manifests/1', 'x');
  reg.valid.clear(); // the registry now considers tok-1 expired
  const r = await get(client, '/v2/x/manifests/1', 'x');
  t.equal(r.status, 200);
  t.equal(reg.tokenFetches.length, 2, 'a fresh token');
  t.equal(client.authMode, 'bearer', 'still bearer, not switched to Basic');
});

t.test('Bearer: a rejected token answered with a Bearer challenge is re-fetched once', async (t) => {
  const reg = await bearerRegistry(t, { expiresIn: 1800 });
  const client = testClient(t, reg.server.url);
  await get(client, '/v2/x/manifests/1', 'x');
  reg.valid.clear();
  t.equal((await get(client, '/v2/x/manifests/1', 'x')).status, 200);
  t.equal(reg.tokenFetches.length, 2);
});

t.test('Bearer: wrong credentials → UpstreamAuthError naming the token endpoint', async (t) => {
  const reg = await bearerRegistry(t, { creds: ['edge', 'right'] });
  const client = testClient(t, reg.server.url, { username: 'edge', password: 'wrong' });
  const err = await client.request({ method: 'GET', path: '/v2/x/manifests/1', repo: 'x' }).catch((e: unknown) => e);
  t.type(err, UpstreamAuthError);
  t.match((err as Error).message, /token endpoint .*refused the configured credentials \(401\)/);
  t.equal((err as UpstreamAuthError).upstream, 'origin');
});

t.test('Bearer: a realm on a foreign host is refused and never contacted', async (t) => {
  const foreign = await startServer((_req, res) => res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"stolen"}'), '127.0.0.2');
  t.teardown(() => foreign.close());
  const reg = await bearerRegistry(t, { realm: () => `${foreign.url}/token` });
  const client = testClient(t, reg.server.url, { username: 'edge', password: 'pw' });
  const err = await client.request({ method: 'GET', path: '/v2/x/manifests/1', repo: 'x' }).catch((e: unknown) => e);
  t.type(err, UpstreamAuthError);
  t.match((err as Error).message, new RegExp(`${foreign.url.replace(/\./g, '\\.')}/token`), 'the message names the realm');
  t.equal(foreign.requests.length, 0, 'the foreign realm never saw a request (nor the credentials)');
});

t.test('realm rules: the upstream\'s own origin, or an allowed one', async (t) => {
  const cases: Array<[string, string, boolean]> = [
    ['https://harbor.example.com/service/token', 'https://harbor.example.com', true],
    ['https://HARBOR.example.com./token', 'https://harbor.example.com', true],
    ['https://harbor.example.com:443/token', 'https://harbor.example.com', true],
    // Regression: another port on the same host got the robot's credentials, and the
    // "registrable domain" rule let any *.co.uk realm through.
    ['https://harbor.example.com:8443/token', 'https://harbor.example.com', false],
    ['https://auth.example.com/token', 'https://harbor.example.com', false],
    ['https://evil.co.uk/token', 'https://harbor.co.uk', false],
    ['https://evil.com/token', 'https://harbor.example.com', false],
    ['https://example.com.evil.com/token', 'https://harbor.example.com', false],
    ['http://harbor.example.com/token', 'https://harbor.example.com', false],
    ['http://127.0.0.1:5000/token', 'http://127.0.0.1:5000', true],
    ['http://127.0.0.1:9/token', 'http://127.0.0.1:5000', false],
    ['http://127.0.0.2/token', 'http://127.0.0.1:5000', false],
    ['http://10.0.0.1/token', 'http://127.0.0.1', false],
    ['http://[::1]:5000/token', 'http://[::1]:5000', true],
    ['http://[::1]:9/token', 'http://[::1]:5000', false],
    ['http://localhost/token', 'http://127.0.0.1', false],
    ['ftp://harbor.example.com/token', 'https://harbor.example.com', false],
  ];
  for (const [realm, upstream, want] of cases) t.equal(realmAllowed(new URL(realm), new URL(upstream)), want, `${realm} for ${upstream}`);
  const allowed = ['https://auth.example.com'];
  t.equal(realmAllowed(new URL('https://auth.example.com/token'), new URL('https://harbor.example.com'), allowed), true, 'an allowed origin');
  t.equal(realmAllowed(new URL('https://auth.example.com:444/token'), new URL('https://harbor.example.com'), allowed), false, 'not another port of it');
  t.equal(realmAllowed(new URL('http://auth.example.com/token'), new URL('https://harbor.example.com'), ['http://auth.example.com']), false, 'never clear text under TLS');
});

t.test('a realm on another port of the origin\'s host never sees the credentials', async (t) => {
  const foreign = await startServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"stolen"}');
  });
  t.teardown(() => foreign.close());
  const reg = await bearerRegistry(t, { realm: () => `http://127.0.0.1:${new URL(foreign.url).port}/token` });
  const client = testClient(t, reg.server.url, { username: 'edge', password: 'pw' });
  const err = await client.request({ method: 'GET', path: '/v2/x/manifests/1', repo: 'x' }).catch((e: unknown) => e);
  t.type(err, UpstreamAuthError);
  t.equal(foreign.requests.length, 0, 'the other port never saw a request, nor the credentials');
});

async function basicRegistry(t: { teardown(fn: () => unknown): void }, user: string, pass: string): Promise<{ server: TestServer; challenges: number }> {
  const state = { server: undefined as unknown as TestServer, challenges: 0 };
  state.server = await startServer((req, res) => {
    if (req.headers.authorization === basic(user, pass)) {
      res.writeHead(200, { 'content-length': '2' }).end('ok');
      return;
    }
    state.challenges++;
    res.writeHead(401, { 'www-authenticate': 'Basic realm="Registry Realm"' }).end('{"errors":[]}');
  });
  t.teardown(() => state.server.close());
  return state;
}

t.test('Basic: credentials sent after the challenge, then up front', async (t) => {
  const reg = await basicRegistry(t, 'edge', 'pw');
  const client = testClient(t, reg.server.url, { username: 'edge', password: 'pw' });
  for (let i = 0; i < 3; i++) t.equal((await get(client, '/v2/x/manifests/1', 'x')).status, 200);
  t.equal(reg.challenges, 1);
  t.equal(client.authMode, 'basic');
});

t.test('Basic: no credentials configured → UpstreamAuthError', async (t) => {
  const reg = await basicRegistry(t, 'edge', 'pw');
  const client = testClient(t, reg.server.url);
  await t.rejects(client.request({ method: 'GET', path: '/v2/x/manifests/1' }), { name: 'UpstreamAuthError', message: /requires credentials/ });
});

t.test('Basic: wrong credentials → UpstreamAuthError, one retry only', async (t) => {
  const reg = await basicRegistry(t, 'edge', 'pw');
  const client = testClient(t, reg.server.url, { username: 'edge', password: 'nope' });
  await t.rejects(client.request({ method: 'GET', path: '/v2/x/manifests/1' }), { name: 'UpstreamAuthError', status: 401, message: /refused the configured credentials/ });
  t.equal(reg.server.requests.length, 2);
});

t.test('401 without any challenge → UpstreamAuthError', async (t) => {
  const s = await startServer((_req, res) => res.writeHead(401).end());
  t.teardown(() => s.close());
  const client = testClient(t, s.url, { username: 'a', password: 'b' });
  await t.rejects(client.request({ method: 'GET', path: '/v2/' }), { name: 'UpstreamAuthError', message: /without a usable challenge/ });
});

t.test('anonymous Bearer token refused by the registry → UpstreamAuthError suggesting credentials', async (t) => {
  const s = await startServer((req, res) => {
    if (req.url!.startsWith('/token')) {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"useless"}');
      return;
    }
    res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${(req.socket.localPort ?? 0)}/token",service="s"` }).end();
  });
  t.teardown(() => s.close());
  const client = testClient(t, s.url);
  await t.rejects(client.request({ method: 'GET', path: '/v2/x/manifests/1', repo: 'x' }), { name: 'UpstreamAuthError', message: /anonymous.*configure credentials/ });
});
