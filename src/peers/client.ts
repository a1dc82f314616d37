// HTTP to sibling Coves on the LAN: one keep-alive agent for all peers, short timeouts (a hung
// peer must cost a moment, not a pull), and every request marked and, with a peer key, signed.
import type { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { PEER_AUTH_HEADER, PEER_HEADER, PEER_NODE_HEADER, signPeerRequest, type PeerMode } from './protocol.js';

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

  /** One request to a peer; the caller owns the body. Throws on network errors and timeouts. */
  async request(baseUrl: string, method: 'GET' | 'HEAD', path: string, mode: PeerMode | null, headers: Record<string, string> = {}, signal?: AbortSignal): Promise<PeerResponse> {
    const sent: Record<string, string> = { ...headers, [PEER_NODE_HEADER]: this.#o.selfId };
    if (mode !== null) {
      sent[PEER_HEADER] = mode;
      if (this.#o.key !== null) sent[PEER_AUTH_HEADER] = signPeerRequest(this.#o.key, method, path, mode);
    }
    // The headers bound is per request: short for "do you have it", long enough for an owner's fetch.
    const timeout = mode === 'fetch' ? this.#o.fetchTimeoutMs : this.#o.timeoutMs;
    // Only the wait for headers is bounded this way; a body may take as long as it keeps flowing.
    const res = await request(`${baseUrl}${path}`, {
      method,
      headers: sent,
      dispatcher: this.#agent,
      signal,
      headersTimeout: timeout,
      bodyTimeout: this.#o.bodyTimeoutMs,
    });
    const flat: Record<string, string> = {};
    for (const [name, value] of Object.entries(res.headers)) {
      if (value !== undefined) flat[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
    }
    return { status: res.statusCode, headers: flat, body: res.body };
  }

  close(): Promise<void> {
    return this.#agent.close();
  }
}

