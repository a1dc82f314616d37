// systemd/cove.service as systemd itself reads it: `systemd-analyze verify` must accept it without
// one warning, and `systemd-analyze security` must rate its sandbox at most MAX_EXPOSURE.
//
// How the unit is verified: `verify` checks that ExecStart='s program exists, and the unit names
// /usr/bin/node and /opt/cove, which a CI machine need not have (and which this test must not
// create). So both commands run on a copy of the unit in a temp dir whose ExecStart points at the
// node running this test and at this checkout's dist/src/cli.js; every other line is the shipped
// one. (`--root=DIR` was the alternative, but it needs a whole scratch root holding node, and
// `security --offline` reads the file the same way.) scripts/install.sh performs the same
// one-line ExecStart substitution when node is not /usr/bin/node.
//
// systemd-analyze comes with Debian's `systemd` package; without it these tests skip, except
// under CI, where they fail.
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DEFAULTS } from '../../src/config.js';
import { parseDuration } from '../../src/units.js';
import { ROOT, which } from '../e2e/real.js';

/** systemd 252 (Debian 12) rates the unit 1.2 "OK"; a little headroom for newer systemd's checks. */
const MAX_EXPOSURE = 1.5;

const UNIT_FILE = join(ROOT, 'systemd', 'cove.service');
const SHIPPED_EXEC = 'ExecStart=/usr/bin/node /opt/cove/dist/src/cli.js serve';
const CLI = join(ROOT, 'dist', 'src', 'cli.js');
const unitText = readFileSync(UNIT_FILE, 'utf8');

/** Under CI a missing tool fails; elsewhere the test is a visible skip naming the package. */
function haveSystemdAnalyze(t: Test): boolean {
  if (which('systemd-analyze') !== null) return true;
  const reason = 'systemd-analyze not installed (apt-get install systemd)';
  const ci = process.env.CI;
  if (ci && ci !== 'false' && ci !== '0') t.fail(`${reason} (CI is set, so this is a failure, not a skip)`);
  else t.pass('systemd-analyze present', { skip: reason });
  return false;
}

/** The shipped unit with ExecStart pointed at this node and this checkout, in a fresh temp dir. */
function unitCopy(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'cove-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'cove.service'); // the name matters: the unit is "cove.service"
  writeFileSync(file, unitText.replace(SHIPPED_EXEC, `ExecStart=${process.execPath} ${CLI} serve`));
  return file;
}

/** Lines of systemd-analyze's stderr that are about our unit (anything else is host noise). */
const aboutUnit = (stderr: string) => stderr.split('\n').filter((l) => /cove\.service|cove-unit-/.test(l));

/** Every value of KEY= in the unit, in order. */
const values = (key: string) =>
  [...unitText.matchAll(new RegExp(`^${key}=(.*)$`, 'gm'))].map((m) => m[1]!.trim());

t.test('the unit keeps what install.sh, the README and Cove rely on', async (t) => {
  t.equal(values('ExecStart').length, 1, 'one ExecStart=');
  t.equal(`ExecStart=${values('ExecStart')[0]}`, SHIPPED_EXEC, 'ExecStart is the line install.sh adapts');
  t.ok(existsSync(CLI), 'dist/src/cli.js is built (npx tsc -p tsconfig.json)');
  t.ok(
    values('Environment').some((v) => /^"?NODE_OPTIONS=.*--max-semi-space-size=1\b/.test(v)),
    'NODE_OPTIONS carries --max-semi-space-size=1',
  );
  t.ok(values('LoadCredential').includes('origin-password:/etc/cove/origin-password'), 'credential "origin-password" (COVE_UPSTREAM_PASSWORD_FILE=origin-password)');
  t.same(values('DynamicUser'), ['yes'], 'DynamicUser=yes');
  t.same(values('StateDirectory'), ['cove'], 'StateDirectory=cove (Cove defaults to $STATE_DIRECTORY)');
  t.same(values('RuntimeDirectory'), ['cove'], 'RuntimeDirectory=cove: the admin socket goes to $RUNTIME_DIRECTORY (/run/cove, where the cove command looks)');
  t.same(values('RuntimeDirectoryMode'), ['0700'], 'RuntimeDirectoryMode=0700: only Cove\'s user (and root) reach the admin socket');
  t.same(values('EnvironmentFile'), ['-/etc/cove/cove.env'], 'optional EnvironmentFile /etc/cove/cove.env');
  t.same(values('CapabilityBoundingSet'), [''], 'no capabilities');
  t.same(values('RestrictAddressFamilies'), ['AF_INET AF_INET6 AF_UNIX AF_NETLINK'], 'AF_NETLINK stays for mDNS interface listing');
  t.same(values('MemoryDenyWriteExecute'), [], 'no MemoryDenyWriteExecute= (V8 JIT)');
  const stopMs = parseDuration(values('TimeoutStopSec')[0] ?? '90s');
  const graceMs = parseDuration(DEFAULTS.shutdownGrace);
  t.ok(stopMs > graceMs, `TimeoutStopSec (${stopMs} ms) is above COVE_SHUTDOWN_GRACE's default (${graceMs} ms)`);
  t.same(values('MemoryMax'), ['1G'], 'MemoryMax=1G: a leak or a flood cannot take the node');
  t.same(values('TasksMax'), ['256'], 'TasksMax=256');
  t.same(values('LimitNOFILE'), ['65536'], 'LimitNOFILE=65536');
  t.same(values('UMask'), ['0077'], 'UMask=0077');
});

t.test('systemd-analyze verify accepts the unit without a warning', async (t) => {
  if (!haveSystemdAnalyze(t)) return;
  const file = unitCopy(t);
  const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8', timeout: 30_000 });
  if (r.stderr.trim()) t.comment(`systemd-analyze verify said:\n${r.stderr}`);
  t.equal(r.status, 0, 'verify exits 0');
  t.same(aboutUnit(r.stderr), [], 'no warning about cove.service');
});

t.test(`systemd-analyze security rates the sandbox at most ${MAX_EXPOSURE}`, async (t) => {
  if (!haveSystemdAnalyze(t)) return;
  const file = unitCopy(t);
  // --offline=true (systemd >= 252) reads the unit file instead of asking a running systemd.
  const r = spawnSync('systemd-analyze', ['security', '--offline=true', '--no-pager', file], {
    encoding: 'utf8',
    timeout: 30_000,
  });
  t.equal(r.status, 0, `systemd-analyze security --offline=true exits 0 ${r.status === 0 ? '' : r.stderr}`);
  t.same(aboutUnit(r.stderr), [], 'no warning about cove.service');
  const m = /Overall exposure level for cove\.service: (\d+(?:\.\d+)?) (\S+)/.exec(r.stdout);
  if (!m) {
    t.fail(`no "Overall exposure level" line in:\n${r.stdout}`);
    return;
  }
  const score = Number(m[1]);
  t.comment(`exposure ${score} ${m[2]}`);
  t.ok(score <= MAX_EXPOSURE, `exposure ${score} ${m[2]} is at most ${MAX_EXPOSURE}`);
  const open = r.stdout.split('\n').filter((l) => l.startsWith('✗'));
  t.comment(`still open:\n${open.map((l) => l.replace(/\s{2,}/g, '  ')).join('\n')}`);
});
