// What a request says about where it came from: a client, a sibling Cove (Cove-Peer, signed with
// the site's key when there is one), or a child Cove that chose this node as its parent (Via).
// The answer decides which tiers the request may use and refuses loops before any work is done.
// With a peer key, this is also where a signed request is checked (key, target node, asker,
// clock, nonce never seen before), where its answer gets the header that lets the asker check it
// came from a key holder and for its request, and where a challenge on /_cove/node is answered.
import { OciError } from '../errors.js';
import type { NonceLog } from '../peers/nonces.js';
import {
  MAX_HOPS,
  NODE_ID_PATTERN,
  PEER_ANSWER_HEADER,
  PEER_AUTH_HEADER,
  PEER_AUTH_WINDOW_S,
  PEER_CHALLENGE_HEADER,
  PEER_HEADER,
  PEER_NODE_HEADER,
  PEER_PROOF_HEADER,
  checkPeerRequest,
  fromCove,
  parsePeerAuth,
  parseVia,
  provePeer,
  signPeerAnswer,
} from '../peers/protocol.js';
import type { Reach } from '../tiers/tier.js';
import type { Req, Res } from './respond.js';

export interface Origin {
  reach: Reach;
  /** Cove hops the request already passed (Via), oldest first. */
  via: string[];
  /** True when another Cove sent it: repository names are the upstream's, never rewritten by a default ns. */
  fromCove: boolean;
  /** The asking peer's node id, for peer requests. */
  peer: string | null;
  /** The signed request's nonce (peer key set): the answer is authenticated with it. */
  nonce: string | null;
}

/** The site's peer key and the nonces seen, when peer requests are signed. */
export interface PeerAuth {
  key: string;
  nonces: NonceLog;
}

function header(req: Req, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads and checks the request's provenance; throws UNAUTHORIZED, UNSUPPORTED, TOOMANYREQUESTS or LOOP_DETECTED. */
export function originOf(req: Req, self: string, auth: PeerAuth | null, now = Date.now()): Origin {
  const viaHeader = req.headers['via'];
  const via = parseVia(viaHeader);
  if (via.includes(self)) {
    throw new OciError('LOOP_DETECTED', `request came back to Cove ${self} (Via: ${via.join(' > ')}); check COVE_PARENTS on these nodes`);
  }
  if (via.length >= MAX_HOPS) throw new OciError('LOOP_DETECTED', `request passed ${via.length} hops already (limit ${MAX_HOPS})`);
  const mode = header(req, PEER_HEADER);
  if (mode === undefined) return { reach: 'all', via, fromCove: fromCove(viaHeader), peer: null, nonce: null };
  if (mode !== 'local' && mode !== 'fetch') throw new OciError('UNSUPPORTED', `${PEER_HEADER}: "${mode.slice(0, 20)}" is neither local nor fetch`);
  const named = header(req, PEER_NODE_HEADER);
  const peer = named !== undefined && NODE_ID_PATTERN.test(named) ? named : null;
  const reach = mode === 'local' ? 'local' : 'above';
  if (auth === null) return { reach, via, fromCove: true, peer, nonce: null };
  const signed = parsePeerAuth(header(req, PEER_AUTH_HEADER));
  const why =
    peer === null
      ? `no valid ${PEER_NODE_HEADER} header`
      : checkPeerRequest(auth.key, signed, { asker: peer, target: self, method: req.method ?? 'GET', path: req.url ?? '/', mode, range: header(req, 'range') ?? '' }, now);
  if (why !== null || signed === null) {
    throw new OciError('UNAUTHORIZED', `peer request refused (${why}): every node of the site needs the same COVE_PEER_KEY (and clocks within ${PEER_AUTH_WINDOW_S / 60} minutes)`);
  }
  const seen = auth.nonces.record(signed.nonce, signed.seconds);
  if (seen === 'replay') throw new OciError('UNAUTHORIZED', 'peer request refused: its nonce was used before (a replayed request)');
  if (seen === 'full') throw new OciError('TOOMANYREQUESTS', 'too many signed peer requests within the clock window; try another tier', { headers: { 'retry-after': '5' } });
  return { reach, via, fromCove: true, peer, nonce: signed.nonce };
}

/**
 * Adds Cove-Peer-Answer to the response once its status and headers are final: every handler
 * answers through writeHead (Node's implicit headers call it too), so the MAC is computed there,
 * over what actually goes out.
 */
export function authenticateAnswer(res: Res, key: string, nonce: string, self: string, asker: string): void {
  const writeHead = res.writeHead;
  const pick = (headers: unknown, name: string): string => {
    let value: unknown;
    if (headers && typeof headers === 'object' && !Array.isArray(headers)) {
      for (const [k, v] of Object.entries(headers)) if (k.toLowerCase() === name) value = v;
    }
    value ??= res.getHeader(name);
    return value === undefined ? '' : String(value);
  };
  res.writeHead = function (this: Res, status: number, ...rest: unknown[]) {
    const headers = typeof rest[0] === 'string' ? rest[1] : rest[0];
    res.setHeader(
      PEER_ANSWER_HEADER,
      signPeerAnswer(key, {
        nonce,
        answerer: self,
        asker,
        status,
        digest: pick(headers, 'docker-content-digest'),
        contentType: pick(headers, 'content-type'),
        contentLength: pick(headers, 'content-length'),
        contentRange: pick(headers, 'content-range'),
      }),
    );
    return (writeHead as (...args: unknown[]) => Res).call(this, status, ...rest);
  } as Res['writeHead'];
}

/**
 * The headers GET /_cove/node adds for a challenge: the proof that this node holds the site's key,
 * bound to the asker's nonce and id. Nothing without a key or without a well-formed challenge.
 */
export function challengeAnswer(req: Req, key: string | null, node: { id: string; site: string }): Record<string, string> {
  const nonce = header(req, PEER_CHALLENGE_HEADER)?.trim();
  const asker = header(req, PEER_NODE_HEADER);
  if (key === null || nonce === undefined || !/^[0-9a-f]{32}$/.test(nonce) || asker === undefined || !NODE_ID_PATTERN.test(asker)) return {};
  return { [PEER_PROOF_HEADER]: provePeer(key, nonce, node.id, asker, node.site) };
}
