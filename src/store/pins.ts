// Pins: images an operator wants kept whatever eviction decides (`cove pin REF`). They live in
// <data>/pins.json, written whole to a temp file and renamed, so an index rebuild never loses them.
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** A pinned image: a tag (whatever it points to now) or a digest, in one upstream repository. */
export interface Pin {
  upstream: string;
  repo: string;
  /** A tag or a digest. */
  reference: string;
  pinnedAt: number;
}

const FILE = 'pins.json';

export class PinStore {
  readonly #path: string;
  #pins: Pin[] = [];
  #chain: Promise<void> = Promise.resolve();

  private constructor(dataDir: string) {
    this.#path = join(dataDir, FILE);
  }

  static async open(dataDir: string): Promise<PinStore> {
    const store = new PinStore(dataDir);
    try {
      const parsed = JSON.parse(await readFile(store.#path, 'utf8')) as unknown;
      if (Array.isArray(parsed)) store.#pins = parsed.filter(isPin);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`${store.#path} cannot be read: ${(err as Error).message}`);
    }
    return store;
  }

  list(): readonly Pin[] {
    return this.#pins;
  }

  has(upstream: string, repo: string, reference: string): boolean {
    return this.#pins.some((p) => p.upstream === upstream && p.repo === repo && p.reference === reference);
  }

  /** Adds a pin; false when it was there already. */
  async add(upstream: string, repo: string, reference: string, now = Date.now()): Promise<boolean> {
    if (this.has(upstream, repo, reference)) return false;
    this.#pins = [...this.#pins, { upstream, repo, reference, pinnedAt: now }];
    await this.#save();
    return true;
  }

  /** Removes a pin; false when there was none. */
  async remove(upstream: string, repo: string, reference: string): Promise<boolean> {
    const left = this.#pins.filter((p) => !(p.upstream === upstream && p.repo === repo && p.reference === reference));
    if (left.length === this.#pins.length) return false;
    this.#pins = left;
    await this.#save();
    return true;
  }

  #save(): Promise<void> {
    const text = `${JSON.stringify(this.#pins, null, 1)}\n`;
    this.#chain = this.#chain.then(async () => {
      await writeFile(`${this.#path}.tmp`, text);
      await rename(`${this.#path}.tmp`, this.#path);
    });
    return this.#chain;
  }
}

function isPin(value: unknown): value is Pin {
  const p = value as Pin;
  return typeof p === 'object' && p !== null && typeof p.upstream === 'string' && typeof p.repo === 'string' && typeof p.reference === 'string' && typeof p.pinnedAt === 'number';
}
