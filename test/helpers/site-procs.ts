// A site of Coves as real `cove serve` processes for chaos tests: nodes started together or one
// after another, killed with SIGKILL and started again on the same port, data directory and id,
// optionally one of them reached by its peers only through a relay that answers late. Each node
// reaches the origin through a relay of its own, so the origin's request records (their Host
// header names the relay's port) tell which node asked for what. Pulls are plain HTTP GETs
// (manifest and every blob at once) with every digest checked. Everything started is stopped by
// PID on cleanup; everything listens on 127.0.0.1.
import { createHash } from 'node:crypto';
import { copyFileSync, mkdirSync } from 'node:fs';
import { request } from 'node:http';
import { getPriority, setPriority } from 'node:os';
import { join } from 'node:path';
import { Cleanup, httpGet, startCove, startProc, tempDir, waitFor, type CoveProc, type Proc } from '../e2e/real.js';
import { freePorts, healthOf, waitSiteLive, type Health } from '../e2e/site-harness.js';
import { DelayRelay } from './delay-relay.js';
import type { Image } from './images.js';
import { Link } from './link.js';
import type { OriginRegistry } from './origin-registry.js';
import { ACCEPT_ALL } from './site.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** A timer for races: unref'd, so a race already won does not keep the process alive. */
const deadline = (ms: number) => new Promise<void>((r) => setTimeout(r, ms).unref());

export interface ProcNode {
  id: string;
  port: number;
  /** Where clients reach it (its own port). */
  url: string;
  /** Its entry in COVE_PEERS: its own URL, or the slow relay's. */
  peerUrl: string;
  /** The node's relay to the origin: its port names the node in the origin's records. */
  upstream: Link;
  /** The running process; null while killed. */
  cove: CoveProc | null;
  /** Every process this node has been, oldest first (their logs outlive a kill). */
  history: CoveProc[];
  dataDir: string | null;
}

export interface ProcSiteOptions {
  n: number;
  /** Extra COVE_* settings for every node. */
  env?: Record<string, string>;
  /** Pauses between one node answering /healthz and the next one's start; absent: all at once. */
  gapsMs?: number[];
  /** A node whose peers reach it only through a relay that delivers every byte `delayMs` late. */
  slow?: { id: string; delayMs: number };
}

export class ProcSite {
  readonly nodes: ProcNode[];
  readonly #cleanup: Cleanup;
  readonly #env: Record<string, string>;
  readonly #peers: string;
  /** This process's priority when the site started: every node runs at it. */
  readonly #priority = getPriority();

  private constructor(cleanup: Cleanup, nodes: ProcNode[], env: Record<string, string>) {
    this.#cleanup = cleanup;
    this.nodes = nodes;
    this.#env = env;
    this.#peers = nodes.map((n) => n.peerUrl).join(',');
  }

  /** Starts the site in front of `origin`; resolves when every node answers /healthz (not when they see each other). */
  static async start(cleanup: Cleanup, origin: OriginRegistry, opts: ProcSiteOptions): Promise<ProcSite> {
    // The relays listen first, so the nodes' ports, picked after, cannot be one of theirs.
    const ids = Array.from({ length: opts.n }, (_, i) => `node-${i + 1}`);
    const upstreams: Link[] = [];
    for (let i = 0; i < opts.n; i++) {
      const link = await Link.start({ port: origin.port });
      cleanup.add(() => link.close());
      upstreams.push(link);
    }
    const slow = opts.slow ? await DelayRelay.start(null, opts.slow.delayMs) : null;
    if (slow) cleanup.add(() => slow.close());
    const ports = await freePorts(opts.n);
    const nodes: ProcNode[] = ids.map((id, i) => {
      const port = ports[i]!;
      let peerUrl = `http://127.0.0.1:${port}`;
      if (slow && opts.slow?.id === id) {
        slow.target = { host: '127.0.0.1', port };
        peerUrl = slow.url();
      }
      return { id, port, url: `http://127.0.0.1:${port}`, peerUrl, upstream: upstreams[i]!, cove: null, history: [], dataDir: null };
    });
    const site = new ProcSite(cleanup, nodes, opts.env ?? {});
    // Registered after every process's own stop, so it runs first: the nodes stop in parallel.
    if (opts.gapsMs) {
      for (const [i, node] of nodes.entries()) {
        if (i > 0) await sleep(opts.gapsMs[(i - 1) % opts.gapsMs.length]!);
        await site.#launch(node);
      }
    } else {
      await Promise.all(nodes.map((node) => site.#launch(node)));
    }
    cleanup.add(() => Promise.all(site.nodes.map((n) => n.cove?.proc.stop(5000))));
    return site;
  }

  node(id: string): ProcNode {
    const node = this.nodes.find((n) => n.id === id);
    if (!node) throw new Error(`no node ${id}`);
    return node;
  }

  /** The node whose origin relay a request's Host header names, or null. */
  nodeOfHost(host: string | null): string | null {
    return this.nodes.find((n) => host === `127.0.0.1:${n.upstream.port}`)?.id ?? null;
  }

  /** SIGKILLs the node's process (by PID) and waits until it has exited. */
  async kill(id: string): Promise<void> {
    const node = this.node(id);
    const cove = node.cove;
    if (!cove) throw new Error(`${id} is not running`);
    node.cove = null;
    cove.proc.child.kill('SIGKILL');
    await Promise.race([cove.proc.exited, deadline(10_000)]);
    if (cove.proc.running) throw new Error(`${id} (pid ${cove.pid}) did not exit after SIGKILL`);
  }

  /** Starts a killed node again: same port, data directory and id. */
  async restart(id: string): Promise<void> {
    const node = this.node(id);
    if (node.cove) throw new Error(`${id} is still running`);
    await this.#launch(node);
  }

  /** Waits (bounded) until every running node sees every other one live. */
  async waitLive(timeoutMs = 30_000): Promise<void> {
    await waitSiteLive(
      this.nodes.map((n) => n.cove!),
      timeoutMs,
    );
  }

  /** Every running node's /healthz (null for a killed or silent node). */
  healths(): Promise<Array<Health | null>> {
    return Promise.all(this.nodes.map((n) => (n.cove ? healthOf(n.cove).catch(() => null) : Promise.resolve(null))));
  }

  /** A node's warnings and errors (pino level >= 40) from all its processes, oldest first. */
  warnings(id: string, max = 12): string[] {
    const out: string[] = [];
    for (const [gen, cove] of this.node(id).history.entries()) {
      for (const line of cove.logLines()) {
        if (typeof line.level !== 'number' || line.level < 40) continue;
        const fields = Object.fromEntries(Object.entries(line).filter(([k]) => !['level', 'time', 'pid', 'hostname', 'msg'].includes(k)));
        out.push(`${gen > 0 ? `[run ${gen + 1}] ` : ''}${String(line.msg)} ${JSON.stringify(fields).slice(0, 300)}`);
      }
    }
    return out.length > max ? [...out.slice(0, max - 1), `… ${out.length - max + 1} more`] : out;
  }

  /** Log lines of every process a node has been, oldest first. */
  logLines(id: string): Array<Record<string, unknown>> {
    return this.node(id).history.flatMap((cove) => cove.logLines());
  }

  /** Copies every node's logs (each process it has been) into `dir`, as <id>-run<k>.log. */
  saveLogs(dir: string): void {
    mkdirSync(dir, { recursive: true });
    for (const node of this.nodes) for (const [k, cove] of node.history.entries()) copyFileSync(cove.proc.logFile, join(dir, `${node.id}-run${k + 1}.log`));
  }

  async #launch(node: ProcNode): Promise<void> {
    const cove = await startCove(
      this.#cleanup,
      node.upstream.url(),
      { COVE_NODE_ID: node.id, COVE_PEERS: this.#peers, COVE_TAG_TTL: '1h', ...this.#env },
      { port: node.port, ...(node.dataDir ? { dataDir: node.dataDir } : {}) },
    );
    // A node started again while the test process runs at a raised priority would inherit it.
    putBack(cove.pid, this.#priority);
    node.cove = cove;
    node.dataDir = cove.dataDir;
    node.history.push(cove);
  }
}

/** `n` busy-loop node processes (a CPU hog beside the site), stopped by PID on cleanup. */
export function startHogs(cleanup: Cleanup, n: number): Proc[] {
  const dir = tempDir(cleanup, 'cove-hog-');
  const priority = getPriority();
  return Array.from({ length: n }, (_, i) => {
    const hog = startProc(cleanup, `hog-${i + 1}`, process.execPath, ['-e', 'for (;;) {}'], { logFile: join(dir, `hog-${i + 1}.log`), graceMs: 2000 });
    putBack(hog.pid, priority);
    return hog;
  });
}

/** Sets `pid`'s priority to `priority` when it differs (a child inherits its parent's). */
function putBack(pid: number, priority: number): void {
  if (pid > 0 && getPriority(pid) !== priority) setPriority(pid, priority);
}

export interface PullOutcome {
  node: string;
  ok: boolean;
  ms: number;
  /** Objects whose bytes hashed to their digest (manifest included). */
  verified: number;
  errors: string[];
}

/**
 * Pulls `repo:tag` through `url` the way a client does, minus retries: the manifest, then every
 * blob at once, each hashed as it streams (`onBytes` hears each blob chunk's size). Bounded by
 * `timeoutMs` overall (requests still open then are left to the node's stop).
 */
export async function pullVerified(
  node: string,
  url: string,
  repo: string,
  tag: string,
  image: Image,
  opts: { timeoutMs?: number; onBytes?: (digest: string, n: number) => void } = {},
): Promise<PullOutcome> {
  const timeoutMs = opts.timeoutMs ?? 90_000;
  const t0 = performance.now();
  const errors: string[] = [];
  let verified = 0;
  const work = (async () => {
    const m = await httpGet(`${url}/v2/${repo}/manifests/${tag}`, { headers: { accept: ACCEPT_ALL }, timeoutMs: 30_000 }).catch((err: Error) => err);
    if (m instanceof Error) return void errors.push(`manifest: ${m.message}`);
    if (m.status !== 200 || m.sha256 !== image.manifestDigest) return void errors.push(`manifest: ${m.status} ${m.sha256}`);
    verified++;
    const blobs = [{ digest: image.configDigest, size: image.config.length }, ...image.layers.map((l) => ({ digest: l.digest, size: l.bytes.length }))];
    await Promise.all(
      blobs.map(async (blob) => {
        const short = blob.digest.slice(7, 19);
        const started = performance.now();
        const b = await getHashed(`${url}/v2/${repo}/blobs/${blob.digest}`, 30_000, (n) => opts.onBytes?.(blob.digest, n)).catch((err: Error) => err);
        const at = `${(performance.now() - started).toFixed(0)} ms`;
        if (b instanceof Error) errors.push(`blob ${short}: ${b.message} after ${at}`);
        else if (b.status !== 200) errors.push(`blob ${short}: status ${b.status} after ${at}`);
        else if (b.bytes !== blob.size || b.sha256 !== blob.digest) errors.push(`blob ${short}: ${b.bytes} of ${blob.size} bytes, hash ${b.sha256 === blob.digest ? 'right' : 'wrong'}, after ${at}`);
        else verified++;
      }),
    );
  })();
  let timer: NodeJS.Timeout | undefined;
  const done = await Promise.race([work.then(() => true), new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs)))]);
  clearTimeout(timer);
  if (!done) errors.push(`not finished after ${timeoutMs} ms`);
  const ms = performance.now() - t0;
  return { node, ok: errors.length === 0 && verified === 2 + image.layers.length, ms, verified, errors };
}

/**
 * One GET on its own connection, the body hashed as it streams (not kept), each chunk's size
 * told to `onData`; rejects when the body breaks off. `idleMs` bounds a silent socket.
 */
function getHashed(url: string, idleMs: number, onData: (n: number) => void): Promise<{ status: number; bytes: number; sha256: string }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent: false, timeout: idleMs }, (res) => {
      const hash = createHash('sha256');
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        bytes += chunk.length;
        hash.update(chunk);
        onData(chunk.length);
      });
      res.on('end', () => (res.complete ? resolve({ status: res.statusCode ?? 0, bytes, sha256: `sha256:${hash.digest('hex')}` }) : reject(new Error('body cut off'))));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`no byte for ${idleMs} ms`)));
    req.on('error', reject);
    req.end();
  });
}

/** Waits (bounded) for `fn`; false when it never came true. */
export async function within(fn: () => boolean, timeoutMs: number, everyMs = 20): Promise<boolean> {
  return waitFor('a condition', fn, timeoutMs, everyMs).then(
    () => true,
    () => false,
  );
}
