// Rebuilding the index from what is on disk: blob records from the blob files, manifest
// references from the manifests among them, tags from the tag journal. Used automatically by
// Catalog.open when the index is missing or broken, and by `cove reindex` (store/offline-reindex.ts).
import { createReadStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { parseDigest } from '../oci/reference.js';
import type { BlobStore } from './blobs.js';
import { sniffManifest } from './manifest-sniff.js';
import type { BlobRecord, TagKey, TagRecord } from './records.js';
import type { TagJournal } from './tag-journal.js';

/** Where a rebuild writes what it finds (the catalog's fresh database). */
export interface RebuildSink {
  /** Records a blob; `refs` are a manifest's references, null for other blobs. */
  blob(digest: string, record: BlobRecord, refs: string[] | null): Promise<void>;
  /** Records a restored tag. */
  tag(key: TagKey, record: TagRecord): Promise<void>;
}

/** What a rebuild found. */
export interface RebuildCounts {
  /** Blob records written. */
  blobs: number;
  /** Their total size. */
  bytes: number;
  /** Of those, manifests (with references recorded). */
  manifests: number;
  /** Blob files deleted because their content did not hash to their name (verify only). */
  removed: number;
  /** Tags restored from the journal. */
  tags: number;
  /** Journal entries not restored: unreadable, or their manifest is not in the store. */
  tagsSkipped: number;
}

/**
 * Fills `sink` from the blob files and the tag journal. With `verify`, every blob is re-hashed
 * and a file whose content does not match its name is deleted. Without it (the automatic rebuild
 * at start-up) sizes come from stat and content is trusted: every blob was verified before its
 * rename into the store, and re-hashing a large cache would delay start-up by minutes.
 * Pins are not recoverable from disk: every rebuilt blob is unpinned.
 */
export async function rebuildIndex(
  sink: RebuildSink,
  blobs: BlobStore,
  journal: TagJournal,
  log: Logger,
  options: { verify: boolean },
): Promise<RebuildCounts> {
  const counts: RebuildCounts = { blobs: 0, bytes: 0, manifests: 0, removed: 0, tags: 0, tagsSkipped: 0 };
  for await (const blob of blobs.list()) {
    if (options.verify) {
      const actual = await hashFile(blob.path, blob.digest);
      if (actual !== blob.digest) {
        await unlink(blob.path).catch(() => {});
        counts.removed++;
        log.warn({ digest: blob.digest, actual, path: blob.path }, 'blob file does not match its digest: removed');
        continue;
      }
    }
    const manifest = await sniffManifest(blob.path, blob.size);
    await sink.blob(
      blob.digest,
      { size: blob.size, mediaType: manifest?.mediaType ?? null, lastAccess: Math.round(blob.mtimeMs), pinned: false },
      manifest?.refs ?? null,
    );
    counts.blobs++;
    counts.bytes += blob.size;
    if (manifest) counts.manifests++;
  }

  const { entries, skipped } = await journal.readAll();
  counts.tagsSkipped = skipped;
  for (const { key, record } of entries) {
    if (!parseDigest(record.digest) || !(await blobs.stat(record.digest))) {
      counts.tagsSkipped++;
      continue;
    }
    await sink.tag(key, record);
    counts.tags++;
  }
  return counts;
}

/** The digest of a file's content, with the algorithm of `digest`. */
async function hashFile(path: string, digest: string): Promise<string> {
  const algorithm = parseDigest(digest)!.algorithm;
  const hash = createHash(algorithm);
  for await (const chunk of createReadStream(path, { highWaterMark: 1024 * 1024 })) hash.update(chunk as Buffer);
  return `${algorithm}:${hash.digest('hex')}`;
}
