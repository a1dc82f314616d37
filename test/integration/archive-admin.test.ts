// Offline seeding through a running Cove: `cove import` of an OCI layout archive, then a pull
// with no origin at all; `cove export` read back by a second Cove; a tampered archive refused
// with a clear message and nothing left behind.
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { makeImage } from '../helpers/images.js';
import { pullImage } from '../helpers/site.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';
import { buildTar, descriptorOf, imageBlobs, layoutFiles } from '../archive/helpers.js';

const run = promisify(execFile);
const CLI = new URL('../../src/cli.js', import.meta.url).pathname;
const NO_ORIGIN = 'http://127.0.0.1:9';

async function listed(cove: TestCove): Promise<Array<{ repo: string; tag: string | null; digest: string; pinned: boolean }>> {
  return ((await (await cove.adminFetch('/admin/images')).json()) as { images: never[] }).images;
}

t.test('import seeds a Cove that has no origin; export carries the image to another', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cove-archive-admin-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const image = makeImage({ layers: [500_000, 250_000], seed: 'seed', mediaType: 'oci' });
  const archive = join(dir, 'app.tar.gz');
  writeFileSync(archive, await buildTar([...layoutFiles([descriptorOf(image, { 'org.opencontainers.image.ref.name': '1', 'io.containerd.image.name': 'proj/app:1' })]), ...imageBlobs(image)], { gzip: true }));

  const edge = await startTestCove(t, NO_ORIGIN, { COVE_TAG_TTL: '1h' });
  const imported = await run(process.execPath, [CLI, 'import', archive, '--pin', '--socket', edge.adminSocket!], { timeout: 30_000 });
  t.match(imported.stdout, new RegExp(`^proj/app:1: ${image.manifestDigest} \\(pinned\\)$`, 'm'));
  t.match(imported.stdout, /imported 1 image\(s\) from a oci-layout: 4 blob\(s\), 4 new/);
  t.match(imported.stderr, /^import app\.tar\.gz: /m, 'progress lines when not on a terminal');
  const pulled = await pullImage(edge.url, 'proj/app', '1', image);
  t.ok(pulled.blobs.every((b) => b.cache === 'cove; hit'), 'the whole image is served with no origin at all');
  t.match(await listed(edge), [{ repo: 'proj/app', tag: '1', digest: image.manifestDigest, pinned: true }]);

  const out = join(dir, 'out.tar');
  const exported = await run(process.execPath, [CLI, 'export', 'proj/app:1', '-o', out, '--socket', edge.adminSocket!], { timeout: 30_000 });
  t.match(exported.stdout, /^exported 1 image reference\(s\) to .*out\.tar/);
  t.notOk(existsSync(`${out}.part`), 'no partial file is left');
  const other = await startTestCove(t, NO_ORIGIN, { COVE_TAG_TTL: '1h' });
  await run(process.execPath, [CLI, 'import', out, '--socket', other.adminSocket!], { timeout: 30_000 });
  await pullImage(other.url, 'proj/app', '1', image);
  t.pass('the exported archive seeds a second Cove with the same digests');

  const unknown = await run(process.execPath, [CLI, 'export', 'proj/none:1', '-o', join(dir, 'none.tar'), '--socket', edge.adminSocket!]).catch((err: { code: number; stderr: string }) => err);
  t.equal((unknown as { code: number }).code, 1);
  t.match((unknown as { stderr: string }).stderr, /export failed \(404\)/);
  t.notOk(existsSync(join(dir, 'none.tar')), 'nothing written for an unknown image');
});

t.test('a tampered archive is refused with the reason, and leaves nothing behind', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cove-archive-bad-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const image = makeImage({ layers: [300_000], seed: 'tampered', mediaType: 'oci' });
  const files = [...layoutFiles([descriptorOf(image, { 'org.opencontainers.image.ref.name': '1', 'io.containerd.image.name': 'proj/bad:1' })]), ...imageBlobs(image)];
  const layer = files.find((f) => f.name.endsWith(image.layers[0]!.digest.slice(7)))!;
  layer.body = Buffer.from(layer.body!);
  layer.body[1000] = layer.body[1000]! ^ 0xff;
  const archive = join(dir, 'bad.tar');
  writeFileSync(archive, await buildTar(files));
  const cove = await startTestCove(t, NO_ORIGIN);
  const before = await listed(cove);

  const refused = await run(process.execPath, [CLI, 'import', archive, '--socket', cove.adminSocket!], { timeout: 30_000 }).catch((err: { code: number; stderr: string }) => err);
  t.equal((refused as { code: number }).code, 1);
  t.match((refused as { stderr: string }).stderr, /import failed \(400\).*ARCHIVE_DIGEST_MISMATCH/);
  t.same(await listed(cove), before, 'no image registered');
  t.same(readdirSync(join(cove.dataDir, 'blobs', 'tmp')), [], 'no temp file left');
  const shortFile = join(dir, 'short.tar');
  writeFileSync(shortFile, (await buildTar([...layoutFiles([descriptorOf(image)]), ...imageBlobs(image)])).subarray(0, 200_000));
  const truncated = await run(process.execPath, [CLI, 'import', shortFile, '--socket', cove.adminSocket!], { timeout: 30_000 }).catch((err: { code: number; stderr: string }) => err);
  t.match((truncated as { stderr: string }).stderr, /ARCHIVE_TRUNCATED/);
  const missing = await run(process.execPath, [CLI, 'import', join(dir, 'absent.tar'), '--socket', cove.adminSocket!]).catch((err: { code: number; stderr: string }) => err);
  t.match((missing as { stderr: string }).stderr, /absent\.tar cannot be read \(ENOENT\)/);
});
