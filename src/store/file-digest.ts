// A large blob's digest, computed off the event loop. The writer says how far its temp file is
// written; a worker thread (hash-worker.ts) hashes the file up to there while the next bytes
// arrive; commit asks for the result. At line rate SHA-256 takes most of a core, and on the event
// loop it would be that core's time taken from receiving and sending the bytes. One thread hashes
// for every writer of the process, is started by the first large blob and leaves when idle.
import { open } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { Worker } from 'node:worker_threads';
import { CoveError } from '../errors.js';
import type { DigestAlgorithm } from '../oci/reference.js';

/** What a writer asks of the hash thread. */
export type HashRequest =
  | { op: 'open'; id: number; path: string; algorithm: DigestAlgorithm }
  | { op: 'advance'; id: number; to: number }
  | { op: 'finish'; id: number; to: number }
  | { op: 'close'; id: number };

/** The thread's answer to `finish`. */
export type HashReply = { id: number; hex: string; length: number } | { id: number; error: string };

/**
 * Blobs from this size on are hashed by the thread; smaller ones (manifests, configs, small
 * layers) inline, where a round trip to the thread would cost more than the hash.
 */
export const OFF_THREAD_HASH_MIN_BYTES = 8 * 1024 * 1024;
/** How long the thread stays after its last job, for the next large blob of a pull. */
const IDLE_EXIT_MS = 10_000;

interface Waiter {
  resolve: (r: { hex: string; length: number }) => void;
  reject: (err: Error) => void;
}

/** The worker thread and the jobs it holds. */
class HashThread {
  readonly #worker: Worker;
  readonly #waiting = new Map<number, Waiter>();
  #jobs = 0;
  #idle: NodeJS.Timeout | null = null;
  #dead = false;

  constructor() {
    this.#worker = new Worker(new URL('./hash-worker.js', import.meta.url));
    this.#worker.on('message', (r: HashReply) => {
      const waiter = this.#waiting.get(r.id);
      if (!waiter) return;
      this.#waiting.delete(r.id);
      if (this.#waiting.size === 0) this.#worker.unref();
      if ('error' in r) waiter.reject(new CoveError('HASH_FAILED', `hashing the temp file failed: ${r.error}`));
      else waiter.resolve(r);
    });
    this.#worker.on('error', () => this.#die());
    this.#worker.on('exit', () => this.#die());
    // Alive only while a writer waits for its digest (after the listeners: adding a 'message'
    // listener refs the worker again): an idle thread never keeps the process from exiting.
    this.#worker.unref();
  }

  get dead(): boolean {
    return this.#dead;
  }

  post(request: HashRequest): void {
    if (!this.#dead) this.#worker.postMessage(request);
  }

  /** A job starts: the thread stays. */
  hold(): void {
    this.#jobs++;
    if (this.#idle) clearTimeout(this.#idle);
    this.#idle = null;
  }

  /** A job ended: with none left, the thread leaves after IDLE_EXIT_MS. */
  release(): void {
    this.#jobs--;
    if (this.#jobs > 0 || this.#dead) return;
    this.#idle = setTimeout(() => {
      if (this.#jobs > 0) return;
      this.#die();
      void this.#worker.terminate();
    }, IDLE_EXIT_MS);
    this.#idle.unref();
  }

  async end(): Promise<void> {
    this.#die();
    await this.#worker.terminate();
  }

  finish(id: number, to: number): Promise<{ hex: string; length: number }> {
    if (this.#dead) return Promise.reject(new CoveError('HASH_THREAD_GONE', 'the hash thread is gone'));
    return new Promise((resolve, reject) => {
      this.#waiting.set(id, { resolve, reject });
      this.#worker.ref();
      this.#worker.postMessage({ op: 'finish', id, to } satisfies HashRequest);
    });
  }

  #die(): void {
    if (this.#dead) return;
    this.#dead = true;
    if (thread === this) thread = null;
    for (const waiter of this.#waiting.values()) waiter.reject(new CoveError('HASH_THREAD_GONE', 'the hash thread is gone'));
    this.#waiting.clear();
  }
}

let thread: HashThread | null = null;
let nextId = 1;

/** What the hash thread did in this process: jobs it took, and finishes done here instead. */
export const hashThreadStats = { jobs: 0, fallbacks: 0 };

/**
 * Ends the hash thread now (a test of the fallback; a one-shot command that is done). A writer
 * still hashing finishes on the event loop; the next large blob starts a new thread.
 */
export async function endHashThread(): Promise<void> {
  await thread?.end();
}

/** The digest of a temp file that grows; see the top of this file. */
export class FileDigest {
  readonly #path: string;
  readonly #algorithm: DigestAlgorithm;
  readonly #thread: HashThread;
  readonly #id = nextId++;
  #ended = false;

  /** Starts hashing `path` (created already, empty) with `algorithm`; null when no thread could be made (hash inline). */
  static tryStart(path: string, algorithm: DigestAlgorithm): FileDigest | null {
    try {
      return new FileDigest(path, algorithm);
    } catch {
      return null;
    }
  }

  constructor(path: string, algorithm: DigestAlgorithm) {
    this.#path = path;
    this.#algorithm = algorithm;
    thread ??= new HashThread();
    this.#thread = thread;
    this.#thread.hold();
    hashThreadStats.jobs++;
    this.#thread.post({ op: 'open', id: this.#id, path, algorithm });
  }

  /** The file holds `to` bytes now: the thread may hash up to there. */
  advance(to: number): void {
    if (!this.#ended) this.#thread.post({ op: 'advance', id: this.#id, to });
  }

  /**
   * The hex digest of the file's first `to` bytes. Should the thread be gone (it failed, or the
   * process is ending), the file is hashed here instead: slower, never a wrong answer.
   */
  async finish(to: number): Promise<string> {
    this.#end();
    if (!this.#thread.dead) {
      try {
        const r = await this.#thread.finish(this.#id, to);
        if (r.length !== to) throw new CoveError('HASH_FAILED', `the hash thread read ${r.length} bytes, not ${to}`);
        return r.hex;
      } catch (err) {
        if (!(err instanceof CoveError && err.code === 'HASH_THREAD_GONE')) throw err;
      }
    }
    hashThreadStats.fallbacks++;
    return hashFile(this.#path, this.#algorithm, to);
  }

  /** The writer gave up: the thread forgets the job. */
  close(): void {
    if (this.#ended) return;
    this.#end();
    this.#thread.post({ op: 'close', id: this.#id });
  }

  #end(): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#thread.release();
  }
}

/** Hashes the first `to` bytes of a file on this thread. */
async function hashFile(path: string, algorithm: DigestAlgorithm, to: number): Promise<string> {
  const hash = createHash(algorithm);
  await readPrefix(path, to, (bytes) => hash.update(bytes), (pos) => new CoveError('HASH_FAILED', `the temp file ends at byte ${pos}, before ${to}`));
  return hash.digest('hex');
}

/**
 * Feeds the first `to` bytes of the file at `path` to `take`, in order, through one 1 MiB buffer
 * (`take` must use each chunk before it returns). `short(pos)` is the error when the file ends early.
 */
export async function readPrefix(path: string, to: number, take: (bytes: Buffer) => void, short: (pos: number) => Error): Promise<void> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.allocUnsafe(1024 * 1024);
    for (let pos = 0; pos < to; ) {
      const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, to - pos), pos);
      if (bytesRead === 0) throw short(pos);
      take(buffer.subarray(0, bytesRead));
      pos += bytesRead;
    }
  } finally {
    await handle.close();
  }
}
