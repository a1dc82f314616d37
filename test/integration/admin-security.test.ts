// The admin surface against a local process, a browser on the node and a LAN host: each attack
// tried for real on loopback. Reproduced before: any loopback connection could use /admin/*; a
// process exported one image and imported it under another image's tag, and every later pull got
// the wrong image as a cache hit, even with the origin up.
import { execFile, execFileSync, spawn } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { connect } from 'node:http2';
import { request as httpsRequest } from 'node:https';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { startTestCove, type TestCove } from '../helpers/cove.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { makeImage } from '../helpers/images.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { ACCEPT_ALL, pullImage } from '../helpers/site.js';

const run = promisify(execFile);
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;
const TOKEN = 'admin-token-for-tests-0123456789';
const AUTH = { authorization: `Bearer ${TOKEN}` };
const JSON_BODY = { 'content-type': 'application/json' };

interface Answer {
  status: number;
  code: string | undefined;
  message: string;
  text: string;
}

/** One request with every header as given (Host, Origin included) and an optional body. */
function send(url: string, options: { method?: string; headers?: Record<string, string>; body?: string | Buffer; chunked?: boolean } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: options.method ?? 'GET', headers: options.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let error: { code?: string; message?: string } | undefined;
        try {
          error = (JSON.parse(text) as { errors?: Array<{ code: string; message: string }> }).errors?.[0];
        } catch {
          error = undefined;
        }
        resolve({ status: res.statusCode ?? 0, code: error?.code, message: error?.message ?? '', text });
      });
      res.on('error', reject);
    });
    req.setTimeout(20_000, () => req.destroy(new Error(`no answer from ${url} in 20 s`)));
    req.on('error', reject);
    if (options.chunked) {
      // No Content-Length: Node sends Transfer-Encoding: chunked.
      req.write(options.body ?? 'x');
      req.end();
    } else if (options.body !== undefined) req.end(options.body);
    else req.end();
  });
}

/** POST /admin/gc over HTTP/2 (TLS) with the given pseudo-headers and headers; the status. */
function h2Gc(url: string, ca: Buffer, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const session = connect(url, { ca });
    session.on('error', reject);
    const stream = session.request({ ':method': 'POST', ':path': '/admin/gc', ...headers });
    stream.on('response', (h) => {
      stream.resume();
      stream.on('end', () => {
        session.close();
        resolve(Number(h[':status']));
      });
    });
    stream.on('error', reject);
    stream.end();
  });
}

/** The whole pull of a tag: which image a client gets. */
async function manifestOf(cove: TestCove, repo: string, tag: string): Promise<{ digest: string; cache: string }> {
  const m = await fetchAll(`${cove.url}/v2/${repo}/manifests/${tag}`, { headers: { accept: ACCEPT_ALL } });
  if (m.status !== 200) throw new Error(`${repo}:${tag}: ${m.status} ${m.body.toString()}`);
  return { digest: sha256(m.body), cache: m.headers['cache-status'] ?? '' };
}

t.test('without COVE_ADMIN_TOKEN admin over HTTP is off, loopback included; the socket still works', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', makeImage({ layers: [1000], seed: 'off-1' }));
  const cove = await startTestCove(t, origin.url);
  const attempts: Array<[string, string, Record<string, string>, string | Buffer | undefined]> = [
    ['GET', '/admin/images', {}, undefined],
    ['GET', '/admin/export?ref=proj/app:1', {}, undefined],
    ['POST', '/admin/gc', {}, undefined],
    ['POST', '/admin/invalidate?repo=proj/app', {}, undefined],
    ['POST', '/admin/pin?repo=proj/app&ref=1', {}, undefined],
    ['POST', '/admin/prewarm', JSON_BODY, JSON.stringify({ refs: ['proj/app:1'] })],
    ['POST', '/admin/webhook/harbor', JSON_BODY, '{}'],
    ['POST', '/admin/import?tag=proj/app:1', { 'content-type': 'application/x-tar' }, Buffer.alloc(1024)],
  ];
  for (const [method, path, headers, body] of attempts) {
    const r = await send(`${cove.url}${path}`, { method, headers, body });
    t.equal(r.status, 403, `${method} ${path} from 127.0.0.1 without a token: 403`);
    t.equal(r.code, 'DENIED');
    t.match(r.message, /admin over HTTP is off/);
    t.ok(r.message.includes(join(cove.dataDir, 'admin.sock')), 'the refusal names the admin socket');
    t.match(r.message, /COVE_ADMIN_TOKEN/, 'and the token setting');
  }
  t.equal(origin.requests.length, 0, 'no refused prewarm reached the origin');
  t.equal((await send(`${cove.url}/_cove/peers`)).status, 200, 'the read-only peer table still answers loopback');
  t.equal((await cove.adminFetch('/admin/images')).status, 200, 'the admin socket answers without a token');
});

t.test('with COVE_ADMIN_TOKEN, loopback needs the token too; the cove command sends it over HTTP', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const cove = await startTestCove(t, origin.url, { COVE_ADMIN_TOKEN: TOKEN, COVE_ADMIN_SOCKET: 'off' });
  t.equal(cove.adminSocket, null, 'COVE_ADMIN_SOCKET=off: no socket');
  const none = await send(`${cove.url}/admin/gc`, { method: 'POST' });
  t.equal(none.status, 401, 'no token from 127.0.0.1: 401');
  t.equal(none.code, 'UNAUTHORIZED');
  const wrong = await send(`${cove.url}/admin/gc`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}x` } });
  t.equal(wrong.status, 401, 'a wrong token: 401');
  t.equal((await send(`${cove.url}/admin/gc`, { method: 'POST', headers: AUTH })).status, 200, 'the token opens it');

  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', COVE_ADMIN_SOCKET: 'off' };
  const refused = await run(process.execPath, [CLI, 'ls', '--url', cove.url], { env }).catch((err: { code: number; stderr: string }) => err);
  t.equal((refused as { code: number }).code, 1, 'cove ls over HTTP without a token fails');
  t.match((refused as { stderr: string }).stderr, /ls failed \(401\)/);
  t.match((refused as { stderr: string }).stderr, /admin needs the admin token/, 'and says what to do');
  const listed = await run(process.execPath, [CLI, 'ls', '--json', '--url', cove.url], { env: { ...env, COVE_ADMIN_TOKEN: TOKEN } });
  t.match(JSON.parse(listed.stdout), { images: [] }, 'with COVE_ADMIN_TOKEN it works');
  const flag = await run(process.execPath, [CLI, 'gc', '--url', cove.url, '--token', TOKEN], { env });
  t.match(flag.stdout, /^evicted 0 blob/, '--token works too');
});

t.test("another site's browser requests and DNS rebinding are refused, even with the token", async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', makeImage({ layers: [1000], seed: 'browser-1' }));
  const cove = await startTestCove(t, origin.url, { COVE_ADMIN_TOKEN: TOKEN, COVE_ADMIN_HOSTS: 'edge-7.site.example' });
  const port = cove.port;
  const gc = (headers: Record<string, string>) => send(`${cove.url}/admin/gc`, { method: 'POST', headers: { ...AUTH, ...headers } });

  const evil = await gc({ origin: 'http://evil.example' });
  t.equal(evil.status, 403, 'Origin: http://evil.example: 403');
  t.equal(evil.code, 'DENIED');
  t.match(evil.message, /Origin: http:\/\/evil\.example/);
  t.equal((await gc({ origin: 'null' })).status, 403, 'Origin: null (a sandboxed page): 403');
  t.equal((await gc({ origin: `http://127.0.0.1:${port + 1}` })).status, 403, 'another port of this host is another origin');
  t.equal((await gc({ origin: `http://127.0.0.1:${port}` })).status, 200, "Cove's own origin passes");

  for (const site of ['cross-site', 'same-site']) {
    const r = await gc({ 'sec-fetch-site': site });
    t.equal(r.status, 403, `Sec-Fetch-Site: ${site}: 403`);
    t.match(r.message, new RegExp(`Sec-Fetch-Site: ${site}`));
  }
  for (const site of ['same-origin', 'none']) t.equal((await gc({ 'sec-fetch-site': site })).status, 200, `Sec-Fetch-Site: ${site} passes`);

  // A DNS-rebinding page: the browser thinks it talks to its own site, so Origin matches Host.
  const rebinding = await gc({ host: `evil.example:${port}`, origin: `http://evil.example:${port}`, 'sec-fetch-site': 'same-origin' });
  t.equal(rebinding.status, 403, 'Host: evil.example (DNS rebinding): 403');
  t.match(rebinding.message, /not "evil\.example:\d+"/, 'the refusal names the Host');
  t.equal((await gc({ host: 'evil.example' })).status, 403, 'Host: evil.example without a port: 403');
  t.equal((await gc({ host: '10.255.255.254' })).status, 403, 'an address that is not this node: 403');
  for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, `edge-7.site.example:${port}`, hostname()]) {
    t.equal((await gc({ host })).status, 200, `Host: ${host} passes`);
  }
  const prewarm = await send(`${cove.url}/admin/prewarm`, { method: 'POST', headers: { ...AUTH, ...JSON_BODY, origin: 'http://evil.example' }, body: JSON.stringify({ refs: ['proj/app:1'] }) });
  t.equal(prewarm.status, 403);
  t.equal(origin.requests.length, 0, 'no refused request reached the origin');
});

t.test("over TLS: the certificate's names are Cove's, Origin is https, HTTP/2's :authority is its Host", async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const dir = mkdtempSync(join(tmpdir(), 'cove-admin-tls-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const [cert, key] = [join(dir, 'cert.pem'), join(dir, 'key.pem')];
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=cove-test', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:harbor.test'], { stdio: 'ignore' });
  const cove = await startTestCove(t, origin.url, { COVE_TLS_CERT: cert, COVE_TLS_KEY: key, COVE_ADMIN_TOKEN: TOKEN });
  const ca = readFileSync(cert);
  const port = cove.port;
  const h1 = (headers: Record<string, string>) =>
    new Promise<number>((resolve, reject) => {
      // The certificate is checked for harbor.test whatever Host says (Node would check the Host header's name).
      const req = httpsRequest(`${cove.url}/admin/gc`, { method: 'POST', ca, servername: 'harbor.test', agent: false, headers: { ...AUTH, ...headers } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      });
      req.on('error', reject);
      req.end();
    });
  t.equal(await h1({ host: `harbor.test:${port}` }), 200, "HTTP/1.1: Host in the certificate's names passes");
  t.equal(await h1({ host: `harbor.test:${port}`, origin: `https://harbor.test:${port}` }), 200, 'Origin https://harbor.test is this Cove');
  t.equal(await h1({ host: `harbor.test:${port}`, origin: `http://harbor.test:${port}` }), 403, 'Origin http:// for a TLS request is another origin');
  t.equal(await h1({ host: `evil.example:${port}` }), 403, 'Host: evil.example: 403');
  t.equal(await h2Gc(cove.url, ca, { ':authority': `harbor.test:${port}`, ...AUTH }), 200, "HTTP/2: :authority in the certificate's names passes");
  t.equal(await h2Gc(cove.url, ca, { ':authority': `evil.example:${port}`, ...AUTH }), 403, 'HTTP/2 :authority evil.example: 403');
  t.equal(await h2Gc(cove.url, ca, { ':authority': `harbor.test:${port}`, ...AUTH, origin: 'https://evil.example' }), 403, 'HTTP/2 with a foreign Origin: 403');
  t.equal(await h2Gc(cove.url, ca, { ':authority': `harbor.test:${port}` }), 401, 'HTTP/2 without the token: 401');
});

t.test('bodies of the wrong type are refused with 415; bodyless POSTs take no body', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', makeImage({ layers: [1000], seed: 'types-1' }));
  const cove = await startTestCove(t, origin.url, { COVE_ADMIN_TOKEN: TOKEN });
  const body = JSON.stringify({ refs: ['proj/app:1'] });
  for (const type of ['text/plain', 'text/plain;charset=UTF-8', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', undefined]) {
    const r = await send(`${cove.url}/admin/prewarm`, { method: 'POST', headers: { ...AUTH, ...(type === undefined ? {} : { 'content-type': type }) }, body });
    t.equal(r.status, 415, `prewarm with ${type ?? 'no Content-Type'}: 415`);
    t.equal(r.code, 'UNSUPPORTED');
    t.match(r.message, /reads a body of type application\/json/, 'naming the allowed type');
  }
  const hook = await send(`${cove.url}/admin/webhook/harbor`, { method: 'POST', headers: { ...AUTH, 'content-type': 'text/plain' }, body: '{}' });
  t.equal(hook.status, 415, 'the webhook with text/plain: 415');
  t.match(hook.message, /application\/json, application\/cloudevents\+json/);
  const cloud = await send(`${cove.url}/admin/webhook/harbor`, { method: 'POST', headers: { ...AUTH, 'content-type': 'application/cloudevents+json' }, body: JSON.stringify({ specversion: '1.0', type: 'harbor.artifact.deleted', data: {} }) });
  t.equal(cloud.status, 200, "Harbor's CloudEvents type is read (an event it ignores: 200)");
  const archive = await send(`${cove.url}/admin/import?tag=proj/app:1`, { method: 'POST', headers: { ...AUTH, 'content-type': 'text/plain' }, body: Buffer.alloc(1024) });
  t.equal(archive.status, 415, 'import with text/plain: 415');
  t.match(archive.message, /application\/x-tar, .*application\/gzip/, 'naming the archive types');
  t.equal(origin.requests.length, 0, 'nothing refused reached the origin');

  const gcBody = await send(`${cove.url}/admin/gc`, { method: 'POST', headers: { ...AUTH, 'content-type': 'text/plain' }, body: 'x' });
  t.equal(gcBody.status, 415, 'gc with a body: 415');
  t.match(gcBody.message, /takes no request body/);
  t.equal((await send(`${cove.url}/admin/pin?repo=proj/app&ref=1`, { method: 'POST', headers: AUTH, chunked: true })).status, 415, 'pin with a chunked body: 415');
  t.equal((await send(`${cove.url}/admin/gc`, { method: 'POST', headers: { ...AUTH, 'content-length': '0' } })).status, 200, 'an empty body is no body');
  t.equal((await send(`${cove.url}/admin/images`, { method: 'POST', headers: AUTH })).status, 405, 'reads are GET only');

  const ok = await send(`${cove.url}/admin/prewarm`, { method: 'POST', headers: { ...AUTH, 'content-type': 'application/json; charset=utf-8' }, body });
  t.equal(ok.status, 200, 'application/json (with a charset) is read');
  t.match(ok.text, /"result":\{"ok":true/);
});

t.test('the admin socket: mode 0600, the cove command finds and uses it with no token, removed on stop', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', makeImage({ layers: [1000], seed: 'socket-1' }));
  const cove = await startTestCove(t, origin.url, {}, { keepData: true });
  t.teardown(() => rmSync(cove.dataDir, { recursive: true, force: true }));
  const path = join(cove.dataDir, 'admin.sock');
  t.equal(cove.adminSocket, path, 'in the data directory outside systemd');
  const s = lstatSync(path);
  t.ok(s.isSocket(), 'a socket');
  t.equal((s.mode & 0o777).toString(8), '600', 'mode 0600');
  t.equal(s.uid, process.getuid!(), "owned by Cove's user");
  t.same(
    (await run('ls', ['-A', cove.dataDir])).stdout.split('\n').filter((n) => n.startsWith('.admin-sock')),
    [],
    'the private directory it was made in is gone',
  );

  // The command finds the socket from the data directory; COVE_LISTEN points nowhere, so HTTP would fail.
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', COVE_DATA_DIR: cove.dataDir, COVE_LISTEN: '127.0.0.1:9' };
  const prewarmed = await run(process.execPath, [CLI, 'prewarm', 'proj/app:1'], { env, timeout: 30_000 });
  t.match(prewarmed.stdout, /^proj\/app:1: sha256:\w+ ready/m, 'cove prewarm through the socket, no token');
  const pinned = await run(process.execPath, [CLI, 'pin', 'proj/app:1'], { env });
  t.equal(pinned.stdout.trim(), 'proj/app:1: pinned', 'cove pin through the socket');
  const listed = JSON.parse((await run(process.execPath, [CLI, 'ls', '--json'], { env })).stdout) as { images: Array<{ repo: string; tag: string; pinned: boolean }> };
  t.match(listed.images, [{ repo: 'proj/app', tag: '1', pinned: true }], 'cove ls through the socket');
  const missing = await run(process.execPath, [CLI, 'ls', '--socket', join(cove.dataDir, 'nope.sock')], { env }).catch((err: { code: number; stderr: string }) => err);
  t.equal((missing as { code: number }).code, 1);
  t.match((missing as { stderr: string }).stderr, /no admin socket to use: .*nope\.sock \(absent\)/, 'a named socket that is not there is said so');

  const pull = await cove.adminFetch('/v2/proj/app/manifests/1');
  t.equal(pull.status, 404, 'the socket does not serve the pull API');
  const status = await cove.adminFetch('/_cove/status.json');
  t.equal(status.status, 200, 'but does serve status');

  await cove.stop();
  t.notOk(existsSync(path), 'the socket is removed on stop');
});

t.test('what is at the socket path is left alone unless it is a stale socket', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const dir = mkdtempSync(join(tmpdir(), 'cove-sock-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const path = join(dir, 'admin.sock');
  const start = (sub: string) => startTestCove(t, origin.url, { COVE_ADMIN_SOCKET: path }, { dataDir: join(dir, sub) });

  writeFileSync(path, 'keep me');
  await t.rejects(start('a'), /admin socket .*admin\.sock: the path holds a regular file, which Cove does not remove/, 'a regular file: start-up refused');
  t.equal(readFileSync(path, 'utf8'), 'keep me', 'the file is untouched');
  rmSync(path);

  const target = join(dir, 'target');
  writeFileSync(target, 'target');
  symlinkSync(target, path);
  await t.rejects(start('b'), /the path holds a symbolic link/, 'a symbolic link: start-up refused');
  t.equal(readlinkSync(path), target, 'the link is untouched');
  t.equal(readFileSync(target, 'utf8'), 'target', 'and so is what it points to');
  rmSync(path);

  // A stale socket: its process was killed and left the file behind.
  const child = spawn(process.execPath, ['-e', `require('node:net').createServer().listen(${JSON.stringify(path)}, () => console.log('up'))`], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
  child.kill('SIGKILL');
  await new Promise((resolve) => child.once('exit', resolve));
  t.ok(lstatSync(path).isSocket(), 'a stale socket is there');
  const cove = await start('c');
  t.equal((await cove.adminFetch('/admin/images')).status, 200, 'a stale socket is replaced by a live one');

  await t.rejects(start('d'), /another process answers on it/, 'a socket another Cove answers on: start-up refused');
  t.equal((await cove.adminFetch('/admin/images')).status, 200, 'and the first Cove keeps its socket');
});

for (const swr of [false, true]) {
  t.test(`an image imported under another's tag does not outrank the origin (stale-while-revalidate ${swr ? 'on' : 'off'})`, async (t) => {
    const origin = await OriginRegistry.start();
    t.teardown(() => origin.close());
    const app = makeImage({ layers: [2000], seed: `victim-${swr}` });
    const tool = makeImage({ layers: [2000], seed: `other-${swr}` });
    origin.putImage('proj/app', '1', app);
    origin.putImage('proj/tool', '1', tool);
    const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h', COVE_STALE_WHILE_REVALIDATE: String(swr) });
    await pullImage(cove.url, 'proj/app', '1', app);
    await pullImage(cove.url, 'proj/tool', '1', tool);
    await cove.fillsDone();

    // The attack: export one cached image, import it under the other's tag.
    const exportAnswer = await cove.adminFetch('/admin/export?ref=proj/tool:1');
    const exported = Buffer.from(await exportAnswer.arrayBuffer());
    t.equal(exportAnswer.status, 200, `the cached image exports ${exportAnswer.status === 200 ? '' : exported.toString()}`);
    const poison = async () => {
      const r = await cove.adminFetch('/admin/import?tag=proj/app:1', { method: 'POST', body: exported });
      t.equal(r.status, 200, `the import itself is taken ${r.status === 200 ? '' : await r.text()}`);
    };
    await poison();
    const heads = origin.count({ method: 'HEAD', kind: 'manifest', repo: 'proj/app' });
    const first = await manifestOf(cove, 'proj/app', '1');
    t.equal(first.digest, app.manifestDigest, "with the origin up, the next pull gets the origin's image");
    t.equal(origin.count({ method: 'HEAD', kind: 'manifest', repo: 'proj/app' }), heads + 1, 'after asking the origin once');
    const second = await manifestOf(cove, 'proj/app', '1');
    t.equal(second.digest, app.manifestDigest);
    t.equal(second.cache, 'cove; hit', "the origin's answer replaced the import: a plain hit within the TTL");
    t.equal(origin.count({ method: 'HEAD', kind: 'manifest', repo: 'proj/app' }), heads + 1, 'not asked again');
    await pullImage(cove.url, 'proj/app', '1', app);

    // With the origin away, the import is what there is: it answers, marked stale.
    await poison();
    await origin.close();
    const offline = await manifestOf(cove, 'proj/app', '1');
    t.equal(offline.digest, tool.manifestDigest, 'with the origin down, the imported image answers');
    t.equal(offline.cache, 'cove; hit; detail=stale', 'as stale');
  });
}
