// Answers written straight onto a socket, for the cases no request object exists for: a request
// Node's parser refused (bad syntax, headers too large, too slow), a connection over the cap, plain
// HTTP on the TLS port, CONNECT. Each is a complete HTTP/1.1 response with an OCI error body, then
// the connection closes.
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { API_HEADERS } from './respond.js';

/** How long a closing connection may keep sending before it is cut. */
const DRAIN_MS = 1_000;

/** One HTTP/1.1 response with an OCI error body and `connection: close`. */
export function rawErrorResponse(status: number, code: string, message: string, detail: unknown = null, headers: Record<string, string> = {}): string {
  const body = JSON.stringify({ errors: [{ code, message, detail }] });
  const lines = [
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}`,
    'content-type: application/json',
    `content-length: ${Buffer.byteLength(body)}`,
    ...Object.entries({ ...API_HEADERS, ...headers }).map(([name, value]) => `${name}: ${value}`),
    'connection: close',
  ];
  return `${lines.join('\r\n')}\r\n\r\n${body}`;
}

/**
 * Writes `response`, closes the sending side and cuts the connection once the client closes or
 * after a short drain. Closing at once with unread request bytes would make the kernel reset the
 * connection, and a reset can discard the answer before the client reads it.
 */
export function answerAndClose(socket: Duplex, response: string, drainMs = DRAIN_MS): void {
  socket.on('error', () => socket.destroy());
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.end(response);
  socket.resume();
  const timer = setTimeout(() => socket.destroy(), drainMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  // The client read the answer and closed: cut once the answer is out (a destroy before that
  // could discard it).
  socket.once('end', () => {
    if (socket.writableFinished) socket.destroy();
    else socket.once('finish', () => socket.destroy());
  });
}
