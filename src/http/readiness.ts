// GET /readyz: whether this Cove should get traffic. Cove listens only once its store is open and
// its index loaded, so a Cove that answers has finished starting; what can still make it unfit is
// its disk (the data directory no longer takes writes, or is nearly full) or a shutdown under way.
// An open origin breaker is reported but does not make Cove unready: the cache is still served,
// and taking every edge node out of rotation when the WAN link drops would defeat the point.
import { open, statfs, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { BreakerSnapshot } from '../upstream/breaker.js';

/** Not ready below this much free space... */
export const READY_MIN_FREE_BYTES = 100 * 1024 * 1024;
/** ...unless the file system is so small that 1 % of it is less (then 1 % is the floor). */
export const READY_MIN_FREE_RATIO = 0.01;
/** A disk-full fill within this long is reported as `fullRecently`. */
export const DISK_FULL_RECENT_MS = 5 * 60_000;

export interface ReadinessOptions {
  dataDir: string;
  upstreams: () => Record<string, BreakerSnapshot>;
  /** When a fill last found the disk full (ms since epoch), or null. */
  lastDiskFullAt: () => number | null;
  stopping: () => boolean;
  /** Overrides of the free-space floor (tests; not a setting). */
  minFreeBytes?: number;
  minFreeRatio?: number;
}

export interface Readiness {
  ready: boolean;
  body: Record<string, unknown>;
}

export async function checkReadiness(o: ReadinessOptions): Promise<Readiness> {
  const reasons: string[] = [];
  if (o.stopping()) reasons.push('shutting down');

  let disk: Record<string, unknown> = {};
  try {
    const fs = await statfs(o.dataDir);
    const free = fs.bavail * fs.bsize;
    const size = fs.blocks * fs.bsize;
    const minFree = Math.min(o.minFreeBytes ?? READY_MIN_FREE_BYTES, Math.ceil(size * (o.minFreeRatio ?? READY_MIN_FREE_RATIO)));
    disk = { freeBytes: free, sizeBytes: size, minFreeBytes: minFree };
    if (free < minFree) reasons.push(`data directory's file system has ${free} bytes free, below the minimum of ${minFree}`);
  } catch (err) {
    reasons.push(`cannot stat the data directory: ${message(err)}`);
  }
  const writable = await probeWrite(o.dataDir);
  disk.writable = writable === null;
  if (writable !== null) reasons.push(`data directory is not writable: ${writable}`);
  const lastFull = o.lastDiskFullAt();
  disk.lastDiskFull = lastFull === null ? null : new Date(lastFull).toISOString();
  disk.fullRecently = lastFull !== null && Date.now() - lastFull < DISK_FULL_RECENT_MS;

  const upstreams = Object.fromEntries(Object.entries(o.upstreams()).map(([name, b]) => [name, { state: b.state, consecutiveFailures: b.consecutiveFailures }]));
  const ready = reasons.length === 0;
  return { ready, body: ready ? { status: 'ready', disk, upstreams } : { status: 'not ready', reasons, disk, upstreams } };
}

/** Creates, writes one byte to and removes a file in the data directory; null when that worked, else why not. */
async function probeWrite(dataDir: string): Promise<string | null> {
  const path = join(dataDir, `.readyz-${process.pid}-${Math.random().toString(36).slice(2)}`);
  let created = false;
  try {
    const file = await open(path, 'wx');
    created = true;
    try {
      await file.write(Buffer.from([0]));
    } finally {
      await file.close();
    }
    return null;
  } catch (err) {
    return message(err);
  } finally {
    if (created) await unlink(path).catch(() => undefined);
  }
}

function message(err: unknown): string {
  return err instanceof Error ? ((err as NodeJS.ErrnoException).code ?? err.message) : String(err);
}
