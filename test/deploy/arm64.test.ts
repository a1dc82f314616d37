// The arm64 package's Node.js and Cove under emulation (see arm64.ts): the runtime is arm64 and
// the pinned version, `cove --version` answers as /usr/bin/cove runs it, the demo (origin, cold and
// warm pulls, a crowd, a site of three, an outage) completes with every digest verified, and the
// tests of the store, the peer table and protocol, the pull path and peers pass on it.
//
// The files chosen assert on bytes, digests and request counts, not on time: under emulation on a
// shared machine code runs several times slower, and tests bounded by wall-clock deadlines (the fill
// state machine's, Range answers ahead of a fill, site failover) are left to the native run.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT } from '../e2e/real.js';
import { arm64Root, runEmulatedTests } from './arm64.js';

// About 5 minutes alone on 2 cores; twice that beside the rest of the suite.
t.setTimeout(20 * 60_000);

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

t.test('arm64 package: runtime, cove --version and the demo', async (t) => {
  const arm = await arm64Root(t);
  if (!arm) return;
  const runtime = await arm.node(['-p', '`${process.arch} ${process.version}`'], 120_000);
  t.equal(runtime.stdout.trim(), 'arm64 v22.23.5', 'the bundled node is an arm64 Node.js 22.23.5');
  // What /usr/bin/cove runs.
  const version = await arm.node(['--max-semi-space-size=1', join(arm.prefix, 'dist', 'src', 'cli.js'), '--version'], 120_000);
  t.equal(version.stdout.trim(), VERSION, 'cove --version on arm64');

  const demo = await arm.node([join(arm.prefix, 'dist', 'scripts', 'demo.js')], 300_000);
  t.equal(demo.code, 0, `the demo completes on arm64 in ${(demo.ms / 1000).toFixed(0)} s${demo.code === 0 ? '' : `: ${demo.stderr.slice(-800)}`}`);
  t.match(demo.stdout, /cold pull[\s\S]*origin: 5 blob GET\(s\)/, 'demo: the cold pull fetches each blob from the origin once');
  t.match(demo.stdout, /warm pull[\s\S]*?origin: 0 blob GET\(s\)/, 'demo: the warm pull sends no blob request to the origin');
  t.match(demo.stdout, /every client's digests verified: true/, "demo: every crowd client's digests verified");
  t.match(demo.stdout, /every node's digests verified: true/, "demo: every site node's digests verified");
  t.match(demo.stdout, /origin down, warm pull[\s\S]*detail=stale/, 'demo: served stale with the origin down');
});

t.test('arm64 package: tests of the store, peers and the pull path', async (t) => {
  const arm = await arm64Root(t);
  if (!arm) return;
  await runEmulatedTests(t, arm, [
    { file: 'test/store/writer.test.js' },
    { file: 'test/store/blobs.test.js' },
    { file: 'test/store/catalog.test.js' },
    { file: 'test/store/eviction.test.js' },
    { file: 'test/store/cache-cap.test.js' },
    { file: 'test/store/listings.test.js' },
    { file: 'test/peers/table.test.js' },
    { file: 'test/peers/ownership.test.js' },
    { file: 'test/peers/protocol.test.js' },
    { file: 'test/integration/pull.test.js' },
    { file: 'test/integration/manifests.test.js' },
    // Its `cove peers` case starts the CLI as a program of its own, which needs binfmt under emulation.
    { file: 'test/integration/peers.test.js', skip: 'cove peers prints' },
    { file: 'test/integration/peer-faults.test.js' },
  ]);
});
