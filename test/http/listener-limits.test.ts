// Deadlines and limits of both listeners (plain HTTP/1.1, and TLS with HTTP/1.1 and HTTP/2), each
// tried for real on loopback: slow clients are cut within the deadline, oversized and malformed
// requests get an answer, and HTTP/2 sessions keep to their stream and header limits.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as h2connect } from 'node:http2';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import t from 'tap';
import { listen, type Listener } from '../../src/http/server.js';
import type { Req, Res } from '../../src/http/respond.js';
import { ERROR, FLAG, FRAME, RawH2, errorCode, frame, hpack } from './h2-raw.js';
import { defaultLimits } from './limits.js';

const dir = mkdtempSync(join(tmpdir(), 'cove-limits-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));
const certFile = join(dir, 'cert.pem');
const keyFile = join(dir, 'key.pem');
execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', keyFile, '-out', certFile, '-days', '2', '-subj', '/CN=cove-test', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], { stdio: 'ignore' });
const cert = readFileSync(certFile, 'utf8');
const key = readFileSync(keyFile, 'utf8');

/** Short deadlines so the slow clients below are cut within a second or two. */
const HEADERS_MS = 1_000;
const REQUEST_MS = 2_000;
/** The cut may come one check interval (100 ms here) late, plus scheduling on a busy machine. */
const LATE_MS = 900;

type Kind = 'plain' | 'tls';

async function start(t: { teardown(fn: () => unknown): void }, kind: Kind, handler?: (req: Req, res: Res) => void): Promise<Listener> {
  const listener = await listen(
    handler ??
      ((req, res) => {
        const answer = () => {
          res.writeHead(200, { 'content-type': 'text/plain' });
          res.end(`ok ${req.url}`);
        };
        // /read/...: answered once the request body has arrived (as an upload would be).
        if (req.url?.startsWith('/read/')) req.resume().once('end', answer);
        else answer();
      }),
    { host: '127.0.0.1', port: 0, tls: kind === 'tls' ? { cert, key } : null, limits: defaultLimits({ headersTimeoutMs: HEADERS_MS, requestTimeoutMs: REQUEST_MS }) },
  );
  t.teardown(() => listener.stop(200));
  return listener;
}

/** A raw HTTP/1.1 connection (over TLS on the TLS listener) that records what it reads and when it closed. */
async function open(kind: Kind, port: number): Promise<{ socket: Socket; read: () => string; closed: Promise<number>; t0: number }> {
  const t0 = Date.now();
  const socket: Socket =
    kind === 'plain' ? netConnect(port, '127.0.0.1') : tlsConnect({ host: '127.0.0.1', port, ca: cert, servername: 'localhost', ALPNProtocols: ['http/1.1'] });
  let got = '';
  socket.on('data', (d: Buffer) => (got += d.toString('latin1')));
  socket.on('error', () => undefined);
  const closed = new Promise<number>((resolve) => socket.on('close', () => resolve(Date.now() - t0)));
  await new Promise((r) => socket.once(kind === 'plain' ? 'connect' : 'secureConnect', r));
  // A hang must fail the test, not stall it.
  setTimeout(() => socket.destroy(), 10_000).unref();
  return { socket, read: () => got, closed, t0 };
}

/** Writes one byte every 100 ms until the connection closes; returns how many it wrote. */
function drip(socket: Socket, byte = 'x'): () => number {
  let n = 0;
  const timer = setInterval(() => {
    if (socket.destroyed || !socket.writable) return clearInterval(timer);
    socket.write(byte);
    n++;
  }, 100);
  socket.once('close', () => clearInterval(timer));
  return () => n;
}

function ociBody(raw: string): { errors: Array<{ code: string; message: string }> } {
  return JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as { errors: Array<{ code: string; message: string }> };
}

for (const kind of ['plain', 'tls'] as const) {
  t.test(`${kind}: a slowloris (headers a byte at a time) is cut at the header deadline`, async (t) => {
    const l = await start(t, kind);
    const c = await open(kind, l.port);
    c.socket.write('GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const dripped = drip(c.socket);
    const ms = await c.closed;
    t.ok(dripped() >= 5, `the client was still sending (${dripped()} bytes dripped)`);
    t.ok(ms >= HEADERS_MS - 50 && ms < HEADERS_MS + LATE_MS, `cut after ${ms} ms (deadline ${HEADERS_MS} ms, counted from the connection${kind === 'tls' ? ', TLS handshake included' : ''})`);
  });

  t.test(`${kind}: a slowloris on a kept-alive connection gets 408 at the header deadline`, async (t) => {
    const l = await start(t, kind);
    const c = await open(kind, l.port);
    c.socket.write('GET /v2/first HTTP/1.1\r\nHost: x\r\n\r\n');
    await new Promise((r) => setTimeout(r, 200));
    t.match(c.read(), /^HTTP\/1\.1 200 [^]*ok \/v2\/first/, 'the first request was answered');
    const second = Date.now();
    c.socket.write('GET /v2/second HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    drip(c.socket);
    await c.closed;
    const ms = Date.now() - second;
    t.ok(ms < HEADERS_MS + LATE_MS, `cut ${ms} ms after the second request began`);
    const answer = c.read().slice(c.read().indexOf('HTTP/1.1 408'));
    t.match(answer, /^HTTP\/1\.1 408 /, 'answered 408');
    t.equal(ociBody(answer).errors[0]!.code, 'UNSUPPORTED', 'with an OCI error body');
  });

  t.test(`${kind}: a connection that sends nothing is closed at the header deadline`, async (t) => {
    const l = await start(t, kind);
    const c = await open(kind, l.port);
    const ms = await c.closed;
    t.ok(ms < HEADERS_MS + LATE_MS, `closed after ${ms} ms`);
  });

  t.test(`${kind}: a 70 kB header gets 431 with an OCI error`, async (t) => {
    const l = await start(t, kind);
    const c = await open(kind, l.port);
    c.socket.write(`GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(70_000)}\r\n\r\n`);
    await c.closed;
    t.match(c.read(), /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
    t.match(c.read(), /\r\ncontent-type: application\/json\r\n/);
    t.equal(ociBody(c.read()).errors[0]!.message, 'request headers too large');
  });

  t.test(`${kind}: garbage bytes get 400 with an OCI error`, async (t) => {
    const l = await start(t, kind);
    for (const garbage of ['\x00\x01\x02 nonsense\r\n\r\n', 'GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n', 'GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n']) {
      const c = await open(kind, l.port);
      c.socket.write(garbage);
      await c.closed;
      t.match(c.read(), /^HTTP\/1\.1 400 Bad Request\r\n/, `${JSON.stringify(garbage)}: 400`);
      t.equal(ociBody(c.read()).errors[0]!.code, 'UNSUPPORTED', `${JSON.stringify(garbage)}: OCI error`);
    }
  });

  t.test(`${kind}: no Host header, CONNECT: an answer, not a dropped connection`, async (t) => {
    const l = await start(t, kind);
    const noHost = await open(kind, l.port);
    noHost.socket.write('GET /v2/ HTTP/1.1\r\n\r\n');
    await new Promise((r) => setTimeout(r, 300));
    t.match(noHost.read(), /^HTTP\/1\.1 400 /);
    t.match(ociBody(noHost.read()).errors[0]!.message, /Host header/);
    noHost.socket.destroy();
    const tunnel = await open(kind, l.port);
    tunnel.socket.write('CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n');
    await tunnel.closed;
    t.match(tunnel.read(), /^HTTP\/1\.1 405 /);
    t.equal(ociBody(tunnel.read()).errors[0]!.code, 'UNSUPPORTED');
  });
}

t.test('tls: a TLS handshake sent a byte at a time is cut at the header deadline', async (t) => {
  const l = await start(t, 'tls');
  const t0 = Date.now();
  const socket = netConnect(l.port, '127.0.0.1');
  socket.on('error', () => undefined);
  await new Promise((r) => socket.once('connect', r));
  // A TLS record header announcing a long ClientHello, then the rest trickling in.
  socket.write(Buffer.from([0x16, 0x03, 0x01, 0x3f, 0xff]));
  const dripped = drip(socket, '\x01');
  await new Promise((r) => socket.once('close', r));
  const ms = Date.now() - t0;
  t.ok(dripped() >= 5, `still sending (${dripped()} bytes)`);
  t.ok(ms < HEADERS_MS + LATE_MS, `cut after ${ms} ms`);
});

t.test('h2: a session that completes TLS and sends nothing is closed at the header deadline', async (t) => {
  const l = await start(t, 'tls');
  const t0 = Date.now();
  const h2 = await RawH2.open(l.port, cert, { preface: false });
  t.teardown(() => h2.close());
  t.ok(await h2.until((_f, closed) => closed, 5_000), 'closed');
  t.ok(Date.now() - t0 < HEADERS_MS + LATE_MS, `after ${Date.now() - t0} ms`);
});

t.test('h2: a header block that never ends is cut, on a new session and after a request', async (t) => {
  const l = await start(t, 'tls');
  for (const after of [false, true]) {
    const h2 = await RawH2.open(l.port, cert);
    t.teardown(() => h2.close());
    let stream = 1;
    if (after) {
      h2.headers(stream, '/v2/first');
      t.ok(await h2.until((f) => f.some((x) => x.type === FRAME.DATA && x.stream === 1 && (x.flags & FLAG.END_STREAM) !== 0), 2_000), 'the first request was answered');
      stream = 3;
    }
    const t0 = Date.now();
    // HEADERS without END_HEADERS, then CONTINUATION frames of one header each, every 100 ms.
    h2.headers(stream, '/v2/slow', { endHeaders: false });
    let n = 0;
    const timer = setInterval(() => h2.write(frame(FRAME.CONTINUATION, 0, stream, hpack([[`x-drip-${n++}`, 'y']]))), 100);
    t.ok(await h2.until((_f, closed) => closed, 5_000), `${after ? 'after a request' : 'first request'}: the session was closed`);
    clearInterval(timer);
    const ms = Date.now() - t0;
    t.ok(n >= 5, `the client was still sending (${n} frames)`);
    // After a request the session's idle rule (no open stream for the header deadline) cuts it,
    // plus the grace a GOAWAY gives before the socket is cut.
    t.ok(ms < HEADERS_MS + LATE_MS + (after ? 1_000 : 0), `cut after ${ms} ms`);
  }
});

t.test('h2: a stream whose request body never ends is reset at the request deadline', async (t) => {
  const l = await start(t, 'tls');
  const h2 = await RawH2.open(l.port, cert);
  t.teardown(() => h2.close());
  const t0 = Date.now();
  // A handler that waits for the body (an upload), and a body that never comes.
  h2.headers(1, '/read/upload', { endStream: false });
  t.ok(await h2.until((f) => f.some((x) => x.type === FRAME.RST_STREAM && x.stream === 1), REQUEST_MS + 2_000), 'then reset');
  const rst = h2.frames.find((x) => x.type === FRAME.RST_STREAM && x.stream === 1)!;
  t.equal(errorCode(rst), ERROR.CANCEL, 'with CANCEL');
  const ms = Date.now() - t0;
  t.ok(ms >= REQUEST_MS - 50 && ms < REQUEST_MS + LATE_MS, `after ${ms} ms (deadline ${REQUEST_MS} ms)`);
});

t.test('h2: at most 100 concurrent streams per session, however many the client opens', async (t) => {
  let inHandler = 0;
  let most = 0;
  const held: Res[] = [];
  const l = await start(t, 'tls', (_req, res) => {
    inHandler++;
    most = Math.max(most, inHandler);
    held.push(res);
    res.on('close', () => inHandler--);
  });
  const h2 = await RawH2.open(l.port, cert);
  t.teardown(() => h2.close());
  t.ok(await h2.until((f) => f.some((x) => x.type === FRAME.SETTINGS && !(x.flags & FLAG.ACK)), 2_000), 'server SETTINGS');
  const settings = h2.frames.find((x) => x.type === FRAME.SETTINGS && !(x.flags & FLAG.ACK))!;
  const values = new Map<number, number>();
  for (let i = 0; i + 6 <= settings.payload.length; i += 6) values.set(settings.payload.readUInt16BE(i), settings.payload.readUInt32BE(i + 2));
  t.equal(values.get(0x3), 100, 'SETTINGS_MAX_CONCURRENT_STREAMS 100');
  t.equal(values.get(0x6), 65536, 'SETTINGS_MAX_HEADER_LIST_SIZE 64 KiB');
  // Give the ACK of the server's settings time to arrive, then ignore the limit: 120 streams.
  await new Promise((r) => setTimeout(r, 100));
  for (let i = 0; i < 120; i++) h2.headers(1 + 2 * i, `/v2/s${i}`);
  const refused = (f: typeof h2.frames) => f.filter((x) => (x.type === FRAME.RST_STREAM && errorCode(x) === ERROR.REFUSED_STREAM) || x.type === FRAME.GOAWAY);
  t.ok(await h2.until((f, closed) => closed || refused(f).length > 0, 3_000), 'the streams over the limit were refused');
  await new Promise((r) => setTimeout(r, 300));
  t.ok(most <= 100, `at most 100 requests reached the handler at once (${most})`);
  t.ok(most >= 90, `the session was really used (${most} at once)`);
  for (const res of held) if (!res.writableEnded) res.end();
});

t.test('h2: a 70 kB header is refused with the protocol\'s answer and the session lives on', async (t) => {
  const l = await start(t, 'tls');
  const h2 = await RawH2.open(l.port, cert);
  t.teardown(() => h2.close());
  await h2.until((f) => f.some((x) => x.type === FRAME.SETTINGS), 2_000);
  await new Promise((r) => setTimeout(r, 100));
  // Two 35 kB fields: together over the 64 KiB list, each under nghttp2's per-field bound.
  const block = hpack([[':method', 'GET'], [':scheme', 'https'], [':authority', 'localhost'], [':path', '/v2/'], ['x-big-1', 'a'.repeat(35_000)], ['x-big-2', 'b'.repeat(35_000)]]);
  const parts: Buffer[] = [];
  for (let at = 0; at < block.length; at += 16_384) {
    const last = at + 16_384 >= block.length;
    parts.push(frame(at === 0 ? FRAME.HEADERS : FRAME.CONTINUATION, (at === 0 ? FLAG.END_STREAM : 0) | (last ? FLAG.END_HEADERS : 0), 1, block.subarray(at, at + 16_384)));
  }
  h2.write(Buffer.concat(parts));
  t.ok(await h2.until((f) => f.some((x) => x.type === FRAME.RST_STREAM && x.stream === 1), 2_000), 'stream 1 reset');
  const rst = h2.frames.find((x) => x.type === FRAME.RST_STREAM && x.stream === 1)!;
  t.ok(([ERROR.ENHANCE_YOUR_CALM, ERROR.REFUSED_STREAM] as number[]).includes(errorCode(rst)), `code ${errorCode(rst)}`);
  h2.headers(3, '/v2/after');
  t.ok(await h2.until((f) => f.some((x) => x.type === FRAME.HEADERS && x.stream === 3), 2_000), 'the next request on the session is answered');
});

t.test('h2: garbage after the preface ends the session with GOAWAY', async (t) => {
  const l = await start(t, 'tls');
  const h2 = await RawH2.open(l.port, cert);
  t.teardown(() => h2.close());
  h2.write(Buffer.from('\xff\xff\xff\xff\xff\xff\xff\xff\xff garbage garbage garbage', 'latin1'));
  t.ok(await h2.until((f, closed) => closed || f.some((x) => x.type === FRAME.GOAWAY), 3_000), 'GOAWAY or closed');
  const goaway = h2.frames.find((x) => x.type === FRAME.GOAWAY);
  if (goaway) t.not(errorCode(goaway), ERROR.NO_ERROR, `GOAWAY with error ${errorCode(goaway)}`);
});

t.test('h2: node\'s client over the TLS listener still works with the limits on', async (t) => {
  const l = await start(t, 'tls');
  const session = h2connect(`https://127.0.0.1:${l.port}`, { ca: cert });
  session.on('error', () => undefined);
  t.teardown(() => session.destroy());
  const bodies = await Promise.all(
    Array.from({ length: 20 }, (_, i) =>
      new Promise<string>((resolve, reject) => {
        const req = session.request({ ':path': `/v2/n${i}` });
        let body = '';
        req.setEncoding('utf8').on('data', (d: string) => (body += d));
        req.on('end', () => resolve(body));
        req.on('error', reject);
        req.end();
      }),
    ),
  );
  t.same(bodies, Array.from({ length: 20 }, (_, i) => `ok /v2/n${i}`));
});
