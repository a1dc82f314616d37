// Issue 12, private projects at the edge: Cove with COVE_CLIENT_AUTH=passthrough in front of a real
// docker-registry that uses bearer-token auth, its tokens issued by token-server.ts with Harbor-like
// per-user projects:
//   robot     pull+push everywhere (Cove's upstream account, and the account the tests push with)
//   reader-a  pull on team-a/
//   reader-b  pull on team-b/
//   anonymous pull on public/ (a public project)
// Real clients (skopeo, dockerd, ctr, podman) and raw HTTP check that a client gets from Cove what
// the origin would give it and nothing more: cold and cached, blob by blob (manifests by digest
// too), with forged tokens, after the decision TTL (revoked grants, changed passwords), under a
// docker.io route, for a multi-arch index, while the origin and its token service are down (within
// and after the grace) and across a restart of Cove; and that open mode still lets anyone pull.
// The first test checks the harness alone (no Cove): the origin itself enforces those grants.
import t, { type Test } from 'tap';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import {
  COVE_CLI,
  Cleanup,
  Registry,
  buildImage,
  dockerCli,
  httpGet,
  isBlobPath,
  pushImage,
  readImage,
  requireRoot,
  requireTools,
  run,
  startContainerd,
  startCove,
  startDockerd,
  startRegistry,
  tempDir,
  verifyDirCopy,
  type CoveProc,
  type TestImage,
  podmanIsolation,
  removePodmanSideEffects,
} from './real.js';
import { TokenServer, jwtClaims } from './token-server.js';
import { freePort } from '../helpers/process.js';

// Sixteen tests of up to ~2 minutes each; tap's per-file default (300 s) is too short for all.
t.setTimeout(20 * 60_000);

const ROBOT = { username: 'robot', password: 'robot-secret' };
const A = { username: 'reader-a', password: 'reader-a-secret' };
const B = { username: 'reader-b', password: 'reader-b-secret' };
const creds = (u: { username: string; password: string }) => `${u.username}:${u.password}`;
const WRONG_A = `${A.username}:not-the-password`;

const USERS = {
  [ROBOT.username]: { password: ROBOT.password, prefixes: ['*'], actions: ['pull', 'push'] },
  [A.username]: { password: A.password, prefixes: ['team-a/'] },
  [B.username]: { password: B.password, prefixes: ['team-b/'] },
};

/** Cove in passthrough mode, reaching the origin as the robot. */
const PASSTHROUGH: Record<string, string> = {
  COVE_CLIENT_AUTH: 'passthrough',
  COVE_UPSTREAM_USERNAME: ROBOT.username,
  COVE_UPSTREAM_PASSWORD: ROBOT.password,
  COVE_UPSTREAM_TIMEOUT: '2s',
};

const BASE_TOOLS = ['docker-registry', 'skopeo', 'umoci', 'openssl'];
/** Cove in front of the world's registry, whose token service (on its own port) it may follow. */
const startCoveAt = (cleanup: Cleanup, w: World, env: Record<string, string>, opts?: Parameters<typeof startCove>[3]) =>
  startCove(cleanup, w.origin.url, { COVE_UPSTREAM_TOKEN_REALMS: new URL(w.tokens.realm).origin, ...env }, opts);
const NO_INTERNET = { HTTPS_PROXY: 'http://127.0.0.1:9', HTTP_PROXY: 'http://127.0.0.1:9', NO_PROXY: '127.0.0.1,localhost' };
const sha256File = (file: string) => `sha256:${createHash('sha256').update(readFileSync(file)).digest('hex')}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const basic = (c: string) => `Basic ${Buffer.from(c).toString('base64')}`;
const refused = (status: number) => status === 401 || status === 403;

// ------------------------------------------------------------------------------------------ fixture

/** The test images, built once for the file: distinct content per project (no shared blobs). */
interface Images {
  teamA: TestImage;
  teamB: TestImage;
  pub: TestImage;
}
const fileCleanup = new Cleanup();
t.teardown(() => fileCleanup.run());
let built: Promise<Images> | null = null;
function images(): Promise<Images> {
  built ??= (async () => {
    const layout = join(tempDir(fileCleanup, 'cove-pp-img-'), 'layout');
    return {
      teamA: await buildImage(layout, 'team-a', [300_000, 200_000], 'private-projects'),
      teamB: await buildImage(layout, 'team-b', [250_000], 'private-projects'),
      pub: await buildImage(layout, 'public', [200_000], 'private-projects'),
    };
  })();
  return built;
}

/** A token server, the origin trusting it, and the three images pushed there by the robot. */
interface World {
  work: string;
  tokens: TokenServer;
  origin: Registry;
  img: Images;
}
async function world(cleanup: Cleanup): Promise<World> {
  const work = tempDir(cleanup);
  const img = await images();
  const tokens = await TokenServer.start(cleanup, { users: USERS, anonymous: ['public/'] });
  const origin = await startRegistry(cleanup, { token: tokens.registryAuth() });
  await pushImage(img.teamA, origin, 'team-a/app:1', ROBOT);
  await pushImage(img.teamB, origin, 'team-b/app:1', ROBOT);
  await pushImage(img.pub, origin, 'public/app:1', ROBOT);
  return { work, tokens, origin, img };
}

/** `skopeo copy docker://REF dir:OUT` that may fail (refusals are expected outcomes here). */
function skopeo(ref: string, out: string, credentials?: string) {
  rmSync(out, { recursive: true, force: true });
  const extra = credentials ? ['--src-creds', credentials] : ['--src-no-creds'];
  return run('skopeo', ['copy', '-q', '--src-tls-verify=false', ...extra, `docker://${ref}`, `dir:${out}`], { allowFail: true, timeoutMs: 90_000 });
}

/** Asserts a skopeo `dir:` copy is exactly `image` (every blob hashed, manifest bytes equal). */
function sameImage(t: Test, out: string, image: TestImage, what: string): void {
  const copy = verifyDirCopy(out);
  t.same(copy.problems, [], `${what}: every blob file hashes to its name and matches the manifest`);
  t.equal(copy.manifest.config.digest, image.config.digest, `${what}: the pushed config`);
  t.same(
    copy.manifest.layers.map((l) => l.digest),
    image.layers.map((l) => l.digest),
    `${what}: the pushed layers`,
  );
  t.equal(sha256File(join(out, 'manifest.json')), image.manifestDigest, `${what}: the pushed manifest bytes`);
}

/** A pull that must work: skopeo exits 0 and the copy is the image. */
async function pullOk(t: Test, ref: string, out: string, image: TestImage, credentials: string | undefined, what: string): Promise<void> {
  const r = await skopeo(ref, out, credentials);
  t.equal(r.code, 0, `${what}: skopeo exits 0${r.code === 0 ? '' : `\n${r.stderr.trim()}`}`);
  if (r.code === 0) sameImage(t, out, image, what);
}

/** How a client words an authorization refusal (401, 403, UNAUTHORIZED, DENIED, insufficient_scope). */
const AUTH_REFUSAL = /unauthori[sz]ed|denied|authenticat|insufficient_scope|forbidden|\b40[13]\b/i;

/**
 * A pull that must be refused: skopeo exits non-zero, for an authorization reason (`reason`), so
 * that a pull failing for something else (a crash, a 500) is not taken for a refusal.
 */
async function pullRefused(t: Test, ref: string, out: string, credentials: string | undefined, what: string, reason = AUTH_REFUSAL): Promise<void> {
  const r = await skopeo(ref, out, credentials);
  t.not(r.code, 0, `${what}: skopeo exits non-zero`);
  t.match(r.stderr, reason, `${what}: refused for an authorization reason`);
  t.comment(`${what}: ${r.stderr.trim().split('\n').slice(-1)[0] ?? ''}`);
}

/** Parses `Bearer realm="…",service="…",scope="…"`. */
function challenge(header: string | string[] | undefined): { scheme: string; params: Record<string, string> } | null {
  const h = Array.isArray(header) ? header[0] : header;
  if (!h) return null;
  const m = /^(\S+)\s*(.*)$/.exec(h.trim());
  if (!m) return null;
  const params: Record<string, string> = {};
  for (const p of m[2]!.matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) params[p[1]!.toLowerCase()] = p[2]!;
  return { scheme: m[1]!, params };
}

/**
 * A token from Cove's token endpoint, the way a client gets one: the realm and service from
 * Cove's challenge on /v2/, `scope` (none: the docker login case) and Basic `credentials` (none:
 * anonymous).
 */
async function coveToken(cove: CoveProc, scope: string | string[] | null, credentials?: string): Promise<{ status: number; token: string | null; body: string; url: string }> {
  const ping = await httpGet(`${cove.url}/v2/`, { timeoutMs: 10_000 });
  const ch = challenge(ping.headers['www-authenticate']);
  if (!ch?.params.realm) throw new Error(`Cove's /v2/ answered ${ping.status} without a Bearer challenge (${String(ping.headers['www-authenticate'])})`);
  const url = new URL(ch.params.realm);
  if (ch.params.service) url.searchParams.set('service', ch.params.service);
  for (const sc of scope === null ? [] : Array.isArray(scope) ? scope : [scope]) url.searchParams.append('scope', sc);
  const r = await httpGet(url.href, { keep: true, timeoutMs: 20_000, headers: credentials ? { authorization: basic(credentials) } : {} });
  const body = r.body.toString('utf8');
  let token: string | null = null;
  if (r.status === 200) {
    const j = JSON.parse(body) as { token?: string; access_token?: string };
    token = j.token || j.access_token || null;
  }
  return { status: r.status, token, body, url: url.href };
}

/** GET (or HEAD) a Cove path with an Authorization header; body kept for error codes. */
function coveGet(cove: CoveProc, path: string, authorization?: string, method = 'GET') {
  const headers: Record<string, string> = {
    accept: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json',
  };
  if (authorization) headers.authorization = authorization;
  return httpGet(`${cove.url}${path}`, { keep: true, headers, method, timeoutMs: 20_000 });
}

/** The OCI error codes of an error body ("" when it has none). */
function errorCodes(body: Buffer): string {
  try {
    return ((JSON.parse(body.toString('utf8')) as { errors?: Array<{ code: string }> }).errors ?? []).map((e) => e.code).join(',');
  } catch {
    return '';
  }
}

/** Blob GETs at the origin in `entries`. */
const originBlobGets = (entries: ReturnType<Registry['since']>) => entries.filter((e) => e.method === 'GET' && isBlobPath(e.path));

// ------------------------------------------------------------------------------------------ harness

t.test('harness: the token-auth docker-registry grants per-user projects by itself (no Cove)', async (t) => {
  if (!requireTools(t, BASE_TOOLS)) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  const ref = (repo: string) => `${w.origin.hostPort}/${repo}:1`;

  const ping = await httpGet(`${w.origin.url}/v2/`);
  t.equal(ping.status, 401, 'the origin refuses anonymous /v2/');
  const ch = challenge(ping.headers['www-authenticate']);
  t.equal(ch?.scheme, 'Bearer', 'with a Bearer challenge');
  t.equal(ch?.params.realm, w.tokens.realm, 'naming the token server');

  const wrong = await httpGet(`${w.tokens.realm}?service=${w.tokens.service}&scope=repository:team-a/app:pull`, { headers: { authorization: basic(WRONG_A) } });
  t.equal(wrong.status, 401, 'the token server refuses a wrong password');
  const b = await httpGet(`${w.tokens.realm}?service=${w.tokens.service}&scope=repository:team-a/app:pull`, { keep: true, headers: { authorization: basic(creds(B)) } });
  t.equal(b.status, 200, 'reader-b gets a token for team-a/app');
  t.same(jwtClaims((JSON.parse(b.body.toString()) as { token: string }).token).access, [{ type: 'repository', name: 'team-a/app', actions: [] }], '... granting nothing there (Harbor keeps the entry, actions emptied)');

  await pullRefused(t, ref('team-a/app'), join(w.work, 'anon'), undefined, 'anonymous pull of team-a/app at the origin');
  await pullOk(t, ref('team-a/app'), join(w.work, 'a'), w.img.teamA, creds(A), 'reader-a pull of team-a/app at the origin');
  await pullRefused(t, ref('team-b/app'), join(w.work, 'a-b'), creds(A), 'reader-a pull of team-b/app at the origin');
  await pullRefused(t, ref('team-a/app'), join(w.work, 'b-a'), creds(B), 'reader-b pull of team-a/app at the origin');
  await pullOk(t, ref('public/app'), join(w.work, 'pub'), w.img.pub, undefined, 'anonymous pull of public/app at the origin');

  const seen = w.tokens.requests;
  t.ok(seen.some((r) => r.user === A.username && r.scopes.includes('repository:team-a/app:pull') && r.access[0]?.actions.includes('pull')), 'the token server granted reader-a pull on team-a/app');
  t.ok(seen.some((r) => r.user === A.username && r.scopes.includes('repository:team-b/app:pull') && r.access[0]?.actions.length === 0), 'and nothing on team-b/app');
  t.ok(seen.some((r) => r.user === ROBOT.username && r.access.some((a) => a.actions.includes('push'))), 'the robot was granted push (the images were pushed with it)');

  // An outage and its end: same port, same key.
  await w.tokens.stop();
  const down = await httpGet(w.tokens.realm, { timeoutMs: 2000 }).then(
    (r) => r.status,
    () => 0,
  );
  t.equal(down, 0, 'a stopped token server refuses connections');
  await w.tokens.restart();
  await pullOk(t, ref('team-a/app'), join(w.work, 'a2'), w.img.teamA, creds(A), 'reader-a pull at the origin after the token server restarted');
});

// ------------------------------------------------------------------------------------------ Cove

t.test('passthrough: reader-a pulls team-a/app:1 through Cove; anonymous and reader-b are refused, cold and cached', async (t) => {
  if (!requireTools(t, BASE_TOOLS)) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  const cove = await startCoveAt(cleanup, w, PASSTHROUGH);
  const ref = `${cove.hostPort}/team-a/app:1`;
  const manifestPath = '/v2/team-a/app/manifests/1';
  const layer = w.img.teamA.layers[0]!;

  const ping = await coveGet(cove, '/v2/');
  t.equal(ping.status, 401, 'anonymous GET /v2/: 401');
  const pingCh = challenge(ping.headers['www-authenticate']);
  t.equal(pingCh?.scheme, 'Bearer', '/v2/ challenge is Bearer');
  t.equal(pingCh?.params.realm, `${cove.url}/_cove/token`, "/v2/ challenge realm is Cove's own token endpoint");
  t.equal(pingCh?.params.service, 'cove', '/v2/ challenge service is "cove" (a port-mode request names no ns)');
  t.notOk(pingCh?.params.scope, '/v2/ challenge has no scope');

  w.origin.markNow();
  const anon = await coveGet(cove, manifestPath);
  t.equal(anon.status, 401, `anonymous GET ${manifestPath}: 401`);
  const anonCh = challenge(anon.headers['www-authenticate']);
  t.equal(anonCh?.params.scope, 'repository:team-a/app:pull', 'the challenge names the repository scope');
  t.equal(anonCh?.params.realm, `${cove.url}/_cove/token`, 'and the same realm');

  await pullRefused(t, ref, join(w.work, 'anon-cold'), undefined, 'cold: anonymous');
  await pullRefused(t, ref, join(w.work, 'b-cold'), creds(B), 'cold: reader-b');
  t.same(originBlobGets(w.origin.since()).map((e) => e.path), [], 'refused clients made Cove fetch no blob from the origin');

  w.tokens.markNow();
  w.origin.markNow();
  await pullOk(t, ref, join(w.work, 'a-cold'), w.img.teamA, creds(A), 'cold: reader-a');
  const coldOrigin = w.origin.since();
  t.equal(originBlobGets(coldOrigin).length, 1 + w.img.teamA.layers.length, 'cold: one origin blob GET per blob');
  t.ok(originBlobGets(coldOrigin).every((e) => e.status === 200), 'cold: every origin blob GET succeeded');
  const asked = w.tokens.since();
  t.ok(
    asked.some((r) => r.user === A.username && r.scopes.includes('repository:team-a/app:pull') && r.status === 200),
    `Cove asked the origin's token service with reader-a's credentials for repository:team-a/app:pull (saw ${JSON.stringify(asked.map((r) => [r.user, r.scopes]))})`,
  );
  t.ok(
    w.tokens.requests.some((r) => r.user === ROBOT.username && r.scopes.some((s) => s.startsWith('repository:team-a/app:'))),
    'Cove fetched from the origin as the robot',
  );

  // Cached now: the refusals hold, and no blob goes to anyone who may not have it.
  await pullRefused(t, ref, join(w.work, 'anon-warm'), undefined, 'cached: anonymous');
  await pullRefused(t, ref, join(w.work, 'b-warm'), creds(B), 'cached: reader-b');
  t.equal((await coveGet(cove, manifestPath)).status, 401, 'cached: anonymous manifest GET: 401');
  t.equal((await coveGet(cove, `/v2/team-a/app/blobs/${layer.digest}`)).status, 401, 'cached: anonymous blob GET: 401');

  const bTok = await coveToken(cove, 'repository:team-a/app:pull', creds(B));
  t.equal(bTok.status, 200, `reader-b's valid credentials get a Cove token (${bTok.url})`);
  if (bTok.token) {
    const m = await coveGet(cove, manifestPath, `Bearer ${bTok.token}`);
    t.ok(refused(m.status), `cached: reader-b's token on ${manifestPath}: 401/403 (got ${m.status} ${m.body.toString().slice(0, 200)})`);
    t.match(errorCodes(m.body), /UNAUTHORIZED|DENIED/, '... with UNAUTHORIZED or DENIED');
    const bl = await coveGet(cove, `/v2/team-a/app/blobs/${layer.digest}`, `Bearer ${bTok.token}`);
    t.ok(refused(bl.status), `cached: reader-b's token on team-a's layer: 401/403 (got ${bl.status})`);
    t.not(bl.sha256, layer.digest, '... and not the layer bytes');
  }
  const bBasic = await coveGet(cove, manifestPath, basic(creds(B)));
  t.ok(refused(bBasic.status), `cached: reader-b's Basic credentials on ${manifestPath}: 401/403 (got ${bBasic.status})`);
  const wrong = await coveToken(cove, 'repository:team-a/app:pull', WRONG_A);
  t.equal(wrong.status, 401, "a wrong password at Cove's token endpoint: 401");
  const wrongBasic = await coveGet(cove, manifestPath, basic(WRONG_A));
  t.equal(wrongBasic.status, 401, `a wrong password as Basic on ${manifestPath}: 401`);

  const aTok = await coveToken(cove, 'repository:team-a/app:pull', creds(A));
  t.equal(aTok.status, 200, "reader-a gets a token from Cove's token endpoint");
  t.ok(aTok.token, '... in token or access_token');
  if (aTok.status === 200) {
    const j = JSON.parse(aTok.body) as Record<string, unknown>;
    t.same(
      ['token', 'access_token', 'expires_in', 'issued_at'].filter((k) => !(k in j)),
      [],
      `the token response has token, access_token, expires_in and issued_at (got ${Object.keys(j).join(', ')})`,
    );
  }
  if (aTok.token) {
    const m = await coveGet(cove, manifestPath, `Bearer ${aTok.token}`);
    t.equal(m.status, 200, `reader-a's Cove token on ${manifestPath}: 200`);
    t.equal(m.headers['docker-content-digest'], w.img.teamA.manifestDigest, '... the pushed manifest');
  }
  const aBasic = await coveGet(cove, manifestPath, basic(creds(A)));
  t.equal(aBasic.status, 200, `reader-a's Basic credentials directly on ${manifestPath}: 200`);

  // What docker login does: /v2/ -> 401 -> the token endpoint with Basic and no scope -> /v2/ with the token.
  const login = await coveToken(cove, null, creds(A));
  t.equal(login.status, 200, `docker login's token request (no scope) as reader-a: 200 (got ${login.status} ${login.body.slice(0, 160)})`);
  if (login.token) t.equal((await coveGet(cove, '/v2/', `Bearer ${login.token}`)).status, 200, "GET /v2/ with that token: 200");
  const badLogin = await coveToken(cove, null, WRONG_A);
  t.equal(badLogin.status, 401, `docker login's token request with a wrong password: 401 (got ${badLogin.status})`);

  // Private project names are not for anonymous eyes on the node's other endpoints either.
  for (const path of ['/_cove/status.json', '/metrics', '/_cove/node', '/healthz', '/readyz']) {
    const r = await coveGet(cove, path);
    const text = r.body.toString('utf8');
    t.notOk(text.includes('team-a'), `anonymous GET ${path} (${r.status}) names no private repository${text.includes('team-a') ? `: ...${text.slice(Math.max(0, text.indexOf('team-a') - 80), text.indexOf('team-a') + 80)}...` : ''}`);
  }

  // /admin/ needs the admin token from every address, loopback included (none is set here).
  const admin = await coveGet(cove, '/admin/images');
  t.equal(admin.status, 403, 'GET /admin/images from loopback without a token is refused');
  t.notOk(admin.body.toString().includes('team-a'), 'and names nothing cached');

  w.origin.markNow();
  w.tokens.markNow();
  await pullOk(t, ref, join(w.work, 'a-warm'), w.img.teamA, creds(A), 'cached: reader-a');
  t.same(originBlobGets(w.origin.since()).map((e) => e.path), [], 'cached: no blob GET at the origin');
  const again = w.tokens.since().filter((r) => r.user === A.username);
  t.equal(again.length, 0, `within COVE_CLIENT_AUTH_TTL (default 5m) reader-a's decision is not asked again (asked ${JSON.stringify(again.map((r) => r.scopes))})`);
});

t.test("blob scoping: reader-a's token cannot read team-b/app's cached layer through team-a/app's path", async (t) => {
  if (!requireTools(t, BASE_TOOLS)) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  const cove = await startCoveAt(cleanup, w, PASSTHROUGH);
  await pullOk(t, `${cove.hostPort}/team-a/app:1`, join(w.work, 'a'), w.img.teamA, creds(A), 'reader-a caches team-a/app');
  await pullOk(t, `${cove.hostPort}/team-b/app:1`, join(w.work, 'b'), w.img.teamB, creds(B), 'reader-b caches team-b/app');

  const tok = await coveToken(cove, 'repository:team-a/app:pull', creds(A));
  t.equal(tok.status, 200, 'reader-a has a Cove token for team-a/app');
  if (!tok.token) return;
  const bearer = `Bearer ${tok.token}`;
  const own = w.img.teamA.layers[0]!;
  const mine = await coveGet(cove, `/v2/team-a/app/blobs/${own.digest}`, bearer);
  t.equal(mine.status, 200, "control: the token reads team-a's own layer");
  t.equal(mine.sha256, own.digest, '... its bytes');

  for (const [what, d] of [
    ['layer', w.img.teamB.layers[0]!],
    ['config', w.img.teamB.config],
  ] as const) {
    const path = `/v2/team-a/app/blobs/${d.digest}`;
    for (const method of ['GET', 'HEAD']) {
      const r = await coveGet(cove, path, bearer, method);
      t.ok(
        r.status === 404 || refused(r.status),
        `${method} team-b's cached ${what} through team-a/app with reader-a's token: 404/401/403 (got ${r.status} ${r.body.toString().slice(0, 160)})`,
      );
      if (method === 'GET') {
        t.not(r.sha256, d.digest, `... not the ${what}'s bytes`);
        t.match(errorCodes(r.body), /BLOB_UNKNOWN|UNAUTHORIZED|DENIED/, '... an OCI error (BLOB_UNKNOWN, UNAUTHORIZED or DENIED)');
      }
    }
    const viaBasic = await coveGet(cove, path, basic(creds(A)));
    t.ok(viaBasic.status === 404 || refused(viaBasic.status), `the same with reader-a's Basic credentials: 404/401/403 (got ${viaBasic.status})`);
    t.not(viaBasic.sha256, d.digest, `... not the ${what}'s bytes`);
  }
  // A manifest is content-addressed too: team-b's, by digest, under team-a/app would name its layers.
  const foreignManifest = await coveGet(cove, `/v2/team-a/app/manifests/${w.img.teamB.manifestDigest}`, bearer);
  t.ok(
    foreignManifest.status === 404 || refused(foreignManifest.status),
    `team-b's manifest by digest through team-a/app with reader-a's token: 404/401/403 (got ${foreignManifest.status} ${foreignManifest.body.toString().slice(0, 160)})`,
  );
  t.not(foreignManifest.sha256, w.img.teamB.manifestDigest, "... not team-b's manifest bytes");
  const ownManifest = await coveGet(cove, `/v2/team-a/app/manifests/${w.img.teamA.manifestDigest}`, bearer);
  t.equal(ownManifest.sha256, w.img.teamA.manifestDigest, "control: team-a's own manifest by digest is served");

  const direct = await coveGet(cove, `/v2/team-b/app/blobs/${w.img.teamB.layers[0]!.digest}`, bearer);
  t.ok(refused(direct.status), `reader-a's team-a token on team-b/app's own path: 401/403 (got ${direct.status})`);
  t.not(direct.sha256, w.img.teamB.layers[0]!.digest, '... not the bytes');
});

t.test("other ways in: another repository's scope, tags lists, tampered and unsigned tokens", async (t) => {
  if (!requireTools(t, BASE_TOOLS)) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  const cove = await startCoveAt(cleanup, w, PASSTHROUGH);
  await pullOk(t, `${cove.hostPort}/team-b/app:1`, join(w.work, 'b'), w.img.teamB, creds(B), 'reader-b caches team-b/app');

  t.equal((await coveGet(cove, '/v2/', undefined, 'HEAD')).status, 401, 'anonymous HEAD /v2/: 401');
  t.equal((await coveGet(cove, '/v2/team-b/app/tags/list')).status, 401, 'anonymous tags list of team-b/app: 401');
  const tok = await coveToken(cove, 'repository:team-a/app:pull', creds(A));
  t.equal(tok.status, 200, 'reader-a has a Cove token for team-a/app');
  if (!tok.token) return;
  const wrongScope = await coveGet(cove, '/v2/team-b/app/manifests/1', `Bearer ${tok.token}`);
  t.ok(refused(wrongScope.status), `reader-a's team-a token on team-b/app's manifest: 401/403 (got ${wrongScope.status})`);
  t.not(wrongScope.sha256, w.img.teamB.manifestDigest, "... not team-b's manifest");
  const tags = await coveGet(cove, '/v2/team-b/app/tags/list', `Bearer ${tok.token}`);
  t.ok(refused(tags.status), `reader-a's token on team-b/app's tags list: 401/403 (got ${tags.status} ${tags.body.toString().slice(0, 120)})`);
  const asked = await coveToken(cove, 'repository:team-b/app:pull', creds(A));
  t.equal(asked.status, 200, "reader-a may ask for team-b's scope (valid credentials) ...");
  if (asked.token) {
    const m = await coveGet(cove, '/v2/team-b/app/manifests/1', `Bearer ${asked.token}`);
    t.ok(refused(m.status), `... but that token does not read team-b/app (got ${m.status})`);
  }

  // One token request naming both repositories: the token grants only what the origin grants.
  const both = await coveToken(cove, ['repository:team-a/app:pull', 'repository:team-b/app:pull'], creds(A));
  t.equal(both.status, 200, "reader-a's token request naming team-a/app and team-b/app: 200");
  if (both.token) {
    t.equal((await coveGet(cove, '/v2/team-a/app/manifests/1', `Bearer ${both.token}`)).status, 200, '... the token reads team-a/app');
    const other = await coveGet(cove, '/v2/team-b/app/manifests/1', `Bearer ${both.token}`);
    t.ok(refused(other.status), `... and not team-b/app (got ${other.status})`);
  }
  const dotted = await coveGet(cove, '/v2/team-a/app/../../team-b/app/manifests/1', `Bearer ${tok.token}`);
  t.not(dotted.status, 200, `/v2/team-a/app/../../team-b/app/manifests/1 with reader-a's token is not served (got ${dotted.status})`);
  t.not(dotted.sha256, w.img.teamB.manifestDigest, "... not team-b's manifest");

  // Cove's token with its claims rewritten to name team-b, the signature kept.
  const [h, p, sig] = tok.token.split('.');
  t.ok(h && p && sig !== undefined, "Cove's token is a JWT (header.payload.signature)");
  if (h && p && sig !== undefined) {
    const claims = Buffer.from(p, 'base64url').toString('utf8');
    t.match(claims, 'team-a/app', "Cove's token names what it grants");
    const forged = Buffer.from(claims.replaceAll('team-a/app', 'team-b/app')).toString('base64url');
    const tampered = await coveGet(cove, '/v2/team-b/app/manifests/1', `Bearer ${h}.${forged}.${sig}`);
    t.equal(tampered.status, 401, `a token whose claims were rewritten to team-b/app: 401 (got ${tampered.status})`);
    t.not(tampered.sha256, w.img.teamB.manifestDigest, "... not team-b's manifest");
    const none = Buffer.from(JSON.stringify({ typ: 'JWT', alg: 'none' })).toString('base64url');
    const unsigned = await coveGet(cove, '/v2/team-b/app/manifests/1', `Bearer ${none}.${forged}.`);
    t.equal(unsigned.status, 401, `an unsigned (alg none) token naming team-b/app: 401 (got ${unsigned.status})`);
    const garbage = await coveGet(cove, '/v2/team-a/app/manifests/1', 'Bearer not-a-token');
    t.equal(garbage.status, 401, `a malformed Bearer token: 401 (got ${garbage.status})`);
  }
});

t.test('decisions expire after COVE_CLIENT_AUTH_TTL: a revoked grant and a changed password take effect', async (t) => {
  if (!requireTools(t, BASE_TOOLS)) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  const cove = await startCoveAt(cleanup, w, { ...PASSTHROUGH, COVE_CLIENT_AUTH_TTL: '1s' });
  const refA = `${cove.hostPort}/team-a/app:1`;
  const refB = `${cove.hostPort}/team-b/app:1`;
  await pullOk(t, refA, join(w.work, 'a'), w.img.teamA, creds(A), 'reader-a before the change');
  await pullOk(t, refB, join(w.work, 'b'), w.img.teamB, creds(B), 'reader-b before the change');

  // At the origin (Harbor): reader-a removed from team-a, reader-b's password changed.
  const before = await coveToken(cove, 'repository:team-a/app:pull', creds(A));
  const newB = 'reader-b-new-secret';
  w.tokens.setUser(A.username, { password: A.password, prefixes: [] });
  w.tokens.setUser(B.username, { password: newB, prefixes: ['team-b/'] });
  await sleep(1500); // past the TTL
  w.tokens.markNow();
  await pullRefused(t, refA, join(w.work, 'a-revoked'), creds(A), 'reader-a after its grant was revoked');
  t.ok(w.tokens.since().some((r) => r.user === A.username), "past the TTL Cove asked the origin's token service again about reader-a");
  if (before.token) {
    // Not asserted: a token Cove issued before the revocation lives its own lifetime (expires_in),
    // which may be longer than COVE_CLIENT_AUTH_TTL. Shown so the choice is visible.
    const old = await coveGet(cove, '/v2/team-a/app/manifests/1', `Bearer ${before.token}`);
    t.comment(`reader-a's token issued before the revocation (expires_in ${String((JSON.parse(before.body) as { expires_in?: number }).expires_in)}), used past the 1 s TTL: ${old.status}`);
  }
  await pullRefused(t, refB, join(w.work, 'b-old'), creds(B), "reader-b's old password");
  const old = await coveToken(cove, 'repository:team-b/app:pull', creds(B));
  t.equal(old.status, 401, `Cove's token endpoint answers reader-b's old password with 401 (got ${old.status})`);
  await pullOk(t, refB, join(w.work, 'b-new'), w.img.teamB, `${B.username}:${newB}`, "reader-b's new password");
});

t.test("routes: a routed name (library/app -> dockerhub/library/app) is judged by the grant on the origin repository, whatever scope the client asks", async (t) => {
  if (!requireTools(t, BASE_TOOLS)) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  await pushImage(w.img.pub, w.origin, 'dockerhub/library/app:1', ROBOT);
  // Harbor: a proxy project dockerhub/ some users may read, and a project called library/ that
  // holds nothing of this image.
  const HUB = { username: 'hub-reader', password: 'hub-secret' };
  const LIB = { username: 'lib-reader', password: 'lib-secret' };
  w.tokens.setUser(HUB.username, { password: HUB.password, prefixes: ['dockerhub/'] });
  w.tokens.setUser(LIB.username, { password: LIB.password, prefixes: ['library/'] });
  const cove = await startCoveAt(cleanup, w, { ...PASSTHROUGH, COVE_ROUTES: 'docker.io=dockerhub/', COVE_DEFAULT_NS: 'docker.io' });
  // A client pulling docker.io/library/app:1 from the mirror names library/app.
  const ref = `${cove.hostPort}/library/app:1`;

  const anon = await coveGet(cove, '/v2/library/app/manifests/1');
  t.equal(anon.status, 401, 'anonymous GET /v2/library/app/manifests/1: 401');
  t.comment(`challenge: ${String(anon.headers['www-authenticate'])}`);

  w.tokens.markNow();
  await pullOk(t, ref, join(w.work, 'hub'), w.img.pub, creds(HUB), 'hub-reader (pull on dockerhub/ at the origin) pulls library/app:1');
  t.comment(`scopes Cove asked the origin about: ${JSON.stringify(w.tokens.since().map((r) => [r.user, r.scopes]))}`);
  await pullRefused(t, ref, join(w.work, 'lib'), creds(LIB), 'lib-reader (pull on library/ at the origin, not dockerhub/) pulls library/app:1');
  await pullRefused(t, ref, join(w.work, 'a'), creds(A), 'reader-a pulls library/app:1');

  // The scope a client computes from its own image name (docker and containers/image do), not
  // the one in the challenge.
  const tok = await coveToken(cove, 'repository:library/app:pull', creds(HUB));
  t.equal(tok.status, 200, "hub-reader's token for repository:library/app:pull");
  if (tok.token) {
    const m = await coveGet(cove, '/v2/library/app/manifests/1', `Bearer ${tok.token}`);
    t.equal(m.status, 200, `... reads /v2/library/app/manifests/1 (got ${m.status} ${m.body.toString().slice(0, 160)})`);
  }
  const libTok = await coveToken(cove, 'repository:library/app:pull', creds(LIB));
  if (libTok.token) {
    const m = await coveGet(cove, '/v2/library/app/manifests/1', `Bearer ${libTok.token}`);
    t.ok(refused(m.status), `lib-reader's token for repository:library/app:pull does not read it: 401/403 (got ${m.status})`);
  }
});

t.test('routes with real clients: ctr through a hosts.toml mirror (?ns=docker.io) and dockerd registry-mirrors, as hub-reader', async (t) => {
  if (!requireTools(t, [...BASE_TOOLS, 'containerd', 'ctr', 'dockerd'])) return;
  const cli = dockerCli();
  if (cli === null && !requireTools(t, ['docker'])) return;
  if (!requireRoot(t, 'containerd and dockerd')) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  await pushImage(w.img.pub, w.origin, 'dockerhub/library/app:1', ROBOT);
  const HUB = { username: 'hub-reader', password: 'hub-secret' };
  w.tokens.setUser(HUB.username, { password: HUB.password, prefixes: ['dockerhub/'] });
  const cove = await startCoveAt(cleanup, w, { ...PASSTHROUGH, COVE_ROUTES: 'docker.io=dockerhub/', COVE_DEFAULT_NS: 'docker.io' });
  const containerd = await startContainerd(cleanup);

  // containerd: docker.io's hosts.toml sends pulls to Cove (?ns=docker.io); the fallback server
  // is a closed loopback port.
  const hostsDir = join(w.work, 'certs.d');
  mkdirSync(join(hostsDir, 'docker.io'), { recursive: true });
  writeFileSync(join(hostsDir, 'docker.io', 'hosts.toml'), `server = "http://127.0.0.1:9"\n\n[host."http://${cove.hostPort}"]\n  capabilities = ["pull", "resolve"]\n`);
  const ctr = await run(
    'ctr',
    ['-a', containerd.socket, '-n', 'cove-e2e-routes', 'image', 'pull', '--hosts-dir', hostsDir, '--snapshotter', 'native', '--user', creds(HUB), 'docker.io/library/app:1'],
    { allowFail: true, timeoutMs: 120_000, env: { ...process.env, ...NO_INTERNET } },
  );
  t.equal(ctr.code, 0, `ctr image pull --user hub-reader docker.io/library/app:1 via the mirror works${ctr.code === 0 ? '' : `\n${ctr.stderr.trim()}`}`);

  // dockerd: registry-mirrors; the docker.io credentials in the CLI's config go to the mirror.
  const dockerd = await startDockerd(cleanup, containerd.socket, { 'registry-mirrors': [cove.url] });
  const config = join(w.work, 'docker-config');
  mkdirSync(config);
  writeFileSync(join(config, 'config.json'), JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: Buffer.from(creds(HUB)).toString('base64') } } }));
  const pull = await run(cli!, ['-H', `unix://${join(dockerd.dir, 'docker.sock')}`, 'pull', '-q', 'app:1'], {
    allowFail: true,
    timeoutMs: 120_000,
    env: { ...process.env, ...NO_INTERNET, DOCKER_CONFIG: config },
  });
  t.equal(pull.code, 0, `docker pull app:1 via registry-mirrors as hub-reader works${pull.code === 0 ? '' : `\n${pull.stderr.trim()}`}`);
  const atCove = cove
    .logLines()
    .filter((l) => l.msg === 'request' && String(l.ua ?? '').startsWith('docker/'))
    .map((l) => `${String(l.method)} ${String(l.path)} ${String(l.status)}`);
  t.comment(`dockerd's requests at Cove: ${JSON.stringify(atCove)}`);
  const asked = w.tokens.requests.filter((r) => r.user === HUB.username).map((r) => r.scopes.join(' ') || '(none)');
  t.comment(`scopes Cove asked the origin about for hub-reader: ${JSON.stringify([...new Set(asked)])}`);
});

/** An OCI index `multi` in `layout`: linux/amd64 and linux/arm64 children built with umoci. */
async function buildMultiArch(layout: string): Promise<{ indexDigest: string; children: TestImage[] }> {
  const amd64 = await buildImage(layout, 'multi-amd64', [150_000], 'private-projects-multi');
  await buildImage(layout, 'multi-arm64', [120_000], 'private-projects-multi');
  await run('umoci', ['config', '--image', `${layout}:multi-arm64`, '--architecture', 'arm64']);
  await run('umoci', ['gc', '--layout', layout]);
  const arm64 = readImage(layout, 'multi-arm64');
  const index = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { mediaType: amd64.manifestMediaType, digest: amd64.manifestDigest, size: sizeOf(layout, amd64.manifestDigest), platform: { architecture: 'amd64', os: 'linux' } },
        { mediaType: arm64.manifestMediaType, digest: arm64.manifestDigest, size: sizeOf(layout, arm64.manifestDigest), platform: { architecture: 'arm64', os: 'linux' } },
      ],
    }),
  );
  const indexDigest = `sha256:${createHash('sha256').update(index).digest('hex')}`;
  writeFileSync(join(layout, 'blobs', 'sha256', indexDigest.slice(7)), index);
  const top = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8')) as { manifests: unknown[] };
  top.manifests.push({
    mediaType: 'application/vnd.oci.image.index.v1+json',
    digest: indexDigest,
    size: index.length,
    annotations: { 'org.opencontainers.image.ref.name': 'multi' },
  });
  writeFileSync(join(layout, 'index.json'), JSON.stringify(top));
  return { indexDigest, children: [amd64, arm64] };
}
const sizeOf = (layout: string, digest: string) => statSync(join(layout, 'blobs', 'sha256', digest.slice(7))).size;

t.test('a multi-arch index in team-a: reader-a pulls it (--all: both children and their blobs), reader-b does not', async (t) => {
  if (!requireTools(t, BASE_TOOLS)) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  const multi = await buildMultiArch(join(w.work, 'multi-layout'));
  await run('skopeo', ['copy', '-q', '--all', '--dest-tls-verify=false', '--dest-creds', creds(ROBOT), `oci:${join(w.work, 'multi-layout')}:multi`, `docker://${w.origin.hostPort}/team-a/multi:1`], {
    timeoutMs: 120_000,
  });
  const cove = await startCoveAt(cleanup, w, PASSTHROUGH);
  const ref = `docker://${cove.hostPort}/team-a/multi:1`;
  const copy = (out: string, c: string, all: boolean) =>
    run('skopeo', ['copy', '-q', ...(all ? ['--all'] : []), '--src-tls-verify=false', '--src-creds', c, ref, `dir:${out}`], { allowFail: true, timeoutMs: 90_000 });

  const b = await copy(join(w.work, 'b'), creds(B), true);
  t.not(b.code, 0, 'reader-b: skopeo copy --all exits non-zero');
  t.match(b.stderr, AUTH_REFUSAL, '... for an authorization reason');

  const all = await copy(join(w.work, 'all'), creds(A), true);
  t.equal(all.code, 0, `reader-a: skopeo copy --all works${all.code === 0 ? '' : `\n${all.stderr.trim()}`}`);
  if (all.code === 0) {
    t.equal(sha256File(join(w.work, 'all', 'manifest.json')), multi.indexDigest, 'the index, byte for byte');
    for (const child of multi.children) {
      for (const d of [child.config, ...child.layers]) {
        const f = join(w.work, 'all', d.digest.slice(7));
        t.ok(existsSync(f) && sha256File(f) === d.digest, `${child.tag}: ${d.digest.slice(0, 19)} copied and verified`);
      }
    }
  }
  // The host platform's child alone, as a pull does it: index by tag, child by digest, its blobs.
  const one = await copy(join(w.work, 'one'), creds(A), false);
  t.equal(one.code, 0, `reader-a: skopeo copy (one platform) works${one.code === 0 ? '' : `\n${one.stderr.trim()}`}`);
  if (one.code === 0) sameImage(t, join(w.work, 'one'), multi.children[0]!, 'reader-a, linux/amd64 child');
});

t.test('outage: cached decisions hold within the grace, across a restart; wrong passwords and reader-b stay out; after the grace reader-a is out too', async (t) => {
  if (!requireTools(t, BASE_TOOLS)) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  // A 1 s TTL: every check during the outage is past it, so only the grace can let a client in.
  const env = { ...PASSTHROUGH, COVE_CLIENT_AUTH_TTL: '1s' };
  let cove = await startCoveAt(cleanup, w, env);
  const ref = () => `${cove.hostPort}/team-a/app:1`;
  await pullOk(t, ref(), join(w.work, 'before'), w.img.teamA, creds(A), 'before the outage: reader-a');
  await pullRefused(t, ref(), join(w.work, 'before-b'), creds(B), 'before the outage: reader-b');
  await pullOk(t, `${cove.hostPort}/team-b/app:1`, join(w.work, 'before-bb'), w.img.teamB, creds(B), 'before the outage: reader-b caches team-b/app');
  const foreign = w.img.teamB.layers[0]!;

  await w.origin.stop();
  await w.tokens.stop();
  t.equal(await httpGet(`${w.origin.url}/v2/`, { timeoutMs: 2000 }).then((r) => r.status, () => 0), 0, 'the origin is down');
  await sleep(1500); // past COVE_CLIENT_AUTH_TTL

  const during = async (phase: string) => {
    await pullOk(t, ref(), join(w.work, `out-a-${phase}`), w.img.teamA, creds(A), `${phase}: reader-a (within the grace)`);
    await pullRefused(t, ref(), join(w.work, `out-wrong-${phase}`), WRONG_A, `${phase}: reader-a with a wrong password`);
    const wrong = await coveToken(cove, 'repository:team-a/app:pull', WRONG_A);
    t.not(wrong.status, 200, `${phase}: Cove's token endpoint refuses reader-a's wrong password (got ${wrong.status} ${wrong.body.slice(0, 160)})`);
    const wrongBasic = await coveGet(cove, '/v2/team-a/app/manifests/1', basic(WRONG_A));
    t.not(wrongBasic.status, 200, `${phase}: a wrong password as Basic on the manifest is refused (got ${wrongBasic.status})`);
    await pullRefused(t, ref(), join(w.work, `out-b-${phase}`), creds(B), `${phase}: reader-b`);
    // With nobody to confirm it, team-b's layer still does not belong to team-a/app.
    const x = await coveGet(cove, `/v2/team-a/app/blobs/${foreign.digest}`, basic(creds(A)));
    t.ok(x.status >= 400, `${phase}: team-b's cached layer through team-a/app as reader-a: an error (got ${x.status})`);
    t.not(x.sha256, foreign.digest, `${phase}: ... not the layer bytes`);
  };
  await during('outage');

  await cove.proc.stop();
  cove = await startCoveAt(cleanup, w, env, { port: cove.port, dataDir: cove.dataDir });
  await during('outage, Cove restarted');

  await cove.proc.stop();
  cove = await startCoveAt(cleanup, w, { ...env, COVE_CLIENT_AUTH_GRACE: '3s' }, { port: cove.port, dataDir: cove.dataDir });
  await sleep(3500); // past the 3 s grace, however it is counted (from the decision or from the outage)
  // Past the grace Cove cannot tell either way: a refusal or "origin unavailable" both keep reader-a out.
  await pullRefused(t, ref(), join(w.work, 'after-grace'), creds(A), 'outage past COVE_CLIENT_AUTH_GRACE=3s: reader-a', new RegExp(`${AUTH_REFUSAL.source}|\\b503\\b|unavailable`, 'i'));
  const m = await coveGet(cove, '/v2/team-a/app/manifests/1', basic(creds(A)));
  t.not(m.status, 200, `past the grace: reader-a's Basic credentials on the manifest are not served (got ${m.status} ${m.body.toString().slice(0, 160)})`);
  const bl = await coveGet(cove, `/v2/team-a/app/blobs/${w.img.teamA.layers[0]!.digest}`, basic(creds(A)));
  t.not(bl.sha256, w.img.teamA.layers[0]!.digest, `past the grace: the layer bytes are not served (got ${bl.status})`);
});

t.test('a public project: anonymous pulls of public/app:1 through Cove work, also during an outage', async (t) => {
  if (!requireTools(t, BASE_TOOLS)) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  const cove = await startCoveAt(cleanup, w, { ...PASSTHROUGH, COVE_CLIENT_AUTH_TTL: '1s' });
  await pullOk(t, `${cove.hostPort}/public/app:1`, join(w.work, 'pub'), w.img.pub, undefined, 'anonymous public/app:1 (cold)');
  t.ok(
    w.tokens.requests.some((r) => r.user === null && r.scopes.includes('repository:public/app:pull') && r.access[0]?.actions.includes('pull')),
    "Cove asked the origin's token service anonymously and was granted pull",
  );
  await pullOk(t, `${cove.hostPort}/public/app:1`, join(w.work, 'pub2'), w.img.pub, undefined, 'anonymous public/app:1 (cached)');
  await pullRefused(t, `${cove.hostPort}/team-a/app:1`, join(w.work, 'priv'), undefined, 'anonymous team-a/app:1 on the same Cove');

  await w.origin.stop();
  await w.tokens.stop();
  await sleep(1500); // past COVE_CLIENT_AUTH_TTL: the grace decides
  await pullOk(t, `${cove.hostPort}/public/app:1`, join(w.work, 'pub3'), w.img.pub, undefined, 'outage: anonymous public/app:1 (within the grace)');
  await pullRefused(t, `${cove.hostPort}/team-a/app:1`, join(w.work, 'priv2'), undefined, 'outage: anonymous team-a/app:1', new RegExp(`${AUTH_REFUSAL.source}|\\b503\\b|unavailable`, 'i'));
});

for (const mode of [undefined, 'open'] as const) {
  t.test(`open mode (COVE_CLIENT_AUTH ${mode ?? 'unset'}): the robot's reach is the LAN's reach, anonymous pulls of team-a/app:1 work`, async (t) => {
    if (!requireTools(t, BASE_TOOLS)) return;
    const cleanup = Cleanup.forTest(t);
    const w = await world(cleanup);
    const { COVE_CLIENT_AUTH: _passthrough, ...env } = PASSTHROUGH;
    const cove = await startCoveAt(cleanup, w, mode ? { ...env, COVE_CLIENT_AUTH: mode } : env);
    t.equal((await coveGet(cove, '/v2/')).status, 200, 'anonymous GET /v2/: 200');
    w.tokens.markNow();
    await pullOk(t, `${cove.hostPort}/team-a/app:1`, join(w.work, 'a'), w.img.teamA, undefined, 'anonymous team-a/app:1');
    await pullOk(t, `${cove.hostPort}/team-b/app:1`, join(w.work, 'b'), w.img.teamB, undefined, 'anonymous team-b/app:1');
    const asked = w.tokens.since();
    t.ok(asked.length > 0 && asked.every((r) => r.user === ROBOT.username), `only the robot asked the origin's token service (saw ${JSON.stringify([...new Set(asked.map((r) => r.user))])})`);
  });
}

/** GET over TLS to 127.0.0.1:`port` as `host` (certificate checked against `ca`); the challenge header kept. */
function httpsGet(port: number, host: string, path: string, ca: Buffer): Promise<{ status: number; challenge: string }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest({ host: '127.0.0.1', port, path, servername: host, ca, timeout: 5000, headers: { host: `${host}:${port}` } }, (res) => {
      res.resume();
      resolve({ status: res.statusCode ?? 0, challenge: String(res.headers['www-authenticate'] ?? '') });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

t.test('TLS: a client that reached Cove over HTTPS is sent to an https token realm (its password never goes out in clear)', async (t) => {
  if (!requireTools(t, BASE_TOOLS)) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  const HOST = 'cove.test';
  const tls = join(w.work, 'tls');
  await run(process.execPath, [COVE_CLI, 'cert', '--host', HOST, '--out', tls, '--days', '2'], { timeoutMs: 30_000 });
  const ca = readFileSync(join(tls, 'ca.crt'));
  const [port, plainPort] = [await freePort(), await freePort()];
  await startCove(
    cleanup,
    w.origin.url,
    { COVE_LISTEN_HTTP: `127.0.0.1:${plainPort}`, COVE_TLS_CERT: join(tls, 'server.crt'), COVE_TLS_KEY: join(tls, 'server.key'), ...PASSTHROUGH },
    { port, ready: async (p) => (await httpsGet(p, HOST, '/healthz', ca)).status === 200 },
  );
  const secure = await httpsGet(port, HOST, '/v2/team-a/app/manifests/1', ca);
  t.equal(secure.status, 401, 'anonymous manifest GET over TLS: 401');
  t.equal(challenge(secure.challenge)?.params.realm, `https://${HOST}:${port}/_cove/token`, `the realm is https (got ${secure.challenge})`);
  const plain = await httpGet(`http://127.0.0.1:${plainPort}/v2/team-a/app/manifests/1`, { headers: { host: `${HOST}:${plainPort}` } });
  t.equal(plain.status, 401, 'anonymous manifest GET on the plain-HTTP listener: 401');
  t.equal(challenge(plain.headers['www-authenticate'])?.params.realm, `http://${HOST}:${plainPort}/_cove/token`, 'there the realm is the plain listener itself');
});

t.test('dockerd: docker login to Cove as reader-a, then pulls of team-a (works) and team-b (refused)', async (t) => {
  if (!requireTools(t, [...BASE_TOOLS, 'containerd', 'ctr', 'dockerd'])) return;
  const cli = dockerCli();
  if (cli === null && !requireTools(t, ['docker'])) return;
  if (!requireRoot(t, 'dockerd')) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  const cove = await startCoveAt(cleanup, w, PASSTHROUGH);
  const containerd = await startContainerd(cleanup);
  const dockerd = await startDockerd(cleanup, containerd.socket, { 'insecure-registries': [cove.hostPort] });
  const config = join(w.work, 'docker-config');
  mkdirSync(config);
  const docker = (args: string[], input?: string) =>
    run(cli!, ['-H', `unix://${join(dockerd.dir, 'docker.sock')}`, ...args], {
      allowFail: true,
      timeoutMs: 120_000,
      env: { ...process.env, ...NO_INTERNET, DOCKER_CONFIG: config },
      ...(input === undefined ? {} : { input }),
    });

  const bad = await docker(['login', '-u', A.username, '--password-stdin', cove.hostPort], 'not-the-password\n');
  t.not(bad.code, 0, `docker login ${cove.hostPort} with a wrong password fails`);
  t.match(bad.stderr, AUTH_REFUSAL, '... for an authorization reason');
  t.comment(`wrong password: ${bad.stderr.trim()}`);
  const login = await docker(['login', '-u', A.username, '--password-stdin', cove.hostPort], `${A.password}\n`);
  t.equal(login.code, 0, `docker login ${cove.hostPort} as reader-a succeeds${login.code === 0 ? '' : `\n${login.stderr}`}`);
  t.match(readFileSync(join(config, 'config.json'), 'utf8'), cove.hostPort, 'the credentials are stored in the temp DOCKER_CONFIG');

  const refA = `${cove.hostPort}/team-a/app:1`;
  w.origin.markNow();
  const pullA = await docker(['pull', '-q', refA]);
  t.equal(pullA.code, 0, `docker pull ${refA} works${pullA.code === 0 ? '' : `\n${pullA.stderr}`}`);
  if (pullA.code === 0) {
    const id = (await docker(['image', 'inspect', '--format', '{{.Id}}', refA])).stdout.trim();
    t.equal(id, w.img.teamA.config.digest, 'image ID is the config digest');
    t.equal(originBlobGets(w.origin.since()).length, 1 + w.img.teamA.layers.length, 'one origin blob GET per blob');
  }
  const refB = `${cove.hostPort}/team-b/app:1`;
  w.origin.markNow();
  const pullB = await docker(['pull', '-q', refB]);
  t.not(pullB.code, 0, `docker pull ${refB} as reader-a fails`);
  t.match(pullB.stderr, AUTH_REFUSAL, '... for an authorization reason');
  t.comment(`team-b as reader-a: ${pullB.stderr.trim()}`);
  t.same(originBlobGets(w.origin.since()).map((e) => e.path), [], 'the refused pull fetched no blob from the origin');
});

t.test('containerd: ctr image pull --user reader-a works, --user reader-b is refused', async (t) => {
  if (!requireTools(t, [...BASE_TOOLS, 'containerd', 'ctr'])) return;
  if (!requireRoot(t, 'containerd')) return;
  const cleanup = Cleanup.forTest(t);
  const w = await world(cleanup);
  const cove = await startCoveAt(cleanup, w, PASSTHROUGH);
  const containerd = await startContainerd(cleanup);
  const ctr = (args: string[]) =>
    run('ctr', ['-a', containerd.socket, '-n', 'cove-e2e', ...args], { allowFail: true, timeoutMs: 120_000, env: { ...process.env, ...NO_INTERNET } });
  const ref = `${cove.hostPort}/team-a/app:1`;

  const b = await ctr(['image', 'pull', '--plain-http', '--snapshotter', 'native', '--user', creds(B), ref]);
  t.not(b.code, 0, `ctr image pull --user reader-b ${ref} fails`);
  t.match(b.stderr, AUTH_REFUSAL, '... for an authorization reason');
  t.comment(`reader-b: ${b.stderr.trim().split('\n').slice(-1)[0] ?? ''}`);

  const a = await ctr(['image', 'pull', '--plain-http', '--snapshotter', 'native', '--user', creds(A), ref]);
  t.equal(a.code, 0, `ctr image pull --user reader-a ${ref} works${a.code === 0 ? '' : `\n${a.stderr}${a.stdout.slice(-800)}`}`);
  if (a.code === 0) {
    const line = (await ctr(['image', 'ls'])).stdout.split('\n').find((l) => l.startsWith(ref));
    t.match(line ?? '', w.img.teamA.manifestDigest, 'ctr resolved the pushed manifest digest');
    const content = (await ctr(['content', 'ls', '-q'])).stdout.split('\n').map((s) => s.trim());
    for (const d of [w.img.teamA.config.digest, ...w.img.teamA.layers.map((l) => l.digest)]) t.ok(content.includes(d), `content store holds ${d.slice(0, 19)}`);
  }
  const tokenPosts = cove.logLines().filter((l) => l.msg === 'request' && l.method === 'POST' && String(l.path).startsWith('/_cove/token'));
  if (tokenPosts.length > 0) t.comment(`containerd POSTed to the token endpoint (OAuth2 password grant): ${JSON.stringify(tokenPosts.map((l) => l.status))}`);
});

t.test('podman: podman pull --creds reader-a works (and --creds reader-b is refused)', async (t) => {
  if (!requireTools(t, [...BASE_TOOLS, 'podman'])) return;
  if (!requireRoot(t, 'podman with its own storage')) return;
  const cleanup = Cleanup.forTest(t);
  removePodmanSideEffects(cleanup);

  const w = await world(cleanup);
  const cove = await startCoveAt(cleanup, w, PASSTHROUGH);
  const pm = join(w.work, 'podman');
  // An auth file of its own (podman wants it to exist): nothing from root's logins is used.
  const authFile = join(w.work, 'podman-auth.json');
  writeFileSync(authFile, '{}\n');
  const podman = (args: string[]) =>
    run(
      'podman',
      [...podmanIsolation(pm), ...args],
      { allowFail: true, timeoutMs: 120_000, env: { ...process.env, ...NO_INTERNET, REGISTRY_AUTH_FILE: authFile } },
    );
  cleanup.add(async () => {
    await podman(['rmi', '-a', '-f']).catch(() => undefined);
    rmSync(pm, { recursive: true, force: true });
  });
  const ref = `${cove.hostPort}/team-a/app:1`;
  const b = await podman(['pull', '-q', '--tls-verify=false', '--creds', creds(B), ref]);
  t.not(b.code, 0, `podman pull --creds reader-b ${ref} fails`);
  t.match(b.stderr, AUTH_REFUSAL, '... for an authorization reason');
  t.comment(`reader-b: ${b.stderr.trim().split('\n').slice(-1)[0] ?? ''}`);
  const a = await podman(['pull', '-q', '--tls-verify=false', '--creds', creds(A), ref]);
  t.equal(a.code, 0, `podman pull --creds reader-a ${ref} works${a.code === 0 ? '' : `\n${a.stderr}`}`);
  if (a.code === 0) {
    const id = (await podman(['image', 'inspect', '--format', '{{.Id}}', ref])).stdout.trim();
    t.equal(`sha256:${id}`, w.img.teamA.config.digest, 'image ID is the config digest');
  }
});
