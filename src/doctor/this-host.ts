// "Does this URL point at this Cove?" for the client-configuration checks: the host part must be
// one this Cove answers on (its listen address, or with a wildcard listen address any address of
// this host, its host name, localhost, or a name the hosts file maps to one of those) and the port
// one of its listeners' ports.
import { isIP } from 'node:net';
import os from 'node:os';
import type { Config } from '../config.js';

export interface ThisCove {
  /** Lower-case host names and addresses (IPv6 without brackets) clients may use for this Cove. */
  hosts: Set<string>;
  /** Ports of its listeners, with the scheme each speaks. */
  ports: Map<number, 'http' | 'https'>;
  /** How to name it in messages: "127.0.0.1:5000" or "this host, port 5000". */
  label: string;
}

const WILDCARD = new Set(['', '0.0.0.0', '::', '[::]']);

function bare(host: string): string {
  const h = host.toLowerCase().replace(/\.$/, '');
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

/** The addresses of this host's interfaces (loopback included). */
export function localAddresses(): string[] {
  const out: string[] = [];
  for (const addrs of Object.values(os.networkInterfaces())) for (const a of addrs ?? []) out.push(bare(a.address.replace(/%.*$/, '')));
  return out;
}

/** Names an /etc/hosts text maps to each address: address → names (lower case). */
export function parseHostsFile(text: string): Array<{ ip: string; names: string[]; line: number }> {
  const out: Array<{ ip: string; names: string[]; line: number }> = [];
  text.split('\n').forEach((raw, i) => {
    const fields = raw.replace(/#.*/, '').trim().split(/\s+/).filter((f) => f !== '');
    if (fields.length < 2 || isIP(fields[0]!) === 0) return;
    out.push({ ip: bare(fields[0]!), names: fields.slice(1).map((n) => n.toLowerCase().replace(/\.$/, '')), line: i + 1 });
  });
  return out;
}

export function isLoopbackAddress(ip: string): boolean {
  return ip === '::1' || (isIP(ip) === 4 && ip.startsWith('127.'));
}

/** Who "this Cove" is, from its listen settings, this host's addresses and its hosts file. */
export function thisCove(config: Pick<Config, 'listen' | 'listenHttp' | 'tls'>, hostsText: string | null, addresses = localAddresses()): ThisCove {
  const listenHost = bare(config.listen.host);
  const hosts = new Set<string>();
  const ips = new Set<string>();
  if (WILDCARD.has(listenHost)) {
    for (const a of addresses) ips.add(a);
    ips.add('127.0.0.1');
    ips.add('::1');
    hosts.add('localhost');
    hosts.add(os.hostname().toLowerCase());
  } else {
    if (isIP(listenHost) === 0) hosts.add(listenHost);
    else ips.add(listenHost);
    if (isLoopbackAddress(listenHost)) hosts.add('localhost');
  }
  for (const entry of parseHostsFile(hostsText ?? '')) if (ips.has(entry.ip)) for (const n of entry.names) hosts.add(n);
  for (const ip of ips) hosts.add(ip);
  const ports = new Map<number, 'http' | 'https'>([[config.listen.port, config.tls === null ? 'http' : 'https']]);
  if (config.listenHttp !== null) ports.set(config.listenHttp.port, 'http');
  const label = WILDCARD.has(listenHost) ? `this host, port ${[...ports.keys()].join(' or ')}` : `${config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host}:${[...ports.keys()].join(' or ')}`;
  return { hosts, ports, label };
}

/**
 * Whether a client URL (scheme://host[:port], or host[:port] with `scheme` for podman's
 * locations) reaches this Cove; 'scheme' when host and port are right but the scheme is not
 * what that port speaks.
 */
export function pointsHere(cove: ThisCove, url: string, scheme?: 'http' | 'https'): 'yes' | 'no' | 'scheme' {
  let parsed: URL;
  try {
    parsed = new URL(scheme === undefined ? url : `${scheme}://${url}`);
  } catch {
    return 'no';
  }
  const proto = parsed.protocol === 'http:' ? 'http' : parsed.protocol === 'https:' ? 'https' : null;
  if (proto === null) return 'no';
  const port = Number(parsed.port || (proto === 'https' ? 443 : 80));
  if (!cove.hosts.has(bare(parsed.hostname))) return 'no';
  const speaks = cove.ports.get(port);
  if (speaks === undefined) return 'no';
  return speaks === proto ? 'yes' : 'scheme';
}

/** The registries this Cove serves, lower case: the origin's host[:port] and every route's name. */
export function servedRegistries(config: Pick<Config, 'upstreams' | 'routes'>): Set<string> {
  const served = new Set<string>();
  for (const up of config.upstreams) served.add(new URL(up.url).host.toLowerCase());
  for (const route of config.routes) {
    const match = route.match.toLowerCase();
    served.add(match);
    if (['docker.io', 'index.docker.io', 'registry-1.docker.io'].includes(match)) for (const n of ['docker.io', 'index.docker.io', 'registry-1.docker.io']) served.add(n);
  }
  return served;
}
