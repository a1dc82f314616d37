// A raw HTTP/2 client for tests that must break the rules node:http2's client keeps: more streams
// than the server allows, a header block that never ends, a request that never ends. It writes
// frames by hand (HPACK literals, no Huffman, no dynamic table) and records the frames it reads.
import { connect, type TLSSocket } from 'node:tls';

export const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7, WINDOW_UPDATE: 8, CONTINUATION: 9 } as const;
export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;
export const ERROR = { NO_ERROR: 0, PROTOCOL_ERROR: 1, REFUSED_STREAM: 7, CANCEL: 8, ENHANCE_YOUR_CALM: 11 } as const;

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** One TLS connection speaking raw HTTP/2 frames. */
export class RawH2 {
  readonly socket: TLSSocket;
  readonly frames: Frame[] = [];
  closed = false;
  /** Acknowledge the server's SETTINGS (a client that sent no preface must not). */
  #ack: boolean;
  #buffer = Buffer.alloc(0);
  #waiters: Array<() => void> = [];

  private constructor(socket: TLSSocket, ack: boolean) {
    this.socket = socket;
    this.#ack = ack;
    socket.on('data', (chunk: Buffer) => this.#read(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  /** Connects with ALPN h2 and sends the preface and an empty SETTINGS; `preface: false` sends nothing. */
  static async open(port: number, ca: string | Buffer, options: { preface?: boolean } = {}): Promise<RawH2> {
    const socket = connect({ host: '127.0.0.1', port, ca, ALPNProtocols: ['h2'], servername: 'localhost' });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    const h2 = new RawH2(socket, options.preface !== false);
    if (options.preface !== false) h2.write(Buffer.concat([PREFACE, frame(FRAME.SETTINGS, 0, 0, Buffer.alloc(0))]));
    return h2;
  }

  write(bytes: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** A GET on `stream`; `endStream: false` leaves the request open, `endHeaders: false` the header block. */
  headers(stream: number, path: string, options: { endStream?: boolean; endHeaders?: boolean; extra?: Array<[string, string]> } = {}): void {
    const block = hpack([[':method', 'GET'], [':scheme', 'https'], [':authority', 'localhost'], [':path', path], ...(options.extra ?? [])]);
    const flags = (options.endStream === false ? 0 : FLAG.END_STREAM) | (options.endHeaders === false ? 0 : FLAG.END_HEADERS);
    this.write(frame(FRAME.HEADERS, flags, stream, block));
  }

  /** Resolves when `match` holds for the frames read so far, or the connection closed; false after `ms`. */
  async until(match: (frames: Frame[], closed: boolean) => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!match(this.frames, this.closed)) {
      if (this.closed || Date.now() >= deadline) return match(this.frames, this.closed);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(1, deadline - Date.now()));
        this.#waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    return true;
  }

  close(): void {
    this.socket.destroy();
  }

  #read(chunk: Buffer): void {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    while (this.#buffer.length >= 9) {
      const length = this.#buffer.readUIntBE(0, 3);
      if (this.#buffer.length < 9 + length) break;
      const f: Frame = { type: this.#buffer[3]!, flags: this.#buffer[4]!, stream: this.#buffer.readUInt32BE(5) & 0x7fffffff, payload: this.#buffer.subarray(9, 9 + length) };
      this.#buffer = this.#buffer.subarray(9 + length);
      this.frames.push(f);
      // Acknowledge the server's SETTINGS, as a client must before the server enforces them.
      if (this.#ack && f.type === FRAME.SETTINGS && !(f.flags & FLAG.ACK)) this.write(frame(FRAME.SETTINGS, FLAG.ACK, 0, Buffer.alloc(0)));
    }
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }
}

/** One frame: 24-bit length, type, flags, 31-bit stream id, payload. */
export function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

/** A header block of literal fields without indexing (RFC 7541 6.2.2), no Huffman coding. */
export function hpack(fields: Array<[string, string]>): Buffer {
  const parts: Buffer[] = [];
  for (const [name, value] of fields) {
    parts.push(Buffer.from([0x00]), integer(Buffer.byteLength(name), 7), Buffer.from(name), integer(Buffer.byteLength(value), 7), Buffer.from(value));
  }
  return Buffer.concat(parts);
}

/** HPACK's prefixed integer (RFC 7541 5.1) with the flag bits above the prefix left zero. */
function integer(n: number, prefixBits: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (n < max) return Buffer.from([n]);
  const bytes = [max];
  n -= max;
  while (n >= 128) {
    bytes.push((n % 128) + 128);
    n = Math.floor(n / 128);
  }
  bytes.push(n);
  return Buffer.from(bytes);
}

/** The error code of a RST_STREAM or GOAWAY frame. */
export function errorCode(f: Frame): number {
  return f.type === FRAME.GOAWAY ? f.payload.readUInt32BE(4) : f.payload.readUInt32BE(0);
}
