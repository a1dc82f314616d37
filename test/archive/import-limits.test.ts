// Decompression bombs: an import's decompressed bytes are bounded in all (COVE_IMPORT_MAX_BYTES)
// and per compressed byte (COVE_IMPORT_MAX_RATIO). A 1 MiB gzip of zeros that expands to 1 GiB
// (it used to become a 1 GiB temp file) is refused after a few MiB, its temp file removed,
// nothing imported; through /admin/import the refusal is a 413 that names the limit.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import t from 'tap';
import { ArchiveError, importArchive } from '../../src/archive/import.js';
import { startTestCove, type TestCove } from '../helpers/cove.js';
import { openStore, resolveName, snapshot, type Env } from './helpers.js';

const MiB = 1024 * 1024;

/** A ustar header for one file entry of `size` bytes (docker save's `<id>/layer.tar`). */
function header(name: string, size: number): Buffer {
  const h = Buffer.alloc(512);
  const field = (offset: number, length: number, value: string) => h.write(value, offset, length, 'latin1');
  const octal = (offset: number, length: number, value: number) => field(offset, length, `${value.toString(8).padStart(length - 1, '0')}\0`);
  field(0, 100, name);
  octal(100, 8, 0o644);
  octal(108, 8, 0);
  octal(116, 8, 0);
  octal(124, 12, size);
  octal(136, 12, 0);
  field(148, 8, '        ');
  field(156, 1, '0');
  field(257, 6, 'ustar\0');
  field(263, 2, '00');
  let sum = 0;
  for (const byte of h) sum += byte;
  field(148, 8, `${sum.toString(8).padStart(6, '0')}\0 `);
  return h;
}

/**
 * A gzip bomb: `expandedMiB` MiB of zeros in one tar entry, as a multi-member gzip (one member
 * per MiB, each ~1 KiB), so building it costs no time: gunzip reads the members as one stream.
 */
function gzipBomb(expandedMiB: number): Buffer {
  const zeros = gzipSync(Buffer.alloc(MiB), { level: 9 });
  const first = gzipSync(header('0123abcd/layer.tar', expandedMiB * MiB));
  // The entry's MiBs, then the two zero blocks that end a tar.
  return Buffer.concat([first, ...Array.from({ length: expandedMiB }, () => zeros), gzipSync(Buffer.alloc(1024))]);
}

/** Streams `bytes` in 64 KiB chunks. */
function streamOf(bytes: Buffer): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < bytes.length; i += 64 * 1024) yield bytes.subarray(i, i + 64 * 1024);
    })(),
  );
}

/** Largest total size of the files in `dir` seen while `work` runs (sampled every 5 ms). */
async function watchDir<T>(dir: string, work: () => Promise<T>): Promise<{ peak: number; outcome: T | unknown }> {
  let peak = 0;
  const sample = () => {
    let total = 0;
    for (const name of readdirSync(dir)) {
      try {
        total += statSync(join(dir, name)).size;
      } catch {
        // removed between readdir and stat
      }
    }
    peak = Math.max(peak, total);
  };
  const timer = setInterval(sample, 5);
  try {
    const outcome = await work().catch((err: unknown) => err);
    return { peak, outcome };
  } finally {
    clearInterval(timer);
    sample();
  }
}

const options = (env: Env) => ({ store: env.store, catalog: env.catalog, log: env.log, resolveName });

t.test('a 1 MiB gzip of zeros that expands to 1 GiB is refused quickly; no large temp file, nothing imported', async (t) => {
  const env = await openStore(t);
  const bomb = gzipBomb(1024);
  t.ok(bomb.length < 1.5 * MiB, `the bomb is ${(bomb.length / MiB).toFixed(2)} MiB of gzip`);
  const before = await snapshot(env);
  const started = Date.now();
  const { peak, outcome } = await watchDir(env.store.tmpDir, () => importArchive(streamOf(bomb), options(env)));
  const ms = Date.now() - started;
  t.type(outcome, ArchiveError);
  t.equal((outcome as ArchiveError).code, 'ARCHIVE_LIMIT');
  t.match((outcome as ArchiveError).message, /expands more than 100 times \(COVE_IMPORT_MAX_RATIO\).*decompression bomb/);
  t.ok(ms < 5000, `refused in ${ms} ms`);
  t.ok(peak < 32 * MiB, `the temp directory never held more than ${(peak / MiB).toFixed(1)} MiB`);
  t.same(readdirSync(env.store.tmpDir), [], 'the temp file is removed');
  t.same(await snapshot(env), before, 'nothing imported');
  t.ok(env.lines.some((l) => l.msg === 'archive import failed; nothing kept' && l.code === 'ARCHIVE_LIMIT'), 'the log says why');
});

t.test('the total cap holds for plain and gzip archives; with the ratio check off, only the cap', async (t) => {
  const env = await openStore(t);
  const plain = Buffer.concat([header('0123abcd/layer.tar', 3 * MiB), Buffer.alloc(3 * MiB)]);
  const err = await importArchive(streamOf(plain), { ...options(env), limits: { maxBytes: 2 * MiB, maxRatio: 100 } }).catch((e: unknown) => e);
  t.match(err, { code: 'ARCHIVE_LIMIT', message: /larger than 2097152 bytes once decompressed \(COVE_IMPORT_MAX_BYTES\)/ });
  const bomb = gzipBomb(40);
  const capped = await importArchive(streamOf(bomb), { ...options(env), limits: { maxBytes: 20 * MiB, maxRatio: 0 } }).catch((e: unknown) => e);
  t.match(capped, { code: 'ARCHIVE_LIMIT', message: /COVE_IMPORT_MAX_BYTES/ }, 'ratio off: the cap still stops it');
  t.same(readdirSync(env.store.tmpDir), []);
  // Below the ratio floor a small archive may compress as well as it likes (it is then a tar of
  // zeros with no image in it: refused for its format, not for its size).
  const small = await importArchive(streamOf(gzipBomb(8)), options(env)).catch((e: unknown) => e);
  t.match(small, { code: 'ARCHIVE_FORMAT' }, '8 MiB from a few KiB passes the limits');
});

t.test('/admin/import answers a bomb with 413 naming the limit', async (t) => {
  const cove = await startTestCove(t, 'http://127.0.0.1:9');
  // Over the admin socket, as the cove command sends an archive.
  const post = (body: Buffer, on: TestCove = cove) => on.adminFetch('/admin/import', { method: 'POST', body: new Uint8Array(body), headers: { 'content-type': 'application/gzip' } });
  const r = await post(gzipBomb(1024));
  t.equal(r.status, 413);
  const error = ((await r.json()) as { errors: Array<{ code: string; message: string }> }).errors[0]!;
  t.equal(error.code, 'ARCHIVE_LIMIT');
  t.match(error.message, /COVE_IMPORT_MAX_RATIO/);
  t.same(readdirSync(join(cove.dataDir, 'blobs', 'tmp')), [], 'no temp file left');

  const capped = await startTestCove(t, 'http://127.0.0.1:9', { COVE_IMPORT_MAX_BYTES: '4MiB', COVE_IMPORT_MAX_RATIO: '0' });
  const r2 = await post(gzipBomb(16), capped);
  t.equal(r2.status, 413);
  t.match(await r2.text(), /larger than 4194304 bytes once decompressed \(COVE_IMPORT_MAX_BYTES\)/);
});
