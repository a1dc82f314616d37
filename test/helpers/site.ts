// A site of several Coves on loopback for tests: each node its own port, data directory and node
// id, all given the same static COVE_PEERS list (each node recognises and skips itself).
import { createServer } from 'node:net';
import type { Image } from './images.js';
import { fetchAll, sha256 } from './http.js';
import { startTestCove, type TestCove } from './cove.js';

export const ACCEPT_ALL =
  'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, */*';

/** A free loopback port (closed again at once; the caller binds it right after). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export interface SiteNode extends TestCove {
  id: string;
}

/** Starts `n` Coves in front of `upstream` that know each other as peers; waits until they do. */
export async function startSite(
  t: { teardown(fn: () => unknown): void },
  upstream: string,
  n: number,
  env: Record<string, string> = {},
  extraPeers: string[] = [],
): Promise<SiteNode[]> {
  const ports: number[] = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  const peers = [...ports.map((p) => `http://127.0.0.1:${p}`), ...extraPeers].join(',');
  const nodes: SiteNode[] = [];
  for (let i = 0; i < n; i++) {
    const id = `node-${i + 1}`;
    const cove = await startTestCove(t, upstream, { COVE_NODE_ID: id, COVE_LISTEN: `127.0.0.1:${ports[i]}`, COVE_PEERS: peers, COVE_TAG_TTL: '1h', ...env });
    nodes.push(Object.assign(cove, { id }));
  }
  for (const node of nodes) await waitForPeers(node, n - 1);
  return nodes;
}

/** Waits (bounded) until a node's peer table has `count` live peers. */
export async function waitForPeers(node: TestCove, count: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const table = (await (await fetch(`${node.url}/_cove/peers`)).json()) as { peers: Array<{ state: string }> };
    if (table.peers.filter((p) => p.state === 'live').length >= count) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${node.url} did not see ${count} live peers within 5 s`);
}

/** Waits (bounded) until a node's peer table shows peer `id` in `state` ("unproven", "live", …). */
export async function waitForPeerState(node: TestCove, id: string, state: string): Promise<{ state: string; refusal: string | null }> {
  let last: unknown = null;
  for (let i = 0; i < 200; i++) {
    const table = (await (await fetch(`${node.url}/_cove/peers`)).json()) as { peers: Array<{ id: string | null; state: string; refusal: string | null }> };
    const row = table.peers.find((p) => p.id === id);
    last = row;
    if (row?.state === state) return row;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`${node.url} did not show peer ${id} as ${state} within 5 s (last: ${JSON.stringify(last)})`);
}

export interface PullResult {
  manifest: { status: number; cache: string; tier?: string };
  blobs: Array<{ digest: string; status: number; cache: string }>;
}

/** Pulls a whole image through one Cove and checks every byte against the image. */
export async function pullImage(url: string, repo: string, tag: string, image: Image): Promise<PullResult> {
  const m = await fetchAll(`${url}/v2/${repo}/manifests/${tag}`, { headers: { accept: ACCEPT_ALL } });
  if (m.status !== 200) throw new Error(`manifest ${repo}:${tag} from ${url}: ${m.status} ${m.body.toString()}`);
  if (sha256(m.body) !== image.manifestDigest) throw new Error(`manifest from ${url} has the wrong bytes`);
  const blobs: PullResult['blobs'] = [];
  await Promise.all(
    [{ digest: image.configDigest, bytes: image.config }, ...image.layers].map(async (blob) => {
      const b = await fetchAll(`${url}/v2/${repo}/blobs/${blob.digest}`);
      if (b.status !== 200) throw new Error(`blob ${blob.digest} from ${url}: ${b.status} ${b.body.toString()}`);
      if (sha256(b.body) !== blob.digest) throw new Error(`blob ${blob.digest} from ${url} has the wrong bytes`);
      blobs.push({ digest: blob.digest, status: b.status, cache: String(b.headers['cache-status']) });
    }),
  );
  return { manifest: { status: m.status, cache: String(m.headers['cache-status']) }, blobs };
}

/** A node's /healthz counters. */
export async function health(node: TestCove): Promise<{ bytesFetched: Record<string, number>; peerRequests: Record<string, number>; staleServed: number }> {
  return (await (await fetch(`${node.url}/healthz`)).json()) as never;
}
