// The entries of an archive on their way into the store, as they are read. Every file entry
// streams into a temp file in the store's tmp dir (stage-file.ts) while being hashed: a
// `blobs/<alg>/<hex>` entry is checked against the digest its path names as it ends; entries with
// no digest in their name (docker save's `<id>/layer.tar`, skopeo's `<hex>.tar`) are named by
// their sha256. The ones an image refers to are adopted into the store once the whole archive is
// checked (settle), the rest removed, so nothing of a bad archive is ever visible under a digest.
// Small metadata entries are read into memory, bounded. Every blob this import added is
// remembered, so a failed import can take them all out again.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { posix } from 'node:path';
import type { Logger } from 'pino';
import { DigestVerifier } from '../oci/digest.js';
import { parseDigest } from '../oci/reference.js';
import type { BlobStore } from '../store/blobs.js';
import type { BlobWriter } from '../store/writer.js';
import { ArchiveError, describeError } from './common.js';
import type { ArchiveContents, FileEntry, Inventory } from './inventory.js';
import { StageFile } from './stage-file.js';
import { drain, normalize, readAll, type TarEntry } from './tar-reader.js';

/** Metadata entries read into memory, and at most how large each may be. */
const METADATA_ENTRIES = new Set(['manifest.json', 'index.json', 'oci-layout', 'repositories']);
export const METADATA_MAX_BYTES = 16 * 1024 * 1024;
const MAX_LINK_HOPS = 16;

/** Runs one rollback step; a failure is logged, never thrown, so the other steps still run. */
export async function quietly(log: Logger, what: string, fn: () => Promise<unknown>): Promise<void> {
  try {
    await fn();
  } catch (err) {
    log.warn({ err: describeError(err) }, `archive rollback: ${what} failed`);
  }
}

export class Staging implements ArchiveContents {
  readonly #store: BlobStore;
  readonly #log: Logger;
  readonly #metadata = new Map<string, Buffer>();
  /** Every file entry (blobs included), by normalized path. */
  readonly #files = new Map<string, FileEntry>();
  /** Symbolic and hard links: path -> target path (normalized). */
  readonly #links = new Map<string, string>();
  /** Digests the archive supplied and that are verified and in the store (or staged), with sizes. */
  readonly #have = new Map<string, number>();
  /** Committed into the store by this import and not there before it. */
  readonly #added = new Set<string>();
  /** Hashed temp files not yet moved into the store, by digest. */
  readonly #staged = new Map<string, StageFile>();
  /** Every temp file this import created and has not yet moved or removed. */
  readonly #temps = new Set<StageFile>();
  #writer: BlobWriter | null = null;

  constructor(store: BlobStore, log: Logger) {
    this.#store = store;
    this.#log = log;
  }

  get metadata(): ReadonlyMap<string, Buffer> {
    return this.#metadata;
  }

  /** True when this import put `digest` into the store (it was not there before). */
  isNew(digest: string): boolean {
    return this.#added.has(digest);
  }

  // ------------------------------------------------------------------------------- reading

  /** Takes in one entry of the archive, `name` being its normalized path. */
  async add(entry: TarEntry, name: string): Promise<void> {
    const header = entry.header;
    const size = header.size ?? 0;
    switch (header.type) {
      case 'file':
      case 'contiguous-file':
      case undefined:
      case null:
        break;
      case 'symlink':
        if (header.linkname) this.#links.set(name, normalize(posix.join(posix.dirname(name), header.linkname)));
        return drain(entry);
      case 'link':
        if (header.linkname) this.#links.set(name, normalize(header.linkname));
        return drain(entry);
      default:
        return drain(entry); // directories, devices, fifos: not part of an image archive
    }
    if (name === '') return drain(entry);

    if (METADATA_ENTRIES.has(name)) {
      if (size > METADATA_MAX_BYTES) {
        throw new ArchiveError('ARCHIVE_TOO_LARGE', `${name} in the archive is ${size} bytes; Cove reads at most ${METADATA_MAX_BYTES}`);
      }
      this.#metadata.set(name, await readAll(entry, size));
      return;
    }
    const m = /^blobs\/([a-z0-9]+)\/([0-9a-f]+)$/.exec(name);
    if (m) {
      const digest = `${m[1]}:${m[2]}`;
      if (parseDigest(digest)) return this.#blobEntry(entry, name, digest, size);
      return drain(entry); // a blob of an algorithm Cove does not verify; only a problem if referenced
    }
    return this.#stageEntry(entry, name, size);
  }

  /** A `blobs/<alg>/<hex>` entry: staged, and refused unless its bytes hash to the digest its path names. */
  async #blobEntry(entry: TarEntry, name: string, digest: string, size: number): Promise<void> {
    if (this.#have.has(digest) || (await this.#store.stat(digest)) !== null) {
      // Already there (an earlier entry, or in the store before): check these bytes all the same,
      // so a tampered archive is refused whatever the store holds.
      const verifier = new DigestVerifier(digest);
      let head: Buffer | null = null;
      for await (const chunk of entry) {
        head ??= chunk.subarray(0, 8);
        verifier.update(chunk);
      }
      const { ok, actual } = verifier.finish();
      if (!ok || verifier.length !== size) {
        throw new ArchiveError('ARCHIVE_DIGEST_MISMATCH', `${name} in the archive does not match its name: expected ${digest}, got ${actual} (${verifier.length} bytes)`);
      }
      this.#files.set(name, { digest, size, head: head ?? Buffer.alloc(0) });
      this.#have.set(digest, size);
      return;
    }
    const verifier = new DigestVerifier(digest);
    const { file, head } = await this.#toTemp(entry, name, size, verifier);
    const { ok, actual } = verifier.finish();
    if (!ok) {
      await this.#removeTemp(file);
      throw new ArchiveError('ARCHIVE_DIGEST_MISMATCH', `${name} in the archive does not match its name: expected ${digest}, got ${actual} (${size} bytes)`);
    }
    this.#files.set(name, { digest, size, head });
    this.#staged.set(digest, file);
    this.#have.set(digest, size);
  }

  /** Any other file: named by its sha256; moved into the store later if an image refers to it. */
  async #stageEntry(entry: TarEntry, name: string, size: number): Promise<void> {
    const hash = createHash('sha256');
    const { file, head } = await this.#toTemp(entry, name, size, hash);
    const digest = `sha256:${hash.digest('hex')}`;
    this.#files.set(name, { digest, size, head });
    if (this.#have.has(digest)) {
      await this.#removeTemp(file); // the same bytes came before
      return;
    }
    this.#staged.set(digest, file);
    this.#have.set(digest, size);
  }

  /**
   * Streams an entry into a new temp file, feeding `hash` as it goes; resolves once every byte is
   * in the file (its fsync runs on in the background) with the file and the entry's first bytes.
   */
  async #toTemp(entry: TarEntry, name: string, size: number, hash: { update(chunk: Buffer): unknown }): Promise<{ file: StageFile; head: Buffer }> {
    const file = await StageFile.create(this.#store.tmpDir);
    this.#temps.add(file);
    let head: Buffer | null = null;
    for await (const chunk of entry) {
      head ??= Buffer.from(chunk.subarray(0, 8));
      hash.update(chunk);
      const wait = file.add(chunk);
      if (wait) await wait;
    }
    await file.end();
    if (file.size !== size) throw new ArchiveError('ARCHIVE_TRUNCATED', `${name}: ${file.size} bytes where the tar header says ${size}`);
    return { file, head: head ?? Buffer.alloc(0) };
  }

  /**
   * Streams a blob into the store through a BlobWriter (`fill` writes it), commits it, and
   * records it as added; the writer is aborted on failure, and by rollback() while it is open.
   */
  async #write(digest: string, size: number, fill: (writer: BlobWriter) => Promise<void>): Promise<void> {
    const writer = await this.#store.createWriter(digest, size);
    this.#writer = writer;
    try {
      await fill(writer);
      await writer.commit();
    } catch (err) {
      await writer.abort();
      throw err;
    } finally {
      this.#writer = null;
    }
    this.#added.add(digest);
    this.#have.set(digest, size);
  }

  // ------------------------------------------------------------------------------- looking up

  has(digest: string): boolean {
    return this.#have.has(digest);
  }

  file(path: string): FileEntry | null {
    let name = normalize(path);
    for (let hop = 0; hop <= MAX_LINK_HOPS; hop++) {
      const file = this.#files.get(name);
      if (file) return file;
      const next = this.#links.get(name);
      if (next === undefined) return null;
      name = next;
    }
    return null;
  }

  async sizeOf(digest: string): Promise<number | null> {
    const have = this.#have.get(digest);
    if (have !== undefined) return have;
    if (!parseDigest(digest)) return null;
    return (await this.#store.stat(digest))?.size ?? null;
  }

  async readBlob(digest: string): Promise<Buffer> {
    const staged = this.#staged.get(digest);
    if (staged) return readFile(staged.path);
    return this.#store.readAll(digest);
  }

  // ------------------------------------------------------------------------------- settling

  /**
   * Puts everything the checked archive's images need into the store (synthesized manifests,
   * referenced temp files, each once its fsync is done) and removes every other temp file; then
   * checks that every blob the images need is there, at its size.
   */
  async settle(found: Pick<Inventory, 'manifests' | 'blobs'>): Promise<void> {
    // Synthesized manifests (docker archives) become blobs like any other.
    for (const [digest, m] of found.manifests) {
      if ((await this.sizeOf(digest)) !== null) continue;
      await this.#write(digest, m.bytes.length, (writer) => writer.write(m.bytes));
    }
    // Referenced staged files move into the store.
    for (const digest of found.blobs.keys()) {
      const temp = this.#staged.get(digest);
      if (temp) await this.#adopt(digest, temp);
    }
    // Everything the images need is in the store now; anything else the archive brought is not
    // part of an image and goes.
    const strays = this.#staged.size;
    for (const [digest, temp] of this.#staged) {
      await this.#removeTemp(temp);
      this.#staged.delete(digest);
    }
    if (strays > 0) this.#log.info({ files: strays }, 'archive: dropped files no image of the archive refers to');
    for (const [digest, size] of found.blobs) {
      const s = await this.#store.stat(digest);
      if (!s || s.size !== size) throw new ArchiveError('ARCHIVE_BLOB_MISSING', `blob ${digest} vanished from the store during the import`);
    }
  }

  /** Moves a hashed temp file into the store under its digest. */
  async #adopt(digest: string, temp: StageFile): Promise<void> {
    await temp.synced();
    // adopt() removes the temp file when the store had the blob already.
    if (await this.#store.adopt(temp.path, digest)) this.#added.add(digest);
    this.#temps.delete(temp);
    this.#staged.delete(digest);
  }

  async #removeTemp(temp: StageFile): Promise<void> {
    await temp.discard();
    this.#temps.delete(temp);
  }

  // ------------------------------------------------------------------------------- rollback

  /** Stops what is under way: aborts an open writer, removes every temp file. Never throws. */
  async discardPending(): Promise<void> {
    if (this.#writer) await quietly(this.#log, 'abort writer', () => this.#writer!.abort());
    for (const temp of [...this.#temps]) await quietly(this.#log, `remove ${temp.path}`, () => this.#removeTemp(temp));
  }

  /** Removes every blob this import added to the store. Never throws. */
  async removeAdded(): Promise<void> {
    for (const digest of this.#added) await quietly(this.#log, `remove ${digest}`, () => this.#store.remove(digest));
    this.#added.clear();
  }
}
