// uploadArchive, the `cove import` side: the file arrives byte for byte over a Unix socket and
// over loopback HTTP with the request's path, query and headers; an answer that comes before
// the whole file is sent (Cove refusing a bad archive early) is the answer; no listener is an
// error that says why.
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t, { type Test } from 'tap';
import { uploadArchive } from '../../src/archive/upload.js';
import { randomBytes, sha256Of } from '../helpers/images.js';

const MiB = 1024 * 1024;

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'cove-upload-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A server on `listenOn` (a socket path, or loopback when undefined); closed on teardown. */
async function serve(t: Test, handler: (req: IncomingMessage, res: ServerResponse) => void, listenOn?: string): Promise<Server> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => (listenOn === undefined ? server.listen(0, '127.0.0.1', resolve) : server.listen(listenOn, resolve)));
  t.teardown(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return server;
}

/** Answers with the request line, the headers that matter and the body's digest and length. */
function digestEcho(req: IncomingMessage, res: ServerResponse): void {
  const hash = createHash('sha256');
  let length = 0;
  req.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    length += chunk.length;
  });
  req.on('end', () => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ method: req.method, url: req.url, type: req.headers['content-type'], auth: req.headers.authorization ?? null, digest: `sha256:${hash.digest('hex')}`, length }));
  });
}

t.test('the file arrives whole over a Unix socket, with path and query; progress reaches its size', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'app.tar');
  const bytes = randomBytes('upload-socket', 5 * MiB + 12_345);
  writeFileSync(file, bytes);
  const socketPath = join(dir, 'admin.sock');
  await serve(t, digestEcho, socketPath);
  const progress: number[] = [];
  const reply = await uploadArchive({ base: 'http://localhost', socketPath, headers: {} }, '/admin/import?tag=proj%2Fapp%3A1&pin=1', file, (n) => progress.push(n));
  t.equal(reply.status, 200);
  t.ok(reply.ok);
  t.same(await reply.json(), { method: 'POST', url: '/admin/import?tag=proj%2Fapp%3A1&pin=1', type: 'application/x-tar', auth: null, digest: sha256Of(bytes), length: bytes.length });
  t.equal(progress.at(-1), bytes.length, 'progress reaches the file size');
  t.ok(progress.every((n, i) => i === 0 || n > progress[i - 1]!), 'progress only grows');
});

t.test('over loopback HTTP the headers given (the admin token) go with the file', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'app.tar');
  const bytes = randomBytes('upload-http', 300_000);
  writeFileSync(file, bytes);
  const server = await serve(t, digestEcho);
  const { port } = server.address() as AddressInfo;
  const reply = await uploadArchive({ base: `http://127.0.0.1:${port}`, headers: { authorization: 'Bearer s3cret' } }, '/admin/import', file);
  t.match(await reply.json(), { url: '/admin/import', auth: 'Bearer s3cret', digest: sha256Of(bytes), length: bytes.length });
});

t.test('an answer before the whole file is sent is the answer, and the rest is not sent', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'big.tar');
  writeFileSync(file, Buffer.alloc(64 * MiB, 1));
  const socketPath = join(dir, 'admin.sock');
  let received = 0;
  await serve(
    t,
    (req, res) => {
      req.once('data', (chunk: Buffer) => {
        received += chunk.length;
        // Refused at the first bytes; what the client still sends is read and dropped (as Cove does).
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ errors: [{ code: 'ARCHIVE_DIGEST_MISMATCH', message: 'tampered' }] }));
        req.on('data', (more: Buffer) => (received += more.length));
      });
    },
    socketPath,
  );
  const reply = await uploadArchive({ base: 'http://localhost', socketPath, headers: {} }, '/admin/import', file);
  t.equal(reply.status, 400);
  t.notOk(reply.ok);
  t.match(await reply.text(), /ARCHIVE_DIGEST_MISMATCH/);
  t.ok(received < 64 * MiB, `the upload stopped after ${received} of ${64 * MiB} bytes`);
});

t.test('no listener: rejects with the reason', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'app.tar');
  writeFileSync(file, randomBytes('upload-none', 1000));
  await t.rejects(uploadArchive({ base: 'http://localhost', socketPath: join(dir, 'absent.sock'), headers: {} }, '/admin/import', file), { code: 'ENOENT' });
  // A port nothing listens on (the server is closed before the upload).
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await t.rejects(uploadArchive({ base: `http://127.0.0.1:${port}`, headers: {} }, '/admin/import', file), { code: 'ECONNREFUSED' });
});

t.test('a file that cannot be read: rejects with the reason', async (t) => {
  const dir = tempDir(t);
  const socketPath = join(dir, 'admin.sock');
  await serve(t, digestEcho, socketPath);
  await t.rejects(uploadArchive({ base: 'http://localhost', socketPath, headers: {} }, '/admin/import', join(dir, 'absent.tar')), { code: 'ENOENT' });
});
