// Forcing revalidation of cached tags: POST /admin/invalidate (over the admin socket, or with the
// admin token) and the `cove invalidate` command that calls it.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

const run = promisify(execFile);
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;
const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json';

t.test('an invalidated tag is revalidated on the next pull, whatever the TTL', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const v1 = makeImage({ layers: [1000], seed: 'inv-1' });
  const v2 = makeImage({ layers: [1000], seed: 'inv-2' });
  origin.putImage('proj/app', 'latest', v1);
  origin.putImage('proj/app', 'stable', v1);
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h' });
  const pull = async (tag: string) => fetchAll(`${cove.url}/v2/proj/app/manifests/${tag}`, { headers: { accept: ACCEPT } });
  await pull('latest');
  await pull('stable');
  origin.moveTag('proj/app', 'latest', v2);
  t.equal(sha256((await pull('latest')).body), v1.manifestDigest, 'within the TTL the old digest is served');

  const r = await cove.adminFetch('/admin/invalidate?repo=proj/app&tag=latest', { method: 'POST' });
  t.equal(r.status, 200);
  t.same(await r.json(), { upstream: 'origin', repo: 'proj/app', tag: 'latest', invalidated: 1 });
  const moved = await pull('latest');
  t.equal(sha256(moved.body), v2.manifestDigest, 'the next pull asked the origin and followed the move');
  t.equal((await pull('latest')).headers['cache-status'], 'cove; hit', 'and then the TTL applies again');

  const { stdout } = await run(process.execPath, [CLI, 'invalidate', 'proj/app', '--socket', cove.adminSocket!]);
  t.equal(JSON.parse(stdout).invalidated, 2, 'the command marks every cached tag of the repository');
  t.equal((await pull('stable')).headers['cache-status'], 'cove; hit; detail=revalidated');
});

t.test('refusals: wrong method, bad names, no running Cove', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const cove = await startTestCove(t, origin.url);
  t.equal((await cove.adminFetch('/admin/invalidate?repo=proj/app')).status, 405);
  const bad = await cove.adminFetch('/admin/invalidate?repo=Proj', { method: 'POST' });
  t.equal(bad.status, 400);
  t.equal(((await bad.json()) as { errors: Array<{ code: string }> }).errors[0]!.code, 'NAME_INVALID');
  const none = await cove.adminFetch('/admin/invalidate?repo=proj/none&tag=1', { method: 'POST' });
  t.equal(((await none.json()) as { invalidated: number }).invalidated, 0, 'a tag never cached: nothing to do');
  const failed = await run(process.execPath, [CLI, 'invalidate', 'proj/app', '--url', 'http://127.0.0.1:1']).catch((e: { code: number; stderr: string }) => e);
  t.equal((failed as { code: number }).code, 1);
  t.match((failed as { stderr: string }).stderr, /no Cove answered at http:\/\/127\.0\.0\.1:1/);
  t.equal(origin.requests.length, 0, 'nothing reached the origin');
});
