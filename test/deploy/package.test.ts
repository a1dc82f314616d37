// The amd64 Debian package on this machine, for real: `dpkg -i`, the installed `cove` (on its
// bundled Node.js, with no node on PATH) in front of a real docker-registry origin, a skopeo pull
// through it, `cove doctor` reading the service's settings and credential, an upgrade, `dpkg --remove`
// and `dpkg --purge`, and nothing of Cove left after.
//
// The package is built beforehand by `npm run package` (.ci/run does it): building needs the npm
// registry for the runtime, and tests reach only loopback.
//
// This machine's PID 1 is not systemd, so the maintainer scripts would skip every systemctl call.
// dpkg runs here in a mount namespace of its own where /run/systemd/system exists (a tmpfs over
// /run, seen only by dpkg and its scripts), with `systemctl` and `deb-systemd-invoke` on PATH
// replaced by stubs that record their arguments: the test reads what the scripts asked of systemd
// on install, upgrade, remove and purge. deb-systemd-helper is the real one (it only writes state
// files and links).
import t from 'tap';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, ROOT, buildImage, pushImage, requireFiles, requireRoot, requireTools, run, skopeoPull, startProc, startRegistry, tempDir, verifyDirCopy, waitFor, httpGet, Registry } from '../e2e/real.js';
import { freePort } from '../helpers/process.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const DEB = join(ROOT, 'build', `cove_${VERSION}_amd64.deb`);
const NODE_VERSION = 'v22.23.5';

/** Everything the package installs or its service makes, all gone after purge. */
const INSTALLED = ['/usr/bin/cove', '/usr/lib/cove', '/lib/systemd/system/cove.service', '/etc/cove', '/usr/share/doc/cove', '/usr/share/man/man1/cove.1.gz', '/usr/share/cove'];
const ENABLED_LINK = '/etc/systemd/system/multi-user.target.wants/cove.service';

const sha256File = (file: string) => `sha256:${createHash('sha256').update(readFileSync(file)).digest('hex')}`;

t.test('the amd64 package installs, serves a skopeo pull on its own node, upgrades, removes and purges cleanly', async (t) => {
  if (!requireFiles(t, [DEB], 'run npm run package first')) return;
  if (!requireRoot(t, 'dpkg -i')) return;
  if (!requireTools(t, ['dpkg', 'unshare', 'docker-registry', 'skopeo', 'umoci', 'systemctl', 'deb-systemd-helper'])) return;
  const installed = await run('dpkg-query', ['-W', '-f=${Status}', 'cove'], { allowFail: true });
  if (installed.stdout.includes('installed')) {
    t.fail(`a cove package is already installed on this machine (${installed.stdout}); the test will not replace it`);
    return;
  }
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup, 'cove-deb-');
  // Whatever happens, the machine ends without Cove's package, its data or its links.
  cleanup.add(async () => {
    await run('dpkg', ['--purge', 'cove'], { allowFail: true });
    rmSync('/var/lib/cove', { recursive: true, force: true });
    rmSync(ENABLED_LINK, { force: true });
  });

  const stubs = join(work, 'stubs');
  const calls = join(work, 'calls.log');
  mkdirSync(stubs);
  for (const name of ['systemctl', 'deb-systemd-invoke']) {
    writeFileSync(join(stubs, name), `#!/bin/sh\necho "${name} $*" >> ${calls}\n`);
    chmodSync(join(stubs, name), 0o755);
  }
  const takeCalls = () => {
    const text = existsSync(calls) ? readFileSync(calls, 'utf8') : '';
    rmSync(calls, { force: true });
    return text.split('\n').filter((l) => l !== '');
  };
  /** dpkg with /run/systemd/system present and the systemd stubs first on PATH, in a private mount namespace. */
  const dpkg = (...args: string[]) =>
    run('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', 'mount -t tmpfs cove-test /run && mkdir -p /run/systemd/system && exec "$@"', 'sh', 'dpkg', '--force-confold', ...args], {
      env: { ...process.env, PATH: `${stubs}:/usr/sbin:/usr/bin:/sbin:/bin`, DEBIAN_FRONTEND: 'noninteractive' },
      timeoutMs: 180_000,
    });

  // ---- install
  await dpkg('-i', DEB);
  t.same(takeCalls(), ['systemctl --system daemon-reload'], 'install: systemd reloads units, and nothing is enabled, started or restarted');
  t.notOk(existsSync(ENABLED_LINK), 'install: the service is not enabled');
  t.notOk(existsSync('/var/lib/cove'), 'install: nothing in /var/lib/cove before the service starts');
  for (const path of INSTALLED) t.ok(existsSync(path), `install: ${path} exists`);
  const env = statSync('/etc/cove/cove.env');
  t.equal(env.mode & 0o777, 0o600, '/etc/cove/cove.env is for root only');
  t.equal(readFileSync('/etc/cove/cove.env', 'utf8'), readFileSync(join(ROOT, 'systemd', 'cove.env.example'), 'utf8'), 'cove.env is the commented example');
  t.equal((await run('dpkg-query', ['--control-show', 'cove', 'conffiles'])).stdout.trim(), '/etc/cove/cove.env', 'cove.env is the one conffile');
  const unit = readFileSync('/lib/systemd/system/cove.service', 'utf8');
  t.match(unit, /^ExecStart=\/usr\/lib\/cove\/node \/usr\/lib\/cove\/dist\/src\/cli\.js serve$/m, 'the unit runs Cove on the bundled node');
  t.match(unit, /^ProtectSystem=strict$/m, 'the unit is the hardened one');
  const verify = await run('systemd-analyze', ['verify', '/lib/systemd/system/cove.service'], { allowFail: true });
  t.equal(verify.code, 0, `systemd-analyze verify accepts the installed unit: ${verify.stderr}`);

  // ---- the installed command, with no node anywhere on PATH
  const bare = { PATH: '/nonexistent', HOME: work };
  t.equal((await run('/usr/bin/cove', ['--version'], { env: bare })).stdout.trim(), VERSION, 'cove --version, with no node on PATH');
  t.equal((await run('/usr/lib/cove/node', ['--version'], { env: bare })).stdout.trim(), NODE_VERSION, 'the bundled runtime is the pinned Node.js');

  // ---- a pull through the installed Cove from a real registry behind Basic auth
  const auth = { username: 'cove', password: 'deb-secret' };
  const origin = await startRegistry(cleanup, { auth });
  const image = await buildImage(join(work, 'layout'), 'app', [1_200_000, 2_100_000], 'deb-package');
  await pushImage(image, origin, 'proj/app:1');
  const port = await freePort();
  const dataDir = join(work, 'data');
  const cove = startProc(cleanup, 'installed cove', '/usr/bin/cove', ['serve'], {
    logFile: join(work, 'cove.log'),
    env: {
      ...bare,
      COVE_LISTEN: `127.0.0.1:${port}`,
      COVE_DATA_DIR: dataDir,
      COVE_UPSTREAM: origin.url,
      COVE_UPSTREAM_USERNAME: auth.username,
      COVE_UPSTREAM_PASSWORD: auth.password,
      COVE_SHUTDOWN_GRACE: '1s',
    },
    graceMs: 8000,
  });
  await waitFor(`the installed Cove on port ${port} (log ${cove.logFile})`, async () => {
    if (!cove.running) throw new Error(`the installed Cove exited: ${cove.tail()}`);
    return httpGet(`http://127.0.0.1:${port}/healthz`, { timeoutMs: 1000 }).then((r) => r.status === 200, () => false);
  });
  t.equal(readlinkSync(`/proc/${cove.pid}/exe`), '/usr/lib/cove/node', 'the daemon runs on the bundled node');
  for (const round of ['cold', 'warm']) {
    origin.markNow();
    await skopeoPull(`127.0.0.1:${port}/proj/app:1`, join(work, round));
    const copy = verifyDirCopy(join(work, round));
    t.same(copy.problems, [], `${round} pull: every blob hashes to its name and matches the manifest`);
    t.equal(sha256File(join(work, round, 'manifest.json')), image.manifestDigest, `${round} pull: the pushed manifest, byte for byte`);
    t.same(copy.manifest.layers.map((l) => l.digest), image.layers.map((l) => l.digest), `${round} pull: the pushed layers`);
    t.equal(Registry.blobGets(origin.since()).requests, round === 'cold' ? 1 + image.layers.length : 0, `${round} pull: ${round === 'cold' ? 'one origin GET per blob' : 'no blob from the origin'}`);
  }
  await cove.stop();

  // ---- cove doctor as an operator runs it: the service's settings from /etc/cove/cove.env, the
  // password through the unit's LoadCredential=origin-password:/etc/cove/origin-password.
  writeFileSync('/etc/cove/cove.env', `COVE_UPSTREAM=${origin.url}\nCOVE_UPSTREAM_USERNAME=${auth.username}\nCOVE_UPSTREAM_PASSWORD_FILE=origin-password\n`, { mode: 0o600 });
  writeFileSync('/etc/cove/origin-password', `${auth.password}\n`, { mode: 0o600 });
  const clientRoot = join(work, 'client-root');
  mkdirSync(clientRoot);
  const doctorRun = await run('/usr/bin/cove', ['doctor', '--json', '--root', clientRoot, '--min-free', '1MiB'], { env: bare, allowFail: true });
  const report = JSON.parse(doctorRun.stdout) as { ok: boolean; checks: Array<{ name: string; status: string; message: string }> };
  const check = (name: string) => report.checks.find((c) => c.name === name);
  t.equal(check('config')?.status, 'ok', `doctor: the service's settings load (${check('config')?.message})`);
  t.match(check('config')?.message, /settings from \/etc\/cove\/cove\.env$/, 'doctor: read from /etc/cove/cove.env');
  t.equal(check('origin')?.status, 'ok', `doctor: the origin takes the password handed over as the unit's credential (${check('origin')?.message})`);
  t.equal(doctorRun.code, 0, `doctor: exit 0 (${report.checks.filter((c) => c.status === 'fail').map((c) => `${c.name}: ${c.message}`).join('; ')})`);
  writeFileSync('/etc/cove/origin-password', 'wrong\n');
  const refused = await run('/usr/bin/cove', ['doctor', '--json', '--root', clientRoot, '--min-free', '1MiB'], { env: bare, allowFail: true });
  t.equal(refused.code, 1, 'doctor: exit 1 with a wrong password in the credential file');
  t.match(refused.stdout, /credentials refused/, 'doctor: says the credentials were refused');

  // ---- upgrade: the same files as a later version; local settings kept, a running service restarted once
  writeFileSync('/etc/cove/cove.env', `${readFileSync('/etc/cove/cove.env', 'utf8')}COVE_TAG_TTL=7m\n`);
  const upgrade = join(work, 'upgrade');
  await run('dpkg-deb', ['-R', DEB, upgrade]);
  const control = join(upgrade, 'DEBIAN', 'control');
  writeFileSync(control, readFileSync(control, 'utf8').replace(/^Version: .*$/m, `Version: ${VERSION}+test1`));
  await run('dpkg-deb', ['--root-owner-group', '-Zgzip', '-z1', '--build', upgrade, join(work, 'upgrade.deb')], { timeoutMs: 180_000 });
  await dpkg('-i', join(work, 'upgrade.deb'));
  t.same(takeCalls(), ['systemctl --system daemon-reload', 'deb-systemd-invoke try-restart cove.service'], 'upgrade: one try-restart (a stopped service stays stopped), no stop before it');
  t.match(readFileSync('/etc/cove/cove.env', 'utf8'), /^COVE_TAG_TTL=7m$/m, 'upgrade: the edited cove.env is kept');
  t.equal((await run('dpkg-query', ['-W', '-f=${Version}', 'cove'])).stdout, `${VERSION}+test1`, 'upgrade: the new version is installed');

  // ---- the operator enables the service; it ran and made a cache; then remove
  await run('systemctl', ['enable', 'cove.service'], { allowFail: true });
  t.ok(lstatSync(ENABLED_LINK).isSymbolicLink(), 'systemctl enable made the wants link');
  mkdirSync('/var/lib/cove/blobs', { recursive: true });
  writeFileSync('/var/lib/cove/blobs/kept', 'cache');
  mkdirSync('/etc/cove/tls', { recursive: true });
  writeFileSync('/etc/cove/tls/server.crt', 'certificate');
  await dpkg('--remove', 'cove');
  t.same(takeCalls(), ['deb-systemd-invoke stop cove.service', 'systemctl --system daemon-reload'], 'remove: the service is stopped, units reloaded');
  for (const path of ['/usr/bin/cove', '/usr/lib/cove', '/lib/systemd/system/cove.service']) t.notOk(existsSync(path), `remove: ${path} is gone`);
  t.match(readFileSync('/etc/cove/cove.env', 'utf8'), /^COVE_TAG_TTL=7m$/m, 'remove: settings kept');
  t.equal(readFileSync('/var/lib/cove/blobs/kept', 'utf8'), 'cache', 'remove: the cache is kept');

  // ---- purge
  await dpkg('--purge', 'cove');
  const purgeCalls = takeCalls();
  t.ok(purgeCalls.length > 0 && purgeCalls.every((c) => /^systemctl (--system )?daemon-reload$/.test(c)), `purge: units reloaded, nothing else (${purgeCalls.join('; ')})`);
  for (const path of [...INSTALLED, '/var/lib/cove', '/var/lib/private/cove', ENABLED_LINK, '/var/lib/systemd/deb-systemd-helper-enabled/cove.service.dsh-also']) {
    t.notOk(existsSync(path) || isDanglingLink(path), `purge: ${path} is gone`);
  }
  const status = await run('dpkg-query', ['-W', '-f=${Status}', 'cove'], { allowFail: true });
  t.notMatch(status.stdout, /installed|config-files/, `purge: dpkg knows no cove (${status.stdout || status.stderr.trim()})`);
});

function isDanglingLink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}
