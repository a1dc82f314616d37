// The data directory: there or creatable, really writable (a probe file is created, written,
// synced and removed: the only change the doctor makes), and with room. Free space below a floor
// fails; free space that the configured cache cap could use up before eviction starts warns.
import { lstat, open, opendir, stat, statfs, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Config } from '../../config.js';
import { cacheCap } from '../../store/eviction.js';
import { formatBytes } from '../../units.js';
import type { CheckResult } from '../report.js';

/** Below this much free space pulls of new images fail soon: the default floor (`--min-free`). */
export const DEFAULT_MIN_FREE_BYTES = 1024 * 1024 * 1024;
/** The walk that sums what the cache holds stops after this many entries (an estimate then). */
const WALK_LIMIT = 1_000_000;

const NAME = 'data-dir';

function codeOf(err: unknown): string {
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

function explainWriteError(dir: string, err: unknown): string {
  const code = codeOf(err);
  if (code === 'EROFS') return `the data directory ${dir} is on a read-only file system: Cove cannot store anything; mount it read-write or set COVE_DATA_DIR elsewhere`;
  if (code === 'EACCES' || code === 'EPERM') return `the data directory ${dir} is not writable by this user (${code}): run the doctor as Cove's user, or fix the owner and mode of ${dir}`;
  if (code === 'ENOSPC' || code === 'EDQUOT') return `the data directory ${dir} takes no new file (${code}: disk or quota full); free space or set COVE_DATA_DIR elsewhere`;
  return `a file cannot be created in the data directory ${dir} (${code})`;
}

/** `cache` null: the cap is not known (the configuration did not load); only the floor applies. */
export async function checkDataDir(config: { dataDir: string; cache: Config['cache'] | null }, minFreeBytes = DEFAULT_MIN_FREE_BYTES): Promise<CheckResult> {
  const dir = config.dataDir;
  let exists: boolean;
  try {
    const s = await stat(dir);
    if (!s.isDirectory()) return { name: NAME, status: 'fail', message: `the data directory ${dir} is not a directory; set COVE_DATA_DIR to a directory` };
    exists = true;
  } catch (err) {
    if (codeOf(err) === 'ENOTDIR') return { name: NAME, status: 'fail', message: `the data directory ${dir} cannot exist: a part of its path is a file, not a directory (ENOTDIR); set COVE_DATA_DIR elsewhere` };
    if (codeOf(err) !== 'ENOENT') return { name: NAME, status: 'fail', message: `the data directory ${dir} cannot be looked at (${codeOf(err)})` };
    exists = false;
  }
  // The nearest existing folder: where Cove would create the directory, and whose file system it gets.
  let at = dir;
  if (!exists) {
    for (;;) {
      const parent = dirname(at);
      at = parent;
      const s = await stat(at).catch((err: unknown) => codeOf(err));
      if (typeof s === 'string') {
        if (s === 'ENOENT' && parent !== dirname(parent)) continue;
        return { name: NAME, status: 'fail', message: `the data directory ${dir} cannot be created: ${at} cannot be looked at (${s}); set COVE_DATA_DIR elsewhere` };
      }
      if (!s.isDirectory()) return { name: NAME, status: 'fail', message: `the data directory ${dir} cannot be created: ${at} is a file, not a directory; set COVE_DATA_DIR elsewhere` };
      break;
    }
  } else {
    const problem = await probeWrite(dir);
    if (problem !== null) return { name: NAME, status: 'fail', message: explainWriteError(dir, problem) };
  }

  let free: number;
  let size: number;
  try {
    const fs = await statfs(at);
    free = fs.bavail * fs.bsize;
    size = fs.blocks * fs.bsize;
  } catch (err) {
    return { name: NAME, status: 'fail', message: `the free space of ${at} cannot be read (${codeOf(err)})` };
  }
  const where = exists ? `the data directory ${dir}` : `the data directory ${dir} does not exist yet (Cove creates it at start; ${at} takes it) and its file system`;
  if (free < minFreeBytes) {
    return { name: NAME, status: 'fail', message: `${where} has ${formatBytes(free)} free, below the floor of ${formatBytes(minFreeBytes)}: new images cannot be cached; free space, lower COVE_MAX_CACHE_BYTES and run cove gc, or move COVE_DATA_DIR` };
  }
  const room = `${formatBytes(free)} free of ${formatBytes(size)}`;
  if (config.cache === null) return { name: NAME, status: 'ok', message: `${where} is writable, ${room}` };
  let cap: number | null;
  try {
    cap = await cacheCap(config.cache, at);
  } catch (err) {
    return { name: NAME, status: 'fail', message: (err as Error).message };
  }
  if (cap === null) return { name: NAME, status: 'ok', message: `${where} is writable, ${room}; COVE_MAX_CACHE_BYTES is off, so only a full disk stops the cache` };
  // Eviction starts at the high watermark: the cache may grow that far, beside what it holds now.
  const reach = Math.floor(cap * config.cache.highWater);
  const held = exists ? await bytesUnder(dir) : 0;
  if (free + held < reach) {
    return {
      name: NAME,
      status: 'warn',
      message: `${where} is writable, ${room}, but the cache may grow to ${formatBytes(reach)} (COVE_MAX_CACHE_BYTES${config.cache.maxShare === null ? '' : ` ${Math.round(config.cache.maxShare * 100)}% of the file system`} = ${formatBytes(cap)}, at the ${Math.round(config.cache.highWater * 100)}% high watermark) and holds ${formatBytes(held)}: the disk fills before eviction starts; lower COVE_MAX_CACHE_BYTES or free space`,
    };
  }
  return { name: NAME, status: 'ok', message: `${where} is writable, ${room}; the cache cap ${formatBytes(cap)} fits` };
}

/** Creates, writes, syncs and removes one file in `dir`; null when that worked, else the error. */
async function probeWrite(dir: string): Promise<unknown> {
  const path = join(dir, `.cove-doctor-${process.pid}-${Math.random().toString(36).slice(2)}`);
  let created = false;
  try {
    const file = await open(path, 'wx', 0o600);
    created = true;
    try {
      await file.write(Buffer.from('cove doctor\n'));
      await file.sync();
    } finally {
      await file.close();
    }
    return null;
  } catch (err) {
    return err;
  } finally {
    if (created) await unlink(path).catch(() => undefined);
  }
}

/** Disk bytes (allocated blocks) of the files under `dir`, without following links. */
async function bytesUnder(dir: string): Promise<number> {
  let total = 0;
  let seen = 0;
  const pending = [dir];
  while (pending.length > 0 && seen < WALK_LIMIT) {
    const folder = pending.pop()!;
    let entries;
    try {
      entries = await opendir(folder);
    } catch {
      continue;
    }
    for await (const entry of entries) {
      if (++seen >= WALK_LIMIT) break;
      const path = join(folder, entry.name);
      if (entry.isDirectory()) pending.push(path);
      else if (entry.isFile()) total += await lstat(path).then((s) => s.blocks * 512, () => 0);
    }
  }
  return total;
}
