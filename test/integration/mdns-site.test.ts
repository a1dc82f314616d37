// A site of Coves on separate hosts that find each other by mDNS alone (COVE_MDNS=true, no
// COVE_PEERS) and share blobs: real `cove serve` processes, each in its own network namespace on a
// private bridge (test/helpers/netns.ts), the origin registry in another one.
//   host 1: the origin (test/helpers/mdns-site-origin.ts: OriginRegistry serving proj/app:1)
//   hosts 2, 3, 4: Coves node-2, node-3, node-4 of site s1
//   host 5: Cove node-5 of site s2, on the same LAN: heard by s1, never taken into its tables
// Clients run inside the namespaces too (test/helpers/mdns-site-client.ts); the test process in
// the root namespace only starts processes and reads what they print. All multicast stays on the
// bridge created here; nothing runs mDNS in the root namespace.
import t, { type Test } from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { makeImage, type Image } from '../helpers/images.js';
import { rankOwners } from '../../src/peers/protocol.js';
import { COVE_CLI, Cleanup, tempDir, waitFor, type Proc } from '../e2e/real.js';
import { createLan, helperScript, type Lan, type LanHost } from '../helpers/netns.js';

const REPO = 'proj/app';
const TAG = '1';
const PORT = 5000;
const LAYERS = [700_000, 1_300_000, 260_000, 90_000];
/** How long the nodes of a site may take to find each other. */
const DISCOVERY_MS = 15_000;

interface PeerRow {
  id: string | null;
  url: string;
  site: string | null;
  source: string;
  state: string;
  hits: number;
  bytes: number;
}
interface PeerTableJson {
  self: string;
  site: string;
  peers: PeerRow[];
}
interface Health {
  activeFills: number;
  peers: number | null;
  bytesFetched: Record<string, number>;
  peerRequests: Record<string, number>;
  staleServed: number;
}
interface PullJson {
  manifest: { status: number; digest: string | null; sha256: string; size: number; cacheStatus: string | null; warning: string | null } | null;
  blobs: Array<{ digest: string; size: number; status: number; bytes?: number; sha256?: string; cacheStatus?: string | null; error?: string }>;
  error?: string;
}

/** One `cove serve` in one namespace. */
class CoveNode {
  constructor(
    readonly id: string,
    readonly site: string,
    readonly host: LanHost,
    readonly proc: Proc,
  ) {}
  /** The URL its siblings reach it at (what mDNS must advertise). */
  get url(): string {
    return `http://${this.host.address}:${PORT}`;
  }
  logged(msg: string, fields: Record<string, unknown> = {}): boolean {
    return this.proc.jsonLines().some((l) => l.msg === msg && Object.entries(fields).every(([k, v]) => l[k] === v));
  }
}

/** Runs the client helper inside `ns` and parses the one JSON object it prints. */
async function client<T>(lan: Lan, ns: string, args: string[], timeoutMs = 30_000): Promise<T> {
  const r = await lan.run(ns, process.execPath, [helperScript('mdns-site-client.js'), ...args], { timeoutMs });
  const last = r.stdout.trim().split('\n').at(-1) ?? '';
  try {
    return JSON.parse(last) as T;
  } catch {
    throw new Error(`mdns-site-client ${args.join(' ')} printed no JSON:\n${r.stdout}\n${r.stderr}`);
  }
}

/** GET on the node's own loopback (/_cove/peers answers loopback clients only). */
async function local<T>(lan: Lan, node: CoveNode, path: string): Promise<{ status?: number; json?: T; error?: string }> {
  return client(lan, node.host.ns, ['get', `http://127.0.0.1:${PORT}${path}`], 15_000);
}

async function peersOf(lan: Lan, node: CoveNode): Promise<PeerTableJson> {
  const r = await local<PeerTableJson>(lan, node, '/_cove/peers');
  if (r.status !== 200 || !r.json) throw new Error(`${node.id} /_cove/peers: ${JSON.stringify(r)}`);
  return r.json;
}

async function healthOf(lan: Lan, node: CoveNode): Promise<Health> {
  const r = await local<Health>(lan, node, '/healthz');
  if (r.status !== 200 || !r.json) throw new Error(`${node.id} /healthz: ${JSON.stringify(r)}`);
  return r.json;
}

/**
 * A seed whose blobs (config and layers) are spread over the three owners: each node of `ids`
 * is the rendezvous owner of at least one, so the pulls exercise every path (the puller fetching
 * its own blob from the origin, a sibling fetching for it, a blob already held by the second puller).
 */
function spreadImage(ids: string[]): { seed: string; image: Image; ownerOf: Map<string, string> } {
  for (let i = 0; i < 1000; i++) {
    const seed = `mdns-site-${i}`;
    const image = makeImage({ layers: LAYERS, seed });
    const ownerOf = new Map([image.configDigest, ...image.layers.map((l) => l.digest)].map((d) => [d, rankOwners(ids, d)[0]!]));
    if (ids.every((id) => [...ownerOf.values()].includes(id))) return { seed, image, ownerOf };
  }
  throw new Error('no seed spreads the blobs over every node');
}

/** The image's blobs: digest and size. */
const blobsOf = (image: Image) => [{ digest: image.configDigest, size: image.config.length }, ...image.layers.map((l) => ({ digest: l.digest, size: l.bytes.length }))];

/** Asserts a pull got the manifest and every blob with the right bytes. */
function checkPull(t: Test, via: string, pulled: PullJson, image: Image): boolean {
  const problems: string[] = [];
  if (pulled.error) problems.push(pulled.error);
  const m = pulled.manifest;
  if (!m || m.status !== 200) problems.push(`manifest: status ${m?.status}`);
  else {
    if (m.sha256 !== image.manifestDigest) problems.push(`manifest hashes to ${m.sha256}, not ${image.manifestDigest}`);
    if (m.digest !== image.manifestDigest) problems.push(`manifest Docker-Content-Digest ${m.digest}`);
  }
  const want = blobsOf(image);
  for (const { digest, size } of want) {
    const b = pulled.blobs.find((x) => x.digest === digest);
    if (!b) problems.push(`blob ${digest} not fetched`);
    else if (b.status !== 200) problems.push(`blob ${digest}: status ${b.status} ${b.error ?? ''}`);
    else if (b.sha256 !== digest || b.bytes !== size) problems.push(`blob ${digest}: ${b.bytes} bytes hashing to ${b.sha256}`);
  }
  if (pulled.blobs.length !== want.length) problems.push(`${pulled.blobs.length} blobs fetched for ${want.length}`);
  return t.same(problems, [], `pull through ${via}: manifest and ${want.length} blobs, every byte verified`, { pulled });
}

/** Like waitFor, but a timeout names what was last seen (and log tails) to debug from. */
async function waitOr(what: string, fn: () => Promise<boolean>, timeoutMs: number, lastSeen: () => unknown, everyMs = 250): Promise<void> {
  try {
    await waitFor(what, fn, timeoutMs, everyMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}\nlast seen: ${JSON.stringify(lastSeen(), null, 1)}`);
  }
}

t.test('Coves in separate namespaces find each other by mDNS and share blobs when the origin is gone', async (t) => {
  const cleanup = Cleanup.forTest(t);
  const lan = await createLan(t, cleanup, 5);
  if (!lan) return;
  if (!existsSync(COVE_CLI)) {
    t.fail(`${COVE_CLI} is missing: build first (npx tsc -p tsconfig.json)`);
    return;
  }
  const dir = tempDir(cleanup, 'cove-mdns-site-');
  const [hOrigin, hA, hB, hC, hOther] = lan.hosts as [LanHost, LanHost, LanHost, LanHost, LanHost];
  const [idA, idB, idC, idOther] = ['node-2', 'node-3', 'node-4', 'node-5'];
  const { seed, image, ownerOf } = spreadImage([idA, idB, idC]);
  const blobs = blobsOf(image);
  const blobBytes = blobs.reduce((n, b) => n + b.size, 0);
  const ownedBy = (id: string) => blobs.filter((b) => ownerOf.get(b.digest) === id);
  const bytesOf = (list: Array<{ size: number }>) => list.reduce((n, b) => n + b.size, 0);
  t.comment(`image seed ${seed}: ${blobs.length} blobs; owners ${[idA, idB, idC].map((id) => `${id}=${ownedBy(id).length}`).join(' ')}`);

  // ---- the origin, in host 1
  const origin = lan.exec(hOrigin.ns, process.execPath, [helperScript('mdns-site-origin.js'), JSON.stringify({ host: hOrigin.address, repo: REPO, tag: TAG, seed, layers: LAYERS })], {
    logFile: join(dir, 'origin.log'),
    name: 'origin',
  });
  const originEvent = (event: string) => origin.jsonLines().find((l) => l.event === event);
  await waitFor('the origin to listen', () => {
    if (!origin.running) throw new Error(`the origin exited (code ${origin.exitCode}):\n${origin.tail()}`);
    return originEvent('listening') !== undefined;
  }, 15_000, 50);
  const upstream = String(originEvent('listening')!.url);
  t.equal(originEvent('listening')!.manifestDigest, image.manifestDigest, 'the origin serves the image the test computed');

  // ---- the Coves: three of site s1, one of site s2, each in its own namespace, no COVE_PEERS
  const startNode = (host: LanHost, id: string, site: string, extra: Record<string, string> = {}): CoveNode => {
    const proc = lan.exec(host.ns, process.execPath, ['--max-semi-space-size=1', COVE_CLI, 'serve'], {
      logFile: join(dir, `${id}.log`),
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: dir,
        COVE_LISTEN: `0.0.0.0:${PORT}`,
        COVE_DATA_DIR: join(dir, `${id}-data`),
        COVE_UPSTREAM: upstream,
        COVE_NODE_ID: id,
        COVE_SITE: site,
        COVE_MDNS: 'true',
        // The site's key: siblings prove it before they are used, and a tag is taken from a
        // sibling only then (site s2 has a key of its own).
        COVE_PEER_KEY: `${site}-key-0123456789abcdef`,
        // debug: the mDNS lines that prove another site's announcements arrived (and were dropped)
        COVE_LOG_LEVEL: 'debug',
        COVE_SHUTDOWN_GRACE: '2s',
        ...extra,
      },
      graceMs: 8000,
      name: `cove ${id}`,
    });
    return new CoveNode(id, site, host, proc);
  };
  const a = startNode(hA, idA, 's1');
  const b = startNode(hB, idB, 's1');
  // One node names its interface, as an operator on a multi-homed host would; the others take every one.
  const c = startNode(hC, idC, 's1', { COVE_MDNS_INTERFACES: 'eth0' });
  const other = startNode(hOther, idOther, 's2');
  const site = [a, b, c];
  const all = [...site, other];

  await Promise.all(
    all.map((n) =>
      waitFor(`${n.id} /healthz (log: ${n.proc.logFile})`, async () => {
        if (!n.proc.running) throw new Error(`${n.id} exited at start (code ${n.proc.exitCode}):\n${n.proc.tail()}`);
        return (await local(lan, n, '/healthz')).status === 200;
      }, 60_000, 200),
    ),
  );
  t.pass('four Coves serve, each in its own namespace');

  // ---- discovery: each s1 node shows the other two as live, found by mDNS, at their LAN address
  const t0 = Date.now();
  let tables: PeerTableJson[] = [];
  await waitOr(
    'every s1 node to list its two siblings as live mDNS peers',
    async () => {
      tables = await Promise.all(site.map((n) => peersOf(lan, n)));
      return site.every((n, i) =>
        site.filter((o) => o !== n).every((o) => tables[i]!.peers.some((p) => p.id === o.id && p.state === 'live' && p.source === 'mdns' && p.url === o.url)),
      );
    },
    DISCOVERY_MS,
    () => tables,
  );
  t.comment(`the site found itself by mDNS in ${Date.now() - t0} ms`);
  for (const [i, n] of site.entries()) {
    const table = tables[i]!;
    t.equal(table.self, n.id, `${n.id}: /_cove/peers names itself`);
    t.equal(table.site, 's1', `${n.id}: site s1`);
    t.same(
      table.peers.map((p) => ({ id: p.id, url: p.url, site: p.site, source: p.source, state: p.state })).sort((x, y) => String(x.id).localeCompare(String(y.id))),
      site.filter((o) => o !== n).map((o) => ({ id: o.id, url: o.url, site: 's1', source: 'mdns', state: 'live' })),
      `${n.id} lists exactly its two siblings, live, by mDNS, at their LAN addresses`,
    );
  }

  // ---- the other site: heard on the LAN, never taken in
  await waitOr(
    `the s1 nodes and ${idOther} to hear each other's announcements`,
    async () =>
      site.every((n) => n.logged('mdns peer of another site ignored', { peer: idOther })) &&
      site.some((n) => other.logged('mdns peer of another site ignored', { peer: n.id })),
    DISCOVERY_MS,
    () => [...all.map((n) => `${n.id}: ${n.proc.tail(5)}`)],
  );
  t.pass(`${idOther} (site s2) and the s1 nodes heard each other's mDNS announcements`);
  tables = await Promise.all(site.map((n) => peersOf(lan, n)));
  for (const [i, n] of site.entries()) {
    t.notOk(tables[i]!.peers.some((p) => p.id === idOther || p.site === 's2' || p.url === other.url), `${n.id}'s table has no trace of ${idOther} (site s2)`);
  }
  const otherTable = await peersOf(lan, other);
  t.same(otherTable.peers, [], `${idOther} (site s2) has no peers: the s1 nodes are another site`);

  // ---- a pull through A, from a client on A's host; the blobs spread over the site
  const pulledA = await client<PullJson>(lan, hA.ns, ['pull', a.url, REPO, TAG], 120_000);
  checkPull(t, a.id, pulledA, image);
  // A client has its last byte once the digest checks out; the commit to the store follows.
  let fills: number[] = [];
  await waitOr(
    'the fills on every node to finish',
    async () => {
      fills = (await Promise.all(site.map((n) => healthOf(lan, n)))).map((h) => h.activeFills);
      return fills.every((n) => n === 0);
    },
    15_000,
    () => fills,
    100,
  );

  // ---- stop the origin; what it served until then
  const bBefore = await healthOf(lan, b);
  origin.child.kill('SIGUSR1');
  await waitFor('the origin to stop listening', () => originEvent('stopped') !== undefined, 10_000, 50);
  const served = originEvent('stopped') as { blobBytesServed: number; blobGets: number };
  t.equal(served.blobGets, blobs.length, `the origin served each of the ${blobs.length} blobs once for the whole site`);
  t.equal(served.blobBytesServed, blobBytes, 'the origin served each blob byte once');
  const down = await client<{ status?: number; error?: string }>(lan, hB.ns, ['get', `${upstream}/v2/`]);
  t.ok(down.error !== undefined, `the origin no longer answers (${down.error ?? `status ${down.status}`})`);

  // ---- a pull through B: from its siblings only
  const pulledB = await client<PullJson>(lan, hB.ns, ['pull', b.url, REPO, TAG], 120_000);
  checkPull(t, `${b.id} with the origin gone`, pulledB, image);
  t.match(pulledB.manifest?.cacheStatus ?? '', /stale/, "the tag came from a sibling's copy, flagged stale");
  const bAfter = await healthOf(lan, b);
  const delta = (key: string) => (bAfter.bytesFetched[key] ?? 0) - (bBefore.bytesFetched[key] ?? 0);
  t.equal(delta('origin'), 0, `${b.id} fetched nothing from the origin after it stopped`);
  const fromA = delta(`peer:${a.id}`);
  const fromPeers = delta(`peer:${a.id}`) + delta(`peer:${c.id}`);
  t.ok(fromA > 0, `${b.id} fetched bytes from peer:${a.id} (${fromA})`);
  // The tag is held by A only, and so are the blobs A owns; C's blobs are held by A and C alike.
  t.ok(fromA >= image.manifest.length + bytesOf(ownedBy(a.id)), `${b.id} took from ${a.id} at least the manifest and the blobs only ${a.id} held`, {
    fromA,
    expectedAtLeast: image.manifest.length + bytesOf(ownedBy(a.id)),
  });
  const notHeld = image.manifest.length + bytesOf(blobs.filter((bl) => ownerOf.get(bl.digest) !== b.id));
  t.equal(fromPeers, notHeld, `${b.id} took from its siblings exactly what it did not hold (the manifest and the blobs it did not own)`, {
    before: bBefore.bytesFetched,
    after: bAfter.bytesFetched,
  });
  const peersB = await peersOf(lan, b);
  const rowA = peersB.peers.find((p) => p.id === a.id);
  t.ok(rowA && rowA.state === 'live' && rowA.hits > 0 && rowA.bytes === (bAfter.bytesFetched[`peer:${a.id}`] ?? 0), `${b.id}'s peer table counts the hits and bytes it took from ${a.id}`, { rowA });
  const aHealth = await healthOf(lan, a);
  t.ok((aHealth.peerRequests.local ?? 0) > 0, `${a.id} answered ${b.id}'s peer requests from its store`, { peerRequests: aHealth.peerRequests });

  // ---- a node that stops says goodbye: its siblings drop it at once, not at expiry
  await c.proc.stop(8000);
  t.equal(c.proc.exitCode, 0, `${c.id} exited cleanly on SIGTERM`);
  let gone = false;
  for (let i = 0; i < 50 && !gone; i++) {
    gone = !(await peersOf(lan, a)).peers.some((p) => p.id === c.id);
    if (!gone) await new Promise((r) => setTimeout(r, 100));
  }
  t.ok(gone, `${a.id} dropped ${c.id} from its peer table on its mDNS goodbye`);

  // ---- stop: every Cove exits cleanly on SIGTERM
  await Promise.all(all.filter((n) => n !== c).map((n) => n.proc.stop(8000)));
  for (const n of all.filter((x) => x !== c)) t.equal(n.proc.exitCode, 0, `${n.id} exited cleanly on SIGTERM`);
  await origin.stop(5000);
  t.equal(origin.exitCode, 0, 'the origin exited cleanly');
});
