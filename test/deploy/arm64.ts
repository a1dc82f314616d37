// The arm64 Debian package, run on this x86-64 machine under user-mode emulation: its own Node.js
// and its own Cove (code, production packages, LevelDB's arm64 binding) under
// `qemu-aarch64-static -L /usr/aarch64-linux-gnu`, with no binfmt registration needed.
//
// The package is unpacked into a temp root. The checkout's compiled tests and demo are copied
// beside the packaged code (root/usr/lib/cove/dist/{test,scripts}), so their `../../src/...`
// imports load the package's Cove and their packages resolve from the package's node_modules;
// only what the package lacks (tap, for the tests) is found further up, through a link at the
// temp root to the checkout's node_modules.
//
// Emulated code cannot start other programs of its architecture (no binfmt): the test files run
// here are ones that keep Cove in-process.
import type { Test } from 'tap';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, requireFiles, requireTools, run, type TestLike } from '../e2e/real.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
export const ARM64_DEB = join(ROOT, 'build', `cove_${VERSION}_arm64.deb`);
const SYSROOT = '/usr/aarch64-linux-gnu';

export interface Arm64Root {
  /** The unpacked package's /usr/lib/cove. */
  prefix: string;
  /** Runs the package's node (emulated) with `args`; bounded by `timeoutMs`. */
  node(args: string[], timeoutMs: number, env?: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }>;
}

/** Unpacks the arm64 package for `t` (removed at its end), or null after a visible skip (a failure under CI). */
export async function arm64Root(t: TestLike): Promise<Arm64Root | null> {
  if (!requireFiles(t, [ARM64_DEB], 'run npm run package first')) return null;
  if (!requireTools(t, ['qemu-aarch64-static', 'dpkg-deb'])) return null;
  if (!requireFiles(t, [join(SYSROOT, 'lib', 'ld-linux-aarch64.so.1'), join(SYSROOT, 'lib', 'libstdc++.so.6')], 'apt-get install libc6-arm64-cross libstdc++6-arm64-cross')) return null;
  const root = mkdtempSync(join(tmpdir(), 'cove-arm64-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  await run('dpkg-deb', ['-x', ARM64_DEB, root], { timeoutMs: 120_000 });
  const prefix = join(root, 'usr', 'lib', 'cove');
  for (const dir of ['test', 'scripts']) cpSync(join(ROOT, 'dist', dir), join(prefix, 'dist', dir), { recursive: true });
  symlinkSync(join(ROOT, 'node_modules'), join(root, 'node_modules'));
  if (!existsSync(join(prefix, 'node'))) throw new Error(`${ARM64_DEB} has no usr/lib/cove/node`);
  return {
    prefix,
    node: (args, timeoutMs, env = {}) => emulate(['-L', SYSROOT, join(prefix, 'node'), ...args], timeoutMs, env),
  };
}

/** qemu-aarch64-static with `args`, bounded; a failing exit is an answer, not an error. */
function emulate(args: string[], timeoutMs: number, extraEnv: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  // Without the runner's TAP_* variables: each file then runs as a top-level tap test and prints its own summary.
  const env = { ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^_?TAP/i.test(k) && k !== 'NODE_OPTIONS')), ...extraEnv };
  return run('qemu-aarch64-static', args, { env, timeoutMs, allowFail: true });
}

/** tap's closing summary of a test file's output, `# { total: N, pass: N, ... }`. */
export function tapSummary(output: string): { total: number; pass: number; fail: number; skip: number } | null {
  const line = output.split('\n').reverse().find((l) => /^# \{ total: \d+/.test(l));
  if (!line) return null;
  const num = (key: string) => Number(new RegExp(`${key}: (\\d+)`).exec(line)?.[1] ?? 0);
  return { total: num('total'), pass: num('pass'), fail: num('fail'), skip: num('skip') };
}

/**
 * Runs each compiled test file (a path under dist/, e.g. test/store/blobs.test.js) on the emulated
 * package, one after another. `skip` names subtests to leave out (tap's grep, inverted): only ones
 * that start a program of their own, which emulation without binfmt cannot run.
 */
export async function runEmulatedTests(t: Test, arm: Arm64Root, files: Array<{ file: string; skip?: string }>): Promise<void> {
  for (const { file, skip } of files) {
    const r = await arm.node([join(arm.prefix, 'dist', file)], 280_000, skip === undefined ? {} : { TAP_GREP: skip, TAP_INVERT: '1' });
    const summary = tapSummary(r.stdout);
    const failures = r.stdout.split('\n').filter((l) => /^\s*not ok /.test(l));
    t.ok(summary !== null && summary.total > 0, `${file}: ran on arm64 and reported (${summary ? `${summary.pass}/${summary.total} passed` : `no summary; exit ${r.code}: ${r.stderr.slice(-600)}`}, ${(r.ms / 1000).toFixed(0)} s)`);
    t.same(failures, [], `${file}: no failing test on arm64`);
    t.equal(r.code, 0, `${file}: exits 0 on arm64${r.code === 0 ? '' : `: ${r.stderr.slice(-600)}`}`);
    if (summary) {
      t.equal(summary.pass + summary.skip, summary.total, `${file}: all ${summary.total} assertions passed${summary.skip > 0 ? ` (${summary.skip} left out: ${skip})` : ''}`);
      t.ok(summary.skip <= (skip === undefined ? 0 : 1), `${file}: nothing else skipped`);
    }
  }
}
