// Outside systemd too, the data directory is Cove's alone: 0700, and every cached file 0600,
// whatever the umask of whoever started it.
import { chmodSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

t.test('the data directory is 0700 and cached files 0600 with a permissive umask', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [20_000], seed: 'modes' });
  origin.putImage('proj/app', '1', image);
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-modes-'));
  chmodSync(dataDir, 0o755); // as an operator's mkdir under umask 022 leaves it
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const old = process.umask(0o022);
  t.teardown(() => process.umask(old));
  const cove = await startTestCove(t, origin.url, {}, { dataDir, keepData: true });
  const m = await fetchAll(`${cove.url}/v2/proj/app/manifests/1`, { headers: { accept: 'application/vnd.docker.distribution.manifest.v2+json' } });
  t.equal(m.status, 200);
  t.equal((await fetchAll(`${cove.url}/v2/proj/app/blobs/${image.layers[0]!.digest}`)).status, 200);
  await cove.fillsDone();
  t.equal(statSync(dataDir).mode & 0o777, 0o700, 'data directory 0700');
  const root = join(dataDir, 'blobs', 'sha256');
  const files: string[] = [];
  for (const shard of readdirSync(root)) {
    t.equal(statSync(join(root, shard)).mode & 0o077, 0, `shard ${shard} is owner-only`);
    for (const f of readdirSync(join(root, shard))) files.push(join(root, shard, f));
  }
  t.ok(files.length >= 2, 'the manifest and the layer are cached');
  for (const f of files) t.equal(statSync(f).mode & 0o777, 0o600, `${f.slice(-12)} is 0600`);
});
