// Runs the real `cove doctor` (the built CLI) as a child process with a clean COVE_* environment,
// an empty --root (so no client file of this machine is read) and a small free-space floor
// (so a test machine's disk does not decide the result), and parses its --json output.
import { execFile, execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

export interface Check {
  name: string;
  status: 'ok' | 'warn' | 'fail' | 'skip';
  message: string;
}

export interface DoctorRun {
  code: number;
  stdout: string;
  stderr: string;
  /** The parsed --json output (null when it was not asked for, or nothing was printed: a usage error). */
  report: { ok: boolean; counts: Record<Check['status'], number>; checks: Check[] } | null;
  check(name: string): Check;
}

type Teardown = { teardown(fn: () => unknown): unknown };

export function tempDir(t: Teardown, prefix = 'cove-doctor-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Writes `files` (path below root → text) under a fresh root directory. */
export function rootWith(t: Teardown, files: Record<string, string> = {}): string {
  const root = tempDir(t, 'cove-doctor-root-');
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(dirname(join(root, path)), { recursive: true });
    writeFileSync(join(root, path), text);
  }
  return root;
}

/**
 * `cove doctor --json` with `env` over defaults: a temp data directory, a 1 GiB cache cap, a
 * 2 s upstream timeout and a listen address on loopback. `args` go after the defaults.
 */
export async function doctor(t: Teardown, env: Record<string, string | undefined>, args: string[] = [], opts: { json?: boolean } = {}): Promise<DoctorRun> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('COVE_') && !/^(https?|no)_proxy$/i.test(k)));
  const defaults = { COVE_DATA_DIR: tempDir(t), COVE_MAX_CACHE_BYTES: '1MiB', COVE_UPSTREAM_TIMEOUT: '2s', COVE_LISTEN: '127.0.0.1:5999' };
  const merged = Object.fromEntries(Object.entries({ ...clean, ...defaults, ...env }).filter((e): e is [string, string] => e[1] !== undefined));
  // An empty settings file of its own: this machine's /etc/cove/cove.env (the package test installs one) stays out of it.
  const envFile = join(tempDir(t), 'cove.env');
  writeFileSync(envFile, '');
  const argv = [CLI, 'doctor', ...(opts.json === false ? [] : ['--json']), '--min-free', '1MiB', '--root', rootWith(t), '--settings', envFile, ...args];
  let code = 0;
  let stdout: string;
  let stderr: string;
  try {
    ({ stdout, stderr } = await execFileAsync(process.execPath, argv, { env: merged, timeout: 60_000 }));
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    ({ code, stdout, stderr } = e);
  }
  const report = opts.json === false || stdout.trim() === '' ? null : (JSON.parse(stdout) as DoctorRun['report']);
  return {
    code,
    stdout,
    stderr,
    report,
    check(name: string): Check {
      const found = report?.checks.find((c) => c.name === name);
      if (!found) throw new Error(`no check named ${name} in ${stdout}`);
      return found;
    },
  };
}

/** A self-signed EC certificate and key made with openssl; `days` -1 gives one that expired yesterday. */
export function makeCert(dir: string, name: string, opts: { san: string; days: number }): { cert: string; key: string } {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.crt`);
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  writeFileSync(ext, `subjectAltName=${opts.san}\n`);
  execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-subj', '/CN=cove-doctor-test', '-out', csr], { stdio: 'ignore' });
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-signkey', key, '-days', String(opts.days), '-extfile', ext, '-out', cert], { stdio: 'ignore' });
  return { cert, key };
}
