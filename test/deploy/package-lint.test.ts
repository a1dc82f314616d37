// Both Debian packages as files: lintian finds no error in either, and every warning it still
// gives is one the README explains; each carries Cove, its production packages, LevelDB's binding
// for its own architecture only and a node built for that architecture.
//
// The packages are built beforehand by `npm run package` (.ci/run does it).
import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, requireFiles, requireTools, run } from '../e2e/real.js';

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;

/**
 * Warnings kept, each explained in the README (Install, "lintian"):
 * - hardening-no-pie: the Node.js project builds its release binaries without PIE;
 * - non-standard-file-perm: /etc/cove/cove.env is 0600 on purpose, it may hold secrets;
 * - old-fsf-address-in-copyright-file: licence texts of bundled components, quoted verbatim.
 */
const KEPT_WARNINGS = new Set(['hardening-no-pie', 'non-standard-file-perm', 'old-fsf-address-in-copyright-file']);

/** ELF e_machine of a file: 62 is x86-64, 183 is AArch64. */
function elfMachine(bytes: Buffer): number | null {
  if (bytes.subarray(0, 4).toString('latin1') !== '\x7fELF') return null;
  return bytes.readUInt16LE(18);
}

const ARCHES = [
  { arch: 'amd64', machine: 62, binding: 'usr/lib/cove/node_modules/classic-level/prebuilds/linux-x64/classic-level.node' },
  { arch: 'arm64', machine: 183, binding: 'usr/lib/cove/node_modules/classic-level/prebuilds/linux-arm64/classic-level.armv8.node' },
] as const;

for (const { arch, machine, binding } of ARCHES) {
  const deb = join(ROOT, 'build', `cove_${VERSION}_${arch}.deb`);

  t.test(`cove_${VERSION}_${arch}.deb: contents and control`, async (t) => {
    if (!requireFiles(t, [deb], 'run npm run package first')) return;
    const control = (await run('dpkg-deb', ['-f', deb])).stdout;
    t.match(control, new RegExp(`^Architecture: ${arch}$`, 'm'), 'Architecture field');
    t.match(control, new RegExp(`^Version: ${VERSION.replace(/\./g, '\\.')}$`, 'm'), 'Version is package.json\'s');
    t.notMatch(control, /nodejs/, 'no dependency on a Node.js package: the runtime is bundled');
    const listing = (await run('dpkg-deb', ['-c', deb], { timeoutMs: 60_000 })).stdout;
    const files = listing
      .split('\n')
      .filter((l) => l !== '')
      .map((l) => l.replace(/^.*\s\.\//, ''));
    for (const f of ['usr/bin/cove', 'usr/lib/cove/node', 'usr/lib/cove/dist/src/cli.js', 'usr/lib/cove/package.json', 'lib/systemd/system/cove.service', 'etc/cove/cove.env', 'usr/share/doc/cove/copyright', 'usr/share/man/man1/cove.1.gz', 'usr/share/cove/grafana/cove.json', 'usr/share/cove/prometheus/cove-rules.yml']) {
      t.ok(files.includes(f), `ships ${f}`);
    }
    const prebuilds = files.filter((f) => /\.(node|bare)$/.test(f));
    t.same(prebuilds, [binding], `one native addon: LevelDB's binding for ${arch}`);
    t.same(files.filter((f) => /\.(map|ts)$/.test(f) && !f.endsWith('/')), [], 'no source maps or TypeScript sources');
    t.same(files.filter((f) => f.includes('/dist/test/') || f.includes('/dist/scripts/')), [], 'no tests or scripts of the checkout');
    // The first bytes of a packaged file, exact (through od: run() decodes output as UTF-8).
    const firstBytes = async (path: string, n: number) => {
      const od = await run('sh', ['-c', `dpkg-deb --fsys-tarfile "$1" | tar -xO "./$2" | head -c ${n} | od -An -tu1 -v`, 'sh', deb, path], { timeoutMs: 60_000 });
      return Buffer.from(od.stdout.trim().split(/\s+/).map(Number));
    };
    const machineOf = async (path: string) => elfMachine(await firstBytes(path, 20));
    t.equal(await machineOf('usr/lib/cove/node'), machine, `the bundled node is built for ${arch}`);
    t.equal(await machineOf(binding), machine, `LevelDB's binding is built for ${arch}`);
    t.match((await firstBytes('usr/bin/cove', 64)).toString('latin1'), /^#!\/bin\/sh\n/, '/usr/bin/cove is a shell wrapper');
  });

  t.test(`lintian on cove_${VERSION}_${arch}.deb: no errors, only the warnings the README explains`, async (t) => {
    if (!requireFiles(t, [deb], 'run npm run package first')) return;
    if (!requireTools(t, ['lintian'])) return;
    const lint = await run('lintian', ['--fail-on', 'error', '--tag-display-limit', '0', deb], { allowFail: true, timeoutMs: 280_000 });
    const lines = lint.stdout.split('\n').filter((l) => /^[EW]: /.test(l));
    t.same(lines.filter((l) => l.startsWith('E: ')), [], 'no lintian errors');
    t.equal(lint.code, 0, `lintian --fail-on error exits 0: ${lint.stderr.trim()}`);
    const warnings = [...new Set(lines.filter((l) => l.startsWith('W: ')).map((l) => l.split(' ')[2]!))];
    t.same(warnings.filter((w) => !KEPT_WARNINGS.has(w)), [], `every warning is an explained one (${warnings.join(', ')})`);
  });
}
