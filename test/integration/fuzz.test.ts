// Fuzzing the request surface: over 10,000 generated requests against one in-process Cove (TLS
// listener for HTTP/2, the plain listener beside it for HTTP/1.1) in front of a healthy origin.
// Raw sockets send the malformed and truncated ones, undici the well-formed HTTP/1.1 ones,
// node:http2 the HTTP/2 ones (from a child process: see fuzz-h2-client.ts). Random names, references, digests (valid, invalid, odd
// algorithms), ranges, methods, query strings, headers and encodings, from a seeded PRNG
// (COVE_FUZZ_SEED repeats a run). What must hold: no 5xx, every request settles in time, every
// 4xx under /v2/ carries an OCI error body, bytes served for a digest hash to it, Cove still
// answers at the end, and no file appears outside its data directory.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { Pool } from 'undici';
import { dropBody } from '../../src/http-util.js';
import { Cleanup, startCove, type Proc, type TestLike } from '../e2e/real.js';
import { freePort } from '../helpers/process.js';
import { sha256 } from '../helpers/http.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import type { H2Report } from './fuzz-h2-client.js';
import { Gen, REQUEST_TIMEOUT_MS, blobs, images, index, manifests, pool, slowest, withTimeout } from './fuzz-input.js';

const SEED = process.env.COVE_FUZZ_SEED ? Number(process.env.COVE_FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
/** Requests per transport: undici (HTTP/1.1), raw sockets (mostly malformed), HTTP/2; COVE_FUZZ_SCALE and COVE_FUZZ_ONLY narrow a run by hand. */
const SCALE = Number(process.env.COVE_FUZZ_SCALE ?? 1);
const ONLY = process.env.COVE_FUZZ_ONLY;
const share = (name: string, n: number) => (ONLY && ONLY !== name ? 0 : Math.round(n * SCALE));
const COUNTS = { undici: share('undici', 5_200), raw: share('raw', 1_800), h2: share('h2', 3_200) };
/** The whole run is bounded; past this no new request starts and the test fails. */
const RUN_LIMIT_MS = 150_000;

const parent = mkdtempSync(join(tmpdir(), 'cove-fuzz-'));
const dataDir = join(parent, 'data');
mkdirSync(dataDir);
t.teardown(() => rmSync(parent, { recursive: true, force: true }));
const certFile = join(parent, 'cert.pem');
const keyFile = join(parent, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=cove-fuzz', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
const ca = readFileSync(certFile);
/** A name requests try to reach outside the data directory with; no file of that name may appear. */
const ESCAPE = `cove-fuzz-escape-${SEED}`;

/** Every file and folder under `root` (relative), except the data directory's own contents. */
function snapshot(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir)) {
      const path = join(dir, entry);
      if (path === dataDir) continue;
      out.push(relative(root, path));
      if (statSync(path).isDirectory()) walk(path);
    }
  };
  walk(root);
  return out.sort();
}

// ---- what the requests are made of ----------------------------------------------------------

// ---- checking answers -----------------------------------------------------------------------

interface Outcome {
  transport: string;
  method: string;
  path: string;
  status: number;
  contentType: string | undefined;
  body: Buffer;
  headers: Record<string, string | string[] | undefined>;
  range?: string;
}

const failures: string[] = [];
const statusCounts = new Map<number, number>();
let checked = 0;

function fail(o: { transport: string; method: string; path: string }, why: string): void {
  if (failures.length < 50) failures.push(`${o.transport} ${o.method} ${JSON.stringify(o.path.slice(0, 200))}: ${why}`);
}

/** The rules every answer keeps. */
function check(o: Outcome): void {
  checked++;
  statusCounts.set(o.status, (statusCounts.get(o.status) ?? 0) + 1);
  if (o.status >= 500) fail(o, `status ${o.status}: ${o.body.toString('utf8', 0, 300)}`);
  const underV2 = o.path.startsWith('/v2');
  if (underV2 && o.status >= 400 && o.status < 500) {
    if (!/^application\/json/.test(o.contentType ?? '')) fail(o, `${o.status} with content-type ${o.contentType}`);
    else if (o.method !== 'HEAD') {
      try {
        const body = JSON.parse(o.body.toString('utf8')) as { errors?: Array<{ code?: unknown; message?: unknown }> };
        if (!Array.isArray(body.errors) || body.errors.length === 0 || typeof body.errors[0]!.code !== 'string' || typeof body.errors[0]!.message !== 'string') {
          fail(o, `${o.status} body is not an OCI error: ${o.body.toString('utf8', 0, 200)}`);
        }
      } catch {
        fail(o, `${o.status} body is not JSON: ${o.body.toString('utf8', 0, 200)}`);
      }
    }
  }
  // Bytes served for a digest hash to it (or are the right slice of it).
  const m = /^\/v2\/.+\/(blobs|manifests)\/(sha256:[0-9a-f]{64})(?:\?|$)/.exec(o.path);
  if (m && o.method === 'GET' && (o.status === 200 || o.status === 206)) {
    const known = blobs.get(m[2]!) ?? manifests.get(m[2]!);
    if (o.status === 200 && sha256(o.body) !== m[2]) fail(o, `200 body hashes to ${sha256(o.body)}`);
    if (o.status === 206) {
      const cr = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(String(o.headers['content-range'] ?? ''));
      if (!cr) fail(o, `206 with content-range ${o.headers['content-range']}`);
      else if (known && !o.body.equals(known.subarray(Number(cr[1]), Number(cr[2]) + 1))) fail(o, `206 body is not bytes ${cr[1]}-${cr[2]} of the blob`);
      else if (Number(cr[2]) - Number(cr[1]) + 1 !== o.body.length) fail(o, `206 length ${o.body.length} does not match ${cr[0]}`);
    }
  }
}

// ---- the transports ---------------------------------------------------------------------------

async function viaUndici(base: string, gen: Gen, count: number, until: number): Promise<number> {
  const client = new Pool(base, { connections: 8, headersTimeout: REQUEST_TIMEOUT_MS, bodyTimeout: REQUEST_TIMEOUT_MS });
  let sent = 0;
  await pool(
    count,
    8,
    async () => {
      const method = gen.method();
      const path = gen.path();
      const headers = gen.headers();
      // undici refuses a path with bytes a request target cannot hold, and its pool then stalls
      // on the next request (undici 7): such paths go out on raw sockets instead.
      if (/[^\x21-\x7e]/.test(path)) return;
      const body = method === 'POST' || method === 'PUT' || method === 'PATCH' ? gen.bytes(gen.int(300)) : undefined;
      let res;
      try {
        res = await withTimeout(`undici ${method} ${path} ${JSON.stringify(headers).slice(0, 300)}`, client.request({ method, path, headers, body }));
      } catch (err) {
        const e = err as Error & { code?: string };
        // undici refuses some requests itself (bad characters in a path or header): never sent.
        if (e.code === 'UND_ERR_INVALID_ARG' || e.name === 'InvalidArgumentError' || /invalid/i.test(e.message)) return;
        fail({ transport: 'undici', method, path }, `request failed: ${e.code ?? ''} ${e.message}`);
        return;
      }
      sent++;
      let bytes: Buffer;
      try {
        bytes = Buffer.from(await withTimeout(`undici body ${path}`, res.body.arrayBuffer()));
      } catch (err) {
        dropBody(res.body);
        fail({ transport: 'undici', method, path }, `body failed: ${(err as Error).message}`);
        return;
      }
      check({ transport: 'undici', method, path, status: res.statusCode, contentType: String(res.headers['content-type'] ?? ''), body: bytes, headers: res.headers, range: headers.range });
    },
    until,
    () => sent,
  );
  // destroy, not close: close would wait on a request that hung (already reported).
  await client.destroy();
  return sent;
}

async function viaRaw(port: number, tlsPort: number, gen: Gen, count: number, until: number): Promise<number> {
  let sent = 0;
  await pool(
    count,
    12,
    async () => {
      const overTls = gen.chance(0.25);
      const { bytes, expectAnswer, halfClose } = gen.raw();
      const what = `raw${overTls ? '+tls' : ''} ${JSON.stringify(bytes.toString('latin1', 0, 80))}`;
      const got = await withTimeout(
        what,
        new Promise<{ data: Buffer; error: string | null }>((resolve) => {
          const socket: Socket = overTls
            ? tlsConnect({ host: '127.0.0.1', port: tlsPort, ca, servername: 'localhost', ALPNProtocols: ['http/1.1'] })
            : netConnect(port, '127.0.0.1');
          const chunks: Buffer[] = [];
          let error: string | null = null;
          socket.on('data', (c: Buffer) => chunks.push(c));
          socket.on('error', (e: Error & { code?: string }) => (error = e.code ?? e.message));
          socket.on('close', () => resolve({ data: Buffer.concat(chunks), error }));
          socket.once(overTls ? 'secureConnect' : 'connect', () => {
            socket.write(bytes);
            if (halfClose) socket.end();
          });
          // The answer to a request that was whole comes at once; then this side closes.
          setTimeout(() => socket.end(), 1_500).unref();
        }),
      ).catch((err: Error) => {
        fail({ transport: 'raw', method: '-', path: what }, err.message);
        return null;
      });
      if (got === null) return;
      sent++;
      const text = got.data.toString('latin1');
      const status = /^HTTP\/1\.[01] (\d{3}) /.exec(text);
      if (!status) {
        if (expectAnswer) fail({ transport: 'raw', method: '-', path: what }, `no answer (${got.error ?? 'closed'}): ${JSON.stringify(text.slice(0, 100))}`);
        return;
      }
      // Every answer on the connection (pipelined requests get several).
      for (const answer of text.split(/(?=HTTP\/1\.[01] \d{3} )/)) {
        const code = Number(/^HTTP\/1\.[01] (\d{3}) /.exec(answer)?.[1] ?? 0);
        const head = answer.slice(0, answer.indexOf('\r\n\r\n'));
        const type = /\r\ncontent-type: *([^\r\n]*)/i.exec(head)?.[1];
        const bodyText = answer.slice(head.length + 4);
        // Every 4xx on a raw connection, whatever its target, must carry an OCI error (held to the
        // /v2/ rule); 2xx bodies here are not checked (pipelined answers share one buffer).
        const head0 = bytes.toString('latin1', 0, 5);
        check({ transport: 'raw', method: head0 === 'HEAD ' ? 'HEAD' : 'GET', path: code >= 400 ? `/v2/(raw) ${what}` : '', status: code, contentType: type, body: Buffer.from(bodyText, 'latin1'), headers: {} });
      }
    },
    until,
    () => sent,
  );
  return sent;
}

/** Runs the HTTP/2 requests from a child process (see fuzz-h2-client.ts) and checks each answer. */
async function viaH2(url: string, seed: number, count: number, until: number): Promise<number> {
  const script = fileURLToPath(new URL('./fuzz-h2-client.js', import.meta.url));
  const args = JSON.stringify({ url, caFile: certFile, seed, escape: ESCAPE, count, until });
  const child = spawn(process.execPath, [script, args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  let sent = -1;
  const lines = createInterface({ input: child.stdout });
  lines.on('line', (line) => {
    const r = JSON.parse(line) as H2Report & { done?: boolean; sent?: number };
    if (r.done) {
      sent = r.sent!;
      return;
    }
    if (r.failure !== undefined) {
      fail({ transport: 'h2', method: r.method, path: r.path }, r.failure);
      return;
    }
    check({ transport: 'h2', method: r.method, path: r.path, status: r.status!, contentType: r.contentType, body: Buffer.from(r.body ?? '', 'base64'), headers: { 'content-range': r.contentRange } });
  });
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  if (code !== 0 || sent < 0) fail({ transport: 'h2', method: '-', path: '-' }, `the HTTP/2 client process ended with ${code}: ${stderr.slice(0, 500)}`);
  return Math.max(sent, 0);
}

// ---- the daemon ---------------------------------------------------------------------------------

/**
 * `cove serve` as it runs on a node, in a process of its own (so that the requests' clients,
 * here, are not in the process under test): TLS (HTTP/2 and HTTP/1.1) on one port, plain HTTP on
 * another, the data directory under `parent` and its log outside it.
 */
async function startFuzzedCove(t: TestLike, upstream: string): Promise<{ proc: Proc; port: number; httpPort: number }> {
  const [port, httpPort] = [await freePort(), await freePort()];
  const cove = await startCove(
    Cleanup.forTest(t),
    upstream,
    {
      COVE_LISTEN_HTTP: `127.0.0.1:${httpPort}`,
      COVE_TLS_CERT: certFile,
      COVE_TLS_KEY: keyFile,
      COVE_UPSTREAM_TIMEOUT: '2s',
      COVE_SHUTDOWN_GRACE: '1s',
      COVE_TAG_TTL: '1h',
      COVE_LOG_LEVEL: 'warn',
    },
    { port, dataDir, ready: () => fetch(`http://127.0.0.1:${httpPort}/healthz`).then((r) => r.ok) },
  );
  return { proc: cove.proc, port, httpPort };
}

// ---- the run ------------------------------------------------------------------------------------

t.test(`fuzz the request surface (seed ${SEED}; COVE_FUZZ_SEED=${SEED} repeats it)`, async (t) => {
  t.comment(`COVE_FUZZ_SEED=${SEED}`);
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown) => unhandled.push(err);
  process.on('unhandledRejection', onUnhandled);
  t.teardown(() => process.off('unhandledRejection', onUnhandled));

  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  origin.putImage('proj/app', '1', images[0]!);
  origin.putImage('proj/app', 'latest', images[1]!);
  origin.putImage('library/busybox', 'latest', images[1]!);
  origin.putIndex('proj/app', 'multi', index, images);
  origin.putImage('deep/er/path/x', '1', images[0]!);

  const before = snapshot(parent);
  const beforeTmp = readdirSync(tmpdir()).filter((n) => n.includes(ESCAPE));
  const cove = await startFuzzedCove(t, origin.url);
  const t0 = Date.now();
  const until = t0 + RUN_LIMIT_MS;
  // One generator per transport: each sequence depends on the seed only, not on timing.
  const [h1, raw, h2] = await Promise.all([
    viaUndici(`http://127.0.0.1:${cove.httpPort}`, new Gen(SEED, ESCAPE), COUNTS.undici, until),
    viaRaw(cove.httpPort!, cove.port, new Gen(SEED + 1, ESCAPE), COUNTS.raw, until),
    viaH2(`https://127.0.0.1:${cove.port}`, SEED + 2, COUNTS.h2, until),
  ]);
  const ms = Date.now() - t0;
  if (!cove.proc.running) {
    // The daemon died under the fuzz. Node 20.20's HTTP stack has been seen to abort with glibc's
    // heap-corruption message (SECURITY.md): that one is a known defect, reported as TODO until
    // the runtime moves on (issue 17). Any other death fails the test.
    const log = cove.proc.tail(40);
    const heap = cove.proc.child.signalCode === 'SIGABRT' && /corrupted size|double free|free\(\): invalid|malloc\(\)/.test(log);
    if (heap) t.fail(`cove serve aborted under the fuzz (heap corruption in Node's HTTP stack), seed ${SEED}`, { todo: 'known Node 20.20 defect; see SECURITY.md' });
    else t.fail(`cove serve died under the fuzz (signal ${cove.proc.child.signalCode}, code ${cove.proc.exitCode}), seed ${SEED}:\n${log}`);
    return;
  }
  t.comment(`${h1 + raw + h2} requests in ${ms} ms (undici ${h1}, raw ${raw}, http2 ${h2}); statuses ${JSON.stringify(Object.fromEntries([...statusCounts].sort((a, b) => a[0] - b[0])))}`);
  t.comment(`slowest: ${JSON.stringify(slowest)}`);
  t.ok(ms < RUN_LIMIT_MS, `the run finished within ${RUN_LIMIT_MS} ms`);
  t.ok(h1 + raw + h2 >= 10_000, `at least 10,000 requests were sent (${h1 + raw + h2})`);
  t.ok(checked >= 9_000, `answers checked: ${checked}`);
  t.same(failures, [], 'no 5xx, no hang, OCI errors on /v2/, bytes that match their digests');
  t.same(unhandled.map(String), [], 'no unhandled rejection');
  t.equal(origin.requests.filter((r) => r.status >= 500).length, 0, 'the origin stayed healthy (no 5xx from it to excuse)');

  // Still answering, on both listeners.
  const plain = await fetch(`http://127.0.0.1:${cove.httpPort}/v2/`);
  t.equal(plain.status, 200, 'the plain listener answers /v2/');
  await plain.arrayBuffer();
  const session = h2connect(`https://127.0.0.1:${cove.port}`, { ca });
  session.on('error', () => undefined);
  const status = await new Promise<number>((resolve) => {
    const req = session.request({ ':path': '/v2/' });
    req.on('response', (h) => resolve(Number(h[':status'])));
    req.on('error', () => resolve(0));
    req.resume();
  });
  session.close();
  t.equal(status, 200, 'the TLS listener answers /v2/ over HTTP/2');

  await cove.proc.stop();
  t.same(snapshot(parent), before, 'no file appeared outside the data directory');
  t.same(readdirSync(tmpdir()).filter((n) => n.includes(ESCAPE)), beforeTmp, 'nothing named by a path-escape attempt appeared in the temp folder');
});
