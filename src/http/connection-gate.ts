// Admission of TCP connections: a cap on all open connections and one per client, so that one
// client (or one flood) cannot take every connection a node can hold.
import { isIPv6 } from 'node:net';

/** How many connections may be open at once, in all and from one client. */
export interface ConnectionCaps {
  maxConnections: number;
  maxConnectionsPerClient: number;
}

/** The answer to one connection: admitted with a release to call when it closes, or refused and why. */
export type Admission = { admitted: true; release: () => void } | { admitted: false; reason: 'total' | 'client' };

/** Counts open connections, in all and per client; shared by every listener of one Cove. */
export class ConnectionGate {
  readonly #caps: ConnectionCaps;
  readonly #perClient = new Map<string, number>();
  #open = 0;

  constructor(caps: ConnectionCaps) {
    this.#caps = caps;
  }

  /** Connections open now. */
  get open(): number {
    return this.#open;
  }

  /** Admits a connection from `remoteAddress` if neither cap is reached. */
  admit(remoteAddress: string | undefined): Admission {
    const client = clientKey(remoteAddress);
    const fromClient = this.#perClient.get(client) ?? 0;
    if (fromClient >= this.#caps.maxConnectionsPerClient) return { admitted: false, reason: 'client' };
    if (this.#open >= this.#caps.maxConnections) return { admitted: false, reason: 'total' };
    this.#open++;
    this.#perClient.set(client, fromClient + 1);
    let released = false;
    return {
      admitted: true,
      release: () => {
        if (released) return;
        released = true;
        this.#open--;
        const left = (this.#perClient.get(client) ?? 1) - 1;
        if (left > 0) this.#perClient.set(client, left);
        else this.#perClient.delete(client);
      },
    };
  }
}

/**
 * Who a connection counts against: its IPv4 address (an IPv4-mapped IPv6 address is the same
 * client), or the /64 network of an IPv6 address — one host picks any address of its /64 at will
 * (privacy addresses), so counting single IPv6 addresses would let it walk around the cap.
 */
export function clientKey(remoteAddress: string | undefined): string {
  if (remoteAddress === undefined) return 'unknown';
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(remoteAddress);
  if (mapped) return mapped[1]!;
  if (!isIPv6(remoteAddress)) return remoteAddress;
  return `${expandIPv6(remoteAddress).slice(0, 4).join(':')}::/64`;
}

/** The eight 16-bit groups of an IPv6 address, as hex without leading zeros. */
function expandIPv6(address: string): string[] {
  let text = address.split('%')[0]!.toLowerCase();
  // An embedded IPv4 tail (::ffff:0:1.2.3.4, 64:ff9b::1.2.3.4) is two more groups.
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.includes('::') ? text.split('::') : [text, undefined];
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const zeros = tail === undefined ? [] : new Array<string>(8 - left.length - right.length).fill('0');
  return [...left, ...zeros, ...right].map((group) => Number.parseInt(group, 16).toString(16));
}
