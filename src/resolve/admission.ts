// Fill admission: how many cold blobs may be coming in at once, overall and per client address,
// so one client cannot hold every upstream stream, temp file and write buffer of the node.
// Only a new fill takes a slot; a request that joins a fill already running never does, so a
// hundred clients of one cold layer cost one slot. Prewarm fills have a budget of their own.
import { OciError } from '../errors.js';

/** Who a fill is for: it decides which budget the fill's slot comes from. */
export type Requester =
  /** A client pulling: the overall cap and the cap of its address. */
  | { kind: 'client'; address: string }
  /**
   * A sibling Cove fetching for its site: the overall cap only when peer requests are signed
   * (peersSigned); without a site key the peer header is anyone's to send, so its address counts.
   */
  | { kind: 'peer'; address: string }
  /** Prewarm: its own budget; never refused, it waits for a slot. */
  | { kind: 'background' };

/** The requester of prewarm fills (and of any lookup that names none). */
export const BACKGROUND: Requester = Object.freeze({ kind: 'background' });

/**
 * Prewarm fills running at once. Prewarm bounds its own concurrency (a few blobs per image);
 * this budget keeps several prewarms at once (schedule, webhook, admin) from crowding out clients.
 */
export const BACKGROUND_FILLS = 8;

/** Retry-After of a 429 for a request that found no fill slot: the time a few layers take. */
export const ADMISSION_RETRY_AFTER_S = 5;

export interface AdmissionLimits {
  /** Client and peer fills at once. */
  max: number;
  /** Fills of one client address at once. */
  maxPerClient: number;
  /** How long a request over a cap waits for a slot before the 429 (0: refused at once). */
  queueWaitMs: number;
  /** Prewarm fills at once. */
  background?: number;
  /** Peer requests carry a signature checked at the HTTP edge (COVE_PEER_KEY is set). */
  peersSigned?: boolean;
}

/** A taken slot; release it exactly once, when the fill has ended. */
export type Release = () => void;

interface Waiter {
  who: Requester;
  grant: (release: Release) => void;
}

export class FillAdmission {
  readonly #limits: Required<AdmissionLimits>;
  #running = 0;
  #background = 0;
  readonly #perClient = new Map<string, number>();
  readonly #waiting: Waiter[] = [];

  readonly #onRefused: () => void;

  /** `onRefused` hears each request refused with 429 (for a counter). */
  constructor(limits: AdmissionLimits, onRefused: () => void = () => {}) {
    this.#limits = { background: BACKGROUND_FILLS, peersSigned: false, ...limits };
    this.#onRefused = onRefused;
  }

  /** Client and peer fills running now (prewarm fills apart). */
  get running(): number {
    return this.#running;
  }

  /** Requests waiting for a slot now. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /**
   * A slot for a new fill. Over a cap, a client or peer waits up to queueWaitMs (a slot frees when
   * a fill ends or is cancelled), then is refused with 429 TOOMANYREQUESTS and Retry-After;
   * `signal` ends the wait early (the client went away). Prewarm waits as long as it takes.
   */
  admit(asked: Requester, signal?: AbortSignal): Promise<Release> {
    signal?.throwIfAborted();
    const who: Requester = asked.kind === 'peer' && !this.#limits.peersSigned ? { kind: 'client', address: asked.address } : asked;
    if (this.#fits(who)) return Promise.resolve(this.#take(who));
    if (who.kind !== 'background' && (this.#limits.queueWaitMs === 0 || this.#queueFull(who))) return Promise.reject(this.#refusal(who));
    return new Promise<Release>((resolve, reject) => {
      let timer: NodeJS.Timeout | null = null;
      const waiter: Waiter = {
        who,
        grant: (release) => {
          done();
          resolve(release);
        },
      };
      const leave = (err: unknown) => {
        const i = this.#waiting.indexOf(waiter);
        if (i >= 0) this.#waiting.splice(i, 1);
        done();
        reject(err);
      };
      const onAbort = () => leave(signal!.reason);
      const done = () => {
        if (timer) clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      if (who.kind !== 'background') timer = setTimeout(() => leave(this.#refusal(who)), this.#limits.queueWaitMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.#waiting.push(waiter);
    });
  }

  #fits(who: Requester): boolean {
    if (who.kind === 'background') return this.#background < this.#limits.background;
    if (this.#running >= this.#limits.max) return false;
    return who.kind === 'peer' || (this.#perClient.get(who.address) ?? 0) < this.#limits.maxPerClient;
  }

  /** Waiting is bounded too: no more waiters than slots, overall and per client. */
  #queueFull(who: Requester & { address: string }): boolean {
    const waiting = this.#waiting.filter((w) => w.who.kind !== 'background');
    if (waiting.length >= this.#limits.max) return true;
    return who.kind === 'client' && waiting.filter((w) => w.who.kind === 'client' && w.who.address === who.address).length >= this.#limits.maxPerClient;
  }

  #take(who: Requester): Release {
    if (who.kind === 'background') this.#background++;
    else {
      this.#running++;
      if (who.kind === 'client') this.#perClient.set(who.address, (this.#perClient.get(who.address) ?? 0) + 1);
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      if (who.kind === 'background') this.#background--;
      else {
        this.#running--;
        if (who.kind === 'client') {
          const left = (this.#perClient.get(who.address) ?? 1) - 1;
          if (left > 0) this.#perClient.set(who.address, left);
          else this.#perClient.delete(who.address);
        }
      }
      this.#wake();
    };
  }

  /** Hands freed slots to waiters, oldest first, skipping those whose cap is still full. */
  #wake(): void {
    for (let i = 0; i < this.#waiting.length; ) {
      const waiter = this.#waiting[i]!;
      if (!this.#fits(waiter.who)) {
        i++;
        continue;
      }
      this.#waiting.splice(i, 1);
      waiter.grant(this.#take(waiter.who));
    }
  }

  #refusal(who: Requester & { address: string }): OciError {
    this.#onRefused();
    const perClient = who.kind === 'client' && (this.#perClient.get(who.address) ?? 0) >= this.#limits.maxPerClient;
    const why = perClient
      ? `this client (${who.address}) already has ${this.#limits.maxPerClient} blobs coming from upstream (COVE_MAX_FILLS_PER_CLIENT)`
      : `${this.#limits.max} blobs are already coming from upstream (COVE_MAX_FILLS)`;
    return new OciError('TOOMANYREQUESTS', `${why}; retry once some have arrived`, {
      detail: { limit: perClient ? 'per-client' : 'overall', max: perClient ? this.#limits.maxPerClient : this.#limits.max },
      headers: { 'retry-after': String(ADMISSION_RETRY_AFTER_S) },
    });
  }
}
