// The listener: plain HTTP/1.1 by default; with a certificate, an HTTP/2 secure server that also
// speaks HTTP/1.1 (ALPN), which is what Docker, containerd and podman negotiate.
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createSecureServer, type Http2SecureServer } from 'node:http2';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { Req, Res } from './respond.js';

export type AnyServer = HttpServer | Http2SecureServer;

/** A listening server and a graceful stop. */
export interface Listener {
  server: AnyServer;
  port: number;
  host: string;
  /** Stops accepting, lets requests finish for up to `graceMs`, then cuts what remains. */
  stop(graceMs: number): Promise<void>;
}

/** Server timeouts: a client gets this long to send its request headers. */
const HEADERS_TIMEOUT_MS = 30_000;
/** An idle keep-alive connection is closed after this long. */
const KEEP_ALIVE_TIMEOUT_MS = 30_000;
/** A TLS connection with no traffic at all is closed after this long. */
const IDLE_TIMEOUT_MS = 120_000;

export async function listen(
  handler: (req: Req, res: Res) => void,
  options: { host: string; port: number; tls: { cert: string; key: string } | null },
): Promise<Listener> {
  const sockets = new Set<Socket>();
  let active = 0;
  const counted = (req: Req, res: Res) => {
    active++;
    res.on('close', () => active--);
    handler(req, res);
  };
  let server: AnyServer;
  // What accepts TCP connections: the HTTP server itself, or (with TLS) a front that sniffs the
  // first byte of each connection and hands TLS to the secure server.
  let acceptor: HttpServer | NetServer;
  if (options.tls) {
    const secure = createSecureServer({ cert: options.tls.cert, key: options.tls.key, allowHTTP1: true }, counted as never);
    // An HTTP/2 session (or HTTP/1.1 connection) that moves nothing for this long is closed.
    secure.setTimeout(IDLE_TIMEOUT_MS);
    server = secure;
    acceptor = createNetServer((socket) => sniff(socket, secure));
  } else {
    const plain = createHttpServer({ headersTimeout: HEADERS_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS }, counted as never);
    server = plain;
    acceptor = plain;
  }
  acceptor.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // A socket error (client reset) must never take the process down.
  server.on('clientError', (_err: Error, socket: Socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    acceptor.once('error', reject);
    acceptor.listen(options.port, options.host, () => {
      acceptor.off('error', reject);
      resolve();
    });
  });
  const address = acceptor.address();
  const port = typeof address === 'object' && address ? address.port : options.port;

  return {
    server,
    port,
    host: options.host,
    async stop(graceMs: number) {
      const closed = new Promise<void>((resolve) => acceptor.close(() => resolve()));
      if ('closeIdleConnections' in acceptor) acceptor.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (active > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

/** The first byte of a TLS record carrying a handshake (every ClientHello starts with it). */
const TLS_HANDSHAKE = 0x16;
/** A request line starts with an HTTP method: upper-case ASCII letters. */
const HTTP_METHOD = /^[A-Z]{3,10} /;

/**
 * Looks at the first bytes of a connection to the TLS port: a TLS handshake goes, bytes
 * unconsumed, to the secure server; a plain HTTP request gets a 400 that says to use https
 * (instead of a TLS alert the client shows as garbage, or a hang); anything else is closed.
 */
function sniff(socket: Socket, secure: Http2SecureServer): void {
  socket.on('error', () => socket.destroy());
  // A connection that sends nothing is closed like one that sends no request headers.
  socket.setTimeout(HEADERS_TIMEOUT_MS, () => socket.destroy());
  socket.once('data', (chunk: Buffer) => {
    socket.pause();
    socket.setTimeout(0);
    if (chunk[0] === TLS_HANDSHAKE) {
      socket.unshift(chunk);
      secure.emit('connection', socket);
      return;
    }
    const head = chunk.toString('latin1', 0, Math.min(chunk.length, 8192));
    if (!HTTP_METHOD.test(head)) {
      socket.destroy();
      return;
    }
    answerPlainHttp(socket, head);
  });
}

/** Answers a plain-HTTP request on the TLS port with 400 and an OCI error naming the https URL. */
function answerPlainHttp(socket: Socket, head: string): void {
  const hostHeader = /\r?\nhost:[ \t]*([^\r\n]*)/i.exec(head)?.[1]?.trim() ?? '';
  // The name the client used (without any port it gave), else the address it reached.
  const named = /^(\[[^\]]*\]|[A-Za-z0-9.-]+)(?::\d+)?$/.exec(hostHeader)?.[1];
  const local = socket.localAddress ?? '127.0.0.1';
  const host = named ?? (local.includes(':') ? `[${local}]` : local);
  const url = `https://${host}:${socket.localPort}`;
  const message = `this port speaks HTTPS; use ${url}`;
  const body = JSON.stringify({ errors: [{ code: 'UNSUPPORTED', message, detail: { hint: `plain HTTP was sent to a TLS listener; use ${url}/v2/ (a Docker or containerd client needs the registry configured for https with Cove's CA, not as an insecure http registry)` } }] });
  socket.end(
    `HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
  // Drain what the client still sends (closing with unread data would reset the connection and
  // could lose the answer), but not for long.
  socket.resume();
  socket.setTimeout(5_000, () => socket.destroy());
  socket.on('end', () => socket.destroy());
}
