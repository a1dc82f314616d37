// `cove cert`: a local CA (made once, reused after) and a server certificate signed by it, with
// the names in the subjectAltName (Go clients ignore the CN), serverAuth, keys mode 0600.
import { execFileSync, spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import { CertError, instructions, makeCertificates } from '../../src/cli/cert.js';

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
});

t.test('a rerun reuses the CA and issues a new certificate', { skip: hasOpenssl ? false : 'openssl not installed' }, async (t) => {
  const dir = tmp(t);
  const first = makeCertificates({ hosts: ['harbor.test'], ips: [], outDir: dir, days: 10 });
  const caBefore = readFileSync(first.caCert, 'utf8');
  const caKeyBefore = readFileSync(first.caKey, 'utf8');
  const certBefore = readFileSync(first.cert, 'utf8');
  const second = makeCertificates({ hosts: ['harbor.test', 'registry.test'], ips: ['127.0.0.1'], outDir: dir, days: 10 });
  t.equal(second.caReused, true, 'second run reports the CA reused');
  t.equal(readFileSync(second.caCert, 'utf8'), caBefore, 'ca.crt unchanged');
  t.equal(readFileSync(second.caKey, 'utf8'), caKeyBefore, 'ca.key unchanged');
  t.not(readFileSync(second.cert, 'utf8'), certBefore, 'a new server certificate');
  t.match(execFileSync('openssl', ['verify', '-CAfile', second.caCert, second.cert], { encoding: 'utf8' }), /: OK/, 'the new certificate verifies against the same CA');
  t.equal(new X509Certificate(readFileSync(second.cert)).subjectAltName, 'DNS:harbor.test, DNS:registry.test, IP Address:127.0.0.1');
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
