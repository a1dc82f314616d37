// The files a Debian package of Cove installs, laid out under a staging root:
//
//   /usr/lib/cove/node                  the bundled Node.js runtime (stripped)
//   /usr/lib/cove/{package.json,dist/src} Cove's built code (no source maps, no type files)
//   /usr/lib/cove/node_modules          the lock file's production packages, LevelDB's prebuilt
//                                       binding for this architecture only
//   /usr/bin/cove                       the `cove` command, on the bundled runtime
//   /lib/systemd/system/cove.service    the hardened unit, ExecStart on the bundled runtime
//   /etc/cove/cove.env                  settings (a conffile)
//   /usr/share/cove/                    the example JSON config, Grafana dashboard, alert rules
//   /usr/share/doc/cove/, /usr/share/man/man1/cove.1.gz
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, dirname, join, relative } from 'node:path';
import { type DebArch, RUNTIMES } from './runtime.js';

export const PREFIX = '/usr/lib/cove';
export const UNIT_PATH = '/lib/systemd/system/cove.service';
export const ENV_PATH = '/etc/cove/cove.env';

/**
 * Files in npm packages that the running daemon never reads: docs, types, sources, tests, and the
 * addons some packages carry for the Bare runtime (`.bare`), which Node.js cannot load.
 */
const UNUSED_FILE = /(\.(md|markdown|html|map|d\.ts|d\.mts|d\.cts|ts|mts|cts|tsbuildinfo|gyp|gypi|cc|cpp|h|c|sh|bare)$)|(^(LICENSE|LICENCE|COPYING|NOTICE|AUTHORS|CHANGELOG|HISTORY)(\.[a-z]+)?$)|(^\.)/i;
const UNUSED_DIR = /^(test|tests|__tests__|docs?|example|examples|benchmark|benchmarks|\..*)$/i;

/** Writes a file with its parent directories, mode 0644 unless given. */
export function put(root: string, path: string, content: string | Buffer, mode = 0o644): void {
  const file = join(root, path);
  mkdirSync(dirname(file), { recursive: true, mode: 0o755 });
  writeFileSync(file, content, { mode });
}

/** The lock file's production packages (paths such as node_modules/level); test/deploy/install.test.ts copies the same list. */
export function productionPackages(repo: string): string[] {
  const lock = JSON.parse(readFileSync(join(repo, 'package-lock.json'), 'utf8')) as { packages: Record<string, { dev?: boolean; devOptional?: boolean }> };
  return Object.entries(lock.packages)
    .filter(([path, entry]) => path.startsWith('node_modules/') && entry.dev !== true && entry.devOptional !== true)
    .map(([path]) => path)
    .sort();
}

/**
 * Copies one npm package (without its nested node_modules, which are packages of their own) and
 * returns the licence texts it carries, which go into the copyright file instead of the tree.
 */
function copyPackage(repo: string, root: string, pkg: string): Array<{ file: string; text: string }> {
  const from = join(repo, pkg);
  if (!existsSync(from)) throw new Error(`${pkg} is in package-lock.json but not installed: run npm ci first`);
  const licences: Array<{ file: string; text: string }> = [];
  const to = join(root, PREFIX.slice(1), pkg);
  cpSync(from, to, {
    recursive: true,
    filter: (src) => {
      const rel = relative(from, src);
      if (rel === '') return true;
      const name = basename(src);
      const isDir = statSync(src).isDirectory();
      if (isDir) return !(rel.split('/')[0] === 'node_modules' || UNUSED_DIR.test(name));
      if (/^(LICENSE|LICENCE|COPYING|NOTICE)/i.test(name) && !rel.includes('/')) licences.push({ file: `${pkg}/${rel}`, text: readFileSync(src, 'utf8') });
      return !UNUSED_FILE.test(name);
    },
  });
  dropCommands(to);
  return licences;
}

/**
 * A package's own commands (package.json "bin", e.g. pino's and multicast-dns's CLIs): Cove never
 * runs them, and they would ask for a node on PATH that the host need not have.
 */
function dropCommands(dir: string): void {
  const manifest = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { bin?: string | Record<string, string>; main?: string };
  const bins = typeof manifest.bin === 'string' ? [manifest.bin] : Object.values(manifest.bin ?? {});
  const main = join(dir, manifest.main ?? 'index.js');
  for (const bin of bins) if (join(dir, bin) !== main) rmSync(join(dir, bin), { force: true });
}

/** LevelDB's binding: keep only the glibc build for this architecture, drop the C++ sources. */
function pruneLevelDb(root: string, arch: DebArch): void {
  const classic = join(root, PREFIX.slice(1), 'node_modules', 'classic-level');
  const prebuilds = join(classic, 'prebuilds');
  const keep = RUNTIMES[arch].leveldbPrebuild;
  if (!existsSync(join(prebuilds, keep))) throw new Error(`classic-level has no prebuilt binding for ${keep}`);
  for (const dir of readdirSync(prebuilds)) if (dir !== keep) rmSync(join(prebuilds, dir), { recursive: true });
  for (const file of readdirSync(join(prebuilds, keep))) if (file.includes('.musl.')) rmSync(join(prebuilds, keep, file));
  rmSync(join(classic, 'deps'), { recursive: true, force: true });
}

/** Cove's compiled code: the .js files of dist/src. */
function copyCode(repo: string, root: string): void {
  const from = join(repo, 'dist', 'src');
  if (!existsSync(join(from, 'cli.js'))) throw new Error('dist/src/cli.js is missing: run npm run build first');
  const to = join(root, PREFIX.slice(1), 'dist', 'src');
  cpSync(from, to, {
    recursive: true,
    filter: (src) => statSync(src).isDirectory() || src.endsWith('.js'),
  });
  // /usr/bin/cove runs cli.js with the bundled node; its `#!/usr/bin/env node` line would name a
  // node the host need not have.
  const cli = join(to, 'cli.js');
  writeFileSync(cli, readFileSync(cli, 'utf8').replace(/^#!.*\n/, ''));
  const pkg = JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as Record<string, unknown>;
  // What the running code reads of package.json: its version and that it is an ES module.
  put(root, `${PREFIX}/package.json`, `${JSON.stringify({ name: pkg.name, version: pkg.version, type: pkg.type, license: pkg.license, dependencies: pkg.dependencies }, null, 2)}\n`);
}

/** The unit from systemd/cove.service with ExecStart on the bundled runtime. */
export function packagedUnit(repo: string): string {
  const unit = readFileSync(join(repo, 'systemd', 'cove.service'), 'utf8');
  const exec = /^ExecStart=.*$/m;
  if (!exec.test(unit)) throw new Error('systemd/cove.service has no ExecStart= line');
  return unit
    .replace('scripts/install.sh installs this unit.', 'The Debian package installs this unit; `systemctl enable --now cove` starts it.')
    .replace(/^# scripts\/install\.sh writes the path of the node.*\n/m, '# The Node.js runtime the Debian package bundles (no node is needed on the host).\n')
    .replace(exec, `ExecStart=${PREFIX}/node ${PREFIX}/dist/src/cli.js serve`);
}

const WRAPPER = `#!/bin/sh
# The cove command of Cove's Debian package: Cove on the Node.js runtime the package bundles.
exec ${PREFIX}/node --max-semi-space-size=1 ${PREFIX}/dist/src/cli.js "$@"
`;

// Node.js links zlib (and other libraries) into its binary; the package bundles that binary on
// purpose, so that the host needs no Node.js of its own.
const LINTIAN_OVERRIDES = `# The bundled Node.js runtime links its own zlib: bundling that runtime is what this package is for.
cove: embedded-library zlib [usr/lib/cove/node]
`;

export interface Staged {
  /** Licence texts of the bundled npm packages, for the copyright file. */
  licences: Array<{ file: string; text: string }>;
}

/** Lays out everything but the runtime binary and the docs under `root`. */
export function stageTree(repo: string, root: string, arch: DebArch): Staged {
  copyCode(repo, root);
  const licences = productionPackages(repo).flatMap((pkg) => copyPackage(repo, root, pkg));
  pruneLevelDb(root, arch);
  put(root, '/usr/bin/cove', WRAPPER, 0o755);
  put(root, '/usr/share/lintian/overrides/cove', LINTIAN_OVERRIDES);
  put(root, UNIT_PATH, packagedUnit(repo));
  // Root only: the origin's user name and other settings live here (the password, by the unit's
  // credential, in a file of its own).
  put(root, ENV_PATH, readFileSync(join(repo, 'systemd', 'cove.env.example'), 'utf8'), 0o600);
  for (const [from, to] of [
    ['config/cove.example.json', 'cove.example.json'],
    ['config/grafana/cove.json', 'grafana/cove.json'],
    ['config/prometheus/cove-rules.yml', 'prometheus/cove-rules.yml'],
  ] as const) {
    if (existsSync(join(repo, from))) put(root, `/usr/share/cove/${to}`, readFileSync(join(repo, from)));
  }
  return { licences };
}
