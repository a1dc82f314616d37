// Prewarm on a running Cove: `cove prewarm` with a platform filter, the configured list that is
// fetched without anyone asking, and Harbor's push webhook. Who may call the admin endpoints:
// admin-security.test.ts.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage, makeIndex } from '../helpers/images.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';

const run = promisify(execFile);
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;

async function cached(cove: TestCove): Promise<string[]> {
  const list = (await (await cove.adminFetch('/admin/images')).json()) as { images: Array<{ repo: string; tag: string | null }> };
  return list.images.map((i) => `${i.repo}:${i.tag}`);
}

t.test('cove prewarm takes only the configured platforms of a multi-arch image', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const amd = makeImage({ layers: [300_000], seed: 'pw-amd', architecture: 'amd64' });
  const arm = makeImage({ layers: [200_000], seed: 'pw-arm', architecture: 'arm64' });
  const index = makeIndex([{ image: amd }, { image: arm }], 'oci');
  origin.putIndex('proj/multi', '1', index, [amd, arm]);
  const cove = await startTestCove(t, origin.url, { COVE_PLATFORMS: 'linux/arm64' });

  const out = await run(process.execPath, [CLI, 'prewarm', 'proj/multi:1', '--socket', cove.adminSocket!], { timeout: 30_000 });
  t.match(out.stdout, /^proj\/multi:1: sha256:\w+ ready, 2 blob\(s\) \(0 cached\), 19\d\.\d KiB fetched$/m);
  t.match(out.stderr, /^prewarm: .* at .*\/s/m, 'plain progress lines when not on a terminal');
  t.equal(origin.count({ method: 'GET', kind: 'blob', digest: arm.layers[0]!.digest }), 1, 'the arm64 layer was fetched');
  t.equal(origin.count({ method: 'GET', kind: 'blob', digest: amd.layers[0]!.digest }), 0, 'the amd64 layer was not');
  t.equal(origin.count({ kind: 'manifest', digest: amd.manifestDigest }), 0, 'nor its manifest');

  const gets = origin.count({ method: 'GET', kind: 'blob' });
  const json = await run(process.execPath, [CLI, 'prewarm', 'proj/multi:1', '--json', '--socket', cove.adminSocket!], { timeout: 30_000 });
  const lines = json.stdout.trim().split('\n').map((l) => JSON.parse(l) as { event?: { type: string }; result?: { ok: boolean } });
  t.ok(lines.some((l) => l.event?.type === 'plan'), 'NDJSON progress events');
  t.equal(lines.at(-1)?.result?.ok, true, 'the result comes last');
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), gets, 'a second prewarm fetches nothing');

  const wide = await run(process.execPath, [CLI, 'prewarm', 'proj/multi:1', '--platforms', 'linux/amd64', '--socket', cove.adminSocket!], { timeout: 30_000 });
  t.match(wide.stdout, /ready/);
  t.equal(origin.count({ method: 'GET', kind: 'blob', digest: amd.layers[0]!.digest }), 1, '--platforms overrides COVE_PLATFORMS');

  const missing = await run(process.execPath, [CLI, 'prewarm', 'proj/none:1', '--socket', cove.adminSocket!], { timeout: 30_000 }).catch((err: { code: number; stdout: string }) => err);
  t.equal((missing as { code: number }).code, 1, 'a missing image fails the command');
  t.match((missing as { stdout: string }).stdout, /^proj\/none:1: failed: /m);
  const usage = await run(process.execPath, [CLI, 'prewarm', '--socket', cove.adminSocket!]).catch((err: { code: number }) => err);
  t.equal((usage as { code: number }).code, 2);
  const badPlatform = await cove.adminFetch('/admin/prewarm', { method: 'POST', body: JSON.stringify({ refs: ['proj/multi:1'], platforms: 'linux' }) });
  t.equal(badPlatform.status, 405);
  t.match(await badPlatform.text(), /platforms: .*linux.* is not OS\/ARCH/, "a bad platform is named");
  const noBody = await cove.adminFetch('/admin/prewarm', { method: 'POST', headers: { 'content-type': 'application/json' } });
  t.match(await noBody.text(), /prewarm needs a JSON body/);
});

t.test('the configured list is fetched without anyone asking', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [100_000], seed: 'pw-list' });
  origin.putImage('proj/app', '1', image);
  const cove = await startTestCove(t, origin.url, { COVE_PREWARM: 'proj/app:1' });
  for (let i = 0; i < 100 && !(await cached(cove)).includes('proj/app:1'); i++) await new Promise((r) => setTimeout(r, 50));
  t.ok((await cached(cove)).includes('proj/app:1'), 'proj/app:1 is cached before any client pulled it');
  await cove.fillsDone();
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 2, 'config and layer fetched');
});

t.test("Harbor's push webhook prewarms what was pushed", async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [150_000], seed: 'pw-hook' });
  origin.putImage('proj/app', '2', image);
  const token = 'harbor-webhook-token-0123456789';
  const cove = await startTestCove(t, origin.url, { COVE_ADMIN_TOKEN: token });
  // Harbor calls over HTTP with the token and a JSON body.
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` };
  const event = {
    type: 'PUSH_ARTIFACT',
    occur_at: 1700000000,
    operator: 'robot$ci',
    event_data: {
      resources: [{ digest: image.manifestDigest, tag: '2', resource_url: `harbor.example.com/proj/app:2` }],
      repository: { name: 'app', namespace: 'proj', repo_full_name: 'proj/app', repo_type: 'private' },
    },
  };
  const res = await fetch(`${cove.url}/admin/webhook/harbor`, { method: 'POST', body: JSON.stringify(event), headers });
  t.equal(res.status, 202);
  for (let i = 0; i < 100 && origin.count({ method: 'GET', kind: 'blob' }) < 2; i++) await new Promise((r) => setTimeout(r, 50));
  await cove.fillsDone();
  t.equal(origin.count({ method: 'GET', kind: 'blob' }), 2, 'the pushed image was fetched');
  const ignored = await fetch(`${cove.url}/admin/webhook/harbor`, { method: 'POST', body: JSON.stringify({ ...event, type: 'DELETE_ARTIFACT' }), headers });
  t.equal(ignored.status, 200);
  t.match(await ignored.json(), { accepted: false });
  const broken = await fetch(`${cove.url}/admin/webhook/harbor`, { method: 'POST', body: '{"type":', headers });
  t.equal(broken.status, 400);
});

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Harbor's push event for proj/app:TAG at `digest`. */
function pushEvent(tag: string, digest: string) {
  return {
    type: 'PUSH_ARTIFACT',
    occur_at: 1700000000,
    operator: 'robot$ci',
    event_data: {
      resources: [{ digest, tag, resource_url: `harbor.example.com/proj/app:${tag}` }],
      repository: { name: 'app', namespace: 'proj', repo_full_name: 'proj/app', repo_type: 'private' },
    },
  };
}

/** Origin requests until the Cove has fetched `blobs` blobs and its fills are done. */
async function settle(cove: TestCove, origin: OriginRegistry, blobs: number): Promise<void> {
  for (let i = 0; i < 200 && origin.count({ method: 'GET', kind: 'blob' }) < blobs; i++) await new Promise((r) => setTimeout(r, 25));
  await cove.fillsDone();
  // The job ends just after its last fill; give its last manifest work a moment to show.
  await new Promise((r) => setTimeout(r, 200));
}

t.test('five identical Harbor webhooks cost the origin what one does (they were 133 requests in 4 s)', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [300_000], seed: 'pw-five-hooks' });
  origin.putImage('proj/app', '3', image);
  // Slow blobs, so the later webhooks arrive while the first prewarm is still running.
  origin.setFault({ kind: 'blob' }, { type: 'slow', bytesPerSecond: 300_000 });
  const hook = (cove: TestCove) =>
    cove.adminFetch('/admin/webhook/harbor', { method: 'POST', body: JSON.stringify(pushEvent('3', image.manifestDigest)) }).then(async (r) => ({ status: r.status, body: (await r.json()) as { jobs?: Array<{ state: string }> } }));

  const alone = await startTestCove(t, origin.url);
  t.equal((await hook(alone)).status, 202);
  await settle(alone, origin, 2);
  const one = origin.requests.length;
  t.ok(one >= 3, `one webhook: ${one} origin requests`);

  const five = await startTestCove(t, origin.url);
  const start = origin.requests.length;
  // As Harbor sends them: one after another while the first prewarm runs, not in one instant.
  const answers = await Promise.all(Array.from({ length: 5 }, (_, i) => delay(i * 100).then(() => hook(five))));
  t.ok(answers.every((a) => a.status === 202), 'each webhook accepted');
  t.equal(answers.filter((a) => a.body.jobs?.[0]?.state.startsWith('already')).length, 4, 'four were told the job is already queued or running');
  await settle(five, origin, 4);
  t.equal(origin.requests.length - start, one, `five webhooks: ${origin.requests.length - start} origin requests, one alone: ${one}`);
});

t.test('five identical /admin/prewarm calls share one job and all get its result', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [300_000], seed: 'pw-five-admin' });
  origin.putImage('proj/app', '4', image);
  origin.setFault({ kind: 'blob' }, { type: 'slow', bytesPerSecond: 300_000 });
  const call = (cove: TestCove) =>
    cove.adminFetch('/admin/prewarm', { method: 'POST', body: JSON.stringify({ refs: [`proj/app:4@${image.manifestDigest}`] }) }).then(async (r) => {
      const lines = (await r.text()).trim().split('\n').map((l) => JSON.parse(l) as { result?: { ok: boolean } });
      return { status: r.status, result: lines.at(-1)?.result };
    });
  const alone = await startTestCove(t, origin.url);
  t.equal((await call(alone)).result?.ok, true);
  await alone.fillsDone();
  const one = origin.requests.length;

  const five = await startTestCove(t, origin.url);
  const start = origin.requests.length;
  const answers = await Promise.all(Array.from({ length: 5 }, (_, i) => delay(i * 100).then(() => call(five))));
  t.ok(answers.every((a) => a.status === 200 && a.result?.ok === true), 'each call gets the successful result');
  await five.fillsDone();
  t.equal(origin.requests.length - start, one, `five calls: ${origin.requests.length - start} origin requests, one alone: ${one}`);
});

t.test('the prewarm queue is bounded: over COVE_PREWARM_QUEUE a call gets 429, at most COVE_PREWARM_JOBS run', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const images = Array.from({ length: 4 }, (_, i) => makeImage({ layers: [100_000], seed: `pw-bound-${i}` }));
  images.forEach((image, i) => origin.putImage(`proj/b${i}`, '1', image));
  origin.setFault({ kind: 'blob' }, { type: 'slow', bytesPerSecond: 200_000 });
  const cove = await startTestCove(t, origin.url, { COVE_PREWARM_JOBS: '1', COVE_PREWARM_QUEUE: '1' });
  const hook = (i: number) =>
    cove.adminFetch('/admin/webhook/harbor', {
      method: 'POST',
      body: JSON.stringify({ ...pushEvent('1', images[i]!.manifestDigest), event_data: { resources: [{ digest: images[i]!.manifestDigest, tag: '1' }], repository: { name: `b${i}`, namespace: 'proj', repo_full_name: `proj/b${i}` } } }),
    });
  t.equal((await hook(0)).status, 202, 'the first runs');
  t.equal((await hook(1)).status, 202, 'the second waits');
  const refused = await hook(2);
  t.equal(refused.status, 429, 'the third finds the queue full');
  t.equal(refused.headers.get('retry-after'), '30');
  t.match(await refused.text(), /prewarm queue is full.*COVE_PREWARM_QUEUE/);
  // One job at a time: never two repositories' blobs in flight together.
  let overlap = 0;
  for (let i = 0; i < 200 && origin.count({ method: 'GET', kind: 'blob' }) < 4; i++) {
    const b0 = origin.count({ method: 'GET', kind: 'blob', repo: 'proj/b0' });
    const b1 = origin.count({ method: 'GET', kind: 'blob', repo: 'proj/b1' });
    if (b1 > 0 && b0 < 2) overlap++;
    await new Promise((r) => setTimeout(r, 25));
  }
  await cove.fillsDone();
  t.equal(overlap, 0, 'the second job started only after the first fetched its blobs');
  t.equal(origin.count({ method: 'GET', kind: 'blob', repo: 'proj/b1' }), 2, 'the waiting job ran once the first was done');
  t.equal(origin.count({ method: 'GET', kind: 'blob', repo: 'proj/b2' }), 0, 'the refused push was not fetched');
});
