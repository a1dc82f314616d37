// mDNS announcements from a LAN stranger (test/helpers/mdns-rogue.ts) against real discovery, on a
// private LAN of network namespaces (test/helpers/netns.ts); all multicast stays on that LAN.
//   1. discovery alone (test/helpers/mdns-node.ts): announcements at link-local, metadata,
//      loopback and foreign addresses are never reported; one on the LAN is (the control).
//   2. real `cove serve` nodes: a flood of 5,000 fake ids and a host claiming a sibling's id at
//      its own address leave the table within its cap, the sibling at its first URL, and no
//      fake live, so every digest is still owned by a real node.
import t from 'tap';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { COVE_CLI, Cleanup, tempDir, waitFor, type Proc } from '../e2e/real.js';
import { createLan, helperScript, type Lan, type LanHost } from '../helpers/netns.js';
import { MAX_DISCOVERED_PEERS } from '../../src/peers/table.js';

const PORT = 5000;

function startRogue(lan: Lan, dir: string, host: LanHost, options: Record<string, unknown>): Proc {
  return lan.exec(host.ns, process.execPath, [helperScript('mdns-rogue.js'), JSON.stringify({ address: host.address, ...options })], {
    logFile: join(dir, 'rogue.log'),
    name: 'mdns rogue',
  });
}

t.test('announcements at link-local, metadata, loopback or foreign addresses are never reported', async (t) => {
  const cleanup = Cleanup.forTest(t);
  const lan = await createLan(t, cleanup, 2);
  if (!lan) return;
  const dir = tempDir(cleanup, 'cove-mdns-rogue-');
  const [h1, h2] = lan.hosts as [LanHost, LanHost];
  const node = lan.exec(h1.ns, process.execPath, [helperScript('mdns-node.js'), JSON.stringify({ id: 'node-a', site: 's1', port: 5001, version: '0.1.0', queryIntervalMs: 1000 })], {
    logFile: join(dir, 'node-a.log'),
    env: { ...process.env, LOG_LEVEL: 'debug' },
    name: 'mdns-node node-a',
  });
  const bad = [
    { id: 'metadata', address: '169.254.169.254' },
    { id: 'link-local', address: '169.254.7.7' },
    { id: 'loopback', address: '127.0.0.1' },
    { id: 'foreign', address: '192.0.2.10' },
    { id: 'multicast', address: '224.0.0.251' },
  ];
  const control = { id: 'on-lan', address: `${lan.prefix}.77` };
  const rogue = startRogue(lan, dir, h2, { announce: [...bad, control].map((a) => ({ ...a, site: 's1', port: 80 })), rounds: 4, intervalMs: 500 });
  const sightings = () => node.jsonLines().filter((l) => l.event === 'peer').map((l) => l.peer as { id: string; url: string });
  await waitFor('the rogue to send its rounds', () => rogue.jsonLines().filter((l) => l.event === 'round').length >= 4, 15_000, 100);
  await waitFor('node-a to report the control announcement', () => sightings().some((p) => p.id === 'on-lan'), 10_000, 100);
  t.same(
    [...new Set(sightings().map((p) => `${p.id} ${p.url}`))],
    [`on-lan http://${control.address}:80`],
    'only the announcement at an address on the LAN was reported, at that address',
  );
  const dropped = node.jsonLines().filter((l) => l.msg === 'mdns peer ignored: no announced address on this link').map((l) => l.peer);
  for (const b of bad) t.ok(dropped.includes(b.id), `${b.id} (${b.address}) was heard and dropped`);
  await node.stop(8000);
  await rogue.stop(8000);
});

t.test('a flood of fake ids and a claim on a sibling\'s id leave the site as it was', async (t) => {
  const cleanup = Cleanup.forTest(t);
  const lan = await createLan(t, cleanup, 3);
  if (!lan) return;
  if (!existsSync(COVE_CLI)) {
    t.fail(`${COVE_CLI} is missing: build first`);
    return;
  }
  const dir = tempDir(cleanup, 'cove-mdns-rogue-');
  const [hA, hB, hRogue] = lan.hosts as [LanHost, LanHost, LanHost];
  const startNode = (host: LanHost, id: string): Proc =>
    lan.exec(host.ns, process.execPath, [COVE_CLI, 'serve'], {
      logFile: join(dir, `${id}.log`),
      env: {
        PATH: process.env.PATH ?? '/usr/bin:/bin',
        HOME: dir,
        COVE_LISTEN: `0.0.0.0:${PORT}`,
        COVE_DATA_DIR: join(dir, `${id}-data`),
        // Nobody listens there: the origin does not matter to this test.
        COVE_UPSTREAM: `http://${hRogue.address}:9`,
        COVE_NODE_ID: id,
        COVE_SITE: 's1',
        COVE_MDNS: 'true',
        COVE_SHUTDOWN_GRACE: '1s',
      },
      graceMs: 8000,
      name: `cove ${id}`,
    });
  const a = startNode(hA, 'node-a');
  const b = startNode(hB, 'node-b');
  interface Row {
    id: string | null;
    url: string;
    source: string;
    state: string;
  }
  const peersOfA = async (): Promise<Row[]> => {
    const r = await lan.run(hA.ns, process.execPath, [helperScript('mdns-site-client.js'), 'get', `http://127.0.0.1:${PORT}/_cove/peers`], { timeoutMs: 15_000 });
    const parsed = JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as { json?: { peers: Row[] } };
    return parsed.json?.peers ?? [];
  };
  let rows: Row[] = [];
  await waitFor('node-a to list node-b as live', async () => {
    if (!a.running || !b.running) throw new Error(`a Cove exited:\n${a.tail()}\n${b.tail()}`);
    rows = await peersOfA().catch(() => []);
    return rows.some((p) => p.id === 'node-b' && p.state === 'live');
  }, 30_000, 250);
  const bUrl = `http://${hB.address}:${PORT}`;
  t.equal(rows.find((p) => p.id === 'node-b')?.url, bUrl);

  // 5,000 fake ids at addresses of the LAN where no host answers, and node-b's id at the rogue's
  // own address, where it answers GET /_cove/node as node-b.
  const addresses = Array.from({ length: 100 }, (_, i) => `${lan.prefix}.${120 + i}`);
  const rogue = startRogue(lan, dir, hRogue, {
    flood: { count: 5000, site: 's1', addresses, port: PORT },
    impersonate: { id: 'node-b', site: 's1' },
    rounds: 3,
    intervalMs: 1500,
  });
  await waitFor('the rogue to send three rounds', () => rogue.jsonLines().filter((l) => l.event === 'round').length >= 3, 60_000, 200);
  const impostorUrl = String(rogue.jsonLines().find((l) => l.event === 'impersonating')?.url);
  // Let node-a probe what it took in (the probes of addresses nobody holds time out).
  await new Promise((r) => setTimeout(r, 3000));
  rows = await peersOfA();
  const discovered = rows.filter((p) => p.source === 'mdns');
  t.ok(discovered.length <= MAX_DISCOVERED_PEERS, `node-a holds ${discovered.length} discovered peers (cap ${MAX_DISCOVERED_PEERS})`);
  t.ok(discovered.some((p) => p.id?.startsWith('rogue-')), 'the flood did reach node-a');
  t.same(
    rows.filter((p) => p.state === 'live').map((p) => `${p.id} ${p.url}`),
    [`node-b ${bUrl}`],
    'node-b is the only live peer, still at its first URL: no fake owns a digest',
  );
  t.notOk(rows.some((p) => p.url === impostorUrl), `the claim on node-b's id at ${impostorUrl} was ignored`);
  t.ok(a.jsonLines().some((l) => l.msg === 'peer table full: announcement ignored'), 'node-a logged that it ignored announcements past the cap');
  await rogue.stop(8000);
  await a.stop(8000);
  await b.stop(8000);
});
