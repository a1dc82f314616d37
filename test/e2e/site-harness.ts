// A site of Coves as real processes, for test/e2e/site.test.ts and scripts/bench.ts: N nodes on
// loopback ports chosen up front, each told the same COVE_PEERS list (every node's URL, itself
// included: a node recognises itself by id and skips it), node ids node-1 … node-N, and a bounded
// wait until every node sees the N-1 others as live. Built on the harness in real.ts.
import { freePort } from '../helpers/process.js';
import { type Cleanup, type CoveProc, httpGet, startCove, waitFor } from './real.js';

export interface PeerRow {
  id: string | null;
  url: string;
  state: string;
  hits: number;
  bytes: number;
}

export interface PeersTable {
  self: string;
  site: string;
  peers: PeerRow[];
}

export interface Health {
  bytesFetched?: Record<string, number>;
  objectsFetched?: Record<string, number>;
  bytesServed?: Record<string, number>;
  peerRequests?: Record<string, number>;
  upstreams?: Record<string, { state: string }>;
  [key: string]: unknown;
}

/** A node's JSON at `path` (loopback, bounded). */
async function json<T>(cove: CoveProc, path: string): Promise<T> {
  const r = await httpGet(`${cove.url}${path}`, { keep: true, timeoutMs: 5000 });
  if (r.status !== 200) throw new Error(`GET ${cove.url}${path} -> ${r.status}: ${r.body.toString().slice(0, 200)}`);
  return JSON.parse(r.body.toString()) as T;
}

export const peersOf = (cove: CoveProc) => json<PeersTable>(cove, '/_cove/peers');
export const healthOf = (cove: CoveProc) => json<Health>(cove, '/healthz');

/** Bytes a node fetched from `tier` ("origin", "peer:<id>", …) per its /healthz. */
export const fetchedFrom = (h: Health, tier: string): number => h.bytesFetched?.[tier] ?? 0;
/** Bytes a node fetched from all of its peers. */
export const fetchedFromPeers = (h: Health): number =>
  Object.entries(h.bytesFetched ?? {})
    .filter(([k]) => k.startsWith('peer:'))
    .reduce((n, [, v]) => n + v, 0);

/** `n` distinct free loopback ports. */
export async function freePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  for (let tries = 0; ports.size < n && tries < n * 20; tries++) ports.add(await freePort());
  if (ports.size < n) throw new Error(`could not find ${n} distinct free ports`);
  return [...ports];
}

/** Waits (bounded) until every node lists the other N-1 nodes as `live`. */
export async function waitSiteLive(nodes: CoveProc[], timeoutMs = 30_000): Promise<void> {
  let last = '';
  try {
    await waitFor(
      `every node of the site to see ${nodes.length - 1} live peers`,
      async () => {
        const tables = await Promise.all(nodes.map((n) => peersOf(n).catch(() => null)));
        last = tables.map((t, i) => `node-${i + 1}: ${t ? t.peers.map((p) => `${p.id ?? p.url}=${p.state}`).join(' ') : 'no answer'}`).join('; ');
        return tables.every((t) => t !== null && t.peers.filter((p) => p.state === 'live').length === nodes.length - 1);
      },
      timeoutMs,
      200,
    );
  } catch (err) {
    throw new Error(`${err instanceof Error ? err.message : String(err)}; last seen: ${last}`);
  }
}

/**
 * Starts a site of `n` Coves in front of `upstream` (node-1 … node-n, all at once), each with the
 * same COVE_PEERS list and `env`, and waits until each sees the others live. Stopped on cleanup.
 */
export async function startSite(cleanup: Cleanup, upstream: string, n: number, env: Record<string, string> = {}): Promise<CoveProc[]> {
  const ports = await freePorts(n);
  const peers = ports.map((p) => `http://127.0.0.1:${p}`).join(',');
  const nodes = await Promise.all(
    ports.map((port, i) => startCove(cleanup, upstream, { COVE_NODE_ID: `node-${i + 1}`, ...(n > 1 ? { COVE_PEERS: peers } : {}), ...env }, { port })),
  );
  if (n > 1) await waitSiteLive(nodes);
  return nodes;
}
