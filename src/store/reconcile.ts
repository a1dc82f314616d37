// The start-up reconcile: makes the index and the blob files agree again after a crash. A blob
// is renamed into the store before its record is written, and eviction deletes the record before
// the file, so a kill -9 (or a power cut that drops unsynced LevelDB writes) can leave a file the
// index does not know, invisible to eviction and to the cached-bytes figure, or a record whose
// file is gone, counted but never there. Cheap by design: one readdir per shard compared with the
// index's blob keys; only files the index lacks are stat'ed and sniffed. Done a few shards at a
// time, each against its own range of the index, so it holds a 32nd of the digests at once
// (holding every digest of 100,000 blobs twice, index and files, took tens of MiB at start-up).
import { stat } from 'node:fs/promises';
import { SHARD_PREFIXES, SHARD_READS, type BlobStore } from './blobs.js';
import { sniffManifest } from './manifest-sniff.js';
import type { BlobRecord } from './records.js';

/** The index as the reconcile sees it (the catalog's database). */
export interface ReconcileIndex {
  /**
   * Digests of the blob records from `from` (inclusive) to `to` (exclusive; null: to the end),
   * and of those that are manifests without references recorded.
   */
  records(from: string, to: string | null): Promise<{ digests: Set<string>; manifestsWithoutRefs: string[] }>;
  /** Records blobs found on disk; `refs` are a manifest's references, null for other blobs. */
  add(entries: Array<{ digest: string; record: BlobRecord; refs: string[] | null }>): Promise<void>;
  /** Forgets blobs (records and references) whose files are gone. */
  drop(digests: string[]): Promise<void>;
  /** Records a manifest's references. */
  setRefs(digest: string, refs: string[]): Promise<void>;
}

/** What the reconcile found and fixed. */
export interface ReconcileCounts {
  /** Blob files on disk. */
  files: number;
  /** Files the index lacked, now recorded, and their bytes. */
  added: number;
  addedBytes: number;
  /** Records whose file was gone, now dropped. */
  dropped: number;
  /** Manifest records without references whose references were read back from the file. */
  refsRestored: number;
}

/** Index writes are batched this many at a time: a crash-littered store must not mean one write per blob. */
const BATCH = 1000;

export async function reconcileIndex(index: ReconcileIndex, blobs: BlobStore): Promise<ReconcileCounts> {
  const counts: ReconcileCounts = { files: 0, added: 0, addedBytes: 0, dropped: 0, refsRestored: 0 };
  // The index is read range by range, the ranges meeting end to end from the first key to the
  // last, so every record is seen once: SHARD_READS shards' worth of digests per range, the
  // first range from the very start and the last to the very end (a record named like no shard
  // is in one of them too).
  for (let i = 0; i < SHARD_PREFIXES.length; i += SHARD_READS) {
    const shards = SHARD_PREFIXES.slice(i, i + SHARD_READS);
    const from = i === 0 ? '' : shards[0]!;
    const to = SHARD_PREFIXES[i + SHARD_READS] ?? null;
    // The index and the directories are read at once: both wait on the disk, not on each other.
    const [records, listed] = await Promise.all([index.records(from, to), Promise.all(shards.map((shard) => blobs.shardDigests(shard)))]);
    await reconcileRange(index, blobs, records, listed.flat(), counts);
  }
  return counts;
}

/** Reconciles one range: its records against the files of its shards. */
async function reconcileRange(
  index: ReconcileIndex,
  blobs: BlobStore,
  { digests: unseen, manifestsWithoutRefs }: { digests: Set<string>; manifestsWithoutRefs: string[] },
  files: string[],
  counts: ReconcileCounts,
): Promise<void> {
  counts.files += files.length;
  let pending: Array<{ digest: string; record: BlobRecord; refs: string[] | null }> = [];
  for (const digest of files) {
    // What is left in `unseen` after the walk is a record without its file.
    if (unseen.delete(digest)) continue;
    const stat = await statFile(blobs.pathOf(digest));
    if (!stat) continue; // not a regular file, or gone since the walk saw it
    const manifest = await sniffManifest(blobs.pathOf(digest), stat.size);
    // Its commit time is the best guess of its last use, as in a rebuild. Pins live in
    // pins.json, not in records, so `pinned: false` loses nothing.
    pending.push({ digest, record: { size: stat.size, mediaType: manifest?.mediaType ?? null, lastAccess: Math.round(stat.mtimeMs), pinned: false }, refs: manifest?.refs ?? null });
    counts.added++;
    counts.addedBytes += stat.size;
    if (pending.length >= BATCH) {
      await index.add(pending);
      pending = [];
    }
  }
  if (pending.length > 0) await index.add(pending);

  // A record whose file the walk did not see is checked once more before it goes.
  const gone: string[] = [];
  for (const digest of unseen) if (!(await blobs.stat(digest))) gone.push(digest);
  for (let i = 0; i < gone.length; i += BATCH) await index.drop(gone.slice(i, i + BATCH));
  counts.dropped += gone.length;

  // A manifest record written without its references (the second of two index writes lost)
  // would let eviction take its layers apart from it, and a pin on it protect nothing below.
  const goneSet = new Set(gone);
  for (const digest of manifestsWithoutRefs) {
    if (goneSet.has(digest)) continue;
    const stat = await blobs.stat(digest);
    const manifest = stat ? await sniffManifest(blobs.pathOf(digest), stat.size) : null;
    if (!manifest) continue;
    await index.setRefs(digest, manifest.refs);
    counts.refsRestored++;
  }
}

/** Size and commit time of a regular file, or null. */
async function statFile(path: string): Promise<{ size: number; mtimeMs: number } | null> {
  try {
    const s = await stat(path);
    return s.isFile() ? { size: s.size, mtimeMs: s.mtimeMs } : null;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}
