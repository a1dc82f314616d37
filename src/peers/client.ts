// HTTP to sibling Coves on the LAN: one keep-alive agent for all peers, short timeouts (a hung
// peer must cost a moment, not a pull), and every request marked. With a peer key, each request is
// signed for the one node it goes to, with a fresh nonce, and its answer is believed only when it
// carries that node's MAC over the nonce and the answer's status and content headers; asking a
// node who it is carries a challenge it must answer with the key.
import type { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { CoveError } from '../errors.js';
import { dropBody, readSmall } from '../http-util.js';
import {
  NODE_ID_PATTERN,
  PEER_ANSWER_HEADER,
  PEER_AUTH_HEADER,
  PEER_CHALLENGE_HEADER,
  PEER_HEADER,
  PEER_NODE_HEADER,
  PEER_PROOF_HEADER,
  newNonce,
  signPeerRequest,
  verifyPeerAnswer,
  verifyPeerProof,
  type PeerMode,
} from './protocol.js';

/** Where the node describes itself: GET /_cove/node → { id, site, version }. */
export const NODE_INFO_PATH = '/_cove/node';

export interface PeerClientOptions {
  /** This node's id, sent so the peer can name who asked. */
  selfId: string;
  /** The site's peer key, or null when peer requests are not signed. */
  key: string | null;
  /** Bound for connecting and for the answer's headers on `local` requests, in ms. */
  timeoutMs: number;
  /** Bound for the headers of a `fetch` request (the owner fetches from above first), in ms. */
  fetchTimeoutMs: number;
  /** Longest gap between two body chunks, in ms. */
  bodyTimeoutMs: number;
}

export interface PeerResponse {
  status: number;
  headers: Record<string, string>;
  body: Readable;
}

/** What a node says about itself; `proven` when it answered this node's challenge with the key. */
export interface NodeInfo {
  id: string;
  site: string;
  version: string | null;
  proven: boolean;
}

/** A peer's answer that no key holder vouched for: discarded, never used. */
export class PeerAuthError extends CoveError {
  constructor(message: string) {
    super('PEER_UNAUTHENTICATED', message);
  }
}

export class PeerClient {
  readonly #o: PeerClientOptions;
  readonly #agent: Agent;

  constructor(options: PeerClientOptions) {
    this.#o = options;
    this.#agent = new Agent({
      connect: { timeout: options.timeoutMs },
      headersTimeout: Math.max(options.timeoutMs, options.fetchTimeoutMs),
      bodyTimeout: options.bodyTimeoutMs,
      keepAliveTimeout: 30_000,
    });
  }

  /** True when the site has a peer key: requests are signed, answers and peers proven. */
  get keyed(): boolean {
    return this.#o.key !== null;
  }

  /**
   * One peer request to node `peer.id` at `peer.url`; the caller owns the body. Throws on network
   * errors and timeouts, and (with a key) PeerAuthError for an answer not authenticated for it.
   */
  async request(peer: { url: string; id: string }, method: 'GET' | 'HEAD', path: string, mode: PeerMode, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<PeerResponse> {
    const sent: Record<string, string> = { ...headers, [PEER_NODE_HEADER]: this.#o.selfId, [PEER_HEADER]: mode };
    const key = this.#o.key;
    let nonce: string | null = null;
    if (key !== null) {
      const signed = signPeerRequest(key, { asker: this.#o.selfId, target: peer.id, method, path, mode, range: headers.range ?? '' });
      sent[PEER_AUTH_HEADER] = signed.value;
      nonce = signed.nonce;
    }
    // The headers bound is per request: short for "do you have it", long enough for an owner's fetch.
    const timeout = mode === 'fetch' ? this.#o.fetchTimeoutMs : this.#o.timeoutMs;
    // Only the wait for headers is bounded this way; a body may take as long as it keeps flowing.
    const res = await request(`${peer.url}${path}`, {
      method,
      headers: sent,
      dispatcher: this.#agent,
      signal,
      headersTimeout: timeout,
      bodyTimeout: this.#o.bodyTimeoutMs,
    });
    const flat = flatten(res.headers);
    if (key !== null && nonce !== null) {
      const ok = verifyPeerAnswer(key, flat[PEER_ANSWER_HEADER], {
        nonce,
        answerer: peer.id,
        asker: this.#o.selfId,
        status: res.statusCode,
        digest: flat['docker-content-digest'] ?? '',
        contentType: flat['content-type'] ?? '',
        contentLength: flat['content-length'] ?? '',
        contentRange: flat['content-range'] ?? '',
      });
      if (!ok) {
        dropBody(res.body);
        throw new PeerAuthError(`${peer.id} at ${peer.url} answered ${method} ${path} (${res.statusCode}) without a valid ${PEER_ANSWER_HEADER}: not from a holder of COVE_PEER_KEY, or not for this request`);
      }
    }
    return { status: res.statusCode, headers: flat, body: res.body };
  }

  /**
   * Asks the node at `url` who it is (GET /_cove/node). With a key, the request carries a fresh
   * challenge and `proven` says whether the node answered it with the key for the id it gave.
   */
  async nodeInfo(url: string, signal?: AbortSignal): Promise<NodeInfo> {
    const nonce = newNonce();
    const headers: Record<string, string> = { [PEER_NODE_HEADER]: this.#o.selfId };
    if (this.#o.key !== null) headers[PEER_CHALLENGE_HEADER] = nonce;
    const res = await request(`${url}${NODE_INFO_PATH}`, { method: 'GET', headers, dispatcher: this.#agent, signal, headersTimeout: this.#o.timeoutMs, bodyTimeout: this.#o.timeoutMs });
    const text = (await readSmall(res.body, 64 * 1024)).toString('utf8');
    if (res.statusCode !== 200) throw new Error(`answered ${res.statusCode}`);
    let info: { id?: unknown; site?: unknown; version?: unknown };
    try {
      info = JSON.parse(text) as typeof info;
    } catch {
      throw new Error('answered something other than JSON');
    }
    if (typeof info.id !== 'string' || !NODE_ID_PATTERN.test(info.id) || typeof info.site !== 'string') throw new Error('answered no node id');
    const proof = flatten(res.headers)[PEER_PROOF_HEADER];
    const proven = this.#o.key !== null && verifyPeerProof(this.#o.key, proof, nonce, info.id, this.#o.selfId, info.site);
    return { id: info.id, site: info.site, version: typeof info.version === 'string' ? info.version : null, proven };
  }

  close(): Promise<void> {
    return this.#agent.close();
  }
}

function flatten(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) flat[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return flat;
}
