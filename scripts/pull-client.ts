// A minimal registry client for the demo and the benchmark: pulls an image (manifest, config,
// layers) over Cove's HTTP API, hashing each blob as it streams, never holding a layer in memory.
import { createHash } from 'node:crypto';
import { request } from 'node:http';

const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
].join(', ');

export interface PulledBlob {
  digest: string;
  bytes: number;
  cacheStatus: string;
}

export interface PullResult {
  manifestDigest: string;
  manifestCache: string;
  blobs: PulledBlob[];
  bytes: number;
  ms: number;
}

interface Fetched {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  digest: string;
  bytes: number;
  body: Buffer | null;
}

/** GETs a URL; hashes the body as it streams; keeps it only when `keep` (manifests). */
export function get(url: string, headers: Record<string, string> = {}, keep = false): Promise<Fetched> {
  return new Promise((resolve, reject) => {
    const req = request(url, { headers }, (res) => {
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let bytes = 0;
      res.on('data', (chunk: Buffer) => {
        hash.update(chunk);
        bytes += chunk.length;
        if (keep) chunks.push(chunk);
      });
      res.on('end', () => {
        const expected = Number(res.headers['content-length'] ?? bytes);
        if (!res.complete || bytes !== expected) return reject(new Error(`${url}: body ended at ${bytes} of ${expected} bytes`));
        resolve({ status: res.statusCode ?? 0, headers: res.headers, digest: `sha256:${hash.digest('hex')}`, bytes, body: keep ? Buffer.concat(chunks) : null });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** Pulls repo:reference from a registry at baseUrl; verifies every digest. Layers in parallel (3, like Docker). */
export async function pullImage(baseUrl: string, repo: string, reference: string, parallel = 3): Promise<PullResult> {
  const started = performance.now();
  const m = await get(`${baseUrl}/v2/${repo}/manifests/${reference}`, { accept: ACCEPT }, true);
  if (m.status !== 200) throw new Error(`manifest ${repo}:${reference}: HTTP ${m.status} ${m.body?.toString().slice(0, 200)}`);
  const manifest = JSON.parse(m.body!.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> };
  const wanted = [manifest.config.digest, ...manifest.layers.map((l) => l.digest)];
  const blobs: PulledBlob[] = [];
  let next = 0;
  async function worker(): Promise<void> {
    while (next < wanted.length) {
      const digest = wanted[next++]!;
      const b = await get(`${baseUrl}/v2/${repo}/blobs/${digest}`);
      if (b.status !== 200) throw new Error(`blob ${digest}: HTTP ${b.status}`);
      if (b.digest !== digest) throw new Error(`blob ${digest}: received bytes hash to ${b.digest}`);
      blobs.push({ digest, bytes: b.bytes, cacheStatus: String(b.headers['cache-status'] ?? '') });
    }
  }
  await Promise.all(Array.from({ length: parallel }, worker));
  return {
    manifestDigest: m.digest,
    manifestCache: String(m.headers['cache-status'] ?? ''),
    blobs,
    bytes: m.bytes + blobs.reduce((n, b) => n + b.bytes, 0),
    ms: performance.now() - started,
  };
}
