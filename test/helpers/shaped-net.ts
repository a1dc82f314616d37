// Network namespaces joined by thin links, for the fleet test (test/e2e/fleet.test.ts) and the
// "thin" and "fleet" benchmarks (scripts/bench-thin.ts, scripts/bench-fleet.ts).
//
// A ShapedNet is a set of namespaces named cove<pid>s<k>-<name> (the PID and a counter: parallel
// runs never meet) joined by point-to-point veth pairs, each on a /30 of its own. A link has an
// upstream end and a downstream end; the upstream end's egress (what flows down: blobs) can be
// shaped with tbf, as on a thin site uplink. Nothing routes beyond a link: there is no default
// route and no forwarding, so a namespace reaches only the namespaces it has a link to. The veth
// pairs are made inside the namespaces, so the root namespace never sees an interface of ours;
// the test process talks to what runs inside through processes it starts there (`ip netns exec`)
// and through Cove's admin socket, a Unix socket in the Cove's data directory (a file, reachable
// from any namespace). Teardown stops every process started here by PID, kills anything left in
// our namespaces, deletes them, and unmounts /run/netns when the tests created it (netns.ts).
//
// On top of it: docker-registry and Cove run inside a namespace, skopeo pulls from inside one,
// link byte counters (`ip -s link`), and the fleet of issue 16: an origin, a regional parent Cove
// behind a shaped link to it, and sites of Coves (one COVE_PEERS list per site, COVE_PARENTS the
// parent) each behind a shaped link to the parent.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import {
  COVE_CLI,
  Registry,
  buildTarImage,
  parseAccessLog,
  run,
  startProc,
  tempDir,
  verifyDirCopy,
  waitFor,
  which,
  type AccessEntry,
  type Cleanup,
  type Proc,
  type TestImage,
  type TestLike,
} from '../e2e/real.js';
import { NETNS_DIR, cannot, claimRunNetns, deleteNamespaces } from './netns.js';

/** The thin uplink of the issue: what an edge site's link to its parent looks like. */
export const THIN_LINK = { rate: '200mbit', burst: '256kb', latency: '200ms' } as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One end of a link. */
export interface LinkEnd {
  /** Full namespace name. */
  ns: string;
  ifname: string;
  /** Its address on the link's /30 (no prefix length). */
  address: string;
}

/** A veth pair between two namespaces; `up` sends what flows down the link (its egress may be shaped). */
export interface ShapedLink {
  name: string;
  up: LinkEnd;
  down: LinkEnd;
  /** The tbf rate on the up end's egress, or null when unshaped. */
  rate: string | null;
}

let netCounter = 0;

/** Network namespaces or tbf cannot be had here (not root, no ip/tc, refused by the kernel). */
export class NetUnavailable extends Error {}

/** Namespaces joined by point-to-point links; see the file comment. */
export class ShapedNet {
  readonly #made: string[] = [];
  readonly #procs: Proc[] = [];
  readonly #links: ShapedLink[] = [];
  #linkCount = 0;
  #tornDown = false;

  private constructor(
    /** Namespace name prefix, cove<pid>s<k>. */
    readonly base: string,
    /** First two octets of the links' addresses, e.g. "10.171". */
    readonly prefix: string,
    private readonly cleanup: Cleanup,
  ) {}

  /**
   * Creates the namespaces `names` (short names: "origin", "site1"), each with lo up, and checks
   * that tbf can shape a veth here. Returns null after reporting why not (not root, no ip or tc,
   * namespaces refused, no tbf) when `t` is given: a skip, or a failure under CI; throws without `t`.
   */
  static async create(t: TestLike | null, cleanup: Cleanup, names: string[]): Promise<ShapedNet | null> {
    const refuse = (reason: string): null => {
      if (t === null) throw new NetUnavailable(reason);
      return cannot(t, reason);
    };
    if (process.getuid?.() !== 0) return refuse('cannot create network namespaces: needs root');
    if (!which('ip')) return refuse('cannot create network namespaces: ip not installed (apt-get install iproute2)');
    if (!which('tc')) return refuse('cannot shape links: tc not installed (apt-get install iproute2)');
    const k = ++netCounter;
    // Addresses derived from the PID: runs never share a namespace, so a clash would be harmless anyway.
    const net = new ShapedNet(`cove${process.pid}s${k}`, `10.${100 + ((process.pid + k) % 100)}`, cleanup);
    cleanup.add(() => net.teardown());
    try {
      if (!existsSync(NETNS_DIR)) claimRunNetns();
      for (const name of names) await net.addNs(name);
    } catch (err) {
      await net.teardown();
      return refuse(`cannot create network namespaces: ${firstLines(err)}`);
    }
    try {
      // A throw-away pair inside the first namespace: can tbf shape a veth on this kernel?
      const probe = net.ns(names[0]!);
      await ip(['-n', probe, 'link', 'add', 'tbfprobe0', 'type', 'veth', 'peer', 'name', 'tbfprobe1']);
      await run('tc', ['-n', probe, 'qdisc', 'add', 'dev', 'tbfprobe0', 'root', 'tbf', 'rate', THIN_LINK.rate, 'burst', THIN_LINK.burst, 'latency', THIN_LINK.latency], { timeoutMs: 10_000 });
      await ip(['-n', probe, 'link', 'del', 'tbfprobe0']);
    } catch (err) {
      await net.teardown();
      return refuse(`cannot shape links with tc tbf: ${firstLines(err)}`);
    }
    return net;
  }

  /** Creates one more namespace, `name`, with lo up. */
  async addNs(name: string): Promise<void> {
    if (this.#tornDown) throw new Error('this net is torn down');
    const ns = this.ns(name);
    await ip(['netns', 'add', ns]);
    this.#made.push(ns);
    await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
  }

  /** The full name of namespace `name`. */
  ns(name: string): string {
    return `${this.base}-${name}`;
  }

  get links(): readonly ShapedLink[] {
    return this.#links;
  }

  /**
   * Joins namespace `up` to `down` with a veth pair on the next /30 (up end .1, down end .2 of
   * it), and shapes the up end's egress with tbf at `rate` (burst and latency as THIN_LINK) unless
   * `rate` is null. The interfaces are named after the namespace at the other end.
   */
  async link(up: string, down: string, rate: string | null = THIN_LINK.rate): Promise<ShapedLink> {
    // Taken before the first await: links made at the same time get /30s of their own.
    const i = this.#linkCount++;
    if (i >= 64 * 256) throw new Error('too many links');
    const third = Math.floor(i / 64);
    const fourth = (i % 64) * 4;
    const upEnd: LinkEnd = { ns: this.ns(up), ifname: ifName(down), address: `${this.prefix}.${third}.${fourth + 1}` };
    const downEnd: LinkEnd = { ns: this.ns(down), ifname: ifName(up), address: `${this.prefix}.${third}.${fourth + 2}` };
    await ip(['-n', upEnd.ns, 'link', 'add', upEnd.ifname, 'type', 'veth', 'peer', 'name', downEnd.ifname, 'netns', downEnd.ns]);
    for (const end of [upEnd, downEnd]) {
      await ip(['-n', end.ns, 'addr', 'add', `${end.address}/30`, 'dev', end.ifname]);
      await ip(['-n', end.ns, 'link', 'set', end.ifname, 'up']);
    }
    if (rate !== null) {
      await run('tc', ['-n', upEnd.ns, 'qdisc', 'add', 'dev', upEnd.ifname, 'root', 'tbf', 'rate', rate, 'burst', THIN_LINK.burst, 'latency', THIN_LINK.latency], { timeoutMs: 10_000 });
    }
    const link: ShapedLink = { name: `${up}->${down}`, up: upEnd, down: downEnd, rate };
    this.#links.push(link);
    return link;
  }

  /** Bytes the up end has sent down the link so far (`ip -s link`: frames as the veth counted them, headers included). */
  async downBytes(link: ShapedLink): Promise<number> {
    const r = await ip(['-n', link.up.ns, '-s', '-j', 'link', 'show', 'dev', link.up.ifname]);
    const stats = JSON.parse(r.stdout) as Array<{ stats64?: { tx?: { bytes?: number } } }>;
    const bytes = stats[0]?.stats64?.tx?.bytes;
    if (typeof bytes !== 'number') throw new Error(`no tx counter for ${link.up.ifname} in ${link.up.ns}: ${r.stdout.slice(0, 200)}`);
    return bytes;
  }

  /** Waits until no link has carried a byte down for `quietMs` (background fills are over), at most `maxMs`. */
  async quiet(quietMs = 1500, maxMs = 60_000): Promise<void> {
    const read = async () => (await Promise.all(this.#links.map((l) => this.downBytes(l)))).join(',');
    const end = Date.now() + maxMs;
    let last = await read();
    let since = Date.now();
    while (Date.now() < end) {
      await sleep(250);
      const now = await read();
      if (now !== last) {
        last = now;
        since = Date.now();
      } else if (Date.now() - since >= quietMs) return;
    }
  }

  /** Starts `cmd args` inside namespace `name`; output in `logFile`; stopped by PID at teardown. */
  exec(name: string, cmd: string, args: string[], opts: { logFile: string; env?: NodeJS.ProcessEnv; graceMs?: number; label?: string }): Proc {
    const ns = this.#own(name);
    // `ip netns exec` execs the command in place, so the PID kept is the command's own.
    const proc = startProc(this.cleanup, opts.label ?? `${name}:${cmd}`, 'ip', ['netns', 'exec', ns, cmd, ...args], {
      logFile: opts.logFile,
      env: opts.env ?? process.env,
      graceMs: opts.graceMs ?? 5000,
    });
    this.#procs.push(proc);
    return proc;
  }

  /** Runs `cmd args` to completion inside namespace `name` (bounded). */
  run(name: string, cmd: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; allowFail?: boolean } = {}): ReturnType<typeof run> {
    return run('ip', ['netns', 'exec', this.#own(name), cmd, ...args], { timeoutMs: opts.timeoutMs ?? 30_000, env: opts.env, allowFail: opts.allowFail });
  }

  /** Stops the processes, kills whatever is left inside, deletes the namespaces; also on the Cleanup. */
  async teardown(): Promise<void> {
    if (this.#tornDown) return;
    this.#tornDown = true;
    await Promise.all(this.#procs.map((p) => p.stop(5000)));
    await deleteNamespaces(this.#made);
  }

  #own(name: string): string {
    const ns = this.ns(name);
    if (!this.#made.includes(ns)) throw new Error(`${ns} is not a namespace of this net`);
    return ns;
  }
}

const ip = (args: string[]) => run('ip', args, { timeoutMs: 10_000 });
/** An interface name (15 characters at most) for the end that faces namespace `other`. */
const ifName = (other: string) => `to-${other}`.slice(0, 15);
const firstLines = (err: unknown) => (err instanceof Error ? err.message.split('\n').slice(0, 3).join(' ') : String(err));

// ------------------------------------------------------------------------------------------ registry

/** Debian's docker-registry inside a namespace, as origin or (proxyRemote) distribution's pull-through proxy. */
export class NsRegistry {
  #mark = 0;
  constructor(
    readonly proc: Proc,
    /** host:port it listens on, as given. */
    readonly listen: string,
    readonly dir: string,
  ) {}
  /** host:port a client in its own namespace reaches it at. */
  get localHostPort(): string {
    return this.listen.replace(/^0\.0\.0\.0:/, '127.0.0.1:');
  }
  entries(): AccessEntry[] {
    return parseAccessLog(this.proc.log());
  }
  markNow(): void {
    this.#mark = this.entries().length;
  }
  /** Blob GETs since markNow() and the body bytes the registry wrote for them. */
  blobGetsSinceMark(): { requests: number; bytes: number } {
    return Registry.blobGets(this.entries().slice(this.#mark));
  }
  stop(): Promise<void> {
    return this.proc.stop(5000);
  }
}

/** Starts docker-registry in namespace `name` on `listen` (host:port), storage in a temp dir; waits until it listens. */
export async function registryIn(net: ShapedNet, cleanup: Cleanup, name: string, opts: { listen: string; label: string; proxyRemote?: string }): Promise<NsRegistry> {
  const dir = tempDir(cleanup, 'cove-nsreg-');
  const lines = [
    'version: 0.1',
    'log:',
    '  level: info',
    `  fields: {service: ${opts.label}}`,
    'storage:',
    `  filesystem: {rootdirectory: ${join(dir, 'data')}}`,
    '  delete: {enabled: true}',
    '  cache: {blobdescriptor: inmemory}',
    'http:',
    `  addr: ${opts.listen}`,
    `  secret: cove-shaped-${opts.label}`,
  ];
  if (opts.proxyRemote) lines.push('proxy:', `  remoteurl: ${opts.proxyRemote}`);
  writeFileSync(join(dir, 'config.yml'), lines.join('\n') + '\n');
  const proc = net.exec(name, 'docker-registry', ['serve', join(dir, 'config.yml')], { logFile: join(dir, 'registry.log'), label: opts.label });
  await waitFor(
    `docker-registry ${opts.label} listening on ${opts.listen} in ${name} (log: ${proc.logFile})`,
    () => {
      if (!proc.running) throw new Error(`docker-registry ${opts.label} exited at start:\n${proc.tail()}`);
      return /listening on/.test(proc.log());
    },
    20_000,
    100,
  );
  return new NsRegistry(proc, opts.listen, dir);
}

/** Pushes `image` (its OCI layout) with skopeo from inside namespace `name` to `hostPort/repoTag`. */
export async function pushImageIn(net: ShapedNet, name: string, image: TestImage, hostPort: string, repoTag: string): Promise<void> {
  // buildTarImage's uncompressed layers would be gzipped on the way, giving the registry other digests.
  const keep = image.layers.some((l) => l.mediaType.endsWith('.tar')) ? ['--preserve-digests'] : [];
  await net.run(name, 'skopeo', ['copy', '-q', '--dest-tls-verify=false', ...keep, `oci:${image.layout}:${image.tag}`, `docker://${hostPort}/${repoTag}`], { timeoutMs: 300_000 });
}

// ------------------------------------------------------------------------------------------ cove

/** Cove's counters as /healthz reports them (the parts used here). */
export interface NsHealth {
  activeFills: number;
  bytesFetched: Record<string, number>;
  bytesServed: Record<string, number>;
  [key: string]: unknown;
}

/** One HTTP GET over a Unix socket (bounded); the status and the body as text. */
export function socketGet(socketPath: string, path: string, timeoutMs = 5000): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, method: 'GET', headers: { host: 'localhost' }, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${path} on ${socketPath} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

/** `cove_fetched_bytes_total` of a Prometheus exposition, by tier. */
export function fetchedByTier(metricsText: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of metricsText.matchAll(/^cove_fetched_bytes_total\{tier="([^"]*)"\} (\S+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}

/** A `cove serve` inside a namespace. Its status endpoints are read over its admin socket. */
export class NsCove {
  constructor(
    readonly id: string,
    /** Short name of its namespace. */
    readonly nsName: string,
    /** The URL clients and siblings in its namespace (or across a link) reach it at. */
    readonly url: string,
    readonly proc: Proc,
    readonly dataDir: string,
  ) {}
  get hostPort(): string {
    return new URL(this.url).host;
  }
  get adminSocket(): string {
    return join(this.dataDir, 'admin.sock');
  }
  async json<T>(path: string): Promise<T> {
    const r = await socketGet(this.adminSocket, path);
    if (r.status !== 200) throw new Error(`${this.id} ${path}: ${r.status} ${r.body.slice(0, 200)}`);
    return JSON.parse(r.body) as T;
  }
  health(): Promise<NsHealth> {
    return this.json<NsHealth>('/healthz');
  }
  /** Bytes fetched per tier, from /metrics. */
  async fetched(): Promise<Record<string, number>> {
    const r = await socketGet(this.adminSocket, '/metrics');
    if (r.status !== 200) throw new Error(`${this.id} /metrics: ${r.status}`);
    return fetchedByTier(r.body);
  }
  stop(): Promise<void> {
    return this.proc.stop(8000);
  }
}

/**
 * Starts Cove (`node dist/src/cli.js serve`, as startCove does) in namespace `name`, listening on
 * `listen`, known to others as `url`; data in a new temp dir; waits (bounded) for /healthz on its
 * admin socket.
 */
export async function coveIn(
  net: ShapedNet,
  cleanup: Cleanup,
  name: string,
  opts: { id: string; listen: string; url: string; upstream: string; env?: Record<string, string> },
): Promise<NsCove> {
  if (!existsSync(COVE_CLI)) throw new Error(`${COVE_CLI} is missing: run npx tsc -p . first`);
  const dir = tempDir(cleanup, 'cove-ns-');
  const dataDir = join(dir, 'data');
  const proc = net.exec(name, process.execPath, ['--max-semi-space-size=1', COVE_CLI, 'serve'], {
    logFile: join(dir, 'cove.log'),
    env: {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: dir,
      COVE_LISTEN: opts.listen,
      COVE_DATA_DIR: dataDir,
      COVE_UPSTREAM: opts.upstream,
      COVE_NODE_ID: opts.id,
      COVE_LOG_LEVEL: 'info',
      COVE_SHUTDOWN_GRACE: '2s',
      ...opts.env,
    },
    graceMs: 8000,
    label: `cove ${opts.id}`,
  });
  const cove = new NsCove(opts.id, name, opts.url, proc, dataDir);
  await waitFor(
    `Cove ${opts.id} /healthz on ${cove.adminSocket} (log: ${proc.logFile})`,
    async () => {
      if (!proc.running) throw new Error(`Cove ${opts.id} exited at start (code ${proc.exitCode}):\n${proc.tail()}`);
      if (!existsSync(cove.adminSocket)) return false;
      return (await socketGet(cove.adminSocket, '/healthz', 1000).catch(() => null))?.status === 200;
    },
    60_000,
    200,
  );
  return cove;
}

/** Waits (bounded) until every node of `nodes` lists the others as live peers. */
export async function waitPeersLive(nodes: NsCove[], timeoutMs = 30_000): Promise<void> {
  type Table = { peers: Array<{ id: string | null; url: string; state: string }> };
  let last = '';
  try {
    await waitFor(
      `every node of ${nodes.map((n) => n.id).join(', ')} to see ${nodes.length - 1} live peers`,
      async () => {
        const tables = await Promise.all(nodes.map((n) => n.json<Table>('/_cove/peers').catch(() => null)));
        last = tables.map((t, i) => `${nodes[i]!.id}: ${t ? t.peers.map((p) => `${p.id ?? p.url}=${p.state}`).join(' ') : 'no answer'}`).join('; ');
        return tables.every((t) => t !== null && t.peers.filter((p) => p.state === 'live').length === nodes.length - 1);
      },
      timeoutMs,
      200,
    );
  } catch (err) {
    throw new Error(`${err instanceof Error ? err.message : String(err)}; last seen: ${last}`);
  }
}

/** Waits (bounded) until no fill runs on any of `coves` (a client has its last byte before the store commit). */
export async function fillsDone(coves: NsCove[], timeoutMs = 30_000): Promise<void> {
  await waitFor('every Cove to finish its fills', async () => (await Promise.all(coves.map((c) => c.health()))).every((h) => h.activeFills === 0), timeoutMs, 200);
}

// ------------------------------------------------------------------------------------------ clients

/** `skopeo copy docker://REF dir:OUT` from inside namespace `name` (plain HTTP), timed (ms). */
export async function skopeoPullIn(net: ShapedNet, name: string, ref: string, outDir: string, timeoutMs = 300_000): Promise<number> {
  rmSync(outDir, { recursive: true, force: true });
  const r = await net.run(name, 'skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${ref}`, `dir:${outDir}`], { timeoutMs });
  return r.ms;
}

/** What is wrong with the skopeo `dir:` copy in `out` compared with `image` (nothing: []). Every blob is hashed. */
export function copyProblems(out: string, image: TestImage): string[] {
  if (!existsSync(join(out, 'manifest.json'))) return [`no manifest.json in ${out}`];
  const copy = verifyDirCopy(out);
  const problems = [...copy.problems];
  const manifestDigest = `sha256:${createHash('sha256').update(readFileSync(join(out, 'manifest.json'))).digest('hex')}`;
  if (manifestDigest !== image.manifestDigest) problems.push(`manifest ${manifestDigest}, pushed ${image.manifestDigest}`);
  if (copy.manifest.config.digest !== image.config.digest) problems.push(`config ${copy.manifest.config.digest}, pushed ${image.config.digest}`);
  const got = copy.manifest.layers.map((l) => l.digest).join(',');
  if (got !== image.layers.map((l) => l.digest).join(',')) problems.push(`layers ${got}`);
  return problems;
}

/** Bytes of the image's blobs (config and layers), without the manifest. */
export const blobBytesOf = (image: TestImage) => image.layers.reduce((n, l) => n + l.size, image.config.size);

// ------------------------------------------------------------------------------------------ fleet

export interface FleetOptions {
  sites: number;
  nodesPerSite: number;
  /** Layer sizes of the image (buildTarImage: incompressible tar layers). */
  layerBytes: number[];
  /** tbf rate of every link (origin→parent and parent→each site). */
  rate: string;
  /** Directory for the image layout and the clients' copies. */
  work: string;
  seed: string;
  /** Extra COVE_* for every Cove (parent and site nodes). */
  coveEnv?: Record<string, string>;
}

export interface FleetSite {
  /** Short namespace name, "site1". */
  name: string;
  /** parent→site link (shaped at the parent's end). */
  link: ShapedLink;
  nodes: NsCove[];
}

export interface Fleet {
  net: ShapedNet;
  origin: NsRegistry;
  /** origin→parent link (shaped at the origin's end). */
  originLink: ShapedLink;
  parent: NsCove;
  sites: FleetSite[];
  image: TestImage;
  repo: string;
  tag: string;
  /** Every Cove: the parent first, then the site nodes. */
  coves: NsCove[];
  /** The origin's URL (what every Cove has as COVE_UPSTREAM; only the parent has a route to it). */
  originUrl: string;
  rate: string;
  coveEnv: Record<string, string>;
}

/** Port of the origin and the parent on their namespaces' addresses; site nodes use SITE_PORT_BASE + 1… on their loopback. */
const FLEET_PORT = 5000;
const SITE_PORT_BASE = 5000;

/**
 * The fleet: namespaces origin, parent, site1…siteN. The origin (docker-registry) listens on
 * 0.0.0.0:5000 in its namespace and holds the image as proj/app:1; a regional Cove ("regional")
 * listens on 0.0.0.0:5000 in the parent's namespace with the origin, across its shaped link, as
 * upstream; each site namespace holds nodesPerSite Coves on 127.0.0.1:5001… with one COVE_PEERS
 * list and COVE_PARENTS the parent's address on that site's link. A site node's COVE_UPSTREAM names
 * the origin, which it has no route to: everything a site gets comes down its link from the parent.
 * Returns null after reporting why (see ShapedNet.create) when namespaces or tbf are unavailable.
 */
export async function startFleet(t: TestLike | null, cleanup: Cleanup, o: FleetOptions): Promise<Fleet | null> {
  const net = await ShapedNet.create(t, cleanup, ['origin', 'parent']);
  if (!net) return null;
  const originLink = await net.link('origin', 'parent', o.rate);
  const repo = 'proj/app';
  const tag = '1';
  const image = await buildTarImage(join(o.work, 'layout'), 'fleet', o.layerBytes, o.seed);
  const origin = await registryIn(net, cleanup, 'origin', { listen: `0.0.0.0:${FLEET_PORT}`, label: 'origin' });
  await pushImageIn(net, 'origin', image, origin.localHostPort, `${repo}:${tag}`);
  const originUrl = `http://${originLink.up.address}:${FLEET_PORT}`;
  const coveEnv = o.coveEnv ?? {};
  const parent = await coveIn(net, cleanup, 'parent', { id: 'regional', listen: `0.0.0.0:${FLEET_PORT}`, url: `http://${originLink.down.address}:${FLEET_PORT}`, upstream: originUrl, env: coveEnv });
  const fleet: Fleet = { net, origin, originLink, parent, sites: [], image, repo, tag, coves: [parent], originUrl, rate: o.rate, coveEnv };
  const sites = await Promise.all(Array.from({ length: o.sites }, (_, i) => addSite(fleet, cleanup, `site${i + 1}`, o.nodesPerSite)));
  fleet.sites.push(...sites);
  fleet.coves.push(...sites.flatMap((s) => s.nodes));
  return fleet;
}

/**
 * A site of `nodes` Coves in a new namespace `name` behind a new shaped link from the parent (the
 * fleet's rate), as startFleet makes them; waits until the nodes see each other live. Not added to
 * fleet.sites (startFleet adds its own): a site started later (say, with the origin down) stays
 * apart from the fleet's counts.
 */
export async function addSite(fleet: Fleet, cleanup: Cleanup, name: string, nodes: number): Promise<FleetSite> {
  await fleet.net.addNs(name);
  const link = await fleet.net.link('parent', name, fleet.rate);
  const urls = Array.from({ length: nodes }, (_, j) => `http://127.0.0.1:${SITE_PORT_BASE + j + 1}`);
  const parentUrl = `http://${link.up.address}:${FLEET_PORT}`;
  const started = await Promise.all(
    urls.map((url, j) =>
      coveIn(fleet.net, cleanup, name, {
        id: `${name}-n${j + 1}`,
        listen: new URL(url).host,
        url,
        upstream: fleet.originUrl,
        env: { COVE_SITE: name, COVE_PARENTS: parentUrl, ...(nodes > 1 ? { COVE_PEERS: urls.join(',') } : {}), ...fleet.coveEnv },
      }),
    ),
  );
  if (nodes > 1) await waitPeersLive(started);
  return { name, link, nodes: started };
}

/** One node's pull: its time and what was wrong with the copy (nothing: []). */
export interface NodePull {
  node: string;
  site: string;
  ms: number;
  problems: string[];
}

/** One skopeo per site node, all started at once, each inside its site's namespace; every copy verified, then removed. */
export async function pullEverywhere(fleet: Fleet, outDir: string, timeoutMs = 120_000): Promise<NodePull[]> {
  mkdirSync(outDir, { recursive: true });
  const jobs = fleet.sites.flatMap((s) => s.nodes.map((n) => ({ s, n, out: join(outDir, n.id) })));
  const results = await Promise.all(
    jobs.map(async ({ s, n, out }): Promise<NodePull> => {
      try {
        const ms = await skopeoPullIn(fleet.net, s.name, `${n.hostPort}/${fleet.repo}:${fleet.tag}`, out, timeoutMs);
        return { node: n.id, site: s.name, ms, problems: copyProblems(out, fleet.image) };
      } catch (err) {
        return { node: n.id, site: s.name, ms: NaN, problems: [(err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').slice(0, 600)] };
      } finally {
        rmSync(out, { recursive: true, force: true });
      }
    }),
  );
  return results;
}

/** Bytes carried down each link so far: origin→parent, then parent→site i. */
export async function fleetLinkBytes(fleet: Fleet): Promise<{ origin: number; sites: number[] }> {
  const [origin, ...sites] = await Promise.all([fleet.net.downBytes(fleet.originLink), ...fleet.sites.map((s) => fleet.net.downBytes(s.link))]);
  return { origin: origin!, sites };
}

/** What each Cove fetched, per tier (/metrics), summed the way the fleet's links carry it. */
export interface FleetTierBytes {
  /** The parent's bytes fetched from the origin. */
  parentFromOrigin: number;
  /** Per site: its nodes' bytes fetched from the parent, and from each other. */
  sites: Array<{ fromParent: number; fromPeers: number; fromOrigin: number; perNode: Array<{ node: string; tiers: Record<string, number> }> }>;
}

export async function fleetTierBytes(fleet: Fleet): Promise<FleetTierBytes> {
  const sum = (tiers: Record<string, number>, pick: (tier: string) => boolean) => Object.entries(tiers).reduce((n, [k, v]) => n + (pick(k) ? v : 0), 0);
  const parentTiers = await fleet.parent.fetched();
  const sites = [];
  for (const s of fleet.sites) {
    const perNode = await Promise.all(s.nodes.map(async (n) => ({ node: n.id, tiers: await n.fetched() })));
    sites.push({
      fromParent: perNode.reduce((n, p) => n + sum(p.tiers, (k) => k.startsWith('parent:')), 0),
      fromPeers: perNode.reduce((n, p) => n + sum(p.tiers, (k) => k.startsWith('peer:')), 0),
      fromOrigin: perNode.reduce((n, p) => n + sum(p.tiers, (k) => k === 'origin'), 0),
      perNode,
    });
  }
  return { parentFromOrigin: parentTiers.origin ?? 0, sites };
}
