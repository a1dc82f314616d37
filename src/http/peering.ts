// What a request says about where it came from: a client, a sibling Cove (Cove-Peer, signed with
// the site's key when there is one), or a child Cove that chose this node as its parent (Via).
// The answer decides which tiers the request may use and refuses loops before any work is done.
import { OciError } from '../errors.js';
import { MAX_HOPS, PEER_AUTH_HEADER, PEER_HEADER, PEER_NODE_HEADER, fromCove, parseVia, verifyPeerRequest } from '../peers/protocol.js';
import type { Reach } from '../tiers/tier.js';
import type { Req } from './respond.js';

export interface Origin {
  reach: Reach;
  /** Cove hops the request already passed (Via), oldest first. */
  via: string[];
  /** True when another Cove sent it: repository names are the upstream's, never rewritten by a default ns. */
  fromCove: boolean;
  /** The asking peer's node id, for peer requests. */
  peer: string | null;
}

function header(req: Req, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Reads and checks the request's provenance; throws UNAUTHORIZED, UNSUPPORTED or LOOP_DETECTED. */
export function originOf(req: Req, self: string, peerKey: string | null): Origin {
  const viaHeader = req.headers['via'];
  const via = parseVia(viaHeader);
  if (via.includes(self)) {
    throw new OciError('LOOP_DETECTED', `request came back to Cove ${self} (Via: ${via.join(' > ')}); check COVE_PARENTS on these nodes`);
  }
  if (via.length >= MAX_HOPS) throw new OciError('LOOP_DETECTED', `request passed ${via.length} hops already (limit ${MAX_HOPS})`);
  const mode = header(req, PEER_HEADER);
  if (mode === undefined) return { reach: 'all', via, fromCove: fromCove(viaHeader), peer: null };
  if (mode !== 'local' && mode !== 'fetch') throw new OciError('UNSUPPORTED', `${PEER_HEADER}: "${mode.slice(0, 20)}" is neither local nor fetch`);
  if (peerKey !== null && !verifyPeerRequest(peerKey, header(req, PEER_AUTH_HEADER), req.method ?? 'GET', req.url ?? '/', mode)) {
    throw new OciError('UNAUTHORIZED', 'peer request without a valid signature: every node of the site needs the same COVE_PEER_KEY (and clocks within 5 minutes)');
  }
  const peer = header(req, PEER_NODE_HEADER) ?? null;
  return { reach: mode === 'local' ? 'local' : 'above', via, fromCove: true, peer: peer && /^[a-z0-9][a-z0-9-]{0,62}$/.test(peer) ? peer : null };
}
