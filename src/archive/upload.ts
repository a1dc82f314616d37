// The `cove import` side of an import: the archive file streamed as the body of one POST to the
// local Cove, over its admin socket or HTTP(S). node:http, not fetch: the file goes to the socket
// in 1 MiB reads through one pipe, where a web-stream body costs a copy and a promise per chunk
// (at 200 MB that was most of the command's time).
import { createReadStream } from 'node:fs';
import { request as httpRequest, type IncomingMessage } from 'node:http';

/** Bytes per read of the archive file (and so per write to the socket). */
const UPLOAD_CHUNK = 1024 * 1024;

/** Where the request goes: a Unix socket (`socketPath`, base only for the path) or `base` itself. */
export interface UploadTarget {
  base: string;
  socketPath?: string;
  headers: Record<string, string>;
}

/** The answer, shaped like the part of a fetch Response the command reads. */
export interface UploadReply {
  ok: boolean;
  status: number;
  text(): Promise<string>;
  json(): Promise<unknown>;
}

/**
 * POSTs `file` to `path` as application/x-tar; `onProgress` gets the bytes read from the file so
 * far. Resolves with the answer once it is whole. An answer that comes before the whole file is
 * sent (Cove refuses a bad archive as soon as it sees the problem) is the answer: the upload stops
 * there. Rejects when no answer comes (nothing listening, the connection lost).
 */
export async function uploadArchive(target: UploadTarget, path: string, file: string, onProgress?: (bytesSent: number) => void): Promise<UploadReply> {
  const url = new URL(`${target.base}${path}`);
  // TLS (and the crypto it loads) only for an https:// --url: the admin socket is plain HTTP.
  const request = url.protocol === 'https:' ? (await import('node:https')).request : httpRequest;
  return new Promise<UploadReply>((resolve, reject) => {
    const input = createReadStream(file, { highWaterMark: UPLOAD_CHUNK });
    let answered = false;
    const fail = (err: Error) => {
      input.destroy();
      if (!answered) reject(err);
    };
    const where = target.socketPath !== undefined ? { socketPath: target.socketPath } : { host: url.hostname.replace(/^\[|\]$/g, ''), port: url.port };
    const headers = { ...target.headers, 'content-type': 'application/x-tar' };
    const req = request({ ...where, method: 'POST', path: `${url.pathname}${url.search}`, headers }, (res) => {
      answered = true;
      // What is left of the file is not needed once Cove has answered.
      input.unpipe(req);
      input.destroy();
      readBody(res).then((body) => {
        req.destroy();
        resolve(replyOf(res.statusCode ?? 0, body));
      }, reject);
    });
    req.on('error', fail);
    input.on('error', fail);
    let sent = 0;
    if (onProgress) input.on('data', (chunk) => onProgress((sent += chunk.length)));
    input.pipe(req);
  });
}

function readBody(res: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (chunk: Buffer) => chunks.push(chunk));
    res.on('end', () => resolve(Buffer.concat(chunks)));
    res.on('error', reject);
  });
}

function replyOf(status: number, body: Buffer): UploadReply {
  return {
    ok: status >= 200 && status < 300,
    status,
    text: async () => body.toString('utf8'),
    json: async () => JSON.parse(body.toString('utf8')) as unknown,
  };
}
