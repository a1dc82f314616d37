// Fills of blobs large enough to be hashed by the hash thread (store/file-digest.ts), through the
// faults that matter most to it: a body cut every few MB (the fill resumes, the thread hashes the
// file across attempts) and wrong bytes (nothing stored, no clean body). Issue 15.
import { existsSync, readdirSync } from 'node:fs';
import t from 'tap';
import { hashThreadStats, OFF_THREAD_HASH_MIN_BYTES } from '../../src/store/file-digest.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { makeImage } from '../helpers/images.js';
import { fetchAll, sha256 } from '../helpers/http.js';
import { startTestCove } from '../helpers/cove.js';

const SIZE = OFF_THREAD_HASH_MIN_BYTES + 3_000_001;

function blobPath(dataDir: string, digest: string): string {
  const hex = digest.slice('sha256:'.length);
  return `${dataDir}/blobs/sha256/${hex.slice(0, 2)}/${hex}`;
}

t.test('a large blob cut every 3 MB is resumed, hashed on the thread across attempts, and stored exactly', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [SIZE], seed: 'large-cut' });
  origin.putImage('proj/large', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'cut-every', afterBytes: 3_000_000 });
  const cove = await startTestCove(t, origin.url);
  const jobs = hashThreadStats.jobs;
  const fallbacks = hashThreadStats.fallbacks;

  const [a, b] = await Promise.all([
    fetchAll(`${cove.url}/v2/proj/large/blobs/${layer.digest}`, { timeoutMs: 60_000 }),
    fetchAll(`${cove.url}/v2/proj/large/blobs/${layer.digest}`, { timeoutMs: 60_000 }),
  ]);
  t.equal(a.status, 200);
  t.equal(sha256(a.body), layer.digest, 'first client: the blob');
  t.equal(sha256(b.body), layer.digest, 'second client: the blob');
  await cove.fillsDone();
  t.ok(existsSync(blobPath(cove.dataDir, layer.digest)), 'stored');
  t.ok(origin.count({ method: 'GET', kind: 'blob' }) >= 4, 'the fill resumed several times');
  t.equal(hashThreadStats.jobs, jobs + 1, 'one hash job for the one fill');
  t.equal(hashThreadStats.fallbacks, fallbacks, 'hashed on the thread');
});

t.test('a large blob of wrong bytes: no client gets a clean body, nothing is stored, no temp file stays', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [SIZE], seed: 'large-wrong' });
  origin.putImage('proj/large', '1', image);
  const layer = image.layers[0]!;
  origin.setFault({ digest: layer.digest }, { type: 'wrong-bytes' });
  const cove = await startTestCove(t, origin.url);
  const got = await fetchAll(`${cove.url}/v2/proj/large/blobs/${layer.digest}`, { timeoutMs: 60_000 }).then(
    (r) => `complete ${r.status} ${r.body.length}`,
    () => 'broken',
  );
  t.notMatch(got, /^complete 200/, `no complete-looking 200 (${got})`);
  await cove.fillsDone();
  t.notOk(existsSync(blobPath(cove.dataDir, layer.digest)), 'nothing stored');
  t.same(readdirSync(`${cove.dataDir}/blobs/tmp`), [], 'no temp file left');
});
