// How Coves talk to each other: which headers mark a peer request, how requests, answers and
// challenges are authenticated with the site's peer key, how the Via hop list is written and
// read, and which peer owns a digest.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Marks a request from a sibling Cove. `local`: answer from what this node holds (its store and
 * its running fills), never from anyone else. `fetch`: this node owns the digest for the site;
 * fetch it from the tiers above the LAN (parents, origin) — never from peers — and stream it.
 */
export const PEER_HEADER = 'cove-peer';
export type PeerMode = 'local' | 'fetch';
/** The asking node's id; with a peer key it is bound into the signature. */
export const PEER_NODE_HEADER = 'cove-node';
/**
 * `<unix seconds>.<nonce>.<target node id>.<hex HMAC-SHA256>` over the request, when the site has
 * a peer key. The nonce makes each signature usable once; the target id makes it usable at one
 * node only; the asker's id (Cove-Node) is signed too.
 */
export const PEER_AUTH_HEADER = 'cove-peer-auth';
/** The answering node's HMAC over (request nonce, its id, the asker's id, status, digest, type, length, range). */
export const PEER_ANSWER_HEADER = 'cove-peer-answer';
/** A fresh nonce sent with GET /_cove/node: "prove you hold the site's key". */
export const PEER_CHALLENGE_HEADER = 'cove-peer-challenge';
/** The answer to a challenge: HMAC over (nonce, answering id, asking id, site). */
export const PEER_PROOF_HEADER = 'cove-peer-proof';
/** How far a signature's clock may be from ours, in seconds. */
export const PEER_AUTH_WINDOW_S = 300;

/** A request signature's parts, once its form is checked (its MAC is not yet). */
export interface SignedRequest {
  seconds: number;
  nonce: string;
  target: string;
  mac: string;
}

/** What a request signature covers besides key and time. */
export interface RequestFacts {
  asker: string;
  target: string;
  method: string;
  path: string;
  mode: string;
  /** The Range header sent, or '' for none. */
  range: string;
}

/** What an answer's authentication covers. */
export interface AnswerFacts {
  nonce: string;
  answerer: string;
  asker: string;
  status: number;
  digest: string;
  contentType: string;
  contentLength: string;
  contentRange: string;
}

/** 128 random bits as hex: a request or challenge nonce. */
export function newNonce(): string {
  return randomBytes(16).toString('hex');
}

// Each message kind starts with its own label, so a MAC of one kind is never valid as another.
function mac(key: string, parts: ReadonlyArray<string | number>): string {
  return createHmac('sha256', key).update(parts.join('\n')).digest('hex');
}

function sameMac(a: string, b: string | undefined): boolean {
  if (b === undefined || !/^[0-9a-f]{64}$/.test(b)) return false;
  return timingSafeEqual(Buffer.from(a, 'hex'), Buffer.from(b, 'hex'));
}

function requestMac(key: string, seconds: number, nonce: string, f: RequestFacts): string {
  return mac(key, ['cove-peer-request', seconds, nonce, f.asker, f.target, f.method, f.path, f.mode, f.range]);
}

/** The Cove-Peer-Auth value for one request; the nonce is returned to check the answer with. */
export function signPeerRequest(key: string, facts: RequestFacts, now = Date.now(), nonce = newNonce()): { value: string; nonce: string } {
  const seconds = Math.floor(now / 1000);
  return { value: `${seconds}.${nonce}.${facts.target}.${requestMac(key, seconds, nonce, facts)}`, nonce };
}

/** The parts of a Cove-Peer-Auth value, or null when it is not of that form. */
export function parsePeerAuth(value: string | undefined): SignedRequest | null {
  const m = value === undefined ? null : /^(\d{1,12})\.([0-9a-f]{32})\.([a-z0-9][a-z0-9-]{0,62})\.([0-9a-f]{64})$/.exec(value.trim());
  return m ? { seconds: Number(m[1]), nonce: m[2]!, target: m[3]!, mac: m[4]! } : null;
}

/**
 * Why a signed request is refused, or null when it is signed with the key, for this node, by the
 * asker it names, within the clock window. Replays are the caller's to refuse (it keeps the nonces).
 */
export function checkPeerRequest(key: string, signed: SignedRequest | null, facts: RequestFacts, now = Date.now()): string | null {
  if (signed === null) return 'no valid Cove-Peer-Auth signature';
  if (Math.abs(now / 1000 - signed.seconds) > PEER_AUTH_WINDOW_S) return 'signature outside the clock window';
  if (signed.target !== facts.target) return `signed for node ${signed.target}, not this one`;
  if (!sameMac(requestMac(key, signed.seconds, signed.nonce, facts), signed.mac)) return 'signature does not match';
  return null;
}

/** The Cove-Peer-Answer value for one answer. */
export function signPeerAnswer(key: string, f: AnswerFacts): string {
  return mac(key, ['cove-peer-answer', f.nonce, f.answerer, f.asker, f.status, f.digest, f.contentType, f.contentLength, f.contentRange]);
}

/** True when the value authenticates this answer to this request. */
export function verifyPeerAnswer(key: string, value: string | undefined, f: AnswerFacts): boolean {
  return sameMac(signPeerAnswer(key, f), value?.trim());
}

/** The Cove-Peer-Proof value: the answering node holds the key, and answers this asker's nonce. */
export function provePeer(key: string, nonce: string, answerer: string, asker: string, site: string): string {
  return mac(key, ['cove-peer-proof', nonce, answerer, asker, site]);
}

/** True when the proof answers this challenge. */
export function verifyPeerProof(key: string, value: string | undefined, nonce: string, answerer: string, asker: string, site: string): boolean {
  return sameMac(provePeer(key, nonce, answerer, asker, site), value?.trim());
}

/** A request passes through at most this many Coves; a longer Via is refused as a loop. */
export const MAX_HOPS = 8;
/** The Via comment that marks a hop as a Cove (other proxies may add hops of their own). */
const COVE_VIA_COMMENT = '(cove)';

/** A node id: lower-case letters, digits and dashes, as it appears in Via and in mDNS names. */
export const NODE_ID_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

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
