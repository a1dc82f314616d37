// mDNS discovery between real processes on a private LAN of network namespaces (test/helpers/
// netns.ts): each node is test/helpers/mdns-node.js running startMdns in its own namespace. All
// multicast stays inside the namespaces created here; nothing runs discovery in the root namespace.
import t from 'tap';
import { join } from 'node:path';
import type { PeerInfo } from '../../src/peers/peer.js';
import { Cleanup, tempDir, waitFor, type Proc } from '../e2e/real.js';
import { createLan, helperScript, type Lan } from '../helpers/netns.js';

interface NodeOptions {
  id: string;
  site: string;
  port: number;
  scheme?: 'http' | 'https';
  version?: string;
  interfaces?: string[];
  queryIntervalMs?: number;
  addressCheckMs?: number;
}

/** One mdns-node process and what it printed. */
class MdnsNode {
  constructor(
    readonly opts: NodeOptions,
    readonly proc: Proc,
  ) {}
  /** Every JSON line of the log: the node's events (stdout) and Cove's pino lines (stderr). */
  lines(): Array<Record<string, unknown>> {
    const out: Array<Record<string, unknown>> = [];
    for (const l of this.proc.log().split('\n')) {
      if (!l.startsWith('{')) continue;
      try {
        out.push(JSON.parse(l) as Record<string, unknown>);
      } catch {
        // a line cut by a kill
      }
    }
    return out;
  }
  /** Every onPeer call so far, in order. */
  sightings(): Array<{ at: number; peer: PeerInfo }> {
    return this.lines().filter((l) => l.event === 'peer') as unknown as Array<{ at: number; peer: PeerInfo }>;
  }
  saw(id: string): PeerInfo[] {
    return this.sightings().filter((s) => s.peer.id === id).map((s) => s.peer);
  }
  logged(msg: string, fields: Record<string, unknown> = {}): boolean {
    return this.lines().some((l) => l.msg === msg && Object.entries(fields).every(([k, v]) => l[k] === v));
  }
  /** SIGTERM; resolves with the exit code (the node exits by itself once stop() closed everything). */
  async stop(): Promise<number | null | undefined> {
    await this.proc.stop(8000);
    return this.proc.exitCode;
  }
}

function startNode(lan: Lan, dir: string, ns: string, opts: NodeOptions): MdnsNode {
  const proc = lan.exec(ns, process.execPath, [helperScript('mdns-node.js'), JSON.stringify({ version: '0.1.0', ...opts })], {
    logFile: join(dir, `${opts.id}.log`),
    env: { ...process.env, LOG_LEVEL: 'debug' },
    name: `mdns-node ${opts.id}`,
  });
  return new MdnsNode(opts, proc);
}

t.test('siblings of one site find each other, never themselves nor another site', async (t) => {
  const cleanup = Cleanup.forTest(t);
  const lan = await createLan(t, cleanup, 3);
  if (!lan) return;
  const dir = tempDir(cleanup, 'cove-mdns-');
  const [h1, h2, h3] = lan.hosts as [(typeof lan.hosts)[0], (typeof lan.hosts)[0], (typeof lan.hosts)[0]];
  const common = { queryIntervalMs: 1500, addressCheckMs: 1000 };
  const a = startNode(lan, dir, h1.ns, { id: 'node-a', site: 's1', port: 5001, ...common });
  const b = startNode(lan, dir, h2.ns, { id: 'node-b', site: 's1', port: 5002, scheme: 'https', ...common });
  const c = startNode(lan, dir, h3.ns, { id: 'node-c', site: 's2', port: 5003, ...common });

  const t0 = Date.now();
  await waitFor('node-a and node-b to see each other', () => a.saw('node-b').length > 0 && b.saw('node-a').length > 0, 10_000, 100);
  t.comment(`found each other in ${Date.now() - t0} ms`);
  // Refreshes: onPeer is called again on later queries, not only when something changed.
  await waitFor('repeated sightings', () => a.saw('node-b').length >= 2 && b.saw('node-a').length >= 2, 10_000, 100);
  // Proof that node-c's announcements reached the s1 nodes (and were dropped for its site).
  await waitFor('node-c heard by node-a and node-b', () => a.logged('mdns peer of another site ignored', { peer: 'node-c' }) && b.logged('mdns peer of another site ignored', { peer: 'node-c' }), 10_000, 100);

  t.same(a.saw('node-b').at(-1), { id: 'node-b', site: 's1', url: `https://${h2.address}:5002`, version: '0.1.0' }, 'node-a found node-b: its address, port, scheme, version');
  t.same(b.saw('node-a').at(-1), { id: 'node-a', site: 's1', url: `http://${h1.address}:5001`, version: '0.1.0' }, 'node-b found node-a');
  for (const n of [a, b]) {
    const ids = new Set(n.sightings().map((s) => s.peer.id));
    t.notOk(ids.has(n.opts.id), `${n.opts.id} never reported itself`);
    t.notOk(ids.has('node-c'), `${n.opts.id} never reported node-c of site s2`);
    t.ok(n.sightings().every((s) => s.peer.site === 's1'), `${n.opts.id} reported only peers of s1`);
  }
  t.same(c.sightings(), [], 'node-c (site s2) reported nobody: the s1 nodes are another site');

  // Stop: node-b says goodbye, and each node exits by itself, so no socket or timer is left open.
  const codeB = await b.stop();
  t.equal(codeB, 0, 'node-b exited on its own after stop()');
  t.ok(b.lines().some((l) => l.event === 'stopped'), 'node-b stop() resolved');
  await waitFor('node-a to hear node-b say goodbye', () => a.logged('mdns peer said goodbye', { peer: 'node-b' }), 5000, 100).then(
    () => t.pass('node-a received node-b\'s goodbye (TTL 0)'),
    () => t.fail('node-a received node-b\'s goodbye (TTL 0)'),
  );
  t.equal(await a.stop(), 0, 'node-a exited on its own after stop()');
  t.equal(await c.stop(), 0, 'node-c exited on its own after stop()');
  t.notOk([a, b, c].some((n) => n.lines().some((l) => l.event === 'still-alive')), 'no node was held open after stop()');
});

t.test('an address change is re-announced and the sibling sees the new address', async (t) => {
  const cleanup = Cleanup.forTest(t);
  const lan = await createLan(t, cleanup, 2);
  if (!lan) return;
  const dir = tempDir(cleanup, 'cove-mdns-');
  const [h1, h2] = lan.hosts as [(typeof lan.hosts)[0], (typeof lan.hosts)[0]];
  // Queries only once a minute: within this test, news can only come from announcements.
  const common = { queryIntervalMs: 60_000, addressCheckMs: 300, interfaces: ['eth0'] };
  const a = startNode(lan, dir, h1.ns, { id: 'node-a', site: 's1', port: 5001, ...common });
  await waitFor('node-a to start', () => a.lines().some((l) => l.event === 'started'), 10_000, 50);
  const b = startNode(lan, dir, h2.ns, { id: 'node-b', site: 's1', port: 5002, ...common });

  await waitFor('node-a to see node-b', () => a.saw('node-b').length > 0, 10_000, 100);
  t.equal(a.saw('node-b').at(-1)?.url, `http://${h2.address}:5002`, 'node-a first sees node-b at its first address');

  // Renumber node-b's eth0 (a DHCP change): add the new address, then drop the old one; with
  // promote_secondaries the new one stays when the old primary goes.
  const renumbered = `${lan.prefix}.102`;
  const before = a.sightings().length;
  await lan.run(h2.ns, 'sysctl', ['-qw', 'net.ipv4.conf.eth0.promote_secondaries=1']);
  await lan.run(h2.ns, 'ip', ['addr', 'add', `${renumbered}/24`, 'dev', 'eth0']);
  await lan.run(h2.ns, 'ip', ['addr', 'del', `${h2.address}/24`, 'dev', 'eth0']);
  const t0 = Date.now();
  await waitFor(`node-a to see node-b at ${renumbered}`, () => a.saw('node-b').some((p) => p.url === `http://${renumbered}:5002`), 10_000, 100);
  t.comment(`re-announcement seen ${Date.now() - t0} ms after the change`);
  t.ok(a.sightings().length > before, 'node-a was told again without asking (its next query is a minute away)');
  t.ok(b.logged('mdns addresses changed; re-announcing'), 'node-b noticed its address change');
  t.same(a.saw('node-b').at(-1), { id: 'node-b', site: 's1', url: `http://${renumbered}:5002`, version: '0.1.0' }, 'the latest sighting carries the new address');

  t.equal(await b.stop(), 0, 'node-b exited on its own after stop()');
  t.equal(await a.stop(), 0, 'node-a exited on its own after stop()');
});

t.test('a dual-homed node serves each LAN with its own address, and only the interfaces it is given', async (t) => {
  const cleanup = Cleanup.forTest(t);
  const lanA = await createLan(t, cleanup, 2);
  if (!lanA) return;
  const lanB = await createLan(t, cleanup, 1);
  if (!lanB) return;
  const dir = tempDir(cleanup, 'cove-mdns-');
  const [dual, a2] = lanA.hosts as [(typeof lanA.hosts)[0], (typeof lanA.hosts)[0]];
  const b1 = lanB.hosts[0]!;
  // The dual-homed host: eth0 on LAN A, eth1 on LAN B.
  const dualOnB = await lanB.attach(dual.ns, 'eth1', 9);
  const common = { queryIntervalMs: 1000, addressCheckMs: 1000 };
  const onA = startNode(lanA, dir, a2.ns, { id: 'on-a', site: 's1', port: 5002, ...common });
  const onB = startNode(lanB, dir, b1.ns, { id: 'on-b', site: 's1', port: 5003, ...common });

  // Every interface (the default): both LANs, each sighting with the address of its own LAN.
  const all = startNode(lanA, dir, dual.ns, { id: 'dual-all', site: 's1', port: 5001, ...common });
  await waitFor('dual-all and both LANs to see each other', () =>
    all.saw('on-a').length > 0 && all.saw('on-b').length > 0 && onA.saw('dual-all').length > 0 && onB.saw('dual-all').length > 0, 10_000, 100);
  t.same(new Set(all.sightings().map((s) => s.peer.url)), new Set([`http://${a2.address}:5002`, `http://${b1.address}:5003`]), 'dual-all reached each peer at its own address');
  t.same(new Set(onA.saw('dual-all').map((p) => p.url)), new Set([`http://${dual.address}:5001`]), 'LAN A was given the LAN A address');
  t.same(new Set(onB.saw('dual-all').map((p) => p.url)), new Set([`http://${dualOnB}:5001`]), 'LAN B was given the LAN B address');
  t.equal(await all.stop(), 0, 'dual-all exited on its own after stop()');

  // interfaces: ["eth0"]: LAN A only, even though the host is on LAN B too, and even though
  // another program on the host (as avahi would) has joined the mDNS group on eth1, which makes
  // Linux hand LAN B's mDNS datagrams to every socket on port 5353 there.
  const joiner = `const s = require('node:dgram').createSocket({ type: 'udp4', reuseAddr: true });
    s.bind(5353, () => { s.addMembership('224.0.0.251', '${dualOnB}'); console.log('joined'); });`;
  const other = lanA.exec(dual.ns, process.execPath, ['-e', joiner], { logFile: join(dir, 'joiner.log'), name: 'eth1 joiner' });
  await waitFor('the eth1 joiner', () => other.log().includes('joined'), 10_000, 50);
  const only = startNode(lanA, dir, dual.ns, { id: 'dual-eth0', site: 's1', port: 5001, ...common, interfaces: ['eth0'] });
  await waitFor('dual-eth0 and on-a to see each other three times', () => only.saw('on-a').length >= 3 && onA.saw('dual-eth0').length >= 3, 10_000, 100);
  t.same(only.saw('on-b'), [], 'dual-eth0 never reported the node on LAN B (eth1)');
  t.same(onB.saw('dual-eth0'), [], 'the node on LAN B never heard of dual-eth0');
  t.ok(only.saw('on-a').every((p) => p.url === `http://${a2.address}:5002`), 'dual-eth0 reached on-a on LAN A');
  t.equal(await only.stop(), 0, 'dual-eth0 exited on its own after stop()');
  t.equal(await onA.stop(), 0, 'on-a exited on its own after stop()');
  t.equal(await onB.stop(), 0, 'on-b exited on its own after stop()');
});

t.test('bad options are logged, never thrown', async (t) => {
  const cleanup = Cleanup.forTest(t);
  const lan = await createLan(t, cleanup, 1);
  if (!lan) return;
  const dir = tempDir(cleanup, 'cove-mdns-');
  const n = startNode(lan, dir, lan.hosts[0]!.ns, { id: 'bad', site: 's1', port: 0 });
  await waitFor('the node to start', () => n.lines().some((l) => l.event === 'started'), 10_000, 50);
  const line = n.lines().find((l) => l.msg === 'mdns discovery not started') as { err?: { message?: string } } | undefined;
  t.match(line?.err?.message, /port must be 1-65535, got 0/, 'the error names the option and the value');
  t.equal(await n.stop(), 0, 'the process went on and stopped cleanly');
});
