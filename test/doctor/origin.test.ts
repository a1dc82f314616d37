// `cove doctor` against a real in-process origin, run as the real CLI: reachability, Basic and
// token credentials, and the clock against the origin's Date header. Exit code 1 and the named
// failure for each problem; 0 when nothing failed.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { doctor, makeCert, tempDir } from './helpers.js';

async function origin(t: { teardown(fn: () => unknown): unknown }, options: Parameters<typeof OriginRegistry.start>[0] = {}): Promise<OriginRegistry> {
  const o = await OriginRegistry.start(options);
  t.teardown(() => o.close());
  return o;
}

t.test('everything in order: exit 0, every check ok or skipped, and --json has the documented shape', async (t) => {
  const o = await origin(t);
  const run = await doctor(t, { COVE_UPSTREAM: o.url });
  t.equal(run.code, 0, "exit 0", { stdout: run.stdout });
  t.equal(run.stderr, '', 'nothing on stderr');
  const report = run.report!;
  t.equal(report.ok, true);
  t.same(Object.keys(report.counts).sort(), ['fail', 'ok', 'skip', 'warn']);
  t.equal(report.counts.fail, 0);
  t.equal(report.counts.warn, 0, 'no warnings either');
  t.equal(report.counts.ok + report.counts.skip, report.checks.length, 'the counts add up to the checks');
  for (const c of report.checks) {
    t.same(Object.keys(c).sort(), ['message', 'name', 'status'], `${c.name}: name, status, message`);
    t.ok(['ok', 'skip'].includes(c.status), `${c.name} is ${c.status}`);
    t.ok(c.message.length > 10, `${c.name} explains itself`);
  }
  t.equal(run.check('origin').status, 'ok');
  t.match(run.check('origin').message, /without credentials/);
  t.equal(run.check('clock').status, 'ok');
  t.equal(run.check('data-dir').status, 'ok');
  t.equal(run.check('certificate').status, 'skip');
  t.equal(run.check('peers').status, 'skip');
  t.ok(o.requests.some((r) => r.path === '/v2/'), 'the origin was asked /v2/');
});

t.test('human output: one marked line per check and a last line with the counts', async (t) => {
  const o = await origin(t);
  const run = await doctor(t, { COVE_UPSTREAM: o.url, COVE_PEERS: 'http://127.0.0.1:1' }, [], { json: false });
  t.equal(run.code, 1, 'a failed peer fails the run');
  const lines = run.stdout.trimEnd().split('\n');
  t.match(lines[lines.length - 1], /^1 problem\(s\) stop pulls: \d+ ok, 0 warning\(s\), 1 failed, \d+ skipped$/);
  for (const line of lines.slice(0, -1)) t.match(line, /^(ok  |WARN|FAIL|skip)  \S/, `marked: ${line.slice(0, 40)}`);
  t.match(run.stdout, /^FAIL  peer http:\/\/127\.0\.0\.1:1 +the peer at http:\/\/127\.0\.0\.1:1 refused the connection/m);
  t.match(run.stdout, /^ok    origin /m);
  t.notMatch(run.stdout + run.stderr, /\n\s+at .*\.js:\d+/, 'no stack trace');
  const help = await doctor(t, {}, ['--help'], { json: false });
  t.match(help.stdout, /^  cove doctor \[--json\] \[--root DIR\] \[--min-free SIZE\] \[--settings FILE\]$/m, 'cove --help lists it');
});

t.test('origin down: the refused connection is named, exit 1, the clock is not compared', async (t) => {
  const o = await origin(t);
  const url = o.url;
  await o.stop();
  const run = await doctor(t, { COVE_UPSTREAM: url });
  t.equal(run.code, 1);
  t.equal(run.check('origin').status, 'fail');
  t.match(run.check('origin').message, new RegExp(`the origin at ${url.replace(/\./g, '\\.')} refused the connection: nothing listens on 127\\.0\\.0\\.1 port ${o.port}`));
  t.equal(run.check('clock').status, 'skip');
  t.equal(run.report!.counts.fail, 1, 'only the origin failed');
});

t.test('an origin that never answers: bounded by COVE_UPSTREAM_TIMEOUT and said so', async (t) => {
  const o = await origin(t);
  o.setFault({ kind: 'base' }, { type: 'blackhole' });
  const started = Date.now();
  const run = await doctor(t, { COVE_UPSTREAM: o.url, COVE_UPSTREAM_TIMEOUT: '500ms' });
  t.equal(run.code, 1);
  t.match(run.check('origin').message, /did not answer within 500 ms \(COVE_UPSTREAM_TIMEOUT\)/);
  t.ok(Date.now() - started < 20_000, 'the run ended well within the test timeout');
});

t.test('Basic: the right password passes, a wrong one is "credentials refused", none is "none are configured"', async (t) => {
  const o = await origin(t, { auth: 'basic', username: 'edge', password: 'right-password' });
  const good = await doctor(t, { COVE_UPSTREAM: o.url, COVE_UPSTREAM_USERNAME: 'edge', COVE_UPSTREAM_PASSWORD: 'right-password' });
  t.equal(good.code, 0, "exit 0", { stdout: good.stdout });
  t.match(good.check('origin').message, /accepts the configured credentials \(Basic\)/);

  const bad = await doctor(t, { COVE_UPSTREAM: o.url, COVE_UPSTREAM_USERNAME: 'edge', COVE_UPSTREAM_PASSWORD: 'wrong-password' });
  t.equal(bad.code, 1);
  t.equal(bad.check('origin').status, 'fail');
  t.match(bad.check('origin').message, /^credentials refused: .* answered 401 to user "edge" \(Basic\); check COVE_UPSTREAM_USERNAME and COVE_UPSTREAM_PASSWORD/);
  t.notMatch(bad.stdout, /wrong-password/, 'the password is never printed');

  const none = await doctor(t, { COVE_UPSTREAM: o.url });
  t.equal(none.code, 1);
  t.match(none.check('origin').message, /asks for credentials \(Basic\) and none are configured/);
});

t.test('token flow: a token from the realm passes; a realm refusing the password is named', async (t) => {
  const o = await origin(t, { auth: 'bearer', username: 'robot$edge', password: 'right-password' });
  const good = await doctor(t, { COVE_UPSTREAM: o.url, COVE_UPSTREAM_USERNAME: 'robot$edge', COVE_UPSTREAM_PASSWORD: 'right-password' });
  t.equal(good.code, 0, "exit 0", { stdout: good.stdout });
  t.match(good.check('origin').message, new RegExp(`accepts the configured credentials \\(a token from ${o.url.replace(/\./g, '\\.')}/token\\)`));
  const tokenCalls = o.requests.filter((r) => r.kind === 'token' && r.status === 200).length;
  t.equal(tokenCalls, 1, 'one token was fetched');
  t.ok(o.requests.some((r) => r.path === '/v2/' && r.status === 200 && r.authorization?.startsWith('Bearer ')), '/v2/ was asked again with the token');

  const bad = await doctor(t, { COVE_UPSTREAM: o.url, COVE_UPSTREAM_USERNAME: 'robot$edge', COVE_UPSTREAM_PASSWORD: 'wrong-password' });
  t.equal(bad.code, 1);
  t.match(bad.check('origin').message, new RegExp(`^credentials refused by the token service at ${o.url.replace(/\./g, '\\.')}/token \\(401\\)`));
});

t.test('clock: 5 minutes off fails and says which way; 20 s off warns; the origin check still passes', async (t) => {
  const behind = await origin(t, { dateOffsetMs: -5 * 60_000 });
  const run = await doctor(t, { COVE_UPSTREAM: behind.url });
  t.equal(run.code, 1);
  t.equal(run.check('origin').status, 'ok');
  t.equal(run.check('clock').status, 'fail');
  t.match(run.check('clock').message, /^this host's clock is 5 min ahead of the origin's/);

  const ahead = await origin(t, { dateOffsetMs: 20_000 });
  const warn = await doctor(t, { COVE_UPSTREAM: ahead.url });
  t.equal(warn.code, 0, 'a warning does not fail the run');
  t.equal(warn.check('clock').status, 'warn');
  t.match(warn.check('clock').message, /^this host's clock is (19|20|21) s behind the origin's/);
});

t.test('a configuration error is a failed check with its message, not a crash', async (t) => {
  const run = await doctor(t, { COVE_UPSTREAM: undefined });
  t.equal(run.code, 1);
  t.equal(run.stderr, '');
  t.equal(run.check('config').status, 'fail');
  t.match(run.check('config').message, /^COVE_UPSTREAM is required/);
  t.equal(run.check('data-dir').status, 'ok', 'the data directory is still checked');
  t.equal(run.check('other checks').status, 'skip');

  const badTimeout = await doctor(t, { COVE_UPSTREAM: 'http://127.0.0.1:1', COVE_UPSTREAM_TIMEOUT: 'soon' });
  t.equal(badTimeout.code, 1);
  t.match(badTimeout.check('config').message, /COVE_UPSTREAM_TIMEOUT/);
});

t.test('TLS: an origin whose certificate is not trusted names COVE_UPSTREAM_CA; with it the origin passes', { skip: spawnSync('openssl', ['version']).status === 0 ? false : 'openssl not installed' }, async (t) => {
  const dir = tempDir(t);
  const { cert, key } = makeCert(dir, 'origin', { san: 'IP:127.0.0.1', days: 30 });
  const server = createHttpsServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
    res.writeHead(req.url === '/v2/' ? 200 : 404, { 'content-type': 'application/json' });
    res.end('{}');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise((resolve) => server.close(resolve)));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const untrusted = await doctor(t, { COVE_UPSTREAM: url });
  t.equal(untrusted.code, 1);
  t.match(untrusted.check('origin').message, /^the TLS certificate of the origin at https:\/\/127\.0\.0\.1:\d+ is not trusted here \(DEPTH_ZERO_SELF_SIGNED_CERT\); give its CA certificate \(PEM\) in COVE_UPSTREAM_CA/);
  const trusted = await doctor(t, { COVE_UPSTREAM: url, COVE_UPSTREAM_CA: cert });
  t.equal(trusted.code, 0, 'exit 0', { stdout: trusted.stdout });
  t.equal(trusted.check('origin').status, 'ok');

  const plain = await origin(t);
  const mixed = await doctor(t, { COVE_UPSTREAM: plain.url.replace('http:', 'https:') });
  t.equal(mixed.code, 1);
  t.match(mixed.check('origin').message, /does not speak TLS on port \d+/);
});
