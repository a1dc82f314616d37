// A raw HTTP client for tests: every header as sent, the whole body, and a rejection when the
// server breaks the body off (so a test can tell "broken transfer" from "complete response").
import { createHash } from 'node:crypto';
import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders } from 'node:http';
import { request as httpsRequest } from 'node:https';

export interface FetchResult {
  status: number;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: Buffer;
}

export function sha256(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

export function fetchAll(
  url: string,
  options: { method?: string; headers?: OutgoingHttpHeaders; ca?: Buffer; timeoutMs?: number; rawPath?: string } = {},
): Promise<FetchResult> {
  const send = url.startsWith('https:') ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    // rawPath sends a request target as is (URL parsing would resolve dot segments first).
    const extra = options.rawPath === undefined ? {} : { path: options.rawPath };
    const req = send(url, { method: options.method ?? 'GET', headers: options.headers, ca: options.ca, agent: false, ...extra }, (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let ended = false;
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        ended = true;
        if (!res.complete) {
          reject(new Error(`response body from ${url} was cut off`));
          return;
        }
        const headers: Record<string, string> = {};
        for (const [name, value] of Object.entries(res.headers)) {
          if (value !== undefined) headers[name] = Array.isArray(value) ? value.join(', ') : value;
        }
        resolve({ status: res.statusCode ?? 0, headers, body: Buffer.concat(chunks) });
      });
      res.on('error', (err) => reject(new Error(`response body from ${url} broke: ${err.message}`)));
      res.on('close', () => {
        if (!ended) reject(new Error(`connection closed before the body from ${url} ended`));
      });
    });
    req.setTimeout(options.timeoutMs ?? 60_000, () => req.destroy(new Error(`no answer from ${url} in time`)));
    req.on('error', reject);
    req.end();
  });
}
