// Who may use the admin endpoints, and what a request to them must look like. Admin requests can
// change what every later pull gets (import, prewarm, pin, invalidate), so:
//   - over HTTP, every caller needs `Authorization: Bearer <COVE_ADMIN_TOKEN>`, loopback included
//     (any local process, or a browser on the node, can reach loopback); without a token set,
//     admin over HTTP is off and the `cove` command uses the admin socket (src/http/admin-socket.ts),
//     whose file mode is the check;
//   - a request that carries a browser's signs of another site (Origin, Sec-Fetch-Site) is
//     refused, token or not, and so is a Host that is not one of Cove's own names (a DNS-rebinding
//     page reaches Cove under the attacker's name);
//   - a body must have the type the endpoint reads, so no HTML form (which can send only
//     text/plain, form-urlencoded or multipart without a preflight) can deliver one, and an
//     endpoint that reads no body accepts none.
import { X509Certificate, createHash, timingSafeEqual } from 'node:crypto';
import { isIP } from 'node:net';
import { hostname, networkInterfaces } from 'node:os';
import type { Readable } from 'node:stream';
import { OciError } from '../errors.js';
import type { Req } from './respond.js';
import type { AdminAction } from './router.js';

/** How a request reached Cove: a TCP listener, or the admin socket (the `cove` command). */
export type AdminChannel = 'tcp' | 'socket';

/** Body types /admin/import reads: tar archives, plain or gzip. The `cove` command sends application/x-tar. */
export const ARCHIVE_TYPES = ['application/x-tar', 'application/tar', 'application/gzip', 'application/x-gzip', 'application/octet-stream'] as const;
/** Body type /admin/prewarm reads (the `cove` command sends it). */
export const JSON_TYPES = ['application/json'] as const;
/** Body types of Harbor's webhook: its Default payload, and a CloudEvents payload in structured mode. */
export const WEBHOOK_TYPES = ['application/json', 'application/cloudevents+json'] as const;

export interface AdminGateOptions {
  /** COVE_ADMIN_TOKEN, or null: admin over HTTP is off. */
  token: string | null;
  /**
   * Names Cove answers for besides loopback, its own addresses and host name: the TLS
   * certificate's names, the upstream hosts (clients reach Cove as Harbor by /etc/hosts), route
   * registry hosts and COVE_ADMIN_HOSTS. "*.example.com" matches one label.
   */
  names: readonly string[];
  /** The admin socket's path, named in the refusal when admin over HTTP is off; null when off. */
  socketPath: string | null;
}

/** A 415: the body is not of a type the endpoint reads (OCI has no code of its own for it). */
class UnsupportedMediaType extends OciError {
  override readonly status = 415;
}

/** Checks each admin request before its endpoint runs; throws the OciError that answers it. */
export class AdminGate {
  readonly #token: string | null;
  readonly #names: Set<string>;
  readonly #wildcards: string[];
  readonly #socketPath: string | null;

  constructor(options: AdminGateOptions) {
    this.#token = options.token;
    this.#socketPath = options.socketPath;
    const names = options.names.map((n) => n.toLowerCase().replace(/\.$/, ''));
    this.#names = new Set(names.filter((n) => !n.startsWith('*.')));
    this.#wildcards = names.filter((n) => n.startsWith('*.')).map((n) => n.slice(1));
  }

  /** Whether the request carries the admin token (never true without one set). */
  hasToken(req: Req): boolean {
    return hasAdminToken(req.headers.authorization, this.#token);
  }

  /** Lets the request through, or throws the refusal. Reads (and checks) the body of bodyless POSTs. */
  async admit(req: Req, action: AdminAction, channel: AdminChannel): Promise<void> {
    this.#checkBrowser(req);
    if (channel === 'tcp') {
      this.#checkHost(req);
      this.#checkToken(req, action);
    }
    await checkBody(req, action);
  }

  #checkBrowser(req: Req): void {
    const site = header(req, 'sec-fetch-site')?.toLowerCase();
    if (site === 'cross-site' || site === 'same-site') {
      throw new OciError('DENIED', `admin endpoints refuse requests a web page of another site sends (Sec-Fetch-Site: ${site})`);
    }
    const origin = header(req, 'origin');
    if (origin === undefined) return;
    const own = ownOrigin(req);
    if (own === null || originOf(origin) !== own) {
      throw new OciError('DENIED', `admin endpoints refuse requests from web pages of another origin (Origin: ${short(origin)}, this Cove: ${own ?? 'unknown'})`);
    }
  }

  #checkHost(req: Req): void {
    const host = requestHost(req);
    if (host === null) throw new OciError('DENIED', 'admin requests need a Host header naming this Cove');
    const name = hostName(host);
    if (name === null || !this.#answersFor(name, req.socket?.localAddress)) {
      throw new OciError(
        'DENIED',
        `admin requests must name this Cove in Host, not "${short(host)}" (a web page can reach Cove under its own name by DNS rebinding); ` +
          'Cove answers for localhost, its addresses, its host name, its TLS names, the upstream hosts and COVE_ADMIN_HOSTS',
      );
    }
  }

  #checkToken(req: Req, action: AdminAction): void {
    if (this.hasToken(req)) return;
    // The peer table is read-only and names no image: loopback may read it as before.
    if (action.kind === 'peers' && isLoopback(req.socket?.remoteAddress)) return;
    if (this.#token === null) {
      const socket = this.#socketPath === null ? 'the admin socket (COVE_ADMIN_SOCKET; it is off)' : `the admin socket ${this.#socketPath}`;
      throw new OciError(
        'DENIED',
        `admin over HTTP is off: no COVE_ADMIN_TOKEN is set. On this host, use the cove command (it talks over ${socket}); ` +
          'or set COVE_ADMIN_TOKEN and send Authorization: Bearer <token>',
      );
    }
    throw new OciError('UNAUTHORIZED', 'admin endpoints need Authorization: Bearer <COVE_ADMIN_TOKEN>, from every address (loopback too)');
  }

  /** Whether Host names this Cove: see AdminGateOptions.names. */
  #answersFor(name: string, localAddress: string | undefined): boolean {
    if (isIP(name) !== 0) {
      const address = plainAddress(name);
      if (isLoopback(address) || address === plainAddress(localAddress ?? '')) return true;
      if (this.#names.has(address)) return true;
      return Object.values(networkInterfaces()).some((list) => list?.some((i) => plainAddress(i.address) === address));
    }
    // RFC 6761: *.localhost is loopback, and browsers resolve it so themselves.
    if (name === 'localhost' || name.endsWith('.localhost')) return true;
    const self = hostname().toLowerCase();
    if (name === self || name === self.split('.')[0]) return true;
    if (this.#names.has(name)) return true;
    const dot = name.indexOf('.');
    return dot > 0 && this.#wildcards.includes(name.slice(dot));
  }
}

/**
 * The names in a PEM certificate's subjectAltName (DNS names and IP addresses): clients that
 * reach Cove over TLS use one of them.
 */
export function certificateNames(pem: string): string[] {
  let san: string | undefined;
  try {
    san = new X509Certificate(pem).subjectAltName;
  } catch {
    return [];
  }
  if (!san) return [];
  return san
    .split(',')
    .map((part) => part.trim())
    .map((part) => /^(?:DNS|IP Address):(.+)$/.exec(part)?.[1]?.trim().toLowerCase())
    .filter((name): name is string => name !== undefined && name !== '');
}

/** Whether a request carries `Authorization: Bearer <COVE_ADMIN_TOKEN>` (never true without a token set). */
export function hasAdminToken(authorization: string | undefined, token: string | null): boolean {
  if (token === null) return false;
  const sent = /^Bearer\s+(.+)$/i.exec(String(authorization ?? '').trim())?.[1] ?? '';
  // Hashes have equal length, so the comparison takes the same time whatever was sent.
  const digest = (text: string) => createHash('sha256').update(text).digest();
  return timingSafeEqual(digest(sent), digest(token));
}

/** The body each endpoint reads: JSON, an archive, or none (a POST that must carry nothing). */
async function checkBody(req: Req, action: AdminAction): Promise<void> {
  switch (action.kind) {
    case 'prewarm':
      return requireType(req, JSON_TYPES, '/admin/prewarm');
    case 'harbor-webhook':
      return requireType(req, WEBHOOK_TYPES, '/admin/webhook/harbor');
    case 'import':
      return requireType(req, ARCHIVE_TYPES, '/admin/import');
    case 'invalidate':
    case 'gc':
    case 'pin':
      return requireNoBody(req);
    case 'images':
    case 'export':
    case 'peers':
      return;
  }
}

function requireType(req: Req, allowed: readonly string[], endpoint: string): void {
  const sent = header(req, 'content-type');
  const type = sent?.split(';')[0]!.trim().toLowerCase();
  if (type !== undefined && allowed.includes(type)) return;
  throw new UnsupportedMediaType(
    'UNSUPPORTED',
    `${endpoint} reads a body of type ${allowed.join(', ')}; ${sent === undefined ? 'the request has no Content-Type' : `got Content-Type: ${short(sent)}`}`,
    { detail: { allowed } },
  );
}

/**
 * A POST whose endpoint reads nothing must send nothing: no length, no chunks, and (HTTP/2
 * marks neither) no data before the stream ends. An empty body ends at once.
 */
async function requireNoBody(req: Req): Promise<void> {
  const length = header(req, 'content-length');
  const refuse = () =>
    new UnsupportedMediaType('UNSUPPORTED', `${(req.url ?? '').split('?')[0]} takes no request body; its parameters go in the query string`);
  if (header(req, 'transfer-encoding') !== undefined || (length !== undefined && length.trim() !== '0')) throw refuse();
  for await (const chunk of req as unknown as Readable) {
    if ((chunk as Buffer).length > 0) {
      (req as unknown as Readable).resume();
      throw refuse();
    }
  }
}

function header(req: Req, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/** Host (HTTP/1.1) or :authority (HTTP/2). */
function requestHost(req: Req): string | null {
  const host = header(req, 'host') ?? header(req, ':authority');
  return host === undefined || host.trim() === '' ? null : host.trim();
}

/** scheme://host[:port] of Cove as this request reached it, normalised as an Origin is. */
function ownOrigin(req: Req): string | null {
  const host = requestHost(req);
  if (host === null) return null;
  // HTTP/2 is served only with TLS; HTTP/1.1 over TLS has an encrypted socket.
  const tls = req.httpVersionMajor === 2 || (req.socket as { encrypted?: boolean } | undefined)?.encrypted === true;
  return originOf(`${tls ? 'https' : 'http'}://${host}`);
}

function originOf(text: string): string | null {
  try {
    const url = new URL(text);
    return url.origin === 'null' ? null : url.origin;
  } catch {
    return null;
  }
}

/** The host part of a Host header, lower-case, without port, brackets or a trailing dot; null if malformed. */
function hostName(host: string): string | null {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+))(?::\d{1,5})?$/.exec(host);
  if (!m) return null;
  const name = (m[1] ?? m[2]!).toLowerCase().replace(/\.$/, '');
  return name === '' ? null : name;
}

/** An address without the IPv4-mapped prefix (::ffff:127.0.0.1 is 127.0.0.1). */
function plainAddress(address: string): string {
  return address.toLowerCase().replace(/^::ffff:(?=\d+\.\d+\.\d+\.\d+$)/, '');
}

function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const plain = plainAddress(address);
  return plain === '::1' || plain.startsWith('127.');
}

function short(text: string): string {
  return text.length > 100 ? `${text.slice(0, 100)}…` : text;
}
