// LAN discovery of sibling Coves over mDNS / DNS-SD (RFC 6762, RFC 6763): advertise this node as
// `cove-<id>._cove._tcp.local` with TXT id, site, v, scheme, port; browse `_cove._tcp.local` and
// report every sibling of the same site to `onPeer` each time it is seen, and its goodbye to
// `onGone`. Siblings that fall silent without a goodbye are expired by the peer table.
//
// Built on multicast-dns (sockets and packet encoding only), not mdns-js 1.0.3, which was tried
// first and fails on this job (see the README's dependency table): it encodes
// TXT values and instance names as dotted DNS names (v=0.1.0 goes out as "v=0" "1" "0"), cannot
// be restricted to chosen interfaces, opens a fresh socket set per browser/advertisement, sends
// from ephemeral ports (avahi drops those responses), answers every query many times over, and
// only reports a service when something about it changed.
//
// One multicast-dns instance per selected interface: bound to 0.0.0.0:5353 (SO_REUSEADDR, so it
// coexists with avahi), joined to 224.0.0.251 on that interface's address and sending through it.
// Linux delivers a group's datagrams to every socket bound to the port (IP_MULTICAST_ALL), so each
// link only handles packets whose source lies in one of its interface's subnets.
//
// An announcement is believed only as far as its address goes: a sibling is reported at an
// address inside the subnets of the link it was heard on, never at a link-local or metadata
// address (169.254.0.0/16, fe80::/10), and at a loopback address only on a loopback link (then
// the announcer is this host). Anything else is dropped here, before the peer table sees it.
//
// No probing for name conflicts (RFC 6762 §8.1): the instance name carries the node id, which is
// unique per node, and probing would only delay the first announcement by ~750 ms.
import os from 'node:os';
import type { RemoteInfo } from 'node:dgram';
import makeMdns from 'multicast-dns';
import type { SrvAnswer, StringAnswer, TxtAnswer } from 'dns-packet'; // types come with @types/multicast-dns
import type { Logger } from 'pino';
import type { PeerInfo } from '../peers/peer.js';
import { discoveredAddressRefusal } from '../peers/address.js';

export interface MdnsOptions {
  /** This node's id (TXT "id"). */
  id: string;
  /** This node's site (TXT "site"); peers of other sites are ignored. */
  site: string;
  /** Port of this node's registry API (the advertised SRV port). */
  port: number;
  /** Scheme of this node's registry API (TXT "scheme"). */
  scheme: 'http' | 'https';
  /** This node's Cove version (TXT "v"). */
  version: string;
  /** Interface names (e.g. ["eth0"]) to advertise and browse on; default every non-loopback IPv4 interface. */
  interfaces?: string[];
  /** How often to query for siblings, in ms (default 30000). */
  queryIntervalMs?: number;
  /** How often to look for address changes, in ms (default 10000). */
  addressCheckMs?: number;
  log: Logger;
  /** Called every time a sibling of the same site (never this node) is seen or refreshed. */
  onPeer(peer: PeerInfo): void;
  /** Called when a sibling of the same site says goodbye (it is stopping). */
  onGone?(id: string): void;
}

/** A running advertisement and browser. */
export interface Mdns {
  /** Sends a goodbye, stops browsing, clears every timer and closes the sockets. */
  stop(): Promise<void>;
}

type MulticastDns = makeMdns.MulticastDNS;
/** The record kinds Cove sends (PTR and A are StringAnswers). */
type Answer = StringAnswer | SrvAnswer | TxtAnswer;
type Question = makeMdns.QueryOutgoingPacket['questions'][number];

const SERVICE = '_cove._tcp.local';
const SERVICE_ENUM = '_services._dns-sd._udp.local';
// RFC 6762 §10: 120 s for records naming a host or its addresses, 75 minutes for the rest.
const HOST_TTL = 120;
const OTHER_TTL = 4500;
const STOP_SEND_MS = 1000;

/** One IPv4 interface we advertise and browse on. */
interface Link {
  name: string;
  /** The interface's first IPv4 address: multicast membership and outgoing interface. */
  address: string;
  /** Every IPv4 address of the interface with its netmask (A records; source filter). */
  nets: Array<{ address: string; netmask: string }>;
  mdns: MulticastDns;
  ready: boolean;
  /** The socket could not bind or join; the next address check tries again. */
  failed: boolean;
}

export function startMdns(opts: MdnsOptions): Mdns {
  try {
    return new Discovery(opts);
  } catch (err) {
    opts.log.error({ err }, 'mdns discovery not started');
    return { stop: async () => undefined };
  }
}

class Discovery implements Mdns {
  private readonly log: Logger;
  private readonly instance: string;
  private readonly host: string;
  private readonly txt: string[];
  private links: Link[] = [];
  private addressKey = '';
  private stopped = false;
  private readonly timers = new Set<NodeJS.Timeout>();
  private readonly queryTimer: NodeJS.Timeout;
  private readonly addressTimer: NodeJS.Timeout;

  constructor(private readonly opts: MdnsOptions) {
    this.log = opts.log.child({ component: 'mdns' });
    // dns-packet writes a name's labels as they are split at dots, without escapes and without a
    // length check, so the id goes into names as one safe label; the TXT record carries it exactly.
    const label = `cove-${opts.id}`.replace(/[^A-Za-z0-9-]/g, '-').slice(0, 63);
    this.instance = `${label}.${SERVICE}`;
    this.host = `${label}.local`;
    this.txt = [`id=${opts.id}`, `site=${opts.site}`, `v=${opts.version}`, `scheme=${opts.scheme}`, `port=${opts.port}`];
    const tooLong = this.txt.find((s) => Buffer.byteLength(s) > 255);
    if (tooLong) throw new Error(`mdns: TXT entry longer than 255 bytes: ${JSON.stringify(tooLong.slice(0, 40))}...`);
    if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) throw new Error(`mdns: port must be 1-65535, got ${opts.port}`);
    const queryMs = opts.queryIntervalMs ?? 30_000;
    const checkMs = opts.addressCheckMs ?? 10_000;
    if (!(queryMs >= 100)) throw new Error(`mdns: queryIntervalMs must be at least 100, got ${opts.queryIntervalMs}`);
    if (!(checkMs >= 100)) throw new Error(`mdns: addressCheckMs must be at least 100, got ${opts.addressCheckMs}`);

    this.safely(() => this.rebuild()); // on failure the address check retries
    this.queryTimer = setInterval(() => this.queryAll(), queryMs);
    this.addressTimer = setInterval(() => this.checkAddresses(), checkMs);
    // A daemon stays up through its HTTP server; discovery alone must not hold a process open.
    this.queryTimer.unref();
    this.addressTimer.unref();
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.queryTimer);
    clearInterval(this.addressTimer);
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    const links = this.links;
    this.links = [];
    await Promise.all(links.map((link) => this.closeLink(link, true)));
    this.log.info({}, 'mdns stopped');
  }

  // ---------------------------------------------------------------------------------- links

  /** The selected interfaces' IPv4 addresses, by interface name (empty ones left out). */
  private currentNets(): Map<string, Array<{ address: string; netmask: string }>> {
    const wanted = this.opts.interfaces && this.opts.interfaces.length > 0 ? new Set(this.opts.interfaces) : null;
    const out = new Map<string, Array<{ address: string; netmask: string }>>();
    for (const [name, addrs] of Object.entries(os.networkInterfaces())) {
      if (wanted && !wanted.has(name)) continue;
      const v4 = (addrs ?? []).filter((a) => a.family === 'IPv4' && (wanted !== null || !a.internal));
      if (v4.length > 0) out.set(name, v4.map((a) => ({ address: a.address, netmask: a.netmask })));
    }
    return out;
  }

  private checkAddresses(): void {
    if (this.stopped) return;
    try {
      const key = JSON.stringify([...this.currentNets()]);
      if (key !== this.addressKey) {
        this.log.info({ before: this.addressKey, after: key }, 'mdns addresses changed; re-announcing');
        this.rebuild();
      } else if (this.links.some((l) => l.failed)) {
        this.log.info({}, 'mdns retrying the sockets that failed');
        this.rebuild();
      }
    } catch (err) {
      this.log.error({ err }, 'mdns address check failed');
    }
  }

  /** Closes every link and opens one per selected interface, each announcing and querying at once. */
  private rebuild(): void {
    const nets = this.currentNets();
    this.addressKey = JSON.stringify([...nets]);
    const old = this.links;
    this.links = [];
    // No goodbye here: the old address may be gone already, and the new announcement carries the
    // cache-flush bit, which replaces the old SRV, TXT and A records in every listener's cache.
    for (const link of old) void this.closeLink(link, false);
    const missing = (this.opts.interfaces ?? []).filter((n) => !nets.has(n));
    if (missing.length > 0) this.log.warn({ interfaces: missing }, 'mdns interfaces without an IPv4 address; waiting for them');
    if (nets.size === 0) {
      this.log.warn({}, 'mdns: no IPv4 interface to advertise on');
      return;
    }
    for (const [name, list] of nets) {
      try {
        this.links.push(this.openLink(name, list));
      } catch (err) {
        this.log.error({ err, interface: name }, 'mdns socket failed');
      }
    }
    this.log.info({ interfaces: this.links.map((l) => `${l.name}=${l.address}`), instance: this.instance, port: this.opts.port }, 'mdns advertising');
  }

  private openLink(name: string, nets: Array<{ address: string; netmask: string }>): Link {
    const address = nets[0]!.address;
    const mdns = makeMdns({ interface: address, bind: '0.0.0.0', port: 5353, reuseAddr: true, loopback: true, ttl: 255 });
    const link: Link = { name, address, nets, mdns, ready: false, failed: false };
    mdns.on('error', (err: Error) => {
      if (!link.ready) link.failed = true;
      this.log.error({ err, interface: name }, 'mdns socket error');
    });
    mdns.on('warning', (err: Error) => this.log.warn({ err, interface: name }, 'mdns warning'));
    mdns.on('query', (q: makeMdns.QueryPacket, rinfo: RemoteInfo) => this.safely(() => this.onQuery(link, q, rinfo), 'mdns query not handled'));
    mdns.on('response', (r: makeMdns.ResponsePacket, rinfo: RemoteInfo) => this.safely(() => this.onResponse(link, r, rinfo), 'mdns response not handled'));
    mdns.once('ready', () => {
      if (this.stopped || !this.links.includes(link)) return;
      link.ready = true;
      this.announce(link);
      this.query(link);
    });
    return link;
  }

  private closeLink(link: Link, goodbye: boolean): Promise<void> {
    return new Promise<void>((resolve) => {
      const destroy = () => link.mdns.destroy(() => resolve());
      if (!goodbye || !link.ready) return destroy();
      // Goodbye (RFC 6762 §10.1): the same records with TTL 0; bounded, then close regardless.
      const timer = setTimeout(destroy, STOP_SEND_MS);
      link.mdns.respond({ answers: this.records(link, 0) }, () => {
        clearTimeout(timer);
        destroy();
      });
    });
  }

  /** Runs `fn`, logging instead of throwing: discovery must never take the daemon down. */
  private safely(fn: () => void, what = 'mdns step failed'): void {
    try {
      fn();
    } catch (err) {
      this.log.warn({ err }, what);
    }
  }

  /**
   * Whether `address` lies in one of the link's subnets. Every socket on port 5353 gets the group's
   * datagrams from every interface where anyone joined it (IP_MULTICAST_ALL), avahi included, so
   * without this a link would answer and report for interfaces it was not given.
   */
  private onLink(link: Link, address: string): boolean {
    return link.nets.some((n) => sameSubnet(n.address, address, n.netmask));
  }

  /** Whether a sibling heard on `link` may be reached at `address` (see the rules at the top). */
  private acceptable(link: Link, address: string): boolean {
    if (!this.onLink(link, address)) return false;
    const nets = link.nets.map((n) => ({ cidr: `${n.address}/${prefixLength(n.netmask)}`, internal: false }));
    return discoveredAddressRefusal(address, nets, isLoopbackV4(link.address)) === null;
  }

  private setTimer(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      if (!this.stopped) this.safely(fn);
    }, ms);
    t.unref();
    this.timers.add(t);
  }

  // ---------------------------------------------------------------------------------- advertising

  /** PTR, SRV, TXT and A records for this node on `link`, with `ttl` (0: goodbye) or the defaults. */
  private records(link: Link, ttl?: number): Answer[] {
    const host = ttl ?? HOST_TTL;
    const other = ttl ?? OTHER_TTL;
    return [
      { name: SERVICE, type: 'PTR', ttl: other, data: this.instance },
      { name: this.instance, type: 'SRV', ttl: host, flush: true, data: { port: this.opts.port, target: this.host, priority: 0, weight: 0 } },
      { name: this.instance, type: 'TXT', ttl: other, flush: true, data: this.txt },
      ...link.nets.map((n): Answer => ({ name: this.host, type: 'A', ttl: host, flush: true, data: n.address })),
    ];
  }

  /** Unsolicited announcement, sent twice one second apart (RFC 6762 §8.3). */
  private announce(link: Link): void {
    const send = () => {
      if (this.links.includes(link)) link.mdns.respond({ answers: this.records(link) });
    };
    send();
    this.setTimer(1000, send);
  }

  private onQuery(link: Link, q: makeMdns.QueryPacket, rinfo: RemoteInfo): void {
    if (!link.ready || !this.onLink(link, rinfo.address)) return;
    const [ptr, srv, txt, ...a] = this.records(link);
    const answers: Answer[] = [];
    const additionals: Answer[] = [];
    let shared = false;
    for (const question of q.questions) {
      const name = question.name.toLowerCase();
      const type: string = question.type; // 'ANY' (255) decodes fine but is missing from the typings
      if (name === SERVICE && (type === 'PTR' || type === 'ANY')) {
        if (knownAnswer(q, ptr!)) continue; // RFC 6762 §7.1: the asker already has it
        answers.push(ptr!);
        additionals.push(srv!, txt!, ...a);
        shared = true;
      } else if (name === SERVICE_ENUM && (type === 'PTR' || type === 'ANY')) {
        answers.push({ name: SERVICE_ENUM, type: 'PTR', ttl: OTHER_TTL, data: SERVICE });
        shared = true;
      } else if (name === this.instance.toLowerCase()) {
        if (type === 'SRV' || type === 'ANY') answers.push(srv!);
        if (type === 'TXT' || type === 'ANY') answers.push(txt!);
        if (type === 'SRV' || type === 'ANY') additionals.push(...a);
      } else if (name === this.host.toLowerCase() && (type === 'A' || type === 'ANY')) {
        answers.push(...a);
      }
    }
    if (answers.length === 0) return;
    const extra = additionals.filter((r) => !answers.includes(r));
    if (rinfo.port !== 5353) {
      // Legacy unicast query (RFC 6762 §6.7), e.g. `dig -p 5353 @224.0.0.251`: answer the asker
      // directly, echoing the id and questions, with short TTLs and without cache-flush bits.
      const legacy = (r: Answer): Answer => ({ ...r, ttl: Math.min(r.ttl ?? 10, 10), flush: false }) as Answer;
      link.mdns.respond(
        { id: q.id, questions: q.questions as Question[], answers: answers.map(legacy), additionals: extra.map(legacy) },
        { port: rinfo.port, address: rinfo.address },
      );
      return;
    }
    const send = () => link.mdns.respond({ answers, additionals: extra });
    // RFC 6762 §6: answers from a shared record set wait 20-120 ms so siblings do not collide.
    if (shared) this.setTimer(20 + Math.floor(Math.random() * 100), () => this.links.includes(link) && send());
    else send();
  }

  // ---------------------------------------------------------------------------------- browsing

  private queryAll(): void {
    for (const link of this.links) if (link.ready) this.safely(() => this.query(link));
  }

  private query(link: Link): void {
    link.mdns.query({ questions: [{ name: SERVICE, type: 'PTR' }] });
  }

  private onResponse(link: Link, r: makeMdns.ResponsePacket, rinfo: RemoteInfo): void {
    if (!link.ready || !this.onLink(link, rinfo.address)) return;
    const records = [...r.answers, ...r.additionals];
    for (const srv of records) {
      if (srv.type !== 'SRV' || !srv.name.toLowerCase().endsWith(`.${SERVICE}`)) continue;
      const txtRecord = records.find((x) => x.type === 'TXT' && x.name.toLowerCase() === srv.name.toLowerCase());
      if (!txtRecord || txtRecord.type !== 'TXT') continue;
      const txt = parseTxt(txtRecord.data);
      if (!txt.id || txt.id === this.opts.id) continue;
      if (txt.site !== this.opts.site) {
        this.log.debug({ peer: txt.id, site: txt.site, from: rinfo.address }, 'mdns peer of another site ignored');
        continue;
      }
      if (srv.ttl === 0) {
        // A goodbye: the sibling is stopping, so stop asking it now rather than at expiry.
        this.log.debug({ peer: txt.id, from: rinfo.address }, 'mdns peer said goodbye');
        try {
          this.opts.onGone?.(txt.id);
        } catch (err) {
          this.log.error({ err, peer: txt.id }, 'mdns onGone failed');
        }
        continue;
      }
      const target = srv.data.target.toLowerCase();
      const addresses = records.flatMap((x) => (x.type === 'A' && x.name.toLowerCase() === target ? [x.data] : []));
      // The sender's own address only when the announcement names none: an announcement that names
      // an address this link may not use is dropped, not redirected to whoever sent it.
      if (addresses.length === 0 && rinfo.family === 'IPv4') addresses.push(rinfo.address);
      // The first announced address this link may use.
      const address = addresses.find((addr) => this.acceptable(link, addr));
      if (!address) {
        this.log.debug({ peer: txt.id, addresses, from: rinfo.address }, 'mdns peer ignored: no announced address on this link');
        continue;
      }
      const scheme = txt.scheme === 'https' ? 'https' : 'http';
      const peer: PeerInfo = { id: txt.id, site: txt.site, url: `${scheme}://${address}:${srv.data.port}` };
      if (txt.v) peer.version = txt.v;
      try {
        this.opts.onPeer(peer);
      } catch (err) {
        this.log.error({ err, peer: peer.id }, 'mdns onPeer failed');
      }
    }
  }
}

/** TXT character-strings "key=value" (as Buffers or strings) as an object; first key wins (RFC 6763 §6.4). */
export function parseTxt(data: string | Buffer | Array<string | Buffer>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const item of Array.isArray(data) ? data : [data]) {
    const s = Buffer.isBuffer(item) ? item.toString('utf8') : item;
    const eq = s.indexOf('=');
    const key = (eq === -1 ? s : s.slice(0, eq)).toLowerCase();
    if (key && !(key in out)) out[key] = eq === -1 ? '' : s.slice(eq + 1);
  }
  return out;
}

/** Whether the asker listed `record` among its known answers with at least half its TTL left. */
function knownAnswer(q: makeMdns.QueryPacket, record: Answer): boolean {
  return q.answers.some(
    (k) =>
      k.type === record.type &&
      k.name.toLowerCase() === record.name.toLowerCase() &&
      typeof k.data === 'string' &&
      typeof record.data === 'string' &&
      k.data.toLowerCase() === record.data.toLowerCase() &&
      (k.ttl ?? 0) >= (record.ttl ?? 0) / 2,
  );
}

function ipv4ToInt(address: string): number | null {
  const parts = address.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) return null;
  return ((parts[0]! << 24) | (parts[1]! << 16) | (parts[2]! << 8) | parts[3]!) >>> 0;
}

function sameSubnet(a: string, b: string, netmask: string): boolean {
  const [x, y, m] = [ipv4ToInt(a), ipv4ToInt(b), ipv4ToInt(netmask)];
  return x !== null && y !== null && m !== null && (x & m) >>> 0 === (y & m) >>> 0;
}

/** The prefix length of an IPv4 netmask (255.255.255.0 → 24). */
function prefixLength(netmask: string): number {
  const m = ipv4ToInt(netmask) ?? 0;
  let n = 0;
  for (let bit = 31; bit >= 0 && (m >>> bit) & 1; bit--) n++;
  return n;
}

function isLoopbackV4(address: string): boolean {
  return address.startsWith('127.');
}
