// A Cove killed with SIGKILL in the middle of a fill leaves nothing a restarted Cove would serve
// wrongly: the partial temp file is removed at start-up and the blob is fetched again, whole.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';
import { freePort, waitForHttp } from '../helpers/process.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));

t.test('SIGKILL mid-fill: restart serves correct bytes, never the partial file', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [6_000_000], seed: 'sigkill' });
  origin.putImage('proj/crash', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'slow', bytesPerSecond: 2_000_000 }, 1);

  const dataDir = mkdtempSync(join(tmpdir(), 'cove-crash-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const port = await freePort();
  const child = spawn(process.execPath, [CLI, 'serve'], {
    env: { PATH: process.env.PATH, COVE_LISTEN: `127.0.0.1:${port}`, COVE_DATA_DIR: dataDir, COVE_UPSTREAM: origin.url, COVE_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  await waitForHttp(`http://127.0.0.1:${port}/healthz`);

  // Read until about a megabyte has arrived, then kill Cove without warning.
  await new Promise<void>((resolve, reject) => {
    const req = request(`http://127.0.0.1:${port}/v2/proj/crash/blobs/${layer.digest}`, (res) => {
      let got = 0;
      res.on('data', (chunk: Buffer) => {
        got += chunk.length;
        if (got > 1_000_000 && child.exitCode === null) {
          child.kill('SIGKILL');
          resolve();
        }
      });
      res.on('error', () => {});
    });
    req.on('error', () => {});
    req.end();
    setTimeout(() => reject(new Error('the fill never got going')), 10_000).unref();
  });
  await new Promise((r) => child.once('exit', r));

  const tmp = join(dataDir, 'blobs', 'tmp');
  t.ok(readdirSync(tmp).length >= 1, 'the killed fill left a partial temp file');
  const hex = layer.digest.slice(7);
  const finalPath = join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
  t.notOk(existsSync(finalPath), 'no blob under the digest after the kill');

  const cove = await startTestCove(t, origin.url, {}, { dataDir, keepData: true });
  t.same(readdirSync(tmp), [], 'start-up removed the leftover temp file');
  const r = await fetchAll(`${cove.url}/v2/proj/crash/blobs/${layer.digest}`);
  t.equal(r.status, 200);
  t.equal(sha256(r.body), layer.digest, 'restarted Cove serves the correct bytes');
  t.equal(r.headers['cache-status'], 'cove; fwd=miss; stored', 'fetched again, not served from the partial file');
});
