// `cove doctor` reads the service's settings as systemd would hand them to `cove serve`: the
// EnvironmentFile's variables and the unit's credentials (LoadCredential=, SetCredential= as the
// stand-in, drop-ins on top), and only for the unit that reads that file.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { loadConfig } from '../../src/config.js';
import { ConfigError } from '../../src/errors.js';
import { parseEnvironmentFile, serviceEnvironment } from '../../src/doctor/service-env.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { ROOT } from '../e2e/real.js';
import { doctor, tempDir } from './helpers.js';

t.test('environment files: the example, quotes, comments, and a bad line named by number', async (t) => {
  const example = parseEnvironmentFile(readFileSync(join(ROOT, 'systemd', 'cove.env.example'), 'utf8'), 'cove.env.example');
  t.same(example, { COVE_UPSTREAM: 'https://harbor.example.com' }, 'the example sets only the origin; its commented lines are comments');
  t.same(parseEnvironmentFile(`# c\n; c\n\nA='robot$edge'\nB="say \\"hi\\""\nexport C=plain\n`, 'f'), { A: 'robot$edge', B: 'say "hi"', C: 'plain' });
  t.throws(() => parseEnvironmentFile('A=1\nthis is not a variable\n', '/etc/cove/cove.env'), new ConfigError('/etc/cove/cove.env line 2: expected VARIABLE=value, found "this is not a variable"'));
});

t.test("the unit's credentials: LoadCredential= files, SetCredential= where one is missing, drop-ins, only for the unit that reads the file", async (t) => {
  const dir = tempDir(t);
  const envFile = join(dir, 'cove.env');
  writeFileSync(envFile, "COVE_UPSTREAM=https://harbor.test\nCOVE_UPSTREAM_USERNAME='robot$edge'\nCOVE_UPSTREAM_PASSWORD_FILE=origin-password\n");
  const password = join(dir, 'origin-password');
  writeFileSync(password, 's3cret\n', { mode: 0o600 });
  const lib = join(dir, 'lib.service');
  const etc = join(dir, 'etc.service');
  const dropIns = join(dir, 'cove.service.d');
  mkdirSync(dropIns);
  const unit = (env: string) => `[Service]\nEnvironmentFile=-${env}\nLoadCredential=origin-password:${password}\nSetCredential=origin-password:\\n\n`;
  writeFileSync(lib, unit(envFile));
  writeFileSync(join(dropIns, 'peer.conf'), `[Service]\nLoadCredential=cove-peer-key:${join(dir, 'peer-key')}\n`);
  writeFileSync(join(dir, 'peer-key'), 'k'.repeat(32));

  const service = serviceEnvironment(envFile, [lib, etc], dropIns);
  const creds = service.env.CREDENTIALS_DIRECTORY!;
  t.ok(creds !== undefined && creds !== process.env.CREDENTIALS_DIRECTORY, 'a credentials directory of its own');
  t.equal(readFileSync(join(creds, 'origin-password'), 'utf8'), 's3cret\n', 'origin-password is the LoadCredential= file');
  t.equal(readFileSync(join(creds, 'cove-peer-key'), 'utf8'), 'k'.repeat(32), "a drop-in's credential is there too");
  const config = loadConfig({ env: service.env });
  t.equal(config.upstreams[0]!.username, 'robot$edge', "the user name from the file, $ kept by the single quotes");
  t.equal(config.upstreams[0]!.password, 's3cret', 'the password through the credential, as cove serve reads it under systemd');
  service.dispose();
  t.notOk(existsSync(creds), 'the credentials directory is removed after');

  const missing = serviceEnvironment(envFile, [lib.replace('lib', 'none')], dropIns);
  t.equal(missing.env.CREDENTIALS_DIRECTORY, undefined, 'no unit: no credentials directory');
  missing.dispose();

  // /etc's unit replaces /lib's; this one reads another file: not the service being checked.
  writeFileSync(etc, unit('/etc/other/cove.env'));
  const other = serviceEnvironment(envFile, [lib, etc], dropIns);
  t.equal(other.env.CREDENTIALS_DIRECTORY, undefined, "a unit reading another env file lends no credentials");
  t.throws(() => loadConfig({ env: other.env }), /COVE_UPSTREAM_PASSWORD_FILE: .*origin-password" cannot be read/, 'so the relative password file is not found, and the config check says so');
  other.dispose();

  // The file LoadCredential= names is missing: the unit's SetCredential= stand-in is empty, as under systemd.
  writeFileSync(etc, unit(envFile).replace(password, join(dir, 'absent')));
  const standIn = serviceEnvironment(envFile, [lib, etc], dropIns);
  t.equal(readFileSync(join(standIn.env.CREDENTIALS_DIRECTORY!, 'origin-password'), 'utf8'), '\n', 'SetCredential= stands in');
  t.throws(() => loadConfig({ env: standIn.env }), /origin-password" is empty/, 'and cove serve would stop on an empty password');
  standIn.dispose();
});

t.test('cove doctor --settings: the settings come from the file, this shell on top, and the report names the file', async (t) => {
  const o = await OriginRegistry.start({ auth: 'basic', username: 'edge', password: 'right-password' });
  t.teardown(() => o.close());
  const dir = tempDir(t);
  const good = join(dir, 'good.env');
  writeFileSync(good, `COVE_UPSTREAM=${o.url}\nCOVE_UPSTREAM_USERNAME=edge\nCOVE_UPSTREAM_PASSWORD='right-password'\n`);
  const ok = await doctor(t, {}, ['--settings', good]);
  t.equal(ok.check('origin').status, 'ok', ok.check('origin').message);
  t.match(ok.check('config').message, new RegExp(`settings from ${good.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`));
  t.equal(ok.code, 0);

  const shell = await doctor(t, { COVE_UPSTREAM_PASSWORD: 'wrong' }, ['--settings', good]);
  t.equal(shell.check('origin').status, 'fail', "this shell's COVE_* wins over the file");
  t.match(shell.check('origin').message, /^credentials refused/);

  const broken = join(dir, 'broken.env');
  writeFileSync(broken, 'COVE_UPSTREAM http://nowhere\n');
  const bad = await doctor(t, {}, ['--settings', broken], { json: false });
  t.equal(bad.code, 2, 'a settings file that does not parse is a usage error');
  t.match(bad.stderr, /broken\.env line 1: expected VARIABLE=value/);
  t.notMatch(bad.stderr, /\n\s+at /, 'no stack trace');

  const absent = await doctor(t, {}, ['--settings', join(dir, 'absent.env')], { json: false });
  t.equal(absent.code, 2);
  t.match(absent.stderr, /--settings .*absent\.env cannot be read \(ENOENT\)/);

  // The package's cove.env is 0600 root: another user is told to run the doctor as root.
  if (process.getuid?.() === 0) {
    chmodSync(good, 0o600);
    const denied = spawnSync(process.execPath, [join(ROOT, 'dist', 'src', 'cli.js'), 'doctor', '--settings', good], { uid: 65534, gid: 65534, encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
    t.equal(denied.status, 2, 'a settings file this user may not read is a usage error');
    t.match(denied.stderr, /cannot be read \(EACCES\): it is root's alone .*run cove doctor as root/);
  } else {
    t.comment('not root: the case of a settings file another user may not read is not run');
  }
});
