// The admin socket: a Unix domain socket, mode 0600 and owned by Cove's user, on which the `cove`
// command reaches the admin endpoints without a token. The file mode is the authentication: only
// Cove's own user (and root) may connect. No browser can open a Unix socket.
//
// Created so that nobody can connect before the mode is 0600: Cove binds inside a fresh private
// directory (mkdtemp, 0700) beside the final path, sets the mode, and only then links the socket
// to its name; link() never replaces what is there. At start a stale socket (one nobody
// answers on) is removed; anything else at the path (a regular file, a symbolic link, a
// directory, a socket another process answers on) is left alone and start-up stops with a
// message saying what is there.
import { chmod, link, lstat, mkdtemp, rm, stat, unlink } from 'node:fs/promises';
import { createServer } from 'node:http';
import { connect, type Socket } from 'node:net';
import { dirname, join } from 'node:path';
import { CoveError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Req, Res } from './respond.js';

/** How long a connection to an existing socket may take before it counts as stale. */
const PROBE_TIMEOUT_MS = 1000;
/** A client gets this long to send its request headers (as on the TCP listener). */
const HEADERS_TIMEOUT_MS = 30_000;
const KEEP_ALIVE_TIMEOUT_MS = 30_000;

/** The admin socket cannot be created; start-up stops with this message. */
export class AdminSocketError extends CoveError {
  constructor(message: string, options?: { cause?: unknown }) {
    super('ADMIN_SOCKET', message, options);
  }
}

/** A listening admin socket. */
export interface AdminSocket {
  path: string;
  /** Stops accepting, lets requests finish for up to `graceMs`, then cuts the rest and removes the socket file. */
  stop(graceMs: number): Promise<void>;
}

/** Serves `handler` on a new Unix socket at `path` (mode 0600); see the file comment. */
export async function openAdminSocket(path: string, handler: (req: Req, res: Res) => void, log: Logger): Promise<AdminSocket> {
  await clearStale(path, log);
  await warnIfShared(dirname(path), log);
  const sockets = new Set<Socket>();
  let active = 0;
  const server = createServer({ headersTimeout: HEADERS_TIMEOUT_MS, keepAliveTimeout: KEEP_ALIVE_TIMEOUT_MS }, (req, res) => {
    active++;
    res.on('close', () => active--);
    handler(req, res);
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  server.on('clientError', (_err: Error, socket: Socket) => socket.destroy());

  let inode: number;
  const privateDir = await mkdtemp(join(dirname(path), '.admin-sock-')).catch((err: NodeJS.ErrnoException) => {
    throw new AdminSocketError(`admin socket ${path}: cannot create it in ${dirname(path)} (${err.code ?? err.message}); set COVE_ADMIN_SOCKET elsewhere, or "off"`, { cause: err });
  });
  const bound = join(privateDir, 's');
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(bound, () => {
        server.off('error', reject);
        resolve();
      });
    });
    await chmod(bound, 0o600);
    try {
      await link(bound, path);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new AdminSocketError(
        code === 'EEXIST'
          ? `admin socket ${path}: something appeared at that path while Cove created the socket; it was left alone`
          : `admin socket ${path}: cannot create it (${code ?? (err as Error).message})`,
        { cause: err },
      );
    }
    inode = (await lstat(path)).ino;
  } catch (err) {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    throw err instanceof AdminSocketError ? err : new AdminSocketError(`admin socket ${path}: ${(err as Error).message}`, { cause: err });
  } finally {
    // The socket lives on under its name; the private directory and the first name go.
    await rm(privateDir, { recursive: true, force: true });
  }
  log.info({ socket: path }, 'admin socket listening (mode 0600)');

  return {
    path,
    async stop(graceMs: number) {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (active > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      for (const socket of sockets) socket.destroy();
      await closed;
      // Remove the name only while it is still this socket's.
      const now = await lstat(path).catch(() => null);
      if (now?.isSocket() && now.ino === inode) await unlink(path).catch(() => undefined);
    },
  };
}

/** Removes a socket at `path` that nobody answers on; refuses anything else that is there. */
async function clearStale(path: string, log: Logger): Promise<void> {
  let found;
  try {
    found = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new AdminSocketError(`admin socket ${path}: cannot look at that path (${(err as NodeJS.ErrnoException).code})`, { cause: err });
  }
  if (!found.isSocket()) {
    const what = found.isSymbolicLink() ? 'a symbolic link' : found.isDirectory() ? 'a directory' : found.isFile() ? 'a regular file' : 'not a socket';
    throw new AdminSocketError(
      `admin socket ${path}: the path holds ${what}, which Cove does not remove (it removes only a stale socket of its own); move it away, or set COVE_ADMIN_SOCKET to another path or "off"`,
    );
  }
  const probe = await probeSocket(path);
  if (probe !== 'ECONNREFUSED') {
    throw new AdminSocketError(
      probe === 'answers'
        ? `admin socket ${path}: another process answers on it (is another Cove running with this data directory?); stop it, or set COVE_ADMIN_SOCKET to another path`
        : `admin socket ${path}: a socket is there that Cove cannot tell is stale (${probe}); remove it, or set COVE_ADMIN_SOCKET to another path`,
    );
  }
  await unlink(path);
  log.info({ socket: path }, 'removed a stale admin socket left by an earlier run');
}

/** "answers" when a process accepts connections on the socket; else the error code (ECONNREFUSED: nobody listens). */
function probeSocket(path: string): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    const done = (outcome: string) => {
      socket.destroy();
      resolve(outcome);
    };
    // A listener too busy to accept is still a listener.
    socket.setTimeout(PROBE_TIMEOUT_MS, () => done('answers'));
    socket.once('connect', () => done('answers'));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
  });
}

/** A directory others may write to could have the socket's name replaced: say so. */
async function warnIfShared(dir: string, log: Logger): Promise<void> {
  const s = await stat(dir).catch(() => null);
  if (s && (s.mode & 0o022) !== 0) {
    log.warn({ dir, mode: (s.mode & 0o7777).toString(8) }, 'the admin socket is in a directory other users may write to: prefer a private one (COVE_ADMIN_SOCKET)');
  }
}
