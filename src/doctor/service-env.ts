// What the cove service would see, for `cove doctor` run from a shell: the variables of its
// EnvironmentFile (/etc/cove/cove.env) and the credentials its unit hands over (LoadCredential=,
// SetCredential=), so that a relative COVE_UPSTREAM_PASSWORD_FILE=origin-password is read from the
// file systemd would read it from.
import { accessSync, constants, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../errors.js';

/** The EnvironmentFile= of systemd/cove.service. */
export const SERVICE_ENV_FILE = '/etc/cove/cove.env';

/** Where the package (/lib), scripts/install.sh and `systemctl edit` (/etc) put the unit and its drop-ins. */
export const DEFAULT_UNIT_FILES = ['/lib/systemd/system/cove.service', '/etc/systemd/system/cove.service'];
const DROP_IN_DIR = '/etc/systemd/system/cove.service.d';

/**
 * Reads an EnvironmentFile as systemd does for the lines Cove's example uses: VAR=value, blank
 * lines and # or ; comments, values in single quotes (literal) or double quotes (backslash escapes).
 */
export function parseEnvironmentFile(text: string, name: string): Record<string, string> {
  const vars: Record<string, string> = {};
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const m = /^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)$/.exec(line);
    if (!m) throw new ConfigError(`${name} line ${i + 1}: expected VARIABLE=value, found ${JSON.stringify(line.slice(0, 60))}`);
    let value = m[2]!;
    if (value.length >= 2 && value.startsWith("'") && value.endsWith("'")) value = value.slice(1, -1);
    else if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1).replace(/\\(.)/g, '$1');
    vars[m[1]!] = value;
  });
  return vars;
}

/** systemd's C-style escapes in SetCredential= data (the unit's empty stand-in is `\n`). */
function unescape(value: string): string {
  return value.replace(/\\(n|t|\\)/g, (_, c: string) => (c === 'n' ? '\n' : c === 't' ? '\t' : '\\'));
}

/**
 * LoadCredential= and SetCredential= of the cove unit that reads `envFile` (EnvironmentFile=) and
 * of its drop-ins, later lines winning as systemd merges them. A unit in /etc replaces the one in
 * /lib, as for systemd; a unit that reads another file is not the service being checked.
 */
export function unitCredentials(envFile: string, unitFiles: readonly string[], dropInDir = DROP_IN_DIR): { load: Map<string, string>; set: Map<string, string> } {
  const load = new Map<string, string>();
  const set = new Map<string, string>();
  const readable = (file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return null;
    }
  };
  const unit = unitFiles
    .map(readable)
    .filter((text): text is string => text !== null)
    .pop();
  if (unit === undefined || !unit.split('\n').some((l) => l.trim().replace(/^EnvironmentFile=-?/, '') === envFile && l.trim().startsWith('EnvironmentFile='))) return { load, set };
  let dropIns: string[] = [];
  try {
    dropIns = readdirSync(dropInDir)
      .filter((f) => f.endsWith('.conf'))
      .sort()
      .map((f) => join(dropInDir, f));
  } catch {
    // no drop-ins
  }
  for (const text of [unit, ...dropIns.map(readable)]) {
    for (const line of (text ?? '').split('\n')) {
      const m = /^(LoadCredential|SetCredential)=([^:\s]+):(.*)$/.exec(line.trim());
      if (!m) continue;
      (m[1] === 'LoadCredential' ? load : set).set(m[2]!, m[3]!);
    }
  }
  return { load, set };
}

export interface ServiceEnvironment {
  /** The environment `cove serve` would have under systemd: the env file's variables, then this shell's on top. */
  env: Record<string, string | undefined>;
  /** Removes the credentials directory made for it. */
  dispose(): void;
}

/**
 * The service's environment from `envFile` and the unit files. A credentials directory is made
 * (mode 0700, links to the files LoadCredential= names, SetCredential= data where such a file is
 * missing) and given as $CREDENTIALS_DIRECTORY, unless this shell has one set already.
 */
export function serviceEnvironment(envFile: string, unitFiles: readonly string[] = DEFAULT_UNIT_FILES, dropInDir = DROP_IN_DIR): ServiceEnvironment {
  let text: string;
  try {
    text = readFileSync(envFile, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    const hint = code === 'EACCES' ? ': it is root\'s alone (it may hold secrets); run cove doctor as root' : '';
    throw new ConfigError(`--settings ${envFile} cannot be read (${code})${hint}`);
  }
  const env: Record<string, string | undefined> = { ...parseEnvironmentFile(text, envFile), ...process.env };
  if (env.CREDENTIALS_DIRECTORY !== undefined) return { env, dispose: () => undefined };
  const { load, set } = unitCredentials(envFile, unitFiles, dropInDir);
  if (load.size === 0 && set.size === 0) return { env, dispose: () => undefined };
  const dir = mkdtempSync(join(tmpdir(), 'cove-doctor-credentials-'));
  for (const [id, path] of load) {
    try {
      accessSync(path, constants.R_OK);
      symlinkSync(path, join(dir, id));
    } catch {
      // systemd could not load it either: SetCredential= below may stand in
    }
  }
  for (const [id, data] of set) {
    try {
      writeFileSync(join(dir, id), unescape(data), { flag: 'wx', mode: 0o600 });
    } catch {
      // LoadCredential='s file is there: it wins, as under systemd
    }
  }
  env.CREDENTIALS_DIRECTORY = dir;
  return { env, dispose: () => rmSync(dir, { recursive: true, force: true }) };
}
