// COVE_CLIENT_AUTH=passthrough against an in-process Bearer origin with per-user grants (as Harbor
// projects give them): reader-a may pull team-a/*, reader-b team-b/*, anyone public/*, the robot
// everything. Each test tries to get past the gate the way a LAN client could.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { loadConfig } from '../../src/config.js';
import { startCove } from '../../src/main.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage, type Image } from '../helpers/images.js';
import { fetchAll, sha256, type FetchResult } from '../helpers/http.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';

const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json';
const USERS = {
  robot: { password: 'robot-secret', prefixes: ['*'] },
  'reader-a': { password: 'secret-a', prefixes: ['team-a/'] },
  'reader-b': { password: 'secret-b', prefixes: ['team-b/'] },
};

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;

async function originWithTeams(): Promise<{ origin: OriginRegistry; a: Image; b: Image; pub: Image }> {
  const origin = await OriginRegistry.start({ auth: 'bearer', users: USERS, anonymousPrefixes: ['public/'] });
  const a = makeImage({ layers: [50_000, 120_000], seed: 'auth-team-a' });
  const b = makeImage({ layers: [60_000], seed: 'auth-team-b' });
  const pub = makeImage({ layers: [30_000], seed: 'auth-public' });
  origin.putImage('team-a/app', '1', a);
  origin.putImage('team-b/app', '1', b);
  origin.putImage('public/app', '1', pub);
  return { origin, a, b, pub };
}

function startGuarded(t: Parameters<typeof startTestCove>[0], origin: OriginRegistry, env: Record<string, string> = {}, options: { dataDir?: string; keepData?: boolean } = {}) {
  return startTestCove(t, origin.url, { COVE_CLIENT_AUTH: 'passthrough', COVE_UPSTREAM_USERNAME: 'robot', COVE_UPSTREAM_PASSWORD: 'robot-secret', COVE_TAG_TTL: '1h', ...env }, options);
}

/** The challenge's realm, service and scope. */
function challengeOf(r: FetchResult): { realm: string; service: string; scope: string | null } {
  const h = r.headers['www-authenticate'] ?? '';
  const param = (name: string) => new RegExp(`${name}="([^"]*)"`).exec(h)?.[1] ?? null;
  return { realm: param('realm')!, service: param('service')!, scope: param('scope') };
}

/** What a registry client does: ask, follow the Bearer challenge to the token endpoint with its credentials, ask again. */
async function tokenFor(cove: TestCove, path: string, authorization: string | null): Promise<{ status: number; token: string | null }> {
  const first = await fetchAll(`${cove.url}${path}`, { headers: { accept: ACCEPT } });
  if (first.status !== 401) throw new Error(`expected a challenge for ${path}, got ${first.status}`);
  const c = challengeOf(first);
  const url = new URL(c.realm);
  url.searchParams.set('service', c.service);
  if (c.scope) url.searchParams.set('scope', c.scope);
  const r = await fetchAll(`${cove.url}${url.pathname}${url.search}`, { headers: authorization ? { authorization } : {} });
  if (r.status !== 200) return { status: r.status, token: null };
  return { status: 200, token: (JSON.parse(r.body.toString()) as { token: string }).token };
}

async function pull(cove: TestCove, repo: string, image: Image, authorization: string | null): Promise<{ status: number; ok: boolean }> {
  const got = await tokenFor(cove, `/v2/${repo}/manifests/1`, authorization);
  if (got.token === null) return { status: got.status, ok: false };
  const bearer = { authorization: `Bearer ${got.token}`, accept: ACCEPT };
  const m = await fetchAll(`${cove.url}/v2/${repo}/manifests/1`, { headers: bearer });
  if (m.status !== 200) return { status: m.status, ok: false };
  let ok = sha256(m.body) === image.manifestDigest;
  for (const d of [image.configDigest, ...image.layers.map((l) => l.digest)]) {
    const b = await fetchAll(`${cove.url}/v2/${repo}/blobs/${d}`, { headers: bearer });
    ok &&= b.status === 200 && sha256(b.body) === d;
  }
  return { status: 200, ok };
}

t.test('each reader pulls its own team\'s image; anonymous and the other reader are refused, cached or not', async (t) => {
  const { origin, a } = await originWithTeams();
  t.teardown(() => origin.close());
  const cove = await startGuarded(t, origin);

  const anon = await fetchAll(`${cove.url}/v2/team-a/app/manifests/1`, { headers: { accept: ACCEPT } });
  t.equal(anon.status, 401, 'anonymous: 401');
  t.match(anon.headers['www-authenticate'], /^Bearer realm="http:\/\/127\.0\.0\.1:\d+\/_cove\/token",service="cove",scope="repository:team-a\/app:pull"$/);
  t.equal(JSON.parse(anon.body.toString()).errors[0].code, 'UNAUTHORIZED');
  t.equal(origin.count({ kind: 'manifest' }), 0, 'nothing was fetched for an anonymous client');

  for (const round of ['cold', 'cached']) {
    t.same(await pull(cove, 'team-a/app', a, basic('reader-a', 'secret-a')), { status: 200, ok: true }, `${round}: reader-a pulls team-a/app`);
    const b = await pull(cove, 'team-a/app', a, basic('reader-b', 'secret-b'));
    t.equal(b.ok, false, `${round}: reader-b does not`);
    t.equal(b.status, 401, `${round}: reader-b's token does not open team-a/app`);
    const anonPull = await pull(cove, 'team-a/app', a, null);
    t.equal(anonPull.ok, false, `${round}: anonymous does not`);
    const direct = await fetchAll(`${cove.url}/v2/team-a/app/manifests/1`, { headers: { accept: ACCEPT, authorization: basic('reader-b', 'secret-b') } });
    t.equal(direct.status, 403, `${round}: reader-b with Basic on the request: 403`);
    t.equal(JSON.parse(direct.body.toString()).errors[0].code, 'DENIED');
  }
  const wrong = await tokenFor(cove, '/v2/team-a/app/manifests/1', basic('reader-a', 'guess'));
  t.equal(wrong.status, 401, 'a wrong password gets no token');
});

t.test('a digest of another repository is not served through a repository the client may pull', async (t) => {
  const { origin, a, b, pub } = await originWithTeams();
  t.teardown(() => origin.close());
  const cove = await startGuarded(t, origin);
  // team-b's image is cached by its own reader first.
  t.same(await pull(cove, 'team-b/app', b, basic('reader-b', 'secret-b')), { status: 200, ok: true });
  t.same(await pull(cove, 'team-a/app', a, basic('reader-a', 'secret-a')), { status: 200, ok: true });
  const { token } = await tokenFor(cove, '/v2/team-a/app/manifests/1', basic('reader-a', 'secret-a'));
  const layer = b.layers[0]!;
  for (const path of [`/v2/team-a/app/blobs/${layer.digest}`, `/v2/team-a/app/manifests/${b.manifestDigest}`]) {
    const r = await fetchAll(`${cove.url}${path}`, { headers: { authorization: `Bearer ${token!}`, accept: ACCEPT } });
    t.equal(r.status, 404, `${path.split('/').slice(-2).join('/')}: 404`);
    t.not(sha256(r.body), layer.digest, 'never the bytes');
  }
  // The same through the public repository, anonymously.
  t.same(await pull(cove, 'public/app', pub, null), { status: 200, ok: true }, 'anonymous pulls the public project');
  const anonToken = (await tokenFor(cove, '/v2/public/app/manifests/1', null)).token!;
  const guessed = await fetchAll(`${cove.url}/v2/public/app/blobs/${layer.digest}`, { headers: { authorization: `Bearer ${anonToken}` } });
  t.equal(guessed.status, 404, 'digest guessing through a public repository: 404');
});

t.test('docker login: /v2/ challenges; the token endpoint takes good credentials and refuses bad ones', async (t) => {
  const { origin } = await originWithTeams();
  t.teardown(() => origin.close());
  const cove = await startGuarded(t, origin);
  const base = await fetchAll(`${cove.url}/v2/`);
  t.equal(base.status, 401);
  const c = challengeOf(base);
  t.equal(c.scope, null, 'no scope for /v2/');
  const good = await fetchAll(`${cove.url}/_cove/token?service=${encodeURIComponent(c.service)}`, { headers: { authorization: basic('reader-a', 'secret-a') } });
  t.equal(good.status, 200);
  const body = JSON.parse(good.body.toString()) as { token: string; access_token: string; expires_in: number; issued_at: string };
  t.equal(body.token, body.access_token);
  t.ok(body.expires_in >= 60 && body.expires_in <= 3600, 'a short-lived token');
  t.equal((await fetchAll(`${cove.url}/v2/`, { headers: { authorization: `Bearer ${body.token}` } })).status, 200, '/v2/ with the token: 200');
  t.equal((await fetchAll(`${cove.url}/v2/`, { headers: { authorization: basic('reader-a', 'secret-a') } })).status, 200, '/v2/ with Basic: 200');
  const bad = await fetchAll(`${cove.url}/_cove/token?service=${encodeURIComponent(c.service)}`, { headers: { authorization: basic('reader-a', 'nope') } });
  t.equal(bad.status, 401, 'a wrong password: 401');
  const forged = `${body.token.slice(0, -4)}AAAA`;
  t.equal((await fetchAll(`${cove.url}/v2/`, { headers: { authorization: `Bearer ${forged}` } })).status, 401, 'a forged token: 401');
  const other = await fetchAll(`${cove.url}/_cove/token?service=cove:elsewhere`, { headers: { authorization: basic('reader-a', 'secret-a') } });
  t.equal(other.status, 401, 'an unknown service: 401');
});

t.test('decisions: cached within the TTL, honoured through an outage within the grace, kept across a restart', async (t) => {
  const { origin, a } = await originWithTeams();
  t.teardown(() => origin.close());
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-auth-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const env = { COVE_CLIENT_AUTH_TTL: '200ms', COVE_CLIENT_AUTH_GRACE: '1h' };
  let cove = await startGuarded(t, origin, env, { dataDir, keepData: true });
  t.same(await pull(cove, 'team-a/app', a, basic('reader-a', 'secret-a')), { status: 200, ok: true });
  await tokenFor(cove, '/v2/team-a/app/manifests/1', basic('reader-a', 'secret-a'));
  const asked = origin.tokenRequests;
  await tokenFor(cove, '/v2/team-a/app/manifests/1', basic('reader-a', 'secret-a'));
  t.equal(origin.tokenRequests, asked, 'within the TTL the origin is not asked again');

  await origin.stop();
  await new Promise((r) => setTimeout(r, 250));
  const during = async (what: string) => {
    t.same(await pull(cove, 'team-a/app', a, basic('reader-a', 'secret-a')), { status: 200, ok: true }, `${what}: reader-a pulls its cached image`);
    t.equal((await tokenFor(cove, '/v2/team-a/app/manifests/1', basic('reader-a', 'wrong'))).status, 401, `${what}: a wrong password is refused`);
    const b = await pull(cove, 'team-a/app', a, basic('reader-b', 'secret-b'));
    t.equal(b.ok, false, `${what}: reader-b is still refused`);
    t.equal((await pull(cove, 'team-a/app', a, null)).ok, false, `${what}: anonymous is still refused`);
  };
  await during('outage');
  await cove.stop();
  cove = await startGuarded(t, origin, env, { dataDir, keepData: true });
  await during('outage, after a restart');
  const metrics = await (await fetch(`${cove.url}/metrics`)).text();
  t.match(metrics, /cove_client_auth_decisions_total\{result="allowed",reason="grace"\} [1-9]/, 'grace allowances are counted');
  t.match(metrics, /cove_client_auth_decisions_total\{result="refused",reason="origin-unreachable"\} [1-9]/, 'unknown credentials during the outage are counted');
  await cove.stop();

  cove = await startGuarded(t, origin, { ...env, COVE_CLIENT_AUTH_GRACE: '100ms' }, { dataDir, keepData: true });
  const late = await pull(cove, 'team-a/app', a, basic('reader-a', 'secret-a'));
  t.equal(late.ok, false, 'past the grace, reader-a is refused too');
  t.match(await (await fetch(`${cove.url}/metrics`)).text(), /cove_client_auth_decisions_total\{result="refused",reason="outside-grace"\} [1-9]/);
  await origin.restart();
  t.same(await pull(cove, 'team-a/app', a, basic('reader-a', 'secret-a')), { status: 200, ok: true }, 'the origin back: reader-a pulls again');
});

t.test('other surfaces: status without names, peers only on the keyed channel', async (t) => {
  const { origin, a } = await originWithTeams();
  t.teardown(() => origin.close());
  const cove = await startGuarded(t, origin, { COVE_ADMIN_TOKEN: 'admin-token-0123456789' });
  t.same(await pull(cove, 'team-a/app', a, basic('reader-a', 'secret-a')), { status: 200, ok: true });
  const open = await fetchAll(`${cove.url}/_cove/status.json`);
  t.notMatch(open.body.toString(), /team-a|sha256:/, 'status.json names no repository or digest');
  const admin = await fetchAll(`${cove.url}/_cove/status.json`, { headers: { authorization: 'Bearer admin-token-0123456789' } });
  t.match(admin.body.toString(), /team-a\/app/, 'with the admin token it does');
  const peer = await fetchAll(`${cove.url}/v2/team-a/app/blobs/${a.layers[0]!.digest}`, { headers: { 'cove-peer': 'local' } });
  t.equal(peer.status, 401, 'a Cove-Peer header without the site key opens nothing');
  t.not(sha256(peer.body), a.layers[0]!.digest);
});

t.test('a parent Cove between the edge and the origin: the edge reads what the parent granted', async (t) => {
  const { origin, a, b } = await originWithTeams();
  t.teardown(() => origin.close());
  const parent = await startGuarded(t, origin);
  // The edge's upstream is the parent; its robot is the origin's robot, checked by the parent.
  const edge = await startTestCove(t, parent.url, { COVE_CLIENT_AUTH: 'passthrough', COVE_UPSTREAM_USERNAME: 'robot', COVE_UPSTREAM_PASSWORD: 'robot-secret', COVE_TAG_TTL: '1h' });
  t.same(await pull(edge, 'team-a/app', a, basic('reader-a', 'secret-a')), { status: 200, ok: true }, 'reader-a pulls through edge and parent');
  t.equal((await pull(edge, 'team-b/app', b, basic('reader-a', 'secret-a'))).ok, false, 'reader-a gets nothing of team-b through the edge');
  t.equal((await tokenFor(edge, '/v2/team-a/app/manifests/1', basic('reader-a', 'wrong'))).status, 401, 'a wrong password is refused at the edge');
});

t.test('the log names subject and repository, never a password or token', async (t) => {
  const { origin, a } = await originWithTeams();
  t.teardown(() => origin.close());
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (line: string) => void lines.push(line) });
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-auth-log-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const config = loadConfig({
    env: { COVE_LISTEN: '127.0.0.1:0', COVE_DATA_DIR: dataDir, COVE_UPSTREAM: origin.url, COVE_CLIENT_AUTH: 'passthrough', COVE_UPSTREAM_USERNAME: 'robot', COVE_UPSTREAM_PASSWORD: 'robot-secret' },
  });
  const cove = await startCove(config, { log });
  t.teardown(() => cove.stop());
  const pulled = await pull(Object.assign(cove, { dataDir, fillsDone: async () => {}, adminFetch: () => Promise.reject(new Error('not used')) }), 'team-a/app', a, basic('reader-a', 'secret-a'));
  t.same(pulled, { status: 200, ok: true });
  const text = lines.join('');
  t.match(text, /"msg":"client auth decision"/);
  t.match(text, /"subject":"reader-a"/, 'the subject is named');
  t.match(text, /"repo":"team-a\/app"/, 'and the repository');
  for (const secret of ['secret-a', 'robot-secret', Buffer.from('reader-a:secret-a').toString('base64')]) t.notMatch(text, secret, 'no credential in the log');
  t.notMatch(text, /Bearer [A-Za-z0-9_-]{20,}/, 'no token in the log');
});

t.test('routed names: scopes speak the client\'s names, decisions are about the routed repository', async (t) => {
  const origin = await OriginRegistry.start({
    auth: 'bearer',
    users: { ...USERS, 'hub-reader': { password: 'secret-hub', prefixes: ['dockerhub/'] }, 'lib-reader': { password: 'secret-lib', prefixes: ['library/'] } },
  });
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [40_000], seed: 'auth-routed' });
  origin.putImage('dockerhub/library/app', '1', image);
  // A dockerd registry-mirrors listener: no ns on the wire, the default ns routes docker.io names.
  const mirror = await startGuarded(t, origin, { COVE_ROUTES: 'docker.io=dockerhub/', COVE_DEFAULT_NS: 'docker.io' });
  const challenge = await fetchAll(`${mirror.url}/v2/library/app/manifests/1`, { headers: { accept: ACCEPT } });
  t.match(challenge.headers['www-authenticate'], /scope="repository:library\/app:pull"/, 'the scope is the client\'s own name');
  t.same(await pull(mirror, 'library/app', image, basic('hub-reader', 'secret-hub')), { status: 200, ok: true }, 'hub-reader pulls library/app (dockerhub/library/app at the origin)');
  t.equal((await pull(mirror, 'library/app', image, basic('lib-reader', 'secret-lib'))).ok, false, 'a grant on the unrouted name opens nothing');
  // containerd: ?ns=docker.io on every request; the service carries it to the token endpoint.
  const plain = await startGuarded(t, origin, { COVE_ROUTES: 'docker.io=dockerhub/' });
  const path = '/v2/library/app/manifests/1?ns=docker.io';
  const first = await fetchAll(`${plain.url}${path}`, { headers: { accept: ACCEPT } });
  t.match(first.headers['www-authenticate'], /service="cove;ns=docker\.io"/);
  const { token } = await tokenFor(plain, path, basic('hub-reader', 'secret-hub'));
  const m = await fetchAll(`${plain.url}${path}`, { headers: { accept: ACCEPT, authorization: `Bearer ${token!}` } });
  t.equal(m.status, 200, 'containerd-style pull with ns');
  t.equal(sha256(m.body), image.manifestDigest);
  const noNs = await fetchAll(`${plain.url}/v2/library/app/manifests/1`, { headers: { accept: ACCEPT, authorization: `Bearer ${token!}` } });
  t.equal(noNs.status, 401, 'a token for the ns route does not open the port-mode name');
});
