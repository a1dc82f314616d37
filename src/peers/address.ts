// Which addresses a discovered peer may have. An mDNS announcement is one unauthenticated UDP
// datagram: without these rules it could send this node's peer requests to any address — a cloud
// metadata service, a link-local device, this host's own loopback services, another network.
// Discovered peers must sit on one of this node's own subnets; static COVE_PEERS entries are the
// operator's word and are never filtered.
import { BlockList, isIP } from 'node:net';
import os from 'node:os';

/** One subnet this node has an address on. */
export interface LocalNet {
  /** An address with its prefix, e.g. "10.0.0.5/24" or "fd12::5/64". */
  cidr: string;
  internal: boolean;
}

const NEVER = new BlockList();
NEVER.addSubnet('169.254.0.0', 16, 'ipv4'); // link-local, and the cloud metadata service 169.254.169.254
NEVER.addSubnet('fe80::', 10, 'ipv6'); // link-local
NEVER.addAddress('fd00:ec2::254', 'ipv6'); // AWS's IPv6 metadata service
NEVER.addSubnet('0.0.0.0', 8, 'ipv4');
NEVER.addAddress('::', 'ipv6');
NEVER.addSubnet('224.0.0.0', 4, 'ipv4'); // multicast
NEVER.addAddress('255.255.255.255', 'ipv4');
NEVER.addSubnet('ff00::', 8, 'ipv6'); // multicast

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

function family(ip: string): 'ipv4' | 'ipv6' | null {
  const v = isIP(ip);
  return v === 4 ? 'ipv4' : v === 6 ? 'ipv6' : null;
}

/** This host's subnets, from its interfaces' addresses and netmasks. */
export function localNets(): LocalNet[] {
  const out: LocalNet[] = [];
  for (const addrs of Object.values(os.networkInterfaces())) {
    for (const a of addrs ?? []) if (a.cidr) out.push({ cidr: a.cidr, internal: a.internal });
  }
  return out;
}

/** A URL's host as an IP address (brackets of an IPv6 literal removed), or null for a name. */
export function hostAddress(url: string): string | null {
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch {
    return null;
  }
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return family(host) === null ? null : host;
}

/**
 * Why a discovered peer at `ip` is not accepted, or null when it is: never link-local, metadata,
 * multicast or unspecified addresses; never loopback unless `loopbackOk` (this node itself is on
 * loopback only, so any announcement it hears came from this host); otherwise only an address
 * inside one of `nets`.
 */
export function discoveredAddressRefusal(ip: string, nets: readonly LocalNet[], loopbackOk = false): string | null {
  const fam = family(ip);
  if (fam === null) return 'not an IP address';
  if (NEVER.check(ip, fam)) return 'a link-local, metadata, multicast or unspecified address';
  if (LOOPBACK.check(ip, fam)) return loopbackOk ? null : 'a loopback address announced to a node that is not on loopback only';
  const mine = new BlockList();
  for (const n of nets) {
    if (n.internal) continue;
    const [addr, prefix] = n.cidr.split('/');
    const f = family(addr ?? '');
    if (f !== null) mine.addSubnet(addr!, Number(prefix), f);
  }
  return mine.check(ip, fam) ? null : "outside this node's own subnets";
}
