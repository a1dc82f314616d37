// scripts/install.sh into a scratch root (DESTDIR in a temp dir): never the machine's own /etc,
// /opt or systemd. Runs the real script on this checkout's dist build (npx tsc -p tsconfig.json
// first), with `systemctl` and `npm` on PATH replaced by stubs that only record being called:
// with DESTDIR set, the script must call neither.
//
// Dependencies: instead of `npm ci` (network, or an npm cache that may not hold every package),
// the test copies this checkout's production packages (the lock file's non-dev entries) into the
// scratch /opt/cove/node_modules and runs the script with --skip-npm. The script's start-up
// check (`node cli.js --version`, which loads every module, LevelDB's binding included) then
// proves the copy is complete.
import t, { type Test } from 'tap';
import { spawnSync } from 'node:child_process';
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { ROOT } from '../e2e/real.js';
import { productionPackages } from '../../scripts/package/tree.js';

const SCRIPT = join(ROOT, 'scripts', 'install.sh');
const UNIT_SRC = readFileSync(join(ROOT, 'systemd', 'cove.service'), 'utf8');
const ENV_EXAMPLE = readFileSync(join(ROOT, 'systemd', 'cove.env.example'), 'utf8');

function scratch(t: Test, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A bin dir with systemctl and npm stubs that append their arguments to calls.log. */
function stubs(t: Test): { bin: string; calls: () => string } {
  const bin = scratch(t, 'cove-stubs-');
  const log = join(bin, 'calls.log');
  for (const name of ['systemctl', 'npm']) {
    writeFileSync(join(bin, name), `#!/bin/sh\necho "${name} $*" >> '${log}'\nexit 0\n`);
    chmodSync(join(bin, name), 0o755);
  }
  return { bin, calls: () => (existsSync(log) ? readFileSync(log, 'utf8') : '') };
}

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

function install(destdir: string, bin: string, args: string[], env: Record<string, string> = {}): Run {
  const r = spawnSync('bash', [SCRIPT, ...args], {
    encoding: 'utf8',
    timeout: 60_000,
    env: {
      ...process.env,
      PATH: `${bin}:${process.env.PATH ?? '/usr/bin:/bin'}`,
      DESTDIR: destdir,
      COVE_NODE: process.execPath,
      ...env,
    },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const shown = (r: Run) => `exit ${r.status}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;

// The lock file's production packages, copied once from this checkout into a temp template;
// each scratch root then gets hard links to it (cp -al), which takes no time.
let template: { dir: string; packages: number } | null = null;
function productionModules(): { dir: string; packages: number } {
  if (template) return template;
  const dir = mkdtempSync(join(tmpdir(), 'cove-modules-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let packages = 0;
  for (const path of productionPackages(ROOT)) {
    const from = join(ROOT, path);
    if (!existsSync(from)) continue; // an optional package for another platform; the start-up check catches real gaps
    cpSync(from, join(dir, path), { recursive: true });
    packages++;
  }
  template = { dir, packages };
  return template;
}

/** Puts the production node_modules into DIR (an /opt/cove), as an admin using --skip-npm would. */
function copyProductionModules(dir: string): number {
  const { dir: from, packages } = productionModules();
  mkdirSync(dir, { recursive: true });
  const r = spawnSync('cp', ['-al', join(from, 'node_modules'), dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cp -al failed: ${r.stderr}`);
  return packages;
}

/** path -> size, mode and mtime of every file under DIR (to prove a run changed nothing). */
function snapshot(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      const s = statSync(p);
      out.set(relative(dir, p), `${e.isDirectory() ? 'd' : 'f'} ${s.size} ${s.mode.toString(8)} ${s.mtimeMs}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out;
}

const modeOf = (p: string) => (statSync(p).mode & 0o777).toString(8);

t.test('install into a scratch root, again (no-op), uninstall, reinstall over a kept cove.env, purge', async (t) => {
  if (!existsSync(join(ROOT, 'dist', 'src', 'cli.js'))) {
    t.fail('dist/src/cli.js is missing: build first (npx tsc -p tsconfig.json)');
    return;
  }
  const root = scratch(t, 'cove-root-');
  const { bin, calls } = stubs(t);
  const opt = join(root, 'opt', 'cove');
  const envFile = join(root, 'etc', 'cove', 'cove.env');
  const unitFile = join(root, 'etc', 'systemd', 'system', 'cove.service');
  const expectedUnit = UNIT_SRC.replace('ExecStart=/usr/bin/node ', `ExecStart=${process.execPath} `);

  t.ok(copyProductionModules(opt) > 0, 'production node_modules copied into the scratch /opt/cove');

  // First run: everything is created.
  let r = install(root, bin, ['--skip-npm']);
  t.equal(r.status, 0, `first run succeeds\n${r.status === 0 ? '' : shown(r)}`);
  for (const f of ['package.json', 'package-lock.json', 'dist/src/cli.js', 'config/cove.example.json', 'systemd/cove.service', 'systemd/cove.env.example', '.cove-install']) {
    t.ok(existsSync(join(opt, f)), `/opt/cove/${f}`);
  }
  t.equal(readFileSync(join(opt, 'dist/src/cli.js'), 'utf8'), readFileSync(join(ROOT, 'dist/src/cli.js'), 'utf8'), 'cli.js is the built one');
  t.notOk(existsSync(join(opt, 'src')) || existsSync(join(opt, 'test')) || existsSync(join(opt, 'dist/test')), 'no sources or tests installed');
  t.equal(readFileSync(envFile, 'utf8'), ENV_EXAMPLE, '/etc/cove/cove.env made from systemd/cove.env.example');
  t.equal(modeOf(envFile), '600', 'cove.env is 0600 (it may hold secrets)');
  t.equal(readFileSync(unitFile, 'utf8'), expectedUnit, 'unit installed, ExecStart on the checked node');
  t.equal(modeOf(unitFile), '644', 'unit is 0644');
  t.match(r.stdout, /DESTDIR is set: systemd left alone/, 'says systemd is left alone');
  t.equal(calls(), '', 'neither systemctl nor npm was called');

  // Second run: nothing changes, and it says so.
  const before = snapshot(root);
  r = install(root, bin, ['--skip-npm']);
  t.equal(r.status, 0, `second run succeeds\n${r.status === 0 ? '' : shown(r)}`);
  t.match(r.stdout, /nothing to do: Cove is already installed and up to date/, 'second run says nothing to do');
  t.same(snapshot(root), before, 'second run touched no file (sizes, modes, mtimes)');

  // A file the build no longer has is removed on the next run (an upgrade leaves no stale modules).
  writeFileSync(join(opt, 'dist/src/stale-module.js'), 'export {};\n');
  r = install(root, bin, ['--skip-npm']);
  t.equal(r.status, 0, 'run after a stale file appeared succeeds');
  t.notOk(existsSync(join(opt, 'dist/src/stale-module.js')), 'stale file removed');
  t.match(r.stdout, /updated 1 file\(s\)/, 'and reported');

  // Uninstall keeps settings and the cache.
  mkdirSync(join(root, 'var/lib/private/cove'), { recursive: true });
  writeFileSync(join(root, 'var/lib/private/cove/node-id'), 'edge-1\n');
  r = install(root, bin, ['--uninstall']);
  t.equal(r.status, 0, `uninstall succeeds\n${r.status === 0 ? '' : shown(r)}`);
  t.notOk(existsSync(opt), '/opt/cove removed');
  t.notOk(existsSync(unitFile), 'unit removed');
  t.ok(existsSync(envFile), 'cove.env kept');
  t.ok(existsSync(join(root, 'var/lib/private/cove/node-id')), 'cache kept');
  t.match(r.stdout, /kept .*cove\.env/, 'says cove.env was kept');
  r = install(root, bin, ['--uninstall']);
  t.equal(r.status, 0, 'second uninstall succeeds');
  t.match(r.stdout, /nothing to do: Cove is not installed/, 'second uninstall says nothing to do');

  // Reinstall over the kept (edited) cove.env: it is not overwritten, even with --upstream.
  const mine = "COVE_UPSTREAM=https://harbor.edge.example\nCOVE_UPSTREAM_USERNAME='robot$edge'\n";
  writeFileSync(envFile, mine, { mode: 0o640 });
  chmodSync(envFile, 0o640);
  copyProductionModules(opt);
  r = install(root, bin, ['--skip-npm', '--upstream', 'https://other.example']);
  t.equal(r.status, 0, `reinstall succeeds\n${r.status === 0 ? '' : shown(r)}`);
  t.equal(readFileSync(envFile, 'utf8'), mine, 'existing cove.env not overwritten');
  t.equal(modeOf(envFile), '640', 'nor its mode changed');
  t.match(r.stdout, /kept the existing .*cove\.env/, 'says it kept cove.env');
  t.notMatch(r.stdout, /created .*cove\.env/, 'does not claim to have created it');
  t.ok(existsSync(unitFile) && existsSync(join(opt, 'dist/src/cli.js')), 'unit and code back');

  // Purge removes settings and cache too.
  r = install(root, bin, ['--uninstall', '--purge']);
  t.equal(r.status, 0, `purge succeeds\n${r.status === 0 ? '' : shown(r)}`);
  t.notOk(existsSync(envFile), 'cove.env removed');
  t.notOk(existsSync(join(root, 'etc/cove')), '/etc/cove removed (it was empty)');
  t.notOk(existsSync(join(root, 'var/lib/private/cove')), 'cache removed');
  t.equal(calls(), '', 'systemctl and npm were never called');
});

t.test('a fresh cove.env takes --upstream', async (t) => {
  const root = scratch(t, 'cove-root-');
  const { bin } = stubs(t);
  copyProductionModules(join(root, 'opt/cove'));
  const r = install(root, bin, ['--skip-npm', '--upstream', 'https://harbor.internal:8443']);
  t.equal(r.status, 0, `install succeeds\n${r.status === 0 ? '' : shown(r)}`);
  const env = readFileSync(join(root, 'etc/cove/cove.env'), 'utf8');
  t.match(env, /^COVE_UPSTREAM=https:\/\/harbor\.internal:8443$/m, 'COVE_UPSTREAM set');
  t.notMatch(env, /harbor\.example\.com/, 'placeholder gone');
});

t.test('refusals: clear message, non-zero exit, nothing written', async (t) => {
  const { bin, calls } = stubs(t);
  const cases: Array<{ name: string; args: string[]; env?: Record<string, string>; message: RegExp; setup?: (root: string, bin: string) => Record<string, string> | void }> = [
    { name: 'unknown argument', args: ['--frobnicate'], message: /unknown argument: --frobnicate/ },
    { name: '--purge without --uninstall', args: ['--purge'], message: /--purge goes with --uninstall/ },
    { name: 'bad --upstream', args: ['--upstream', 'harbor.example.com'], message: /--upstream must be an http/ },
    // Regression: a '|' ended the sed program and its 'e' flag ran the line as a root command.
    { name: '--upstream that would end a sed program', args: ['--upstream', 'http://x|e'], message: /--upstream must be an http/ },
    { name: '--upstream with a command substitution', args: ['--upstream', 'https://h/$(touch /tmp/cove-pwned)'], message: /--upstream must be an http/ },
    { name: '--upstream with a newline', args: ['--upstream', 'https://h\nCOVE_CLIENT_AUTH=open'], message: /--upstream must be an http/ },
    { name: 'COVE_NODE that would rewrite the unit', args: ['--skip-npm'], env: { COVE_NODE: '/usr/bin/node\nUser=root' }, message: /COVE_NODE must be a plain path/ },
    { name: 'bad COVE_NPM_CI', args: [], env: { COVE_NPM_CI: 'yes' }, message: /COVE_NPM_CI must be 0 or 1/ },
    {
      name: 'old node',
      args: ['--skip-npm'],
      message: /Node\.js 18\.19\.0; Cove needs >= 20\.18/,
      setup: (root) => {
        const fake = join(root, 'old-node');
        writeFileSync(fake, '#!/bin/sh\necho 18.19.0\n');
        chmodSync(fake, 0o755);
        return { COVE_NODE: fake };
      },
    },
    {
      name: 'unsupported machine',
      args: ['--skip-npm'],
      message: /unsupported machine 'armv7l'/,
      setup: (root) => {
        const dir = join(root, 'bin32');
        mkdirSync(dir);
        writeFileSync(join(dir, 'uname'), '#!/bin/sh\necho armv7l\n');
        chmodSync(join(dir, 'uname'), 0o755);
        return { PATH: `${dir}:${bin}:${process.env.PATH ?? ''}` };
      },
    },
    {
      name: '/opt/cove not made by the script',
      args: ['--skip-npm'],
      message: /exists and was not installed by this script/,
      setup: (root) => {
        mkdirSync(join(root, 'opt/cove'), { recursive: true });
        writeFileSync(join(root, 'opt/cove/precious'), 'x');
      },
    },
  ];
  for (const c of cases) {
    const root = scratch(t, 'cove-root-');
    const extra = c.setup?.(root, bin) ?? {};
    const before = snapshot(root);
    const r = install(root, bin, c.args, { ...c.env, ...extra });
    t.not(r.status, 0, `${c.name}: non-zero exit`);
    t.match(r.stderr, c.message, `${c.name}: says why`);
    t.same(snapshot(root), before, `${c.name}: nothing written`);
  }
  const help = install(scratch(t, 'cove-root-'), bin, ['--help']);
  t.equal(help.status, 0, '--help exits 0');
  t.match(help.stdout, /^Usage: scripts\/install\.sh/, '--help prints usage');
  t.equal(calls(), '', 'systemctl and npm were never called');
});
