// The default cache cap: with COVE_MAX_CACHE_BYTES unset, a share (80%) of the data directory's
// file system, so a fresh install cannot fill its disk; an explicit size wins; "off" means none.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { loadConfig } from '../../src/config.js';
import { cacheCap, type StatFs } from '../../src/store/eviction.js';
import { startTestCove } from '../helpers/cove.js';
import { OriginRegistry } from '../helpers/origin-registry.js';

const GiB = 1024 ** 3;
const base = { COVE_UPSTREAM: 'http://127.0.0.1:1' };

t.test('the cap is 80% of the file system when nothing is set, from statfs', async (t) => {
  const asked: string[] = [];
  // A 100 GiB file system in 4 KiB blocks.
  const statfs: StatFs = async (path) => {
    asked.push(path);
    return { bsize: 4096, blocks: (100 * GiB) / 4096 };
  };
  const cache = loadConfig({ env: base, flags: {} }).cache;
  t.equal(cache.maxBytes, null);
  t.equal(cache.maxShare, 0.8);
  t.equal(await cacheCap(cache, '/var/lib/cove', statfs), 80 * GiB);
  t.same(asked, ['/var/lib/cove'], 'the data directory\'s file system');
});

t.test('an explicit size wins; a share may be set; off is no cap, only when asked for', async (t) => {
  const statfs: StatFs = async () => ({ bsize: 1024, blocks: 1000 });
  const cap = (value: string) => cacheCap(loadConfig({ env: { ...base, COVE_MAX_CACHE_BYTES: value }, flags: {} }).cache, '/data', statfs);
  t.equal(await cap('20GiB'), 20 * GiB, 'a size is used as is, statfs not needed');
  t.equal(await cap('50%'), 512_000);
  for (const off of ['off', 'none', '0', 'OFF']) t.equal(await cap(off), null, `${off}: no cap`);
  t.throws(() => loadConfig({ env: { ...base, COVE_MAX_CACHE_BYTES: '150%' }, flags: {} }), /COVE_MAX_CACHE_BYTES: "150%" must be a share of the file system/);
  t.throws(() => loadConfig({ env: { ...base, COVE_MAX_CACHE_BYTES: '%' }, flags: {} }), /COVE_MAX_CACHE_BYTES/);
  t.throws(() => loadConfig({ env: { ...base, COVE_MAX_CACHE_BYTES: 'lots' }, flags: {} }), /COVE_MAX_CACHE_BYTES: .*or off/);
});

t.test('a file system statfs cannot size is a clear error', async (t) => {
  const cache = loadConfig({ env: base, flags: {} }).cache;
  await t.rejects(cacheCap(cache, '/odd', async () => ({ bsize: 0, blocks: 0 })), /set COVE_MAX_CACHE_BYTES to a size/);
});

t.test('a running Cove with no cap set reports the share of its data directory\'s file system', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-cap-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const cove = await startTestCove(t, origin.url, {}, { dataDir, keepData: true });
  const health = (await (await fetch(`${cove.url}/healthz`)).json()) as { cache: { limit: number | null } };
  const expected = await cacheCap({ maxBytes: null, maxShare: 0.8 }, dataDir);
  t.equal(health.cache.limit, expected, `limit ${health.cache.limit}`);
  t.ok(expected !== null && expected > 0);
});
