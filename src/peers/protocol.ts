// How Coves talk to each other: which headers mark a peer request, how a request is signed with
// the site's peer key, how the Via hop list is written and read, and which peer owns a digest.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Marks a request from a sibling Cove. `local`: answer from what this node holds (its store and
 * its running fills), never from anyone else. `fetch`: this node owns the digest for the site;
 * fetch it from the tiers above the LAN (parents, origin) — never from peers — and stream it.
 */
export const PEER_HEADER = 'cove-peer';
export type PeerMode = 'local' | 'fetch';
/** The asking node's id, for the receiving node's logs and counters. */
export const PEER_NODE_HEADER = 'cove-node';
/** `<unix seconds>.<hex HMAC-SHA256>` over the request, when the site has a peer key. */
export const PEER_AUTH_HEADER = 'cove-peer-auth';
/** How far a signature's clock may be from ours, in seconds. */
export const PEER_AUTH_WINDOW_S = 300;

/** A request passes through at most this many Coves; a longer Via is refused as a loop. */
export const MAX_HOPS = 8;
/** The Via comment that marks a hop as a Cove (other proxies may add hops of their own). */
const COVE_VIA_COMMENT = '(cove)';

/** A node id: lower-case letters, digits and dashes, as it appears in Via and in mDNS names. */
export const NODE_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

function signature(key: string, seconds: number, method: string, path: string, mode: string): string {
  return createHmac('sha256', key).update(`${seconds}\n${method}\n${path}\n${mode}`).digest('hex');
}

/** The Cove-Peer-Auth value for one request. */
export function signPeerRequest(key: string, method: string, path: string, mode: PeerMode, now = Date.now()): string {
  const seconds = Math.floor(now / 1000);
  return `${seconds}.${signature(key, seconds, method, path, mode)}`;
}

/** True when the value signs this request with the key, within the clock window. */
export function verifyPeerRequest(key: string, value: string | undefined, method: string, path: string, mode: string, now = Date.now()): boolean {
  const m = value === undefined ? null : /^(\d{1,12})\.([0-9a-f]{64})$/.exec(value.trim());
  if (!m) return false;
  const seconds = Number(m[1]);
  if (Math.abs(now / 1000 - seconds) > PEER_AUTH_WINDOW_S) return false;
  const expected = Buffer.from(signature(key, seconds, method, path, mode), 'hex');
  return timingSafeEqual(expected, Buffer.from(m[2]!, 'hex'));
}

/** The node ids of the Cove hops in a Via header, oldest first; other proxies' hops count as "?". */
export function parseVia(value: string | string[] | undefined): string[] {
  if (value === undefined) return [];
  const text = Array.isArray(value) ? value.join(',') : value;
  const hops: string[] = [];
  for (const part of text.split(',')) {
    const words = part.trim().split(/\s+/);
    if (words.length < 2 || words[0] === '') continue;
    hops.push(words.slice(2).join(' ') === COVE_VIA_COMMENT ? words[1]! : '?');
  }
  return hops;
}

/** True when some hop of the list was a Cove: the request came from another Cove, not a client. */
export function fromCove(value: string | string[] | undefined): boolean {
  const text = Array.isArray(value) ? value.join(',') : (value ?? '');
  return text.includes(COVE_VIA_COMMENT);
}

/** The Via header a Cove sends upward: the hops so far plus itself. */
export function formatVia(hops: readonly string[], self: string): string {
  return [...hops.filter((h) => h !== '?'), self].map((id) => `1.1 ${id} ${COVE_VIA_COMMENT}`).join(', ');
}

/** Rendezvous score of a node for a digest: every node computes the same ranking on its own. */
function score(id: string, digest: string): bigint {
  return createHash('sha256').update(`${id}\n${digest}`).digest().readBigUInt64BE(0);
}

/** Node ids ranked for a digest, best owner first (highest rendezvous score; ties by id). */
export function rankOwners(ids: readonly string[], digest: string): string[] {
  return [...new Set(ids)]
    .map((id) => ({ id, s: score(id, digest) }))
    .sort((a, b) => (a.s === b.s ? (a.id < b.id ? -1 : 1) : a.s > b.s ? -1 : 1))
    .map((x) => x.id);
}
