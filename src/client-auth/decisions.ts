// The origin's decisions about clients, kept so that a pull does not ask the origin every time
// and so that clients allowed before an outage keep pulling during it. Filed under a keyed digest
// of the credential (never the credential), the upstream and the repository. Positive decisions
// are written to `<data>/client-auth/decisions.json`, so they survive the restart that often
// comes with the same outage; refusals live in memory only.
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from '../log.js';

export interface Decision {
  /** Who the origin said the client is. */
  subject: string;
  /** The credential was accepted and may pull the repository ("" repository: accepted at all). */
  allowed: boolean;
  /** When the origin decided (ms since the epoch). */
  decidedAt: number;
}

/** Most decisions kept; the oldest go first beyond it (an edge site has a few hundred users). */
export const MAX_DECISIONS = 10_000;
const FILE_VERSION = 1;
const SAVE_DELAY_MS = 250;

export class DecisionBook {
  readonly #path: string;
  readonly #log: Logger;
  readonly #entries = new Map<string, Decision>();
  #saveTimer: NodeJS.Timeout | null = null;
  #saving: Promise<void> = Promise.resolve();
  #dirty = false;

  private constructor(dir: string, log: Logger) {
    this.#path = join(dir, 'decisions.json');
    this.#log = log;
  }

  /** Opens the book in `<data>/client-auth/`, reading what an earlier run decided. */
  static async open(dataDir: string, log: Logger): Promise<DecisionBook> {
    const dir = join(dataDir, 'client-auth');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const book = new DecisionBook(dir, log);
    await book.#load();
    return book;
  }

  static key(credential: string, upstream: string, repo: string): string {
    return `${credential}\0${upstream}\0${repo}`;
  }

  get(key: string): Decision | null {
    return this.#entries.get(key) ?? null;
  }

  /** Records a decision; the allowed ones reach the disk shortly after. */
  put(key: string, decision: Decision): void {
    this.#entries.delete(key);
    this.#entries.set(key, decision);
    while (this.#entries.size > MAX_DECISIONS) this.#entries.delete(this.#entries.keys().next().value!);
    // A refusal may replace an allowance on disk, so it is saved too (the file keeps allowances only).
    this.#scheduleSave();
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Writes what is pending; call on shutdown. */
  async close(): Promise<void> {
    if (this.#saveTimer) clearTimeout(this.#saveTimer);
    this.#saveTimer = null;
    if (this.#dirty) await this.#save();
    await this.#saving;
  }

  #scheduleSave(): void {
    this.#dirty = true;
    if (this.#saveTimer) return;
    this.#saveTimer = setTimeout(() => {
      this.#saveTimer = null;
      void this.#save();
    }, SAVE_DELAY_MS);
    this.#saveTimer.unref();
  }

  #save(): Promise<void> {
    this.#dirty = false;
    const entries = [...this.#entries].filter(([, d]) => d.allowed);
    const text = JSON.stringify({ version: FILE_VERSION, decisions: entries });
    this.#saving = this.#saving.then(async () => {
      const temp = `${this.#path}.${process.pid}.tmp`;
      try {
        await writeFile(temp, text, { mode: 0o600 });
        await rename(temp, this.#path);
      } catch (err) {
        this.#log.warn({ err: (err as Error).message }, 'could not save client auth decisions; they hold until restart');
      }
    });
    return this.#saving;
  }

  async #load(): Promise<void> {
    let text: string;
    try {
      text = await readFile(this.#path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw err;
    }
    try {
      const doc = JSON.parse(text) as { version?: unknown; decisions?: unknown };
      if (doc.version !== FILE_VERSION || !Array.isArray(doc.decisions)) throw new Error('unknown format');
      for (const entry of doc.decisions as unknown[]) {
        if (!Array.isArray(entry) || typeof entry[0] !== 'string') continue;
        const d = entry[1] as Partial<Decision> | null;
        if (typeof d?.subject === 'string' && d.allowed === true && typeof d.decidedAt === 'number') this.#entries.set(entry[0], { subject: d.subject, allowed: true, decidedAt: d.decidedAt });
      }
    } catch (err) {
      // A damaged file only costs asking the origin again.
      this.#log.warn({ path: this.#path, err: (err as Error).message }, 'client auth decisions unreadable; starting without them');
    }
  }
}
