// The tag journal: one small JSON file per (upstream, repo, tag) in `<data>/tags/`, so tags
// survive the loss of the index. Blob records can be rebuilt from the blob files; which digest a
// tag pointed at cannot, and without it a rebuilt cache would be useless when the origin is down.
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { isTagRecord, type TagKey, type TagRecord } from './records.js';

/** One journalled tag. */
export interface JournalEntry {
  key: TagKey;
  record: TagRecord;
}

export class TagJournal {
  readonly dir: string;
  #ready: Promise<void> | null = null;

  constructor(dir: string) {
    this.dir = dir;
  }

  /** The journal file of a tag: the sha256 of the key, so any tag name gives a safe file name. */
  fileOf(key: TagKey): string {
    const name = createHash('sha256').update(`${key.upstream}\0${key.repo}\0${key.tag}`).digest('hex');
    return join(this.dir, `${name}.json`);
  }

  /**
   * Records a tag, written to a temp file and renamed so a reader never sees half a file. Not
   * fsynced: a tag lost to a crash costs one request to the origin, not wrong content.
   */
  async put(key: TagKey, record: TagRecord): Promise<void> {
    await this.#mkdir();
    const path = this.fileOf(key);
    const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
    const entry = { upstream: key.upstream, repo: key.repo, tag: key.tag, record };
    try {
      await writeFile(temp, JSON.stringify(entry));
      await rename(temp, path);
    } catch (err) {
      await unlink(temp).catch(() => {});
      throw err;
    }
  }

  /** Forgets a tag; fine when it was never journalled. */
  async delete(key: TagKey): Promise<void> {
    await unlink(this.fileOf(key)).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
  }

  /**
   * Every readable entry. Leftover temp files are removed; unreadable or misnamed files are
   * skipped and counted, never fatal (the journal is a backup, not the source of truth).
   */
  async readAll(): Promise<{ entries: JournalEntry[]; skipped: number }> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { entries: [], skipped: 0 };
      throw err;
    }
    const entries: JournalEntry[] = [];
    let skipped = 0;
    for (const name of names.sort()) {
      const path = join(this.dir, name);
      if (name.endsWith('.tmp')) {
        await unlink(path).catch(() => {});
        continue;
      }
      const entry = await readEntry(path);
      if (entry && this.fileOf(entry.key) === path) entries.push(entry);
      else skipped++;
    }
    return { entries, skipped };
  }

  #mkdir(): Promise<void> {
    this.#ready ??= mkdir(this.dir, { recursive: true }).then(
      () => {},
      (err: unknown) => {
        this.#ready = null; // try again next time
        throw err;
      },
    );
    return this.#ready;
  }
}

async function readEntry(path: string): Promise<JournalEntry | null> {
  try {
    const doc = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown> | null;
    if (!doc || typeof doc !== 'object') return null;
    const { upstream, repo, tag, record } = doc;
    if (typeof upstream !== 'string' || typeof repo !== 'string' || typeof tag !== 'string') return null;
    if (!isTagRecord(record)) return null;
    return { key: { upstream, repo, tag }, record };
  } catch {
    return null;
  }
}
