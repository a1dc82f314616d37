// Manifest media types, the client's Accept list, and what a manifest refers to.

export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_MANIFEST_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';

/**
 * Largest manifest Cove accepts from any source (a tier, a peer, the store, an archive): the
 * distribution registry refuses manifests over 4 MiB too, and manifests are held in memory.
 */
export const MANIFEST_MAX_BYTES = 4 * 1024 * 1024;

/** Every manifest type Cove caches; sent upstream when the bytes are fixed (fetch by digest). */
export const ALL_MANIFEST_ACCEPT: readonly string[] = [OCI_INDEX, DOCKER_MANIFEST_LIST, OCI_MANIFEST, DOCKER_MANIFEST];

/** Docker's schema 1 manifests (signed and unsigned): deprecated, and never served by Cove. */
export const DOCKER_SCHEMA1_SIGNED = 'application/vnd.docker.distribution.manifest.v1+prettyjws';
export const DOCKER_SCHEMA1 = 'application/vnd.docker.distribution.manifest.v1+json';

/**
 * What a client that sends no Accept is taken to accept: single-image manifests. Registries
 * answer such a request with schema 1, which Cove refuses; asking for schema 2 or OCI instead
 * gives a plain `curl` a manifest it can use.
 */
const NO_ACCEPT_ADMITS: readonly string[] = [DOCKER_MANIFEST, OCI_MANIFEST];

/**
 * The media types a client accepts, lowercased and without parameters. Handles one header with
 * a comma-separated list (containerd) and several headers (Docker; Node joins them with ", ").
 * Entries with q=0 are refusals and are left out.
 */
export function parseAccept(header: string | readonly string[] | undefined): string[] {
  if (header === undefined) return [];
  const joined = typeof header === 'string' ? header : header.join(',');
  const types: string[] = [];
  for (const item of joined.split(',')) {
    const [type = '', ...params] = item.split(';').map((s) => s.trim());
    if (type === '') continue;
    const refused = params.some((p) => /^q\s*=\s*0(?:\.0{0,3})?$/i.test(p));
    if (!refused) types.push(type.toLowerCase());
  }
  return types;
}

/** The Accept list a request stands for: its own, or the single-image types when it sent none. */
export function effectiveAccept(accept: readonly string[]): readonly string[] {
  return accept.length === 0 ? NO_ACCEPT_ADMITS : accept;
}

/** Whether a cached manifest of `mediaType` may answer a client whose Accept list is `accept`. */
export function acceptAdmits(accept: readonly string[], mediaType: string): boolean {
  const type = baseType(mediaType);
  if (accept.length === 0) return NO_ACCEPT_ADMITS.includes(type);
  const major = type.split('/')[0];
  return accept.some((a) => a === type || a === '*/*' || a === `${major}/*`);
}

/**
 * The manifest types of ALL_MANIFEST_ACCEPT that an Accept list admits, in a fixed order and
 * joined by commas: clients whose lists admit the same types get the same answer from a
 * registry, so this names the class a tag's answer is kept under.
 */
export function acceptClass(accept: readonly string[]): string {
  return ALL_MANIFEST_ACCEPT.filter((type) => acceptAdmits(accept, type)).join(',');
}

/** True when an Accept list admits both kinds of multi-platform list (the registry never rewrites). */
export function admitsEveryIndex(accept: readonly string[]): boolean {
  return acceptAdmits(accept, OCI_INDEX) && acceptAdmits(accept, DOCKER_MANIFEST_LIST);
}

export function isSchema1MediaType(mediaType: string): boolean {
  const type = baseType(mediaType);
  return type === DOCKER_SCHEMA1_SIGNED || type === DOCKER_SCHEMA1;
}

export function isIndexMediaType(mediaType: string): boolean {
  const type = baseType(mediaType);
  return type === OCI_INDEX || type === DOCKER_MANIFEST_LIST;
}

/**
 * The media type a manifest declares, for copies whose index record is gone: its own
 * `mediaType` field, else its shape (OCI manifests may omit the field). Null when not a manifest.
 */
export function sniffMediaType(bytes: Buffer): string | null {
  const doc = parseObject(bytes);
  if (!doc) return null;
  if (typeof doc.mediaType === 'string' && doc.mediaType !== '') return doc.mediaType;
  if (Array.isArray(doc.manifests)) return OCI_INDEX;
  if (doc.config && Array.isArray(doc.layers)) return OCI_MANIFEST;
  return null;
}

/** The digests a manifest refers to: config, layers, child manifests, subject. */
export function manifestReferences(bytes: Buffer): string[] {
  const doc = parseObject(bytes);
  if (!doc) return [];
  const refs = new Set<string>();
  const add = (d: unknown) => {
    if (d && typeof d === 'object' && typeof (d as { digest?: unknown }).digest === 'string') refs.add((d as { digest: string }).digest);
  };
  add(doc.config);
  add(doc.subject);
  for (const list of [doc.layers, doc.manifests, doc.blobs]) if (Array.isArray(list)) list.forEach(add);
  return [...refs];
}

/** The [digest, size] of each blob a manifest lists (config, layers, artifact blobs). */
export function descriptorSizes(bytes: Buffer): Array<{ digest: string; size: number }> {
  const doc = parseObject(bytes);
  if (!doc) return [];
  const out: Array<{ digest: string; size: number }> = [];
  const add = (desc: unknown) => {
    const e = desc as { digest?: unknown; size?: unknown } | null;
    if (!e || typeof e !== 'object' || typeof e.digest !== 'string' || !/^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/.test(e.digest)) return;
    if (typeof e.size !== 'number' || !Number.isSafeInteger(e.size) || e.size < 0) return;
    out.push({ digest: e.digest, size: e.size });
  };
  add(doc.config);
  for (const list of [doc.layers, doc.blobs]) if (Array.isArray(list)) list.forEach(add);
  return out;
}

function baseType(mediaType: string): string {
  return mediaType.split(';')[0]!.trim().toLowerCase();
}

function parseObject(bytes: Buffer): Record<string, unknown> | null {
  try {
    const doc: unknown = JSON.parse(bytes.toString('utf8'));
    return doc && typeof doc === 'object' && !Array.isArray(doc) ? (doc as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}
