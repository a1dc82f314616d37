// A sibling Cove that misbehaves on purpose, for tests of the peer tier: it says who it is, claims
// to hold the blobs, manifests and tags it was given, and then cuts transfers off, sends wrong
// bytes or never answers. With `key` it answers challenges and authenticates its answers like a
// Cove holding that key; `auth` makes it leave out or forge that authentication.
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import {
  PEER_ANSWER_HEADER,
  PEER_AUTH_HEADER,
  PEER_CHALLENGE_HEADER,
  PEER_NODE_HEADER,
  PEER_PROOF_HEADER,
  parsePeerAuth,
  provePeer,
  signPeerAnswer,
} from '../../src/peers/protocol.js';

export type PeerBehaviour = 'good' | 'truncate' | 'wrong-bytes' | 'hang';
/** How answers are authenticated: properly, not at all, or with a MAC that is not for them. */
export type AnswerAuth = 'good' | 'missing' | 'forged' | 'other-nonce';

export interface FakePeerOptions {
  /** The key it proves and authenticates with; none: it answers like a Cove without a key. */
  key?: string;
  /** The site it names (default "default"). */
  site?: string;
  host?: string;
  /** Listen on this port (default: any free one). */
  port?: number;
}

export class FakePeer {
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, { bytes: Buffer; mediaType: string }>();
  /** Tags it claims: "repo:tag" → the manifest it answers with. */
  readonly tags = new Map<string, { bytes: Buffer; mediaType: string }>();
  behaviour: PeerBehaviour = 'good';
  /** Leaves "who are you" (GET /_cove/node) unanswered: a peer too busy to answer a probe in time. */
  slowProbes = false;
  auth: AnswerAuth = 'good';
  /** Requests for blobs and manifests, in order ("GET /v2/…"). */
  readonly requests: string[] = [];
  /** Every request's headers, in order (for tests that capture a signed request). */
  readonly seen: Array<{ method: string; path: string; headers: IncomingMessage['headers'] }> = [];
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();
  readonly #o: FakePeerOptions;

  private constructor(
    readonly id: string,
    options: FakePeerOptions,
  ) {
    this.#o = options;
    this.#server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]!;
      this.seen.push({ method: req.method ?? 'GET', path: req.url ?? '/', headers: req.headers });
      if (path === '/_cove/node') return this.slowProbes ? undefined : this.#node(req, res);
      this.requests.push(`${req.method} ${path}`);
      if (this.behaviour === 'hang') return; // headers never come
      const blob = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path);
      const manifest = /\/manifests\/(sha256:[0-9a-f]{64})$/.exec(path);
      const tag = manifest ? null : /^\/v2\/(.+)\/manifests\/([A-Za-z0-9_][A-Za-z0-9._-]{0,127})$/.exec(path);
      let bytes: Buffer | undefined;
      let type = 'application/octet-stream';
      let digest = '';
      if (blob) bytes = this.blobs.get(blob[1]!);
      else if (manifest || tag) {
        const m = manifest ? this.manifests.get(manifest[1]!) : this.tags.get(`${tag![1]}:${tag![2]}`);
        bytes = m?.bytes;
        if (m) type = m.mediaType;
      }
      if (!bytes) return this.#send(req, res, 404, { 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ errors: [{ code: 'BLOB_UNKNOWN', message: 'not here' }] })));
      digest = blob?.[1] ?? manifest?.[1] ?? `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
      const headers = { 'content-type': type, 'content-length': String(bytes.length), 'docker-content-digest': digest };
      if (req.method === 'HEAD') return this.#send(req, res, 200, headers, bytes);
      if (this.behaviour === 'wrong-bytes') {
        const wrong = Buffer.from(bytes);
        wrong[wrong.length >> 1] = wrong[wrong.length >> 1]! ^ 0xff;
        return this.#send(req, res, 200, headers, wrong);
      }
      if (this.behaviour === 'truncate') {
        res.writeHead(200, { ...headers, ...this.#answerAuth(req, 200, headers) });
        res.write(bytes.subarray(0, bytes.length >> 1), () => setTimeout(() => res.destroy(), 20));
        return;
      }
      this.#send(req, res, 200, headers, bytes);
    });
    this.#server.on('connection', (s) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
  }

  static async start(id: string, options: FakePeerOptions = {}): Promise<FakePeer> {
    const peer = new FakePeer(id, options);
    await new Promise<void>((resolve) => peer.#server.listen(options.port ?? 0, options.host ?? '127.0.0.1', resolve));
    return peer;
  }

  get url(): string {
    return `http://${this.#o.host ?? '127.0.0.1'}:${(this.#server.address() as { port: number }).port}`;
  }

  putBlob(bytes: Buffer): string {
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    this.blobs.set(digest, bytes);
    return digest;
  }

  async close(): Promise<void> {
    for (const s of this.#sockets) s.destroy();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #node(req: IncomingMessage, res: ServerResponse): void {
    const site = this.#o.site ?? 'default';
    const body = Buffer.from(JSON.stringify({ id: this.id, site, version: 'fake' }));
    const headers: Record<string, string> = { 'content-type': 'application/json', 'content-length': String(body.length) };
    const nonce = req.headers[PEER_CHALLENGE_HEADER];
    const asker = req.headers[PEER_NODE_HEADER];
    if (this.#o.key !== undefined && typeof nonce === 'string' && typeof asker === 'string') headers[PEER_PROOF_HEADER] = provePeer(this.#o.key, nonce, this.id, asker, site);
    res.writeHead(200, headers);
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  #send(req: IncomingMessage, res: ServerResponse, status: number, headers: Record<string, string>, body: Buffer): void {
    res.writeHead(status, { ...headers, 'content-length': String(body.length), ...this.#answerAuth(req, status, headers) });
    res.end(req.method === 'HEAD' ? undefined : body);
  }

  /** The Cove-Peer-Answer header a key holder would add, or its absence or forgery per `auth`. */
  #answerAuth(req: IncomingMessage, status: number, headers: Record<string, string>): Record<string, string> {
    const signed = parsePeerAuth(req.headers[PEER_AUTH_HEADER] as string | undefined);
    const asker = req.headers[PEER_NODE_HEADER];
    if (this.#o.key === undefined || signed === null || typeof asker !== 'string' || this.auth === 'missing') return {};
    if (this.auth === 'forged') return { [PEER_ANSWER_HEADER]: 'f'.repeat(64) };
    const nonce = this.auth === 'other-nonce' ? '0'.repeat(32) : signed.nonce;
    const mac = signPeerAnswer(this.#o.key, {
      nonce,
      answerer: this.id,
      asker,
      status,
      digest: headers['docker-content-digest'] ?? '',
      contentType: headers['content-type'] ?? '',
      contentLength: headers['content-length'] ?? '',
      contentRange: headers['content-range'] ?? '',
    });
    return { [PEER_ANSWER_HEADER]: mac };
  }
}
