// Deadlines Node's HTTP/2 server does not keep by itself. Its only timer counts idle time on the
// socket, which any trickle of bytes resets: a client dripping one CONTINUATION frame (a header
// block that never ends) or PINGs holds a session, and a stream whose request never ends holds a
// slot of the session's concurrent streams, forever.
import { constants as h2, type Http2Session, type ServerHttp2Stream } from 'node:http2';

/** After GOAWAY, how long a closing session's client gets to go before the socket is cut. */
const CLOSE_GRACE_MS = 1_000;

/**
 * A session with no open stream must open one within `idleMs`, bytes or no bytes; otherwise it
 * gets GOAWAY. (No stream is open while a header block is still arriving: the stream starts
 * once its headers are complete.) `onStream` is told of every stream whose headers completed.
 */
export function guardSession(session: Http2Session, idleMs: number, onStream: () => void): void {
  let open = 0;
  let idle: NodeJS.Timeout | undefined;
  const arm = () => {
    idle = setTimeout(() => closeSession(session), idleMs);
    idle.unref();
  };
  session.on('stream', (stream: ServerHttp2Stream) => {
    open++;
    clearTimeout(idle);
    onStream();
    stream.once('close', () => {
      open--;
      if (open === 0 && !session.closed && !session.destroyed) arm();
    });
  });
  session.once('close', () => clearTimeout(idle));
}

/**
 * A stream whose request (headers, then body) has not ended within `requestMs` is reset, like
 * HTTP/1.1's request deadline. Streams that end with their headers (every GET and HEAD a
 * registry client sends) need no timer; a response still being sent is never cut by this.
 */
export function guardStream(stream: ServerHttp2Stream, requestMs: number): void {
  if (requestMs === 0 || stream.endAfterHeaders) return;
  const timer = setTimeout(() => {
    if (!stream.destroyed && !stream.state.remoteClose) stream.close(h2.NGHTTP2_CANCEL);
  }, requestMs);
  timer.unref();
  stream.once('close', () => clearTimeout(timer));
}

/** GOAWAY, then the socket is cut if the client has not gone after a short grace. */
export function closeSession(session: Http2Session): void {
  if (session.destroyed) return;
  session.close();
  setTimeout(() => session.destroy(), CLOSE_GRACE_MS).unref();
}
