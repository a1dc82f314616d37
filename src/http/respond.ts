// Response helpers shared by the handlers: OCI error JSON, Cache-Status, and breaking a response
// whose body cannot be completed.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import { constants as h2 } from 'node:http2';
import { toOciResponse, UpstreamAuthError, UpstreamStatusError, UpstreamUnavailableError } from '../errors.js';

export type Req = IncomingMessage | Http2ServerRequest;
export type Res = ServerResponse | Http2ServerResponse;

/** Per-request facts the handlers fill in and the access log line reports. */
export interface RequestFacts {
  cache?: string;
  tier?: string;
  digest?: string;
  repo?: string;
  upstream?: string;
  ns?: string | null;
  /** The asking peer's node id, for requests from sibling Coves. */
  peer?: string;
  /** Who the client is, as the origin named it (COVE_CLIENT_AUTH=passthrough). */
  subject?: string;
  bytes: number;
  error?: string;
}

/** Headers every pull-API response carries. */
export const API_HEADERS = { 'docker-distribution-api-version': 'registry/2.0' } as const;

/** RFC 9211 Cache-Status values for each way Cove answers. */
const CACHE_STATUS: Record<string, string> = {
  hit: 'cove; hit',
  revalidated: 'cove; hit; detail=revalidated',
  stale: 'cove; hit; detail=stale',
  miss: 'cove; fwd=miss; stored',
  joined: 'cove; fwd=miss; stored; detail=joined',
  'vary-miss': 'cove; fwd=vary-miss; stored',
  upstream: 'cove; fwd=miss',
  /** A Range on a blob still arriving, answered at once from the tier (or the fill's file) and not stored itself. */
  'range-passthrough': 'cove; fwd=miss; detail=range-passthrough',
  bypass: 'cove; fwd=bypass',
};

/** Sets Cache-Status (and the stale Warning) for a cache result, and records it for the log. */
export function markCache(res: Res, facts: RequestFacts, result: string): void {
  facts.cache = result;
  res.setHeader('cache-status', CACHE_STATUS[result] ?? `cove; detail=${result}`);
  if (result === 'stale') res.setHeader('warning', '110 - "Response is Stale"');
}

/** Sends a JSON body with an exact Content-Length. */
export function sendJson(res: Res, status: number, body: unknown, headers: Record<string, string> = {}, head = false): number {
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { ...API_HEADERS, 'content-type': 'application/json', 'content-length': String(bytes.length), ...headers });
  if (head) res.end();
  else res.end(bytes);
  return head ? 0 : bytes.length;
}

/**
 * Answers an error as OCI JSON when nothing has been sent yet; once headers are out, the only
 * honest thing left is to break the connection so the client sees a failed transfer.
 */
export function sendError(req: Req, res: Res, facts: RequestFacts, err: unknown): void {
  const mapped = toOciResponse(err);
  facts.error = mapped.body.errors[0]?.code;
  // The client's message leaves out where the upstream is; the access line keeps the full story.
  if (err instanceof UpstreamUnavailableError || err instanceof UpstreamStatusError || err instanceof UpstreamAuthError) facts.error = `${facts.error}: ${err.message}`;
  if (res.headersSent) {
    breakResponse(res);
    return;
  }
  facts.bytes = sendJson(res, mapped.status, mapped.body, mapped.headers, req.method === 'HEAD');
}

/** Ends a response abnormally: the client sees a reset, never a short body that looks whole. */
export function breakResponse(res: Res): void {
  if ('stream' in res && res.stream) {
    res.stream.close(h2.NGHTTP2_INTERNAL_ERROR);
    return;
  }
  (res as ServerResponse).destroy();
}
