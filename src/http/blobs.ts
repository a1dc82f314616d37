// GET/HEAD /v2/<name>/blobs/<digest>: hits from the store, misses from a shared fill, both with
// Range support (206 + Content-Range, 416 for a range past the end).
import { OciError } from '../errors.js';
import { contentRange, parseRange, unsatisfiedRange } from '../oci/range.js';
import type { Requester } from '../resolve/admission.js';
import type { BlobResolver, OpenedLookup } from '../resolve/blobs.js';
import type { BlobStore } from '../store/blobs.js';
import type { Leases } from '../store/leases.js';
import type { ByteSource } from '../store/source.js';
import type { Target } from '../tiers/tier.js';
import { API_HEADERS, markCache, type Req, type RequestFacts, type Res } from './respond.js';
import { sendBytes } from './send.js';

export interface BlobHandlerDeps {
  blobs: BlobResolver;
  store: BlobStore;
  /** Held from the lookup to the last byte, so eviction leaves the blob alone meanwhile. */
  leases: Leases;
  onServed: (tier: string, bytes: number) => void;
}

/**
 * Whose budget a fill this request starts comes from (resolve/admission.ts): its client address,
 * or, for a sibling's fetch, the overall cap alone (when peer requests are signed; admission
 * decides).
 */
function requesterOf(req: Req, target: Target): Requester {
  const raw = req.socket?.remoteAddress ?? 'unknown';
  // An IPv4 client on a dual-stack listener appears as ::ffff:a.b.c.d; it is one client either way.
  const address = raw.startsWith('::ffff:') ? raw.slice(7) : raw;
  return target.reach === 'above' ? { kind: 'peer', address } : { kind: 'client', address };
}

/** Aborted when the client goes away: ends a wait for a fill slot that nobody would see the end of. */
function whileConnected(res: Res): { signal: AbortSignal; done: () => void } {
  const gone = new AbortController();
  const onClose = () => gone.abort(new Error('the client went away'));
  res.once('close', onClose);
  return { signal: gone.signal, done: () => res.off('close', onClose) };
}

export async function handleBlob(deps: BlobHandlerDeps, req: Req, res: Res, facts: RequestFacts, target: Target, digest: string): Promise<void> {
  const release = deps.leases.acquire(digest);
  try {
    await serveBlob(deps, req, res, facts, target, digest);
  } finally {
    release();
  }
}

async function serveBlob(deps: BlobHandlerDeps, req: Req, res: Res, facts: RequestFacts, target: Target, digest: string): Promise<void> {
  facts.digest = digest;
  const headers = { ...API_HEADERS, 'content-type': 'application/octet-stream', 'docker-content-digest': digest, etag: `"${digest}"`, 'accept-ranges': 'bytes' };

  const who = requesterOf(req, target);
  const connected = whileConnected(res);
  try {
    await answerBlob(deps, req, res, facts, target, digest, headers, who, connected.signal);
  } finally {
    connected.done();
  }
}

async function answerBlob(
  deps: BlobHandlerDeps,
  req: Req,
  res: Res,
  facts: RequestFacts,
  target: Target,
  digest: string,
  headers: Record<string, string>,
  who: Requester,
  signal: AbortSignal,
): Promise<void> {
  if (req.method === 'HEAD') {
    const { size, source } = await deps.blobs.size(target, digest, who, signal);
    markCache(res, facts, source === 'hit' ? 'hit' : source === 'fill' ? 'miss' : 'upstream');
    facts.tier = source === 'hit' ? 'local' : 'upstream';
    res.writeHead(200, { ...headers, 'content-length': String(size) });
    res.end();
    return;
  }

  const found = await deps.blobs.lookupOpen(target, digest, who, signal);
  try {
    await sendFound(deps, req, res, facts, target, found, headers, signal);
  } finally {
    // Closed by sendBytes once it ran; closed here when the request ended before (a 416).
    if (found.kind === 'hit') await found.source.close();
    // This request no longer waits for the fill: with nobody else, its grace begins.
    else found.release();
  }
}

async function sendFound(deps: BlobHandlerDeps, req: Req, res: Res, facts: RequestFacts, target: Target, found: OpenedLookup, headers: Record<string, string>, gone: AbortSignal): Promise<void> {
  let size: number;
  let open: () => ByteSource;
  if (found.kind === 'hit') {
    markCache(res, facts, 'hit');
    facts.tier = 'local';
    size = found.size;
    open = () => found.source;
  } else {
    const fill = found.fill;
    markCache(res, facts, found.joined ? 'joined' : 'miss');
    await fill.started;
    facts.tier = fill.tier ?? 'origin';
    if (fill.size === null) {
      // The tier sent no length: nothing honest can be promised before the blob is whole.
      await fill.done;
    }
    size = fill.size!;
    open = () => fill.openSource();
  }

  let range = parseRange(headerValue(req.headers.range), size);
  if (range === 'unsatisfiable' && found.kind === 'fill' && !found.fill.verified) {
    // The size is the tier's word until the bytes check out: a 416 must rest on the real size.
    await found.fill.done;
    size = found.fill.size!;
    range = parseRange(headerValue(req.headers.range), size);
  }
  if (range === 'unsatisfiable') {
    throw new OciError('RANGE_INVALID', `range ${headerValue(req.headers.range)} is outside the blob (${size} bytes)`, {
      headers: { 'content-range': unsatisfiedRange(size) },
    });
  }
  const start = range ? range.start : 0;
  const end = range ? range.end : size - 1;
  const length = size === 0 ? 0 : end - start + 1;
  const endExclusive = size === 0 ? 0 : end + 1;
  let span: { source: ByteSource; tier: string } | null = null;
  if (range && found.kind === 'fill') {
    // Lazy pullers read a layer's end first: a span need not wait for the whole blob to arrive.
    span = await deps.blobs.openSpan(target, found.fill, start, end);
    if (span) {
      markCache(res, facts, 'range-passthrough');
      facts.tier = span.tier;
      const source = span.source;
      open = () => source;
    }
  }
  // The client left while the blob was looked up: sendBytes would learn it only from a 'close'
  // event that has passed already, and read the whole fill for nobody (holding it alive).
  if (gone.aborted) {
    facts.error = 'the client went away';
    await span?.source.close();
    return;
  }
  res.writeHead(range ? 206 : 200, {
    ...headers,
    'content-length': String(length),
    ...(range ? { 'content-range': contentRange(start, end, size) } : {}),
  });
  // Even an empty body goes through sendBytes: it ends only once the blob is verified.
  await sendBytes(open(), res, start, endExclusive, facts, (n) => deps.onServed(facts.tier ?? 'local', n));
}

function headerValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}
