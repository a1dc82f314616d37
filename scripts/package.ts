// `npm run package`: self-contained Debian packages of Cove, cove_<version>_amd64.deb and
// cove_<version>_arm64.deb, each with its own Node.js runtime, so that `apt install ./cove_….deb`
// is the whole install on a host without Node.js.
//
//   npm run package [-- --arch amd64|arm64] [--out DIR] [--cache DIR]
//
// Needs a built checkout (npm ci; the script runs the build), dpkg-deb, and the binutils strip of
// each architecture (Debian's binutils-x86-64-linux-gnu, binutils-aarch64-linux-gnu). The Node.js
// runtimes come from the npm registry once and are kept in --cache (default build/cache); their
// digests are pinned in scripts/package/runtime.ts.
import { spawnSync } from 'node:child_process';
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, rmSync, utimesSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeChangelog, writeCopyright, writeDebian, writeManPage, type PackageInfo } from './package/control.js';
import { type DebArch, installRuntime, isDebArch, runtimeTarball } from './package/runtime.js';
import { PREFIX, stageTree } from './package/tree.js';

const REPO = resolve(fileURLToPath(new URL('../..', import.meta.url)));

function argOf(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? undefined : process.argv[i + 1];
}

const say = (line: string) => process.stdout.write(`package: ${line}\n`);

/** The commit's time, for reproducible mtimes and changelog date; now when this is not a git checkout. */
function sourceEpoch(): number {
  const fromEnv = Number(process.env.SOURCE_DATE_EPOCH);
  if (Number.isSafeInteger(fromEnv) && fromEnv > 0) return fromEnv;
  const git = spawnSync('git', ['-C', REPO, 'log', '-1', '--format=%ct'], { encoding: 'utf8' });
  const t = Number(git.stdout.trim());
  return git.status === 0 && t > 0 ? t : Math.floor(Date.now() / 1000);
}

/**
 * Directories 0755; files 0644, but for the commands (the runtime, /usr/bin/cove, the maintainer
 * scripts: 0755) and the settings (0600, they may hold secrets); every mtime the source's. The
 * same tree each build.
 */
const EXECUTABLE = new Set(['usr/bin/cove', `${PREFIX.slice(1)}/node`, 'DEBIAN/postinst', 'DEBIAN/prerm', 'DEBIAN/postrm']);

function normalise(root: string, epoch: number, dir = root): void {
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isSymbolicLink()) continue;
    if (entry.isDirectory()) {
      normalise(root, epoch, path);
      chmodSync(path, 0o755);
    } else {
      const rel = relative(root, path);
      chmodSync(path, EXECUTABLE.has(rel) ? 0o755 : (lstatSync(path).mode & 0o777) === 0o600 ? 0o600 : 0o644);
    }
    utimesSync(path, epoch, epoch);
  }
}

function build(arch: DebArch, out: string, cache: string, info: Omit<PackageInfo, 'arch'>): string {
  const root = join(out, 'deb', arch);
  rmSync(root, { recursive: true, force: true });
  mkdirSync(root, { recursive: true });
  const tarball = runtimeTarball(arch, cache, say);
  const { licences } = stageTree(REPO, root, arch);
  const nodeLicence = installRuntime(arch, tarball, join(root, PREFIX.slice(1), 'node'));
  const full: PackageInfo = { ...info, arch };
  writeCopyright(root, nodeLicence, licences);
  writeChangelog(root, full);
  writeManPage(root, REPO, full);
  normalise(root, info.epoch);
  writeDebian(root, REPO, full);
  normalise(root, info.epoch, join(root, 'DEBIAN'));
  const deb = join(out, `cove_${info.version}_${arch}.deb`);
  const dpkg = spawnSync('dpkg-deb', ['--root-owner-group', '-Zxz', '-z6', '--build', root, deb], {
    encoding: 'utf8',
    env: { ...process.env, SOURCE_DATE_EPOCH: String(info.epoch) },
  });
  if (dpkg.error || dpkg.status !== 0) throw new Error(`dpkg-deb failed: ${dpkg.error?.message ?? dpkg.stderr.trim()}`);
  rmSync(root, { recursive: true, force: true });
  return deb;
}

function main(): number {
  const archArg = argOf('arch');
  const arches = (archArg ?? 'amd64,arm64').split(',');
  const bad = arches.filter((a) => !isDebArch(a));
  if (bad.length > 0) {
    process.stderr.write(`package: --arch takes amd64, arm64 or both (amd64,arm64), not ${bad.join(', ')}\n`);
    return 2;
  }
  const out = resolve(argOf('out') ?? join(REPO, 'build'));
  const cache = resolve(argOf('cache') ?? join(out, 'cache'));
  const version = (JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
  const epoch = sourceEpoch();
  for (const arch of arches as DebArch[]) {
    const started = Date.now();
    const deb = build(arch, out, cache, { version, epoch });
    say(`${deb} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  }
  return 0;
}

try {
  process.exitCode = main();
} catch (err) {
  process.stderr.write(`package: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
