// The HTTP client of test/integration/mdns-site.test.ts, run inside one of the test's network
// namespaces (the test process itself cannot reach their addresses). Prints one JSON object on
// stdout and exits 0 whenever it got that far; the test judges the result.
//   node dist/test/helpers/mdns-site-client.js get <url>
//     {"status":200,"json":{...}}  or  {"error":"..."}  (the body as JSON when it parses, else "text")
//   node dist/test/helpers/mdns-site-client.js pull <base url> <repo> <tag>
//     {"manifest":{status,digest,sha256,size,mediaType,cacheStatus,warning},
//      "blobs":[{digest,size,status,bytes,sha256,cacheStatus}], "error"?: "..."}
//     The manifest is asked for by tag with an Accept header for Docker and OCI manifests; then
//     each blob it lists (config and layers, all at once) is fetched; every body is hashed.
import { fetchAll, sha256 } from './http.js';

// As test/helpers/site.ts's ACCEPT_ALL (not imported: site.ts loads all of Cove, slow to start).
const ACCEPT_ALL =
  'application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, */*';

const print = (o: unknown) => process.stdout.write(JSON.stringify(o) + '\n');
const [mode, ...args] = process.argv.slice(2);
const errorText = (err: unknown) => (err instanceof Error ? `${err.message}${err.cause ? ` (${String((err.cause as Error).message ?? err.cause)})` : ''}` : String(err));

interface Descriptor {
  digest: string;
  size: number;
}

if (mode === 'get') {
  const url = args[0]!;
  try {
    const res = await fetchAll(url, { timeoutMs: 10_000 });
    const text = res.body.toString('utf8');
    let json: unknown = null;
    try {
      json = JSON.parse(text);
    } catch {
      // not JSON: the text is printed instead
    }
    print(json === null ? { status: res.status, text } : { status: res.status, json });
  } catch (err) {
    print({ error: errorText(err) });
  }
} else if (mode === 'pull') {
  const [base, repo, tag] = args as [string, string, string];
  const out: { manifest: Record<string, unknown> | null; blobs: Array<Record<string, unknown>>; error?: string } = { manifest: null, blobs: [] };
  try {
    const m = await fetchAll(`${base}/v2/${repo}/manifests/${tag}`, { headers: { accept: ACCEPT_ALL }, timeoutMs: 60_000 });
    out.manifest = {
      status: m.status,
      digest: m.headers['docker-content-digest'] ?? null,
      sha256: sha256(m.body),
      size: m.body.length,
      mediaType: m.headers['content-type'] ?? null,
      cacheStatus: m.headers['cache-status'] ?? null,
      warning: m.headers.warning ?? null,
    };
    if (m.status !== 200) throw new Error(`manifest ${repo}:${tag}: ${m.status} ${m.body.toString('utf8').slice(0, 500)}`);
    const manifest = JSON.parse(m.body.toString('utf8')) as { config?: Descriptor; layers?: Descriptor[] };
    if (!manifest.config || !Array.isArray(manifest.layers)) throw new Error('the manifest is not an image manifest');
    out.blobs = await Promise.all(
      [manifest.config, ...manifest.layers].map(async (d) => {
        try {
          const b = await fetchAll(`${base}/v2/${repo}/blobs/${d.digest}`, { timeoutMs: 60_000 });
          return { digest: d.digest, size: d.size, status: b.status, bytes: b.body.length, sha256: sha256(b.body), cacheStatus: b.headers['cache-status'] ?? null };
        } catch (err) {
          return { digest: d.digest, size: d.size, status: 0, error: errorText(err) };
        }
      }),
    );
  } catch (err) {
    out.error = errorText(err);
  }
  print(out);
} else {
  print({ error: `unknown mode ${String(mode)}: use get <url> or pull <base> <repo> <tag>` });
  process.exitCode = 2;
}
