// A registry tier: a registry spoken to over the Distribution API — the origin (Harbor), or a
// parent Cove (a regional tier) or any registry in front of it. 404 is "not here"; every other
// answer Cove cannot use becomes an error class from errors.ts so the resolver and the serve-stale
// policy can tell "unavailable" from "refused" from "absent".
import { Transform, pipeline, type Readable, type TransformCallback } from 'node:stream';
import { DigestMismatchError, OciError, UpstreamAuthError, UpstreamStatusError, UpstreamUnavailableError } from '../errors.js';
import { digestOf, isEmptyDigest } from '../oci/digest.js';
import { contentLength, dropBody, parseContentRange } from '../http-util.js';
import { isSchema1MediaType, MANIFEST_MAX_BYTES, sniffMediaType } from '../oci/mediatypes.js';
import { parseDigest } from '../oci/reference.js';
import type { UpstreamClient, UpstreamResponse } from '../upstream/client.js';
import { parseRetryAfter } from '../upstream/retry-after.js';
import type { BlobBody, FetchedManifest, ManifestHead, PassThroughResponse, Target, Tier, TierKind } from './tier.js';

/** Largest tags list or referrers index read into memory. */
export const PASSTHROUGH_LIMIT = 16 * 1024 * 1024;

/** Drops the first `count` bytes of a stream: resuming from a server that ignored Range. */
class SkipBytes extends Transform {
  #left: number;
  constructor(count: number) {
    super();
    this.#left = count;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    if (this.#left >= chunk.length) {
      this.#left -= chunk.length;
      cb();
      return;
    }
    const rest = this.#left > 0 ? chunk.subarray(this.#left) : chunk;
    this.#left = 0;
    cb(null, rest);
  }
  override _flush(cb: TransformCallback): void {
    // The body ended before reaching the offset: a short body must never look complete.
    cb(this.#left > 0 ? new Error(`upstream body ended ${this.#left} bytes before the resume offset`) : null);
  }
}

function skip(body: Readable, count: number): Readable {
  const skipper = new SkipBytes(count);
  // pipeline destroys the upstream body when the caller destroys the returned stream.
  pipeline(body, skipper, () => undefined);
  return skipper;
}

/** `{ stale: true }` when a response says it came from a stale copy (Warning 110, or a Cove's Cache-Status). */
function staleFlag(headers: Record<string, string>): { stale?: true } {
  const stale = /(^|,)\s*110\b/.test(headers['warning'] ?? '') || /detail=stale/.test(headers['cache-status'] ?? '');
  return stale ? { stale: true } : {};
}

/**
 * Schema 1 manifests are refused by name. Their Docker-Content-Digest covers the payload without
 * its signatures, so taken as bytes they would fail as a "digest mismatch", which tells the user
 * nothing; and no current client needs them (a registry sends one only to a client that accepts
 * nothing newer, or for an image pushed a decade ago).
 */
function refuseSchema1(target: Target, reference: string, contentType: string | undefined): void {
  if (!isSchema1MediaType(contentType ?? '')) return;
  throw new OciError(
    'MANIFEST_UNKNOWN',
    `${target.repo}:${reference} is available only as a Docker schema 1 manifest, which Cove does not serve; ask with Accept: application/vnd.docker.distribution.manifest.v2+json or application/vnd.oci.image.manifest.v1+json, or push the image again with a current client`,
    { detail: { name: target.repo, reference, mediaType: contentType!.split(';')[0]!.trim(), schema: 1 } },
  );
}

export interface RegistryTierOptions {
  name: string;
  kind: TierKind;
  /** The client for a target: the origin picks by target.upstream; a parent has one client. */
  clientFor: (target: Target) => UpstreamClient | undefined;
  /** Extra request headers for a target (a parent gets the Via hop list). */
  headers?: (target: Target) => Record<string, string>;
}

export class RegistryTier implements Tier {
  readonly name: string;
  readonly kind: TierKind;
  readonly #o: RegistryTierOptions;

  constructor(options: RegistryTierOptions) {
    this.name = options.name;
    this.kind = options.kind;
    this.#o = options;
  }

  /** The origin tier: each target goes to the upstream it names. */
  static origin(clients: Map<string, UpstreamClient>): RegistryTier {
    return new RegistryTier({ name: 'origin', kind: 'origin', clientFor: (target) => clients.get(target.upstream) });
  }

  async headManifest(target: Target, reference: string, accept: readonly string[], signal?: AbortSignal): Promise<ManifestHead | null> {
    const client = this.#client(target);
    const res = await client.request({
      method: 'HEAD',
      path: `/v2/${target.repo}/manifests/${reference}`,
      headers: { ...this.#headers(target), accept: accept.join(', ') },
      repo: target.repo,
      signal,
    });
    res.body.resume();
    if (!this.#ok(client, res, [200], `manifest ${target.repo}:${reference}`)) return null;
    refuseSchema1(target, reference, res.headers['content-type']);
    const digest = res.headers['docker-content-digest']?.trim();
    const size = contentLength(res.headers);
    const mediaType = res.headers['content-type']?.trim();
    // A HEAD that does not tell all three cannot answer; the GET computes them from the bytes.
    if (!digest || size === null || !mediaType || !parseDigest(digest)) {
      const full = await this.getManifest(target, reference, accept, signal);
      return full && { digest: full.digest, mediaType: full.mediaType, size: full.size, ...(full.stale ? { stale: true } : {}) };
    }
    const asked = parseDigest(reference);
    if (asked && parseDigest(digest)!.algorithm === asked.algorithm && digest !== reference) {
      throw new DigestMismatchError(`upstream ${client.name} answered ${reference} with Docker-Content-Digest ${digest}`);
    }
    return { digest, mediaType, size, ...staleFlag(res.headers) };
  }

  async getManifest(target: Target, reference: string, accept: readonly string[], signal?: AbortSignal): Promise<FetchedManifest | null> {
    const client = this.#client(target);
    const res = await client.request({
      method: 'GET',
      path: `/v2/${target.repo}/manifests/${reference}`,
      headers: { ...this.#headers(target), accept: accept.join(', ') },
      repo: target.repo,
      signal,
      patient: true,
    });
    if (!this.#ok(client, res, [200], `manifest ${target.repo}:${reference}`)) return null;
    if (isSchema1MediaType(res.headers['content-type'] ?? '')) {
      dropBody(res.body);
      refuseSchema1(target, reference, res.headers['content-type']);
    }
    const declared = contentLength(res.headers);
    if (declared !== null && declared > MANIFEST_MAX_BYTES) {
      dropBody(res.body);
      const message = `manifest ${target.repo}:${reference} from upstream ${client.name} is ${declared} bytes, over the ${MANIFEST_MAX_BYTES}-byte limit`;
      throw new UpstreamStatusError(client.name, res.status, message, undefined, { publicMessage: message });
    }
    const bytes = await this.#read(client, res, MANIFEST_MAX_BYTES, `manifest ${target.repo}:${reference}`);
    if (declared !== null && bytes.length !== declared) {
      throw new UpstreamUnavailableError(client.name, `manifest ${target.repo}:${reference} from upstream ${client.name} ended at ${bytes.length} of ${declared} bytes`);
    }
    const digest = digestOf(bytes);
    const sent = res.headers['docker-content-digest']?.trim();
    const sentParsed = sent ? parseDigest(sent) : null;
    if (sent && sentParsed) {
      const actual = sentParsed.algorithm === 'sha256' ? digest : digestOf(bytes, sentParsed.algorithm);
      if (actual !== sent) {
        throw new DigestMismatchError(`manifest ${target.repo}:${reference} from upstream ${client.name}: Docker-Content-Digest ${sent}, bytes hash to ${actual}`);
      }
    }
    const asked = parseDigest(reference);
    if (asked) {
      const actual = asked.algorithm === 'sha256' ? digest : digestOf(bytes, asked.algorithm);
      if (actual !== reference) {
        throw new DigestMismatchError(`manifest ${target.repo}@${reference} from upstream ${client.name} hashes to ${actual}`);
      }
    }
    const mediaType = res.headers['content-type']?.trim() || sniffMediaType(bytes) || 'application/octet-stream';
    return { digest, mediaType, size: bytes.length, bytes, ...staleFlag(res.headers) };
  }

  async headBlob(target: Target, digest: string, signal?: AbortSignal): Promise<{ size: number } | null> {
    const client = this.#client(target);
    const res = await client.request({ method: 'HEAD', path: `/v2/${target.repo}/blobs/${digest}`, headers: this.#headers(target), repo: target.repo, signal, followRedirects: true, patient: true });
    res.body.resume();
    if (!this.#ok(client, res, [200], `blob ${digest}`)) return null;
    const size = contentLength(res.headers);
    // Without a length the HEAD says nothing useful, and an empty length for a digest that is
    // not the empty blob's is false: null sends the caller to a GET, which checks the bytes.
    return size === null || (size === 0 && !isEmptyDigest(digest)) ? null : { size };
  }

  async openBlob(target: Target, digest: string, offset: number, signal?: AbortSignal): Promise<BlobBody | null> {
    const client = this.#client(target);
    const headers: Record<string, string> = this.#headers(target);
    if (offset > 0) headers.range = `bytes=${offset}-`;
    const res = await client.request({ method: 'GET', path: `/v2/${target.repo}/blobs/${digest}`, headers, repo: target.repo, signal, followRedirects: true, patient: true });
    if (!this.#ok(client, res, [200, 206], `blob ${digest}`)) return null;

    if (res.status === 206) {
      const range = parseContentRange(res.headers['content-range']);
      if (!range || range.start > offset) {
        dropBody(res.body);
        throw new UpstreamStatusError(client.name, 206, `upstream ${client.name} answered a Range request for ${digest} with Content-Range ${res.headers['content-range'] ?? '(none)'}`);
      }
      // A range that starts earlier than asked (some stores round to blocks): drop the extra.
      const body = range.start < offset ? skip(res.body, offset - range.start) : res.body;
      return { size: range.total, offset, body };
    }

    const size = contentLength(res.headers);
    if (offset > 0) {
      // 200 to a Range request: the server ignored it. Skip to the offset ourselves.
      if (size !== null && size < offset) {
        dropBody(res.body);
        throw new UpstreamStatusError(client.name, 200, `upstream ${client.name} sent ${size} bytes for ${digest}, less than the resume offset ${offset}`);
      }
      return { size, offset, body: skip(res.body, offset) };
    }
    return { size, offset: 0, body: res.body };
  }

  async openBlobSpan(target: Target, digest: string, start: number, end: number, signal?: AbortSignal): Promise<BlobBody | null> {
    const client = this.#client(target);
    const headers = { ...this.#headers(target), range: `bytes=${start}-${end}` };
    const res = await client.request({ method: 'GET', path: `/v2/${target.repo}/blobs/${digest}`, headers, repo: target.repo, signal, followRedirects: true, patient: true });
    if (!this.#ok(client, res, [200, 206], `blob ${digest}`)) return null;
    if (res.status === 200) {
      // The Range was ignored: the span is not worth a whole second copy of the blob.
      res.body.on('error', () => undefined);
      dropBody(res.body);
      return null;
    }
    const range = parseContentRange(res.headers['content-range']);
    const length = contentLength(res.headers);
    if (!range || range.start !== start || range.end !== end || (length !== null && length !== end - start + 1)) {
      res.body.on('error', () => undefined);
      dropBody(res.body);
      throw new UpstreamStatusError(
        client.name,
        206,
        `upstream ${client.name} answered bytes=${start}-${end} of ${digest} with Content-Range ${res.headers['content-range'] ?? '(none)'} and Content-Length ${res.headers['content-length'] ?? '(none)'}`,
      );
    }
    return { size: range.total, offset: start, body: res.body };
  }

  async listTags(target: Target, query: { n?: number; last?: string }, signal?: AbortSignal): Promise<PassThroughResponse> {
    const params = new URLSearchParams();
    if (query.n !== undefined) params.set('n', String(query.n));
    if (query.last !== undefined) params.set('last', query.last);
    const qs = params.toString();
    return this.#passThrough(target, `/v2/${target.repo}/tags/list${qs ? `?${qs}` : ''}`, signal);
  }

  async referrers(target: Target, digest: string, artifactType: string | undefined, signal?: AbortSignal): Promise<PassThroughResponse> {
    const qs = artifactType !== undefined ? `?${new URLSearchParams({ artifactType }).toString()}` : '';
    return this.#passThrough(target, `/v2/${target.repo}/referrers/${digest}${qs}`, signal);
  }

  async #passThrough(target: Target, path: string, signal?: AbortSignal): Promise<PassThroughResponse> {
    const client = this.#client(target);
    const res = await client.request({ method: 'GET', path, headers: { ...this.#headers(target), accept: 'application/json, */*' }, repo: target.repo, signal });
    const body = await this.#read(client, res, PASSTHROUGH_LIMIT, path);
    const headers: Record<string, string> = {};
    for (const name of ['content-type', 'link', 'retry-after']) {
      const v = res.headers[name];
      if (v !== undefined) headers[name] = v;
    }
    return { status: res.status, headers, body };
  }

  #headers(target: Target): Record<string, string> {
    return this.#o.headers?.(target) ?? {};
  }

  suspect(target: Target, reason: string, since: number): void {
    this.#o.clientFor(target)?.suspect(reason, since);
  }

  upSince(target: Target): number | null {
    const breaker = this.#o.clientFor(target)?.breaker;
    if (!breaker) return 0;
    return breaker.state === 'open' ? null : (breaker.since ?? 0);
  }

  #client(target: Target): UpstreamClient {
    const client = this.#o.clientFor(target);
    if (!client) throw new UpstreamUnavailableError(target.upstream, `no upstream named ${JSON.stringify(target.upstream)} is configured`);
    return client;
  }

  /**
   * True for a status in `ok`; false (body discarded) for 404; throws for everything else.
   * 401 cannot normally reach here (the client turns a final 401 into UpstreamAuthError).
   */
  #ok(client: UpstreamClient, res: UpstreamResponse, ok: readonly number[], what: string): boolean {
    if (ok.includes(res.status)) return true;
    res.body.resume();
    res.body.on('error', () => undefined);
    if (res.status === 404) return false;
    if (res.status === 401 || res.status === 403) {
      throw new UpstreamAuthError(client.name, res.status, `upstream ${client.name} refused access to ${what} (${res.status})`);
    }
    const retryAfter = parseRetryAfter(res.headers['retry-after']);
    throw new UpstreamStatusError(client.name, res.status, `upstream ${client.name} answered ${res.status} for ${what}`, retryAfter);
  }

  /**
   * Reads a small body (a manifest, a listing) whole. It must arrive within the upstream's
   * timeout: a body dripping a few bytes a second never trips the gap timeout, and would hold the
   * client for ever.
   */
  async #read(client: UpstreamClient, res: UpstreamResponse, limit: number, what: string): Promise<Buffer> {
    const chunks: Buffer[] = [];
    let length = 0;
    const deadline = setTimeout(() => {
      res.body.destroy(Object.assign(new Error(`${what} did not arrive whole within ${client.timeoutMs} ms`), { code: 'BODY_DEADLINE' }));
    }, client.timeoutMs);
    try {
      for await (const chunk of res.body) {
        const buf = chunk as Buffer;
        length += buf.length;
        if (length > limit) {
          dropBody(res.body);
          const message = `${what} from upstream ${client.name} is over the ${limit}-byte limit`;
          throw new UpstreamStatusError(client.name, res.status, message, undefined, { publicMessage: message });
        }
        chunks.push(buf);
      }
    } catch (err) {
      if (err instanceof UpstreamStatusError) throw err;
      throw new UpstreamUnavailableError(client.name, `reading ${what} from upstream ${client.name} failed: ${(err as Error).message}`, { cause: err });
    } finally {
      clearTimeout(deadline);
    }
    return Buffer.concat(chunks);
  }
}
