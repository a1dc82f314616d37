// The fuzz test's HTTP/2 client, in a process of its own: node's HTTP/2 client and server in one
// process corrupted the heap under this load (Node 20.20, "corrupted size vs. prev_size"; not
// seen with them apart, the server surviving every run), and a crash of the test's own client
// must not pass for a crash of Cove. It prints one JSON line per answer; the test checks them.
import { readFileSync } from 'node:fs';
import { connect as h2connect, type ClientHttp2Session } from 'node:http2';
import { Gen, pool, withTimeout } from './fuzz-input.js';

/** One answer (or a failure the client already judged) for the test to check. */
export interface H2Report {
  method: string;
  path: string;
  status?: number;
  contentType?: string;
  /** Base64 of the body. */
  body?: string;
  contentRange?: string;
  failure?: string;
}

function report(r: H2Report): void {
  process.stdout.write(`${JSON.stringify(r)}\n`);
}

async function viaH2(url: string, ca: Buffer, gen: Gen, count: number, until: number): Promise<number> {
  let session: ClientHttp2Session | null = null;
  /** Sessions the server sent GOAWAY on (its answer to a header block over the limit): their later streams are refused. */
  const goneAway = new WeakSet<ClientHttp2Session>();
  const connect = () => {
    const s = h2connect(url, { ca });
    s.on('error', () => undefined);
    s.on('goaway', () => {
      goneAway.add(s);
      if (session === s) session = null;
    });
    s.on('close', () => {
      if (session === s) session = null;
    });
    return s;
  };
  let sent = 0;
  await pool(
    count,
    24,
    async () => {
      session ??= connect();
      const method = gen.method();
      const path = gen.path();
      const headers = gen.headers();
      if (gen.chance(0.02)) headers['x-big'] = 'z'.repeat(70_000);
      const s = session;
      let stream;
      try {
        stream = s.request({ ':method': method, ':path': path, ...headers }, { endStream: !(method === 'POST' || method === 'PUT') });
      } catch {
        // node's client refuses some header values itself, or the session is going away: never sent.
        if ((s.closed || s.destroyed || goneAway.has(s)) && session === s) session = null;
        return;
      }
      if (method === 'POST' || method === 'PUT') stream.end(gen.bytes(gen.int(300)));
      const done = new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer } | { reset: number | undefined; error: string }>((resolve) => {
        let response: Record<string, string | string[] | undefined> = {};
        const chunks: Buffer[] = [];
        stream.on('response', (h) => (response = h as Record<string, string | string[] | undefined>));
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => resolve({ status: Number(response[':status']), headers: response, body: Buffer.concat(chunks) }));
        stream.on('error', (e: Error) => resolve({ reset: stream.rstCode, error: e.message }));
      });
      const r = await withTimeout(`h2 ${method} ${path}`, done).catch((err: Error) => {
        stream.close();
        report({ method, path, failure: err.message });
        return null;
      });
      if (r === null) return;
      sent++;
      if ('reset' in r) {
        // A stream reset is the protocol's answer to a header list over the limit, and (from
        // nghttp2, PROTOCOL_ERROR) to a :path or header value with bytes HTTP/2 forbids.
        const forbidden = /[^\x21-\x7e]/.test(path) || Object.values(headers).some((v) => /[^\x20-\x7e]/.test(v) || /^\s|\s$/.test(v));
        if (!headers['x-big'] && !(forbidden && r.reset === 1) && !goneAway.has(s)) report({ method, path, failure: `stream failed: ${r.error} (rst ${r.reset})` });
        return;
      }
      report({ method, path, status: r.status, contentType: r.headers['content-type'] as string | undefined, body: r.body.toString('base64'), contentRange: r.headers['content-range'] as string | undefined });
    },
    until,
    () => sent,
  );
  (session as ClientHttp2Session | null)?.close();
  return sent;
}

const { url, caFile, seed, escape, count, until } = JSON.parse(process.argv[2]!) as { url: string; caFile: string; seed: number; escape: string; count: number; until: number };
const sent = await viaH2(url, readFileSync(caFile), new Gen(seed, escape), count, until);
process.stdout.write(`${JSON.stringify({ done: true, sent })}\n`);
