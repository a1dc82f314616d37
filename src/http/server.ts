// The listener: plain HTTP/1.1 by default; with a certificate, an HTTP/2 secure server that also
// speaks HTTP/1.1 (ALPN), which is what Docker, containerd and podman negotiate.
//
// Both accept TCP through a front of their own (a net.Server) that admits each connection
// against the connection caps before any HTTP or TLS work is done for it. Deadlines: a client
// gets `headersTimeoutMs` from the moment it connects (TLS handshake included) to finish its
// first request's headers, the same for each later request from its first byte, and
// `requestTimeoutMs` for a whole request. An idle keep-alive connection is closed after
// `headersTimeoutMs` too: an HTTP/2 session without open streams whatever bytes it trickles.
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createSecureServer, type Http2SecureServer, type Http2Session, type ServerHttp2Stream } from 'node:http2';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Logger } from '../log.js';
import { ConnectionGate } from './connection-gate.js';
import { closeSession, guardSession, guardStream } from './h2-deadlines.js';
import { answerAndClose, rawErrorResponse } from './raw-answer.js';
import { sendJson, type Req, type Res } from './respond.js';

export type AnyServer = HttpServer | Http2SecureServer;

/** A listening server and a graceful stop. */
export interface Listener {
  server: AnyServer;
  port: number;
  host: string;
  /** Stops accepting, lets requests finish for up to `graceMs`, then cuts what remains. */
  stop(graceMs: number): Promise<void>;
}

/** What one client may ask of a listener (COVE_HEADERS_TIMEOUT, COVE_MAX_CONNECTIONS, ...). */
export interface ListenerLimits {
  /**
   * A request's headers must be complete this long after the connection opened or the request
   * began; also how long an idle keep-alive connection (HTTP/2: a session without streams) stays.
   */
  headersTimeoutMs: number;
  /** The whole request, body included, must arrive within this long; 0: no bound. */
  requestTimeoutMs: number;
  /** Largest request head (HTTP/1.1) or header list (HTTP/2), in bytes. */
  maxHeaderBytes: number;
  /** Open connections in all (shared by the listeners that share a gate). */
  maxConnections: number;
  /** Open connections from one client address (an IPv6 client: its /64). */
  maxConnectionsPerClient: number;
}

export interface ListenOptions {
  host: string;
  port: number;
  tls: { cert: string; key: string } | null;
  limits: ListenerLimits;
  /** The connection counts to admit against; share one between listeners to share the caps. */
  gate?: ConnectionGate;
  /** Where refused connections are reported (a summary at most every few seconds). */
  log?: Logger;
}

/** A TLS connection with no traffic at all is closed after this long. */
const IDLE_TIMEOUT_MS = 120_000;
/**
 * Concurrent streams one HTTP/2 session may have open: clients pull 3 to 6 blobs at a time; 100
 * is the floor RFC 9113 recommends, and bounds what one connection can make Cove work on.
 */
const MAX_CONCURRENT_STREAMS = 100;
/**
 * nghttp2's buffers per session, in MB (Node's unit). Node's default of 10 stays: response data
 * is written with backpressure, so a session holds little, and a lower figure would refuse the
 * streams of a busy, honest session before it bounded anything an attacker could not get anyway.
 */
const MAX_SESSION_MEMORY_MB = 10;
/** Connections over a cap that may wait for their request to be answered 429/503 at once; the rest are just closed. */
const MAX_REFUSED_ANSWERING = 64;
/** How long an over-the-cap connection may take to send its request line before it is closed unanswered. */
const REFUSED_WAIT_MS = 1_000;
/** Refused connections are logged as one summary line at most this often. */
const REFUSED_LOG_EVERY_MS = 10_000;

export async function listen(handler: (req: Req, res: Res) => void, options: ListenOptions): Promise<Listener> {
  const { limits } = options;
  const gate = options.gate ?? new ConnectionGate(limits);
  const sockets = new Set<Socket>();
  const sessions = new Set<Http2Session>();
  const firstRequest = new FirstRequestDeadlines(limits.headersTimeoutMs);
  const refusals = new RefusalLog(options.log);
  let refusedAnswering = 0;
  let active = 0;
  const counted = (req: Req, res: Res) => {
    active++;
    res.on('close', () => active--);
    // HTTP/2 streams are seen by the session's guard (its socket proxy fails once the session is gone).
    if (req.httpVersionMajor === 1) firstRequest.arrived(req.socket);
    // HTTP/1.1 requires Host; Node's own refusal would carry no OCI error body.
    if (req.httpVersionMajor === 1 && req.httpVersionMinor === 1 && req.headers.host === undefined) {
      sendJson(res, 400, oneError('UNSUPPORTED', 'an HTTP/1.1 request needs a Host header'), { connection: 'close' }, req.method === 'HEAD');
      return;
    }
    handler(req, res);
  };
  // Node checks its header and request deadlines on this interval: the cut comes up to one
  // interval late, so it is a small share of the deadline (Node's own 30 s made 30 s into 57).
  const checkEveryMs = Math.max(100, Math.min(1_000, Math.floor(limits.headersTimeoutMs / 10)));
  let server: AnyServer;
  let hand: (socket: Socket) => void;
  if (options.tls) {
    const secure = createSecureServer(
      {
        cert: options.tls.cert,
        key: options.tls.key,
        allowHTTP1: true,
        handshakeTimeout: limits.headersTimeoutMs,
        maxSessionMemory: MAX_SESSION_MEMORY_MB,
        settings: { maxConcurrentStreams: MAX_CONCURRENT_STREAMS, maxHeaderListSize: limits.maxHeaderBytes },
      },
      counted as never,
    );
    // HTTP/1.1 over TLS runs through node:http's connection code with these fields of the
    // secure server (createSecureServer takes none of them as options).
    Object.assign(secure, {
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      keepAliveTimeout: limits.headersTimeoutMs,
      maxHeaderSize: limits.maxHeaderBytes,
      connectionsCheckingInterval: checkEveryMs,
    });
    // An HTTP/2 session (or HTTP/1.1 connection) that moves nothing for this long is closed.
    secure.setTimeout(IDLE_TIMEOUT_MS);
    secure.on('session', (session: Http2Session) => {
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
      const socket = session.socket;
      guardSession(session, limits.headersTimeoutMs, () => firstRequest.arrived(socket));
    });
    secure.on('stream', (stream: ServerHttp2Stream) => guardStream(stream, limits.requestTimeoutMs));
    server = secure;
    hand = (socket) => {
      firstRequest.start(socket);
      sniff(socket, secure);
    };
  } else {
    const plain = createHttpServer(
      {
        headersTimeout: limits.headersTimeoutMs,
        requestTimeout: limits.requestTimeoutMs,
        keepAliveTimeout: limits.headersTimeoutMs,
        maxHeaderSize: limits.maxHeaderBytes,
        connectionsCheckingInterval: checkEveryMs,
        requireHostHeader: false,
      },
      counted as never,
    );
    server = plain;
    hand = (socket) => plain.emit('connection', socket);
  }
  // The HTTP server never listens itself (the front does), but its 'listening' is what starts
  // Node's tracking of connections and the timer that enforces headersTimeout/requestTimeout.
  server.emit('listening');
  server.on('clientError', answerClientError);
  // CONNECT has no meaning here; without a listener Node drops the connection without a word.
  server.on('connect', (_req: IncomingMessage, socket: Duplex) =>
    answerAndClose(socket, rawErrorResponse(405, 'UNSUPPORTED', 'Cove is a registry, not a proxy: CONNECT is not supported', null, { allow: 'GET, HEAD' })),
  );

  const acceptor: NetServer = createNetServer(
    // As node:http's own listener accepts: half-open sockets (a response may follow the client's FIN), no Nagle.
    { allowHalfOpen: !options.tls, noDelay: true },
    (socket) => {
      sockets.add(socket);
      socket.once('close', () => sockets.delete(socket));
      socket.on('error', () => socket.destroy());
      const admission = gate.admit(socket.remoteAddress);
      if (admission.admitted) {
        socket.once('close', admission.release);
        hand(socket);
        return;
      }
      refusals.add(admission.reason);
      // Over the cap on the TLS port: an answer would cost a handshake, so the connection is just
      // closed. On plain HTTP it costs little to say why, if the request comes at once.
      if (options.tls || refusedAnswering >= MAX_REFUSED_ANSWERING) {
        socket.destroy();
        return;
      }
      refusedAnswering++;
      socket.once('close', () => refusedAnswering--);
      refuseWithAnswer(socket, admission.reason);
    },
  );
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
      // The secure server has it too, for its HTTP/1.1 connections (@types/node does not say so).
      (server as HttpServer).closeIdleConnections();
      for (const session of sessions) closeSession(session);
      const deadline = Date.now() + graceMs;
      while (active > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const socket of sockets) socket.destroy();
      // Stops Node's deadline timer; the server was never listening, so there is nothing else to close.
      server.close();
      refusals.stop();
      await closed;
    },
  };
}

/** The first request's headers, counted from the moment the connection opened (TLS handshake included). */
class FirstRequestDeadlines {
  readonly #ms: number;
  readonly #timers = new Map<string, NodeJS.Timeout>();

  constructor(ms: number) {
    this.#ms = ms;
  }

  /** Starts the deadline of a connection just accepted: cut if no request has arrived by then. */
  start(socket: Socket): void {
    const key = connectionKey(socket);
    const timer = setTimeout(() => socket.destroy(), this.#ms);
    timer.unref();
    this.#timers.set(key, timer);
    socket.once('close', () => {
      clearTimeout(timer);
      this.#timers.delete(key);
    });
  }

  /**
   * A request (or an HTTP/2 stream) arrived on the connection `socket` belongs to: later requests
   * are node's (HTTP/1.1) or the session's idle rule (HTTP/2). `socket` may be the TLS socket or
   * the HTTP/2 session's socket proxy: they carry the same addresses as the raw socket.
   */
  arrived(socket: Duplex | null | undefined): void {
    if (this.#timers.size === 0 || !socket) return;
    const key = connectionKey(socket as Socket);
    const timer = this.#timers.get(key);
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#timers.delete(key);
  }
}

/** One TCP connection's four addresses: the same for the raw socket, its TLS socket and an HTTP/2 session's socket. */
function connectionKey(socket: Socket): string {
  return `${socket.remoteAddress}|${socket.remotePort}|${socket.localAddress}|${socket.localPort}`;
}

/** What Node's parser refused, answered as Node would (400, 408, 413, 431) but with an OCI error body. */
const CLIENT_ERRORS: Record<string, { status: number; message: string }> = {
  HPE_HEADER_OVERFLOW: { status: 431, message: 'request headers too large' },
  HPE_CHUNK_EXTENSIONS_OVERFLOW: { status: 413, message: 'chunk extensions too large' },
  ERR_HTTP_REQUEST_TIMEOUT: { status: 408, message: 'request not received in time' },
  HPE_PAUSED_H2_UPGRADE: { status: 400, message: 'HTTP/2 without TLS (h2c) is not supported; use HTTP/1.1, or HTTP/2 over TLS' },
};

/** Sockets already answered: the parser may report the same connection again as more bytes arrive. */
const answered = new WeakSet<Duplex>();

/** node:http's 'clientError': the request could not be parsed, was too large or too slow. */
function answerClientError(err: Error & { code?: string }, socket: Duplex): void {
  if (answered.has(socket)) return;
  answered.add(socket);
  const code = err.code ?? '';
  const known = CLIENT_ERRORS[code];
  // A socket error (a reset) is no request to answer; nor is one whose response has begun.
  const inFlight = (socket as Duplex & { _httpMessage?: { headersSent?: boolean } | null })._httpMessage;
  if ((!known && !code.startsWith('HPE_')) || !socket.writable || inFlight?.headersSent) {
    socket.destroy();
    return;
  }
  const { status, message } = known ?? { status: 400, message: 'malformed HTTP request' };
  answerAndClose(socket, rawErrorResponse(status, 'UNSUPPORTED', message, { reason: code }));
}

/**
 * An over-the-cap connection on plain HTTP: its request gets 429 (this client has too many
 * connections) or 503 (Cove has too many) with Retry-After, if it sends one at once.
 */
function refuseWithAnswer(socket: Socket, reason: 'total' | 'client'): void {
  const timer = setTimeout(() => socket.destroy(), REFUSED_WAIT_MS);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  socket.once('data', () => {
    clearTimeout(timer);
    const response =
      reason === 'client'
        ? rawErrorResponse(429, 'TOOMANYREQUESTS', 'too many connections from this client; reuse connections or retry later', null, { 'retry-after': '1' })
        : rawErrorResponse(503, 'UNAVAILABLE', 'Cove has too many open connections; retry later', null, { 'retry-after': '1' });
    answerAndClose(socket, response);
  });
}

/** Counts refused connections and logs them as one line at most every few seconds. */
class RefusalLog {
  readonly #log: Logger | undefined;
  readonly #counts = { client: 0, total: 0 };
  #timer: NodeJS.Timeout | undefined;

  constructor(log: Logger | undefined) {
    this.#log = log;
  }

  add(reason: 'client' | 'total'): void {
    this.#counts[reason]++;
    if (this.#log === undefined || this.#timer !== undefined) return;
    this.#timer = setTimeout(() => this.#flush(), REFUSED_LOG_EVERY_MS);
    this.#timer.unref();
  }

  stop(): void {
    clearTimeout(this.#timer);
    this.#flush();
  }

  #flush(): void {
    this.#timer = undefined;
    const { client, total } = this.#counts;
    if (client + total === 0) return;
    this.#log?.warn({ overClientCap: client, overTotalCap: total }, 'connections refused: over the connection caps (COVE_MAX_CONNECTIONS_PER_CLIENT, COVE_MAX_CONNECTIONS)');
    this.#counts.client = 0;
    this.#counts.total = 0;
  }
}

function oneError(code: string, message: string): { errors: Array<{ code: string; message: string; detail: null }> } {
  return { errors: [{ code, message, detail: null }] };
}

/** The first byte of a TLS record carrying a handshake (every ClientHello starts with it). */
const TLS_HANDSHAKE = 0x16;
/** A request line starts with an HTTP method: upper-case ASCII letters. */
const HTTP_METHOD = /^[A-Z]{3,10} /;

/**
 * Looks at the first bytes of a connection to the TLS port: a TLS handshake goes, bytes
 * unconsumed, to the secure server; a plain HTTP request gets a 400 that says to use https
 * (instead of a TLS alert the client shows as garbage, or a hang); anything else is closed.
 * A connection that sends nothing is cut by its first-request deadline.
 */
function sniff(socket: Socket, secure: Http2SecureServer): void {
  socket.once('data', (chunk: Buffer) => {
    socket.pause();
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
  const hint = `plain HTTP was sent to a TLS listener; use ${url}/v2/ (a Docker or containerd client needs the registry configured for https with Cove's CA, not as an insecure http registry)`;
  // Drain what the client still sends (closing with unread data would reset the connection and
  // could lose the answer), but not for long.
  answerAndClose(socket, rawErrorResponse(400, 'UNSUPPORTED', `this port speaks HTTPS; use ${url}`, { hint }), 5_000);
}
