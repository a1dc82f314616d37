// `cove doctor` on the node's own resources, run as the real CLI: a data directory that cannot be
// created or has too little room, and Cove's TLS certificate (expired, without the listen name,
// not matching its key, or right).
import { spawnSync } from 'node:child_process';
import { readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { doctor, makeCert, tempDir } from './helpers.js';

const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

async function originUrl(t: { teardown(fn: () => unknown): unknown }): Promise<string> {
  const o = await OriginRegistry.start();
  t.teardown(() => o.close());
  return o.url;
}

t.test('a data directory below a regular file cannot be created (ENOTDIR): fail, named', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'file'), 'not a directory\n');
  const run = await doctor(t, { COVE_UPSTREAM: await originUrl(t), COVE_DATA_DIR: join(dir, 'file', 'cove') });
  t.equal(run.code, 1);
  t.equal(run.check('data-dir').status, 'fail');
  t.match(run.check('data-dir').message, /a part of its path is a file, not a directory \(ENOTDIR\); set COVE_DATA_DIR elsewhere/);
  t.equal(run.report!.counts.fail, 1, 'nothing else failed');
});

t.test('a data directory that is a file, and one that does not exist yet below a file', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'file'), 'x');
  const run = await doctor(t, { COVE_UPSTREAM: await originUrl(t), COVE_DATA_DIR: join(dir, 'file') });
  t.match(run.check('data-dir').message, /is not a directory/);
  const fresh = await doctor(t, { COVE_UPSTREAM: await originUrl(t), COVE_DATA_DIR: join(dir, 'new', 'deeper') });
  t.equal(fresh.check('data-dir').status, 'ok');
  t.match(fresh.check('data-dir').message, /does not exist yet \(Cove creates it at start/);
  t.same(readdirSync(dir).sort(), ['file'], 'the doctor created nothing');
});

t.test('the probe file is removed: the data directory is left as it was', async (t) => {
  const data = tempDir(t);
  writeFileSync(join(data, 'node-id'), 'edge-1\n');
  const run = await doctor(t, { COVE_UPSTREAM: await originUrl(t), COVE_DATA_DIR: data });
  t.equal(run.check('data-dir').status, 'ok');
  t.same(readdirSync(data), ['node-id']);
});

t.test('free space below the floor (--min-free) fails; a cache cap the free space cannot hold warns', async (t) => {
  const url = await originUrl(t);
  const run = await doctor(t, { COVE_UPSTREAM: url }, ['--min-free', '1000TiB']);
  t.equal(run.code, 1);
  t.equal(run.check('data-dir').status, 'fail');
  t.match(run.check('data-dir').message, /free, below the floor of 1000\.0 TiB: new images cannot be cached/);

  const big = await doctor(t, { COVE_UPSTREAM: url, COVE_MAX_CACHE_BYTES: '1000TiB' });
  t.equal(big.code, 0, 'a warning only');
  t.equal(big.check('data-dir').status, 'warn');
  t.match(big.check('data-dir').message, /the cache may grow to 900\.0 TiB \(COVE_MAX_CACHE_BYTES = 1000\.0 TiB, at the 90% high watermark\).*the disk fills before eviction starts/);

  const bad = await doctor(t, { COVE_UPSTREAM: url }, ['--min-free', 'lots']);
  t.equal(bad.code, 2, 'a bad --min-free is a usage error');
  t.match(bad.stderr, /^cove: --min-free: "lots" is not a size/);
});

t.test('certificate: expired, without the listen name, another key, about to expire, right', { skip: hasOpenssl ? false : 'openssl not installed' }, async (t) => {
  const url = await originUrl(t);
  const dir = tempDir(t);
  const expired = makeCert(dir, 'expired', { san: 'IP:127.0.0.1', days: -1 });
  const run = await doctor(t, { COVE_UPSTREAM: url, COVE_TLS_CERT: expired.cert, COVE_TLS_KEY: expired.key });
  t.equal(run.code, 1);
  t.equal(run.check('certificate').status, 'fail');
  t.match(run.check('certificate').message, /^the certificate expired on .* ago\): clients refuse it/);

  const other = makeCert(dir, 'other', { san: 'DNS:edge.example.test', days: 30 });
  const wrongName = await doctor(t, { COVE_UPSTREAM: url, COVE_TLS_CERT: other.cert, COVE_TLS_KEY: other.key, COVE_LISTEN: '127.0.0.1:5999' });
  t.equal(wrongName.code, 1);
  t.match(wrongName.check('certificate').message, /names \(DNS:edge\.example\.test\) do not cover 127\.0\.0\.1, the COVE_LISTEN host/);

  const right = makeCert(dir, 'right', { san: 'IP:127.0.0.1,DNS:localhost', days: 30 });
  const mismatch = await doctor(t, { COVE_UPSTREAM: url, COVE_TLS_CERT: right.cert, COVE_TLS_KEY: other.key });
  t.equal(mismatch.code, 1);
  t.match(mismatch.check('certificate').message, /COVE_TLS_KEY is not the key of COVE_TLS_CERT/);

  const soon = makeCert(dir, 'soon', { san: 'IP:127.0.0.1', days: 3 });
  const warn = await doctor(t, { COVE_UPSTREAM: url, COVE_TLS_CERT: soon.cert, COVE_TLS_KEY: soon.key });
  t.equal(warn.code, 0);
  t.equal(warn.check('certificate').status, 'warn');
  t.match(warn.check('certificate').message, /^the certificate expires on .*, in (2\.9|3) d/);

  const good = await doctor(t, { COVE_UPSTREAM: url, COVE_TLS_CERT: right.cert, COVE_TLS_KEY: right.key });
  t.equal(good.code, 0, 'exit 0', { stdout: good.stdout });
  t.equal(good.check('certificate').status, 'ok');
  t.match(good.check('certificate').message, /the key matches, valid until .*; names IP Address:127\.0\.0\.1, DNS:localhost/);

  const byName = await doctor(t, { COVE_UPSTREAM: url, COVE_TLS_CERT: right.cert, COVE_TLS_KEY: right.key, COVE_LISTEN: 'localhost:5999' });
  t.equal(byName.check('certificate').status, 'ok', 'a listen name the certificate carries');

  const unreadable = await doctor(t, { COVE_UPSTREAM: url, COVE_TLS_CERT: join(dir, 'missing.crt'), COVE_TLS_KEY: right.key });
  t.equal(unreadable.code, 1);
  t.match(unreadable.check('config').message, /^COVE_TLS_CERT: ".*missing\.crt" cannot be read \(ENOENT\)/, 'an unreadable certificate is the configuration error cove serve reports');
});

t.test('hosts mode: on the origin\'s port, a certificate without the origin\'s name warns', { skip: hasOpenssl ? false : 'openssl not installed' }, async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'tls'));
  const cert = makeCert(join(dir, 'tls'), 'edge', { san: 'IP:127.0.0.1', days: 30 });
  // The origin is never reached here: only the certificate's line is looked at.
  const run = await doctor(t, { COVE_UPSTREAM: 'https://harbor.invalid', COVE_TLS_CERT: cert.cert, COVE_TLS_KEY: cert.key, COVE_LISTEN: '0.0.0.0:443', COVE_UPSTREAM_TIMEOUT: '200ms' });
  t.equal(run.check('certificate').status, 'warn');
  t.match(run.check('certificate').message, /do not cover the origin's name harbor\.invalid: clients redirected to this Cove under that name refuse it; issue one with cove cert --host harbor\.invalid/);
  const covered = makeCert(join(dir, 'tls'), 'hosts', { san: 'DNS:harbor.invalid', days: 30 });
  const ok = await doctor(t, { COVE_UPSTREAM: 'https://harbor.invalid', COVE_TLS_CERT: covered.cert, COVE_TLS_KEY: covered.key, COVE_LISTEN: '0.0.0.0:443', COVE_UPSTREAM_TIMEOUT: '200ms' });
  t.equal(ok.check('certificate').status, 'ok');
  t.match(ok.check('certificate').message, /including the origin's name harbor\.invalid for hosts mode/);
  t.match(ok.check('origin').message, /the name harbor\.invalid of the origin does not resolve \(DNS/);
});
