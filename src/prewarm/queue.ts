// One queue for every prewarm: Harbor's push webhook, POST /admin/prewarm and the configured list.
// A job is one image, keyed by (upstream, repository, reference, platforms, site part). A job
// already waiting or running is not queued again: a second caller joins it and gets its result
// (five webhooks for one push cost one prewarm, not five racing ones that each revalidate the tag
// and walk the index).
// At most `concurrency` jobs run at once, so a burst of pushes cannot fill the uplink; at most
// `maxQueued` wait, past which a call is refused whole (429) rather than growing without bound.
// A job belongs to the cache, not to its callers: a caller that goes away stops listening, the
// job runs on. Only close() (shutdown) aborts jobs.
import { OciError } from '../errors.js';
import type { Logger } from '../log.js';
import { ImageRefError, parseRef } from '../oci/image-ref.js';
import { formatPlatform } from './platforms.js';
import {
  PREWARM_MAX_REFS,
  emptyResult,
  prewarmOne,
  targetOf,
  type PrewarmDeps,
  type PrewarmEvent,
  type PrewarmOptions,
  type PrewarmRefResult,
  type PrewarmResult,
} from './prewarm.js';

/** Jobs running at once unless configured (COVE_PREWARM_JOBS). */
export const PREWARM_QUEUE_DEFAULT_CONCURRENCY = 2;
/** Jobs waiting at most unless configured (COVE_PREWARM_QUEUE). */
export const PREWARM_QUEUE_DEFAULT_MAX = 1000;
/** Retry-After of a refusal for a full queue. */
const FULL_RETRY_AFTER_S = 30;

/** What the caller asks for besides the references (as prewarm() takes them). */
export type PrewarmRequest = Pick<PrewarmOptions, 'platforms' | 'ns' | 'names' | 'share'>;

/** Runs one job; prewarmOne unless a test substitutes it. Never rejects. */
export type PrewarmRunner = (ref: string, opts: PrewarmOptions) => Promise<PrewarmRefResult>;

export type JobState = 'queued' | 'running' | 'done';

/** One image being prewarmed, shared by every caller that asked for it while it was pending. */
export interface PrewarmJob {
  readonly key: string;
  readonly ref: string;
  readonly state: JobState;
  /** Resolves with the job's result; never rejects. */
  readonly done: Promise<PrewarmRefResult>;
  /** Hears the job's progress events from now on; returns the unsubscribe. */
  listen(fn: (event: PrewarmEvent) => void): () => void;
}

/** How one submitted reference was taken. */
export interface Submitted {
  ref: string;
  job: PrewarmJob;
  /** True when an equal job was already queued or running and this call joined it. */
  joined: boolean;
}

/** The queue is full: the whole call is refused (429, Retry-After). */
export class PrewarmQueueFullError extends OciError {
  constructor(waiting: number, adding: number, max: number) {
    super('TOOMANYREQUESTS', `the prewarm queue is full: ${waiting} job(s) waiting, ${adding} more asked for, at most ${max} (COVE_PREWARM_QUEUE); try again later`, {
      headers: { 'retry-after': String(FULL_RETRY_AFTER_S) },
      detail: { waiting, adding, max },
    });
  }
}

class Job implements PrewarmJob {
  state: JobState = 'queued';
  readonly done: Promise<PrewarmRefResult>;
  resolve!: (result: PrewarmRefResult) => void;
  readonly #listeners = new Set<(event: PrewarmEvent) => void>();

  constructor(
    readonly key: string,
    readonly ref: string,
    readonly request: PrewarmRequest,
  ) {
    this.done = new Promise((resolve) => {
      this.resolve = resolve;
    });
  }

  listen(fn: (event: PrewarmEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  emit(event: PrewarmEvent): void {
    // A listener that throws (a caller gone away) must not stop the job or the other listeners.
    for (const fn of this.#listeners) {
      try {
        fn(event);
      } catch {
        this.#listeners.delete(fn);
      }
    }
  }
}

export class PrewarmQueue {
  readonly #deps: PrewarmDeps;
  readonly #log: Logger;
  readonly #concurrency: number;
  readonly #maxQueued: number;
  readonly #run: PrewarmRunner;
  readonly #abort = new AbortController();
  /** Jobs waiting or running, by key. */
  readonly #pending = new Map<string, Job>();
  readonly #waiting: Job[] = [];
  #running = 0;
  #peak = 0;

  constructor(deps: PrewarmDeps, options: { concurrency?: number; maxQueued?: number; run?: PrewarmRunner } = {}) {
    this.#deps = deps;
    this.#log = deps.log;
    this.#concurrency = options.concurrency ?? PREWARM_QUEUE_DEFAULT_CONCURRENCY;
    this.#maxQueued = options.maxQueued ?? PREWARM_QUEUE_DEFAULT_MAX;
    if (!Number.isSafeInteger(this.#concurrency) || this.#concurrency < 1) throw new RangeError(`prewarm queue concurrency must be a whole number >= 1, got ${this.#concurrency}`);
    if (!Number.isSafeInteger(this.#maxQueued) || this.#maxQueued < 1) throw new RangeError(`prewarm queue length must be a whole number >= 1, got ${this.#maxQueued}`);
    this.#run = options.run ?? ((ref, opts) => prewarmOne(ref, deps, opts));
  }

  /** Jobs running and waiting now, and the most that ever ran at once. */
  get stats(): { running: number; queued: number; peakRunning: number } {
    return { running: this.#running, queued: this.#waiting.length, peakRunning: this.#peak };
  }

  /**
   * Queues a job per distinct reference, or joins the equal job already pending. All or nothing:
   * when the new jobs do not fit, nothing is queued and PrewarmQueueFullError is thrown. A
   * reference that cannot be parsed or routed gets a job that is already done (failed).
   */
  submit(refs: readonly string[], request: PrewarmRequest): Submitted[] {
    if (refs.length > PREWARM_MAX_REFS) throw new ImageRefError(`too many references: ${refs.length} (at most ${PREWARM_MAX_REFS} per call)`);
    const unique = [...new Set(refs.map((r) => r.trim()).filter((r) => r !== ''))];
    const plan = unique.map((ref) => ({ ref, key: this.#keyOf(ref, request) }));
    const fresh = new Set(plan.flatMap((p) => (typeof p.key === 'string' && !this.#pending.has(p.key) ? [p.key] : [])));
    // New jobs that find a free slot start at once; only the rest wait.
    const free = Math.max(0, this.#concurrency - this.#running);
    if (this.#waiting.length + Math.max(0, fresh.size - free) > this.#maxQueued) throw new PrewarmQueueFullError(this.#waiting.length, fresh.size, this.#maxQueued);
    const out: Submitted[] = [];
    for (const { ref, key } of plan) {
      if (typeof key !== 'string') {
        out.push({ ref, job: finished(ref, key.error), joined: false });
        continue;
      }
      const existing = this.#pending.get(key);
      if (existing) {
        out.push({ ref, job: existing, joined: true });
        continue;
      }
      const job = new Job(key, ref, request);
      if (this.#abort.signal.aborted) {
        job.state = 'done';
        job.resolve(failed(ref, 'prewarm aborted'));
      } else {
        this.#pending.set(key, job);
        this.#waiting.push(job);
      }
      out.push({ ref, job, joined: false });
    }
    this.#pump();
    return out;
  }

  /**
   * submit() and wait: the summary prewarm() gives, in the order of the references. `onProgress`
   * hears the events of this call's jobs (of a joined job, those from the moment of joining).
   */
  run(refs: readonly string[], request: PrewarmRequest, onProgress?: (event: PrewarmEvent) => void): Promise<PrewarmResult> {
    try {
      return this.wait(this.submit(refs, request), onProgress);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Waits for submitted jobs: the summary prewarm() gives, in their order. */
  async wait(submitted: readonly Submitted[], onProgress?: (event: PrewarmEvent) => void): Promise<PrewarmResult> {
    const stops = onProgress ? submitted.map((s) => s.job.listen(onProgress)) : [];
    try {
      const results = await Promise.all(submitted.map((s) => s.job.done));
      const errors = results.filter((r) => !r.ok).map((r) => ({ ref: r.ref, message: r.error ?? 'failed' }));
      return { ok: errors.length === 0, refs: results, errors };
    } finally {
      for (const stop of stops) stop();
    }
  }

  /** Aborts running jobs and fails waiting ones (shutdown); later submissions fail at once. */
  close(): void {
    this.#abort.abort();
    for (const job of this.#waiting.splice(0)) {
      this.#pending.delete(job.key);
      job.state = 'done';
      job.resolve(failed(job.ref, 'prewarm aborted'));
    }
  }

  /** The job key, or why the reference cannot be a job. */
  #keyOf(ref: string, request: PrewarmRequest): string | { error: string } {
    try {
      const parsed = parseRef(ref);
      const target = targetOf(parsed, this.#deps.routes, request);
      const platforms = request.platforms.map(formatPlatform).sort().join(',') || '*';
      // JSON: repository paths and references never hold a quote, but keys must not collide.
      // A site prewarm fills a part of the blobs: it joins only a job that fills the same part.
      const part = request.share ? `site:${request.share.copies}` : 'all';
      return JSON.stringify([target.upstream, target.repo, parsed.tag, parsed.digest, platforms, part]);
    } catch (err) {
      return { error: err instanceof Error ? err.message : String(err) };
    }
  }

  #pump(): void {
    while (this.#running < this.#concurrency && this.#waiting.length > 0 && !this.#abort.signal.aborted) {
      const job = this.#waiting.shift()!;
      this.#running++;
      this.#peak = Math.max(this.#peak, this.#running);
      job.state = 'running';
      void this.#start(job);
    }
  }

  async #start(job: Job): Promise<void> {
    let result: PrewarmRefResult;
    try {
      result = await this.#run(job.ref, { ...job.request, signal: this.#abort.signal, onProgress: (event) => job.emit(event) });
    } catch (err) {
      result = failed(job.ref, err instanceof Error ? err.message : String(err));
    }
    this.#running--;
    this.#pending.delete(job.key);
    job.state = 'done';
    const log = { ref: job.ref, digest: result.digest, platforms: result.platforms, blobs: result.blobs, bytes: result.bytes, ms: result.ms };
    if (result.ok) this.#log.info(log, 'prewarmed');
    else this.#log.warn({ ...log, err: result.error }, 'prewarm failed');
    job.emit({ type: 'ref-done', ref: job.ref, result });
    job.resolve(result);
    this.#pump();
  }
}

function failed(ref: string, error: string): PrewarmRefResult {
  return { ...emptyResult(ref), error };
}

/** A job that failed before it could be queued (an invalid or unroutable reference). */
function finished(ref: string, error: string): PrewarmJob {
  const job = new Job('', ref, { platforms: [] });
  job.state = 'done';
  job.resolve(failed(ref, error));
  return job;
}
