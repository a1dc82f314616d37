// Content-addressed blob files: `<data>/blobs/<alg>/<first two hex>/<hex>`, temp files in
// `<data>/blobs/tmp/` on the same file system, and a versioned layout marker so a later change
// of layout can be recognised and migrated.
import { createReadStream } from 'node:fs';
import { chmod, mkdir, open, readdir, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { CoveError, OciError } from '../errors.js';
import { parseDigest, type DigestAlgorithm, type ParsedDigest } from '../oci/reference.js';
import { BlobWriter, publish } from './writer.js';

/** The on-disk layout this code reads and writes. */
export const LAYOUT_VERSION = 1;

const ALGORITHMS: readonly DigestAlgorithm[] = ['sha256', 'sha512'];
const HEX_LENGTH: Record<DigestAlgorithm, number> = { sha256: 64, sha512: 128 };
const HEX = /^[0-9a-f]+$/;
/** Shard directories listed at once by digests(): enough to keep the thread pool busy, not flood it. */
export const SHARD_READS = 16;

/**
 * Every shard the layout can have, as the digest prefix its files share ("sha256:00" …
 * "sha512:ff"), in the order digests sort: a walk over them in turn meets digests in index order.
 */
export const SHARD_PREFIXES: readonly string[] = ALGORITHMS.flatMap((algorithm) =>
  Array.from({ length: 256 }, (_, i) => `${algorithm}:${i.toString(16).padStart(2, '0')}`),
);

/** One blob file found by BlobStore.list(). */
export interface StoredBlob {
  digest: string;
  size: number;
  path: string;
  /** When the file was last written (its commit time); a rebuilt index uses it as lastAccess. */
  mtimeMs: number;
}

export class BlobStore {
  readonly dataDir: string;
  readonly blobsDir: string;
  readonly tmpDir: string;

  constructor(dataDir: string) {
    this.dataDir = dataDir;
    this.blobsDir = join(dataDir, 'blobs');
    this.tmpDir = join(this.blobsDir, 'tmp');
  }

  /**
   * Creates the directories, checks the layout marker, and removes every temp file an earlier
   * run left behind (a process that died mid-fill); returns how many were removed.
   */
  async open(): Promise<{ tempFilesRemoved: number }> {
    // The data directory and everything in it are Cove's alone, with or without systemd's
    // StateDirectoryMode=0700: mkdir's mode covers new directories, chmod an existing one.
    await mkdir(this.tmpDir, { recursive: true, mode: 0o700 });
    for (const alg of ALGORITHMS) await mkdir(join(this.blobsDir, alg), { recursive: true, mode: 0o700 });
    await chmod(this.dataDir, 0o700);
    await this.#checkLayout();
    let tempFilesRemoved = 0;
    for (const name of await readdir(this.tmpDir)) {
      await rm(join(this.tmpDir, name), { recursive: true, force: true });
      tempFilesRemoved++;
    }
    return { tempFilesRemoved };
  }

  async #checkLayout(): Promise<void> {
    const path = join(this.dataDir, 'layout.json');
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      const temp = `${path}.${process.pid}.tmp`;
      await writeFile(temp, `${JSON.stringify({ version: LAYOUT_VERSION })}\n`);
      await rename(temp, path);
      return;
    }
    let version: unknown;
    try {
      version = (JSON.parse(text) as { version?: unknown } | null)?.version;
    } catch {
      version = undefined;
    }
    if (version !== LAYOUT_VERSION) {
      throw new CoveError(
        'STORE_LAYOUT',
        `${path} declares layout version ${JSON.stringify(version ?? null)}; this Cove reads version ${LAYOUT_VERSION}`,
      );
    }
  }

  /** The file a blob lives in once committed (whether or not it exists). */
  pathOf(digest: string): string {
    const { algorithm, hex } = parse(digest);
    return join(this.blobsDir, algorithm, hex.slice(0, 2), hex);
  }

  /** The size of a committed blob, or null when the store does not have it. */
  async stat(digest: string): Promise<{ size: number } | null> {
    try {
      const s = await stat(this.pathOf(digest));
      return s.isFile() ? { size: s.size } : null;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw err;
    }
  }

  /** A writer that streams a blob into a temp file and commits it under `digest`. */
  createWriter(digest: string, expectedSize: number | null): Promise<BlobWriter> {
    const { hex } = parse(digest);
    return BlobWriter.create(digest, expectedSize, {
      tempPath: join(this.tmpDir, BlobWriter.tempName(hex)),
      finalPath: this.pathOf(digest),
    });
  }

  /**
   * Moves a temp file in `tmpDir`, fully written and already checked against `digest` by the
   * caller, into place as a BlobWriter commit would: fsync, rename, fsync the directory. False
   * (and the temp file removed) when the store had the blob already.
   */
  async adopt(tempPath: string, digest: string): Promise<boolean> {
    // A rename is only atomic within one file system; tmpDir is on the store's.
    if (dirname(tempPath) !== this.tmpDir) throw new TypeError(`adopt takes a temp file in ${this.tmpDir}, got ${tempPath}`);
    const finalPath = this.pathOf(digest);
    const handle = await open(tempPath, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    return publish(tempPath, finalPath);
  }

  /** Bytes [start, endInclusive] of a committed blob. */
  createReadStream(digest: string, start: number, endInclusive: number): Readable {
    return createReadStream(this.pathOf(digest), { start, end: endInclusive });
  }

  /** A whole blob in memory; for manifests and other small blobs only. */
  readAll(digest: string): Promise<Buffer> {
    return readFile(this.pathOf(digest));
  }

  /** Deletes a blob; false when it was not there. */
  async remove(digest: string): Promise<boolean> {
    try {
      await unlink(this.pathOf(digest));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /** Every committed blob file, with size and mtime. Anything that is not a well-named blob (tmp, strays) is skipped. */
  async *list(): AsyncIterable<StoredBlob> {
    for (const digest of await this.digests()) {
      const path = this.pathOf(digest);
      let s;
      try {
        s = await stat(path);
      } catch {
        continue; // removed while we walked
      }
      if (!s.isFile()) continue;
      yield { digest, size: s.size, path, mtimeMs: s.mtimeMs };
    }
  }

  /**
   * The digest of every well-named entry in the blob shards, from directory listings alone: no
   * stat per file, and SHARD_READS shards listed at once, so the start-up reconcile can compare
   * 100,000 blobs with the index in a fraction of a second and stat only those the index lacks.
   */
  async digests(): Promise<string[]> {
    const out: string[] = [];
    for (const algorithm of ALGORITHMS) {
      const algDir = join(this.blobsDir, algorithm);
      const shards = (await readdirQuiet(algDir)).filter((shard) => /^[0-9a-f]{2}$/.test(shard));
      for (let i = 0; i < shards.length; i += SHARD_READS) {
        const batch = shards.slice(i, i + SHARD_READS);
        const listed = await Promise.all(batch.map((shard) => readdirQuiet(join(algDir, shard))));
        batch.forEach((shard, j) => {
          for (const hex of listed[j]!) if (wellNamed(algorithm, shard, hex)) out.push(`${algorithm}:${hex}`);
        });
      }
    }
    return out;
  }

  /** The digests of one shard (a prefix from SHARD_PREFIXES), sorted, from its directory listing alone. */
  async shardDigests(prefix: string): Promise<string[]> {
    const [algorithm, shard] = prefix.split(':') as [DigestAlgorithm, string];
    if (!ALGORITHMS.includes(algorithm) || !/^[0-9a-f]{2}$/.test(shard ?? '')) throw new TypeError(`not a shard prefix: ${prefix}`);
    const out: string[] = [];
    for (const hex of await readdirQuiet(join(this.blobsDir, algorithm, shard))) if (wellNamed(algorithm, shard, hex)) out.push(`${algorithm}:${hex}`);
    return out;
  }
}

/** Whether an entry of a shard directory is a blob file's name (tmp files and strays are not). */
function wellNamed(algorithm: DigestAlgorithm, shard: string, hex: string): boolean {
  return hex.length === HEX_LENGTH[algorithm] && hex.startsWith(shard) && HEX.test(hex);
}

function parse(digest: string): ParsedDigest {
  const parsed = parseDigest(digest);
  if (!parsed) throw new OciError('DIGEST_INVALID', `not a digest Cove can store: ${digest}`, { detail: { digest } });
  return parsed;
}

async function readdirQuiet(dir: string): Promise<string[]> {
  try {
    return (await readdir(dir)).sort();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw err;
  }
}
