// `cove reindex` with the daemon stopped: temp files removed, every blob re-hashed, the index
// rebuilt from scratch.
import type { Logger } from 'pino';
import { BlobStore } from './blobs.js';
import { Catalog } from './catalog.js';

/**
 * `cove reindex`: removes temp files, re-hashes every blob (deleting files that do not match
 * their name), and rebuilds the index from scratch. Run while Cove is stopped; an index held
 * open by a running Cove makes this fail rather than rebuild under it.
 */
export async function reindexDataDir(
  dataDir: string,
  log: Logger,
): Promise<{ blobs: number; bytes: number; removed: number; tags: number }> {
  const store = new BlobStore(dataDir);
  const { tempFilesRemoved } = await store.open();
  if (tempFilesRemoved > 0) log.info({ removed: tempFilesRemoved }, 'removed unfinished temp files');
  const { catalog, rebuilt } = await Catalog.openWith(dataDir, store, log, { force: true, verify: true });
  await catalog.close();
  const counts = rebuilt!;
  return { blobs: counts.blobs, bytes: counts.bytes, removed: counts.removed, tags: counts.tags };
}
