// `cove cert`: a local CA (made once, reused after) and a server certificate signed by it, with
// the names in the subjectAltName (Go clients ignore the CN), serverAuth, keys mode 0600.
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { createServer as createHttpsServer } from 'node:https';
import { promisify } from 'node:util';
import { X509Certificate } from 'node:crypto';
import { lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { CertError, instructions, makeCertificates, nameConstraints } from '../../src/cli/cert.js';

const execFileAsync = promisify(execFile);
const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const hasOpenssl = spawnSync('openssl', ['version']).status === 0;

function tmp(t: { teardown(fn: () => unknown): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'cove-cert-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const mode = (path: string) => statSync(path).mode & 0o777;

t.test('a CA and a server certificate that verifies against it, with the SANs', { skip: hasOpenssl ? false : 'openssl not installed' }, async (t) => {
  const dir = join(tmp(t), 'tls');
  const f = makeCertificates({ hosts: ['harbor.example.com', 'Harbor.Test'], ips: ['10.0.0.5', '::1'], outDir: dir, days: 30 });
  t.equal(f.caReused, false, 'first run makes the CA');
  t.equal(mode(f.caKey), 0o600, 'ca.key is 0600');
  t.equal(mode(f.key), 0o600, 'server.key is 0600');
  t.match(execFileSync('openssl', ['verify', '-CAfile', f.caCert, f.cert], { encoding: 'utf8' }), /: OK/, 'openssl verify -CAfile ca.crt server.crt');

  const ca = new X509Certificate(readFileSync(f.caCert));
  const cert = new X509Certificate(readFileSync(f.cert));
  t.ok(ca.ca, 'ca.crt is a CA (basicConstraints CA:TRUE)');
  t.notOk(cert.ca, 'server.crt is not a CA');
  t.ok(cert.verify(ca.publicKey), 'signed by the CA key');
  t.ok(cert.checkIssued(ca), 'issued by the CA');
  t.equal(cert.subjectAltName, 'DNS:harbor.example.com, DNS:harbor.test, IP Address:10.0.0.5, IP Address:0:0:0:0:0:0:0:1', 'every name and address is a SAN');
  t.same(cert.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'extended key usage: serverAuth only');
  t.equal(cert.publicKey.asymmetricKeyType, 'ec', 'ECDSA key');
  t.equal(cert.checkHost('harbor.example.com'), 'harbor.example.com');
  t.equal(cert.checkIP('10.0.0.5'), '10.0.0.5');
  const days = (Date.parse(cert.validTo) - Date.parse(cert.validFrom)) / 86_400_000;
  t.ok(days > 29 && days < 31, `valid for --days 30 (${days.toFixed(1)})`);
  const text = execFileSync('openssl', ['x509', '-in', f.caCert, '-noout', '-text'], { encoding: 'utf8' });
  t.match(text, /Certificate Sign/, 'CA keyUsage includes keyCertSign');

  // A TLS client that trusts only ca.crt accepts the certificate under the hostname.
  const server = createServer({ cert: readFileSync(f.cert), key: readFileSync(f.key) }, (s) => s.end('hi'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const greet = (servername: string) =>
    new Promise<string>((resolve, reject) => {
      const s = connect({ host: '127.0.0.1', port, servername, ca: readFileSync(f.caCert) }, () => s.on('data', (d: Buffer) => resolve(d.toString())));
      s.on('error', reject);
    });
  t.equal(await greet('harbor.test'), 'hi', 'a client trusting the CA connects as harbor.test');
  await t.rejects(greet('other.test'), /altnames|does not match/i, 'a name not in the SAN is refused');

  const help = instructions(f);
  t.match(help, '/etc/docker/certs.d/harbor.example.com/ca.crt');
  t.match(help, '/etc/containerd/certs.d/harbor.example.com/ca.crt');
  t.match(help, '/usr/local/share/ca-certificates/cove-ca.crt');
  t.match(help, 'update-ca-certificates');
  t.match(help, `COVE_TLS_CERT=${f.cert}`);
  t.match(help, `COVE_TLS_KEY=${f.key}`);
  t.match(help, `LoadCredential=server.key:${f.key}`, 'the systemd drop-in hands the key over as a credential');
  t.match(help, 'COVE_TLS_KEY=server.key');
});

t.test('a rerun reuses the CA and issues a new certificate', { skip: hasOpenssl ? false : 'openssl not installed' }, async (t) => {
  const dir = tmp(t);
  const first = makeCertificates({ hosts: ['harbor.test'], ips: [], outDir: dir, days: 10 });
  const caBefore = readFileSync(first.caCert, 'utf8');
  const caKeyBefore = readFileSync(first.caKey, 'utf8');
  const certBefore = readFileSync(first.cert, 'utf8');
  const second = makeCertificates({ hosts: ['harbor.test', 'a.harbor.test'], ips: [], outDir: dir, days: 10 });
  t.equal(second.caReused, true, 'second run reports the CA reused');
  t.equal(readFileSync(second.caCert, 'utf8'), caBefore, 'ca.crt unchanged');
  t.equal(readFileSync(second.caKey, 'utf8'), caKeyBefore, 'ca.key unchanged');
  t.not(readFileSync(second.cert, 'utf8'), certBefore, 'a new server certificate');
  t.match(execFileSync('openssl', ['verify', '-CAfile', second.caCert, second.cert], { encoding: 'utf8' }), /: OK/, 'the new certificate verifies against the same CA');
  t.equal(new X509Certificate(readFileSync(second.cert)).subjectAltName, 'DNS:harbor.test, DNS:a.harbor.test');
  t.match(instructions(second), /^reused the CA/);

  // Half a CA is not silently replaced (clients trust the old ca.crt).
  rmSync(second.caKey);
  t.throws(() => makeCertificates({ hosts: ['harbor.test'], ips: [], outDir: dir, days: 10 }), /ca\.crt exists without .*ca\.key/);
});

t.test('usage errors and a missing openssl', async (t) => {
  const dir = tmp(t);
  t.throws(() => makeCertificates({ hosts: [], ips: [], outDir: dir, days: 10 }), new CertError('cert needs at least one --host NAME (the Harbor hostname clients use) or --ip ADDRESS', 2));
  t.throws(() => makeCertificates({ hosts: ['bad name'], ips: [], outDir: dir, days: 10 }), /is not a DNS name/);
  t.throws(() => makeCertificates({ hosts: ['h.test'], ips: ['10.0.0'], outDir: dir, days: 10 }), /not an IPv4 or IPv6 address/);
  t.throws(() => makeCertificates({ hosts: ['h.test'], ips: [], outDir: dir, days: 0 }), /--days must be/);
  t.throws(() => makeCertificates({ hosts: ['h.test'], ips: [], outDir: dir, days: 10, openssl: join(dir, 'no-openssl') }), /openssl command is needed .*apt-get install openssl/);
});

t.test('the cove cert command', { skip: hasOpenssl ? false : 'openssl not installed' }, async (t) => {
  const dir = join(tmp(t), 'out');
  const r = spawnSync(process.execPath, [CLI, 'cert', '--host', 'harbor.test', '--ip', '127.0.0.1', '--out', dir, '--days', '5'], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /^created a CA: /);
  t.match(r.stdout, `/etc/docker/certs.d/harbor.test/ca.crt`);
  t.match(r.stdout, `COVE_TLS_CERT=${join(dir, 'server.crt')}`);
  const again = spawnSync(process.execPath, [CLI, 'cert', '--host', 'harbor.test', '--out', dir], { encoding: 'utf8' });
  t.equal(again.status, 0, again.stderr);
  t.match(again.stdout, /^reused the CA: /);
  const none = spawnSync(process.execPath, [CLI, 'cert', '--out', dir], { encoding: 'utf8' });
  t.equal(none.status, 2);
  t.match(none.stderr, /cove: cert needs at least one --host/);
  // openssl missing from PATH: a clear message, exit 1.
  writeFileSync(join(dir, 'marker'), '');
  const noTool = spawnSync(process.execPath, [CLI, 'cert', '--host', 'h.test', '--out', dir], { encoding: 'utf8', env: { PATH: join(dir, 'empty') } });
  t.equal(noTool.status, 1);
  t.match(noTool.stderr, /openssl command is needed/);
});

/** Signs a leaf for `san` with the CA in `dir` the way an attacker holding ca.key would. */
function forge(dir: string, caCert: string, caKey: string, san: string, cn = 'forged'): string {
  const key = join(dir, `forged-${san.replace(/\W/g, '_')}.key`);
  const csr = `${key}.csr`;
  const ext = `${key}.ext`;
  const crt = `${key}.crt`;
  execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key]);
  execFileSync('openssl', ['req', '-new', '-key', key, '-subj', `/CN=${cn}`, '-out', csr]);
  writeFileSync(ext, `[v]\nbasicConstraints = critical, CA:FALSE\nextendedKeyUsage = serverAuth\nsubjectAltName = ${san}\n`);
  execFileSync('openssl', ['x509', '-req', '-in', csr, '-CA', caCert, '-CAkey', caKey, '-days', '5', '-extfile', ext, '-extensions', 'v', '-out', crt], { stdio: 'ignore' });
  return crt;
}

const verifies = (caCert: string, crt: string) => spawnSync('openssl', ['verify', '-CAfile', caCert, crt], { encoding: 'utf8' });

t.test('a stolen ca.key cannot sign for other sites: the CA carries critical name constraints', { skip: hasOpenssl ? false : 'openssl not installed' }, async (t) => {
  const dir = tmp(t);
  const f = makeCertificates({ hosts: ['harbor.test'], ips: ['127.0.0.1'], outDir: join(dir, 'tls'), days: 5 });
  const text = execFileSync('openssl', ['x509', '-in', f.caCert, '-noout', '-text'], { encoding: 'utf8' });
  t.match(text, /X509v3 Name Constraints: critical\s+Permitted:\s+DNS:harbor\.test\s+IP:127\.0\.0\.1\/255\.255\.255\.255/, 'openssl x509 -text shows the permitted subtrees');

  const cases: Array<[string, string, boolean]> = [
    ['its own name', 'DNS:harbor.test', true],
    ['a subdomain of its own name', 'DNS:x.harbor.test', true],
    ['its own address', 'IP:127.0.0.1', true],
    ['another site', 'DNS:bank.example', false],
    ['another site beside its own name', 'DNS:harbor.test, DNS:bank.example', false],
    ['another address', 'IP:10.9.8.7', false],
    ['an IPv6 address', 'IP:::1', false],
  ];
  for (const [name, san, ok] of cases) {
    const crt = forge(dir, f.caCert, f.caKey, san);
    const r = verifies(f.caCert, crt);
    if (ok) t.equal(r.status, 0, `${name}: verifies (${r.stdout}${r.stderr})`);
    else t.match(`${r.stdout}${r.stderr}`, /subtree violation/, `${name}: openssl verify refuses it`);
  }

  // And a TLS client that trusts ca.crt refuses a server that presents a forged leaf.
  const crt = forge(dir, f.caCert, f.caKey, 'DNS:bank.example');
  const server = createServer({ cert: readFileSync(crt), key: readFileSync(crt.replace(/\.crt$/, '')) }, (s) => s.end('hi'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  t.teardown(() => server.close());
  const port = (server.address() as { port: number }).port;
  const err = await new Promise<Error | null>((resolve) => {
    const s = connect({ host: '127.0.0.1', port, servername: 'bank.example', ca: readFileSync(f.caCert) }, () => {
      s.destroy();
      resolve(null);
    });
    s.on('error', resolve);
  });
  t.ok(err, 'node:tls refuses the forged certificate');
  t.match(err?.message ?? '', /name constraints|subtree|permitted/i, `refused for the name constraint (${err?.message})`);
});

t.test('name constraints with only DNS names or only addresses shut the other kind', { skip: hasOpenssl ? false : 'openssl not installed' }, async (t) => {
  t.same(nameConstraints(['harbor.test', '*.apps.test'], []), ['permitted;DNS.0 = harbor.test', 'permitted;DNS.1 = .apps.test', 'excluded;IP.0 = 0.0.0.0/0.0.0.0', 'excluded;IP.1 = ::/::']);
  t.same(nameConstraints([], ['10.0.0.5', '::1']), ['permitted;DNS.0 = invalid', 'permitted;IP.0 = 10.0.0.5/255.255.255.255', 'permitted;IP.1 = ::1/ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff']);

  const dir = tmp(t);
  const names = makeCertificates({ hosts: ['harbor.test'], ips: [], outDir: join(dir, 'dns'), days: 5 });
  t.match(verifies(names.caCert, forge(dir, names.caCert, names.caKey, 'IP:10.0.0.1')).stderr + verifies(names.caCert, forge(dir, names.caCert, names.caKey, 'IP:10.0.0.1')).stdout, /excluded subtree violation/, 'a names-only CA signs no address');
  const addrs = makeCertificates({ hosts: [], ips: ['10.0.0.5'], outDir: join(dir, 'ip'), days: 5 });
  t.match(execFileSync('openssl', ['verify', '-CAfile', addrs.caCert, addrs.cert], { encoding: 'utf8' }), /: OK/, 'an address-only certificate verifies (its CN is not taken for a DNS name)');
  const forged = verifies(addrs.caCert, forge(dir, addrs.caCert, addrs.caKey, 'DNS:bank.example', 'bank.example'));
  t.match(forged.stdout + forged.stderr, /permitted subtree violation/, 'an address-only CA signs no DNS name');

  // A reused CA cannot stretch to a name it was not made for: a clear message, no certificate.
  const before = readFileSync(names.cert, 'utf8');
  t.throws(() => makeCertificates({ hosts: ['other.test'], ips: [], outDir: join(dir, 'dns'), days: 5 }), /may only vouch for its own names \(Permitted: DNS:harbor\.test.*make a new CA/);
  t.equal(readFileSync(names.cert, 'utf8'), before, 'the old server certificate is left as it was');
  t.same(readdirSync(join(dir, 'dns')).sort(), ['ca.crt', 'ca.key', 'server.crt', 'server.key'], 'no work files left behind');
});

t.test('--ca-dir: the CA key stays off the node; only ca.crt, server.crt, server.key go to it', { skip: hasOpenssl ? false : 'openssl not installed' }, async (t) => {
  const dir = tmp(t);
  const caDir = join(dir, 'workstation-ca');
  const out = join(dir, 'edge1');
  const r = spawnSync(process.execPath, [CLI, 'cert', '--host', 'harbor.test', '--ca-dir', caDir, '--out', out, '--days', '5'], { encoding: 'utf8' });
  t.equal(r.status, 0, r.stderr);
  t.same(readdirSync(caDir).sort(), ['ca.crt', 'ca.key'], 'the CA directory holds the CA');
  t.same(readdirSync(out).sort(), ['ca.crt', 'server.crt', 'server.key'], 'the node bundle holds no ca.key');
  t.equal(mode(caDir), 0o700, 'a new CA directory is 0700');
  t.equal(mode(join(caDir, 'ca.key')), 0o600);
  t.equal(mode(join(out, 'server.key')), 0o600);
  t.equal(readFileSync(join(out, 'ca.crt'), 'utf8'), readFileSync(join(caDir, 'ca.crt'), 'utf8'), 'ca.crt copied beside the certificate');
  t.match(execFileSync('openssl', ['verify', '-CAfile', join(out, 'ca.crt'), join(out, 'server.crt')], { encoding: 'utf8' }), /: OK/);
  t.match(r.stdout, `The CA key stays in ${caDir}`);
  t.match(r.stdout, 'LoadCredential=server.key:/etc/cove/tls/server.key');
  t.notMatch(r.stdout, /COVE_TLS_KEY=.*workstation-ca/, 'Cove is never pointed at the CA directory');

  // A second node from the same CA: reused, another bundle.
  const out2 = join(dir, 'edge2');
  const again = spawnSync(process.execPath, [CLI, 'cert', '--host', 'harbor.test', '--ca-dir', caDir, '--out', out2], { encoding: 'utf8' });
  t.equal(again.status, 0, again.stderr);
  t.match(again.stdout, /^reused the CA/);
  t.same(readdirSync(out2).sort(), ['ca.crt', 'server.crt', 'server.key']);
});

t.test('a symbolic link planted at an output path is refused, never written through', { skip: hasOpenssl ? false : 'openssl not installed' }, async (t) => {
  const dir = tmp(t);
  const victim = join(dir, 'victim');
  writeFileSync(victim, 'precious\n');
  for (const name of ['server.key', 'server.crt', 'ca.key', 'ca.crt']) {
    const out = join(dir, `out-${name}`);
    mkdirSync(out);
    symlinkSync(victim, join(out, name));
    t.throws(() => makeCertificates({ hosts: ['harbor.test'], ips: [], outDir: out, days: 5 }), new RegExp(`${name.replace('.', '\\.')} is a symbolic link; refusing to follow it`), `${name}: refused`);
    t.equal(readFileSync(victim, 'utf8'), 'precious\n', `${name}: the link's target is untouched`);
    t.ok(lstatSync(join(out, name)).isSymbolicLink(), `${name}: the link is left as it was`);
    t.same(readdirSync(out), [name], `${name}: nothing else written`);
  }
  // The output directory itself a link: refused too.
  const real = join(dir, 'real');
  mkdirSync(real);
  symlinkSync(real, join(dir, 'linked'));
  t.throws(() => makeCertificates({ hosts: ['harbor.test'], ips: [], outDir: join(dir, 'linked'), days: 5 }), /linked is a symbolic link; refusing to write through it/);
  t.same(readdirSync(real), [], 'nothing written where the directory link points');

  // Through the command: a clear one-line message and exit 1.
  const cli = spawnSync(process.execPath, [CLI, 'cert', '--host', 'harbor.test', '--out', join(dir, 'out-server.key')], { encoding: 'utf8' });
  t.equal(cli.status, 1);
  t.match(cli.stderr, /^cove: .*server\.key is a symbolic link; refusing to follow it/);
  t.equal(readFileSync(victim, 'utf8'), 'precious\n');
});

t.test('work files live in a fresh private directory, not at a predictable name', { skip: hasOpenssl ? false : 'openssl not installed' }, async (t) => {
  const dir = tmp(t);
  // The old code wrote its keys under <out>/.cove-cert-<pid>, a name anyone could plant first.
  const planted = join(dir, `.cove-cert-${process.pid}`);
  const victim = join(dir, 'victim');
  writeFileSync(victim, 'precious\n');
  mkdirSync(planted, { mode: 0o777 });
  symlinkSync(victim, join(planted, 'server.key'));
  const f = makeCertificates({ hosts: ['harbor.test'], ips: [], outDir: dir, days: 5 });
  t.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the planted link is not written through');
  t.match(readFileSync(f.key, 'utf8'), /PRIVATE KEY/);
  t.ok(lstatSync(join(planted, 'server.key')).isSymbolicLink(), 'the planted directory is not used');
});

const hasSkopeo = spawnSync('skopeo', ['--version']).status === 0;

t.test('a Go client (skopeo) honours the name constraints', { skip: hasOpenssl && hasSkopeo ? false : 'openssl or skopeo not installed' }, async (t) => {
  const dir = tmp(t);
  const f = makeCertificates({ hosts: ['localhost'], ips: ['127.0.0.1'], outDir: join(dir, 'tls'), days: 5 });
  const certs = join(dir, 'certs');
  mkdirSync(certs);
  writeFileSync(join(certs, 'ca.crt'), readFileSync(f.caCert));
  const forged = forge(dir, f.caCert, f.caKey, 'DNS:localhost, DNS:bank.example');
  const inspect = async (cert: string, key: string) => {
    const server = createHttpsServer({ cert: readFileSync(cert), key: readFileSync(key) }, (req, res) => {
      res.writeHead(req.url === '/v2/' ? 200 : 404, { 'content-type': 'application/json', 'docker-distribution-api-version': 'registry/2.0' });
      res.end(req.url === '/v2/' ? '{}' : '{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no such image","detail":null}]}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const port = (server.address() as { port: number }).port;
      const r = await execFileAsync('skopeo', ['inspect', '--cert-dir', certs, `docker://localhost:${port}/proj/app:1`], { timeout: 20_000 }).catch((e: { stderr: string }) => e);
      return (r as { stderr: string }).stderr;
    } finally {
      server.close();
    }
  };
  t.match(await inspect(f.cert, f.key), /manifest unknown/, 'the issued certificate is accepted (TLS passed, the registry answered)');
  t.match(await inspect(forged, forged.replace(/\.crt$/, '')), /not authorized to sign for this name.*bank\.example/, 'a forged one is refused for the constraint');
});
