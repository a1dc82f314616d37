// The listener: plain HTTP/1.1 by default; with a certificate, an HTTP/2 secure server that also
// speaks HTTP/1.1 (ALPN), which is what Docker, containerd and podman negotiate.
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createSecureServer, type Http2SecureServer } from 'node:http2';
import type { Socket } from 'node:net';
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
  if (options.tls) {
    const secure = createSecureServer({ cert: options.tls.cert, key: options.tls.key, allowHTTP1: true }, counted as never);
    // An HTTP/2 session (or HTTP/1.1 connection) that moves nothing for this long is closed.
    secure.setTimeout(IDLE_TIMEOUT_MS);
    server = secure;
  } else {
    const plain = createHttpServer({ headersTimeout: HEADERS_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS }, counted as never);
    server = plain;
  }
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  // A socket error (client reset) must never take the process down.
  server.on('clientError', (_err: Error, socket: Socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : options.port;

  return {
    server,
    port,
    host: options.host,
    async stop(graceMs: number) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      if ('closeIdleConnections' in server) server.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (active > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
