// A LAN stranger speaking mDNS, for discovery attack tests, run inside one of a test's network
// namespaces (never in the root namespace):
//   node dist/test/helpers/mdns-rogue.js '{"address":"10.1.2.3","announce":[...],"flood":{...},"impersonate":{...}}'
// It sends unsolicited `_cove._tcp` announcements (PTR, SRV, TXT, A; several instances per
// datagram) through the interface holding `address`, every `intervalMs`, `rounds` times:
//   announce:    [{ id, site, address, port }]    each as given (address: the A record)
//   flood:       { count, site, addresses: [..], port }  ids rogue-0 … rogue-<count-1>, A records
//                taken round-robin from `addresses`
//   impersonate: { id, site, port }   also serves GET /_cove/node on address:port as that id
//                (without any key), the way a host claiming a sibling's id would
// It prints {"event":"ready"} once the socket is up, {"event":"round","n":..,"sent":..} per
// round, and exits 0 on SIGTERM.
import makeMdns from 'multicast-dns';
import type { SrvAnswer, StringAnswer, TxtAnswer } from 'dns-packet';
import { FakePeer } from './fake-peer.js';

interface Announcement {
  id: string;
  site: string;
  address: string;
  port: number;
}
interface Options {
  address: string;
  announce?: Announcement[];
  flood?: { count: number; site: string; addresses: string[]; port: number };
  impersonate?: { id: string; site: string; port: number };
  intervalMs?: number;
  rounds?: number;
}

const SERVICE = '_cove._tcp.local';
/** Instances per datagram: about 150 bytes each keeps a datagram under the 1500-byte MTU. */
const PER_PACKET = 8;
const line = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + '\n');
const opts = JSON.parse(process.argv[2] ?? '{}') as Options;

const all: Announcement[] = [...(opts.announce ?? [])];
if (opts.flood) {
  const f = opts.flood;
  for (let i = 0; i < f.count; i++) all.push({ id: `rogue-${i}`, site: f.site, address: f.addresses[i % f.addresses.length]!, port: f.port });
}

function records(a: Announcement): Array<StringAnswer | SrvAnswer | TxtAnswer> {
  const instance = `cove-${a.id}.${SERVICE}`;
  const host = `cove-${a.id}.local`;
  return [
    { name: SERVICE, type: 'PTR', ttl: 4500, data: instance },
    { name: instance, type: 'SRV', ttl: 120, flush: true, data: { port: a.port, target: host, priority: 0, weight: 0 } },
    { name: instance, type: 'TXT', ttl: 4500, flush: true, data: [`id=${a.id}`, `site=${a.site}`, 'v=rogue', 'scheme=http', `port=${a.port}`] },
    { name: host, type: 'A', ttl: 120, flush: true, data: a.address },
  ];
}

let impostor: FakePeer | null = null;
if (opts.impersonate) {
  // FakePeer listens on a free port; the announcement names that port.
  impostor = await FakePeer.start(opts.impersonate.id, { host: opts.address, site: opts.impersonate.site });
  all.push({ id: opts.impersonate.id, site: opts.impersonate.site, address: opts.address, port: Number(new URL(impostor.url).port) });
  line({ event: 'impersonating', url: impostor.url });
}

const mdns = makeMdns({ interface: opts.address, bind: '0.0.0.0', port: 5353, reuseAddr: true, loopback: true, ttl: 255 });
mdns.on('error', (err: Error) => line({ event: 'error', message: err.message }));
let rounds = 0;
let timer: NodeJS.Timeout | null = null;

async function round(): Promise<void> {
  let sent = 0;
  for (let i = 0; i < all.length; i += PER_PACKET) {
    const batch = all.slice(i, i + PER_PACKET);
    await new Promise<void>((resolve) => mdns.respond({ answers: batch.flatMap(records) }, () => resolve()));
    sent += batch.length;
    // A short pause every few datagrams so the receivers' socket buffers keep up.
    if ((i / PER_PACKET) % 16 === 15) await new Promise((r) => setTimeout(r, 2));
  }
  rounds++;
  line({ event: 'round', n: rounds, sent });
  if (rounds < (opts.rounds ?? 3)) timer = setTimeout(() => void round(), opts.intervalMs ?? 1000);
}

mdns.once('ready', () => {
  line({ event: 'ready' });
  void round();
});

process.once('SIGTERM', () => {
  if (timer) clearTimeout(timer);
  mdns.destroy(() => {
    void (impostor?.close() ?? Promise.resolve()).then(() => process.exit(0));
  });
});
