// A sibling Cove that misbehaves on purpose, for tests of the peer tier: it says who it is, claims
// to hold the blobs and manifests it was given, and then cuts transfers off, sends wrong bytes or
// never answers.
import { createHash } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';

export type PeerBehaviour = 'good' | 'truncate' | 'wrong-bytes' | 'hang';

export class FakePeer {
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, { bytes: Buffer; mediaType: string }>();
  behaviour: PeerBehaviour = 'good';
  /** Requests for blobs and manifests, in order ("GET /v2/…"). */
  readonly requests: string[] = [];
  readonly #server: Server;
  readonly #sockets = new Set<Socket>();

  private constructor(readonly id: string) {
    this.#server = createServer((req, res) => {
      const path = (req.url ?? '/').split('?')[0]!;
      if (path === '/_cove/node') return json(res, 200, { id: this.id, site: 'default', version: 'fake' });
      this.requests.push(`${req.method} ${path}`);
      if (this.behaviour === 'hang') return; // headers never come
      const blob = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(path);
      const manifest = /\/manifests\/(sha256:[0-9a-f]{64})$/.exec(path);
      let bytes: Buffer | undefined;
      let type = 'application/octet-stream';
      if (blob) bytes = this.blobs.get(blob[1]!);
      else if (manifest) {
        const m = this.manifests.get(manifest[1]!);
        bytes = m?.bytes;
        if (m) type = m.mediaType;
      }
      if (!bytes) return json(res, 404, { errors: [{ code: 'BLOB_UNKNOWN', message: 'not here' }] });
      const digest = (blob ?? manifest)![1]!;
      res.writeHead(200, { 'content-type': type, 'content-length': String(bytes.length), 'docker-content-digest': digest });
      if (req.method === 'HEAD') return res.end();
      if (this.behaviour === 'wrong-bytes') {
        const wrong = Buffer.from(bytes);
        wrong[wrong.length >> 1] = wrong[wrong.length >> 1]! ^ 0xff;
        return res.end(wrong);
      }
      if (this.behaviour === 'truncate') {
        res.write(bytes.subarray(0, bytes.length >> 1), () => setTimeout(() => res.destroy(), 20));
        return;
      }
      res.end(bytes);
    });
    this.#server.on('connection', (s) => {
      this.#sockets.add(s);
      s.on('close', () => this.#sockets.delete(s));
    });
  }

  static async start(id: string): Promise<FakePeer> {
    const peer = new FakePeer(id);
    await new Promise<void>((resolve) => peer.#server.listen(0, '127.0.0.1', resolve));
    return peer;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.#server.address() as { port: number }).port}`;
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
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': String(bytes.length) });
  res.end(bytes);
}
