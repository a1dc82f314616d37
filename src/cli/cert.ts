// `cove cert`: a local CA and a server certificate for Cove, made with the openssl CLI, for a
// deployment where clients reach Cove under the Harbor hostname (/etc/hosts or DNS pointing the
// name at the edge node). Docker, containerd and other Go clients check the subjectAltName only
// (a certificate with nothing but a CN fails with "x509: certificate relies on legacy Common Name
// field"), so every name and address goes into the SAN.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, existsSync, mkdirSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join, resolve } from 'node:path';

export const DEFAULT_CERT_DIR = '/etc/cove/tls';
/** Lifetime of a server certificate unless --days says otherwise (Apple clients reject > 825). */
export const DEFAULT_SERVER_DAYS = 825;
/** Lifetime of the CA made on the first run. */
const CA_DAYS = 3650;

export interface CertOptions {
  /** DNS names clients use (the Harbor hostname); IP literals given here go to the IP SANs. */
  hosts: string[];
  ips: string[];
  outDir: string;
  days: number;
  /** The openssl binary (default: `openssl` on PATH). */
  openssl?: string;
}

export interface CertFiles {
  dir: string;
  caCert: string;
  caKey: string;
  cert: string;
  key: string;
  /** True when ca.crt/ca.key were there already and were used as they are. */
  caReused: boolean;
  dnsNames: string[];
  ips: string[];
}

/** A usage or environment problem, reported as one line and exit code `exitCode`. */
export class CertError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

const DNS_NAME = /^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/;

/** Creates (or reuses) the CA in `outDir` and issues a fresh server certificate signed by it. */
export function makeCertificates(options: CertOptions): CertFiles {
  const openssl = options.openssl ?? 'openssl';
  const dnsNames: string[] = [];
  const ips: string[] = [];
  for (const h of options.hosts) {
    if (isIP(h)) ips.push(h);
    else if (DNS_NAME.test(h) && h.length <= 253) dnsNames.push(h.toLowerCase());
    else throw new CertError(`--host ${JSON.stringify(h)} is not a DNS name (e.g. harbor.example.com)`, 2);
  }
  for (const ip of options.ips) {
    if (!isIP(ip)) throw new CertError(`--ip ${JSON.stringify(ip)} is not an IPv4 or IPv6 address`, 2);
    ips.push(ip);
  }
  if (dnsNames.length + ips.length === 0) throw new CertError('cert needs at least one --host NAME (the Harbor hostname clients use) or --ip ADDRESS', 2);
  if (!Number.isInteger(options.days) || options.days < 1 || options.days > 36500) throw new CertError(`--days must be a whole number of days from 1 to 36500, not ${options.days}`, 2);

  const version = spawnSync(openssl, ['version'], { encoding: 'utf8' });
  if (version.error || version.status !== 0) {
    throw new CertError(`the openssl command is needed and was not found or does not run (${version.error?.message ?? version.stderr.trim()}); install it: apt-get install openssl`);
  }

  const dir = resolve(options.outDir);
  try {
    mkdirSync(dir, { recursive: true, mode: 0o755 });
  } catch (err) {
    throw new CertError(`cannot create ${dir}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}${(err as NodeJS.ErrnoException).code === 'EACCES' ? ' (run as root or pick --out DIR)' : ''}`);
  }
  const files = { caCert: join(dir, 'ca.crt'), caKey: join(dir, 'ca.key'), cert: join(dir, 'server.crt'), key: join(dir, 'server.key') };
  const work = join(dir, `.cove-cert-${process.pid}`);
  mkdirSync(work, { recursive: true, mode: 0o700 });
  try {
    const run = (args: string[], what: string) => {
      const r = spawnSync(openssl, args, { encoding: 'utf8' });
      if (r.error || r.status !== 0) throw new CertError(`openssl failed to ${what}: ${(r.error?.message ?? `${r.stderr}${r.stdout}`).trim()}`);
    };
    const caThere = existsSync(files.caCert);
    const caKeyThere = existsSync(files.caKey);
    if (caThere !== caKeyThere) {
      throw new CertError(`${caThere ? files.caCert : files.caKey} exists without ${caThere ? files.caKey : files.caCert}; restore it, or remove both to make a new CA (clients then need the new ca.crt)`);
    }
    if (!caThere) {
      const config = join(work, 'ca.cnf');
      writeFileSync(
        config,
        [
          '[req]',
          'distinguished_name = dn',
          'prompt = no',
          'x509_extensions = v3_ca',
          '[dn]',
          `CN = Cove local CA ${randomBytes(4).toString('hex')}`,
          'O = Cove',
          '[v3_ca]',
          'basicConstraints = critical, CA:TRUE, pathlen:0',
          'keyUsage = critical, keyCertSign, cRLSign',
          'subjectKeyIdentifier = hash',
          '',
        ].join('\n'),
      );
      const caKeyTmp = join(work, 'ca.key');
      secretFile(caKeyTmp);
      run(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', caKeyTmp], 'make the CA key');
      run(['req', '-new', '-x509', '-config', config, '-key', caKeyTmp, '-days', String(CA_DAYS), '-sha256', '-set_serial', serial(), '-out', join(work, 'ca.crt')], 'make the CA certificate');
      moveInto(caKeyTmp, files.caKey, 0o600);
      moveInto(join(work, 'ca.crt'), files.caCert, 0o644);
    }

    const keyTmp = join(work, 'server.key');
    secretFile(keyTmp);
    run(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyTmp], 'make the server key');
    const reqConfig = join(work, 'server.cnf');
    writeFileSync(reqConfig, ['[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', `CN = ${dnsNames[0] ?? ips[0]}`, ''].join('\n'));
    run(['req', '-new', '-config', reqConfig, '-key', keyTmp, '-out', join(work, 'server.csr')], 'make the certificate request');
    const san = [...dnsNames.map((n) => `DNS:${n}`), ...ips.map((a) => `IP:${a}`)].join(', ');
    const extConfig = join(work, 'server.ext');
    writeFileSync(
      extConfig,
      [
        '[v3_server]',
        'basicConstraints = critical, CA:FALSE',
        'keyUsage = critical, digitalSignature',
        'extendedKeyUsage = serverAuth',
        `subjectAltName = ${san}`,
        'subjectKeyIdentifier = hash',
        'authorityKeyIdentifier = keyid, issuer',
        '',
      ].join('\n'),
    );
    run(
      ['x509', '-req', '-in', join(work, 'server.csr'), '-CA', files.caCert, '-CAkey', files.caKey, '-set_serial', serial(), '-days', String(options.days), '-sha256', '-extfile', extConfig, '-extensions', 'v3_server', '-out', join(work, 'server.crt')],
      'sign the server certificate with the CA',
    );
    moveInto(keyTmp, files.key, 0o600);
    moveInto(join(work, 'server.crt'), files.cert, 0o644);
    return { dir, ...files, caReused: caThere, dnsNames, ips };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Where the CA and the certificate go, as the text `cove cert` prints. */
export function instructions(f: CertFiles): string {
  const names = [...f.dnsNames, ...f.ips.map((a) => (a.includes(':') ? `[${a}]` : a))];
  const lines = [
    `${f.caReused ? 'reused the CA' : 'created a CA'}: ${f.caCert} (key ${f.caKey}, mode 0600)`,
    `issued ${f.cert} (key ${f.key}, mode 0600) for ${[...f.dnsNames.map((n) => `DNS:${n}`), ...f.ips.map((a) => `IP:${a}`)].join(', ')}`,
    '',
    'Cove (cove.env; Cove reads the key, so keep it readable by the user Cove runs as only):',
    `  COVE_TLS_CERT=${f.cert}`,
    `  COVE_TLS_KEY=${f.key}`,
    `  COVE_LISTEN=0.0.0.0:443      # Docker and containerd use 443 for a registry name without a port`,
    '',
    'Each client node trusts the CA (copy ca.crt, never ca.key):',
    '  Docker (no restart needed; with a port other than 443 the directory is <host>:<port>):',
    ...names.map((n) => `    ${`/etc/docker/certs.d/${n}/ca.crt`}`),
    '  containerd (CRI / nerdctl / ctr --hosts-dir), with `ca = "/etc/containerd/certs.d/<host>/ca.crt"` in hosts.toml:',
    ...names.map((n) => `    /etc/containerd/certs.d/${n}/ca.crt`),
    '  the system store (curl, skopeo, podman, and Go programs without their own CA setting):',
    `    cp ${f.caCert} /usr/local/share/ca-certificates/cove-ca.crt && update-ca-certificates`,
    '',
    'Then point the name at the edge node (e.g. in /etc/hosts:  <edge-node-ip> ' + (f.dnsNames[0] ?? 'harbor.example.com') + ') and',
    'pull as usual; do not list the name in insecure-registries.',
  ];
  return `${lines.join('\n')}\n`;
}

/** `cove cert`: exit code; messages on stdout/stderr. */
export function certCommand(options: CertOptions): number {
  try {
    const files = makeCertificates(options);
    process.stdout.write(instructions(files));
    return 0;
  } catch (err) {
    if (!(err instanceof CertError)) throw err;
    process.stderr.write(`cove: ${err.message}\n`);
    return err.exitCode;
  }
}

/** A positive 128-bit serial as openssl's -set_serial takes it. */
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return `0x${bytes.toString('hex')}`;
}

/** An empty file with mode 0600, so a key openssl writes into it is never readable by others. */
function secretFile(path: string): void {
  closeSync(openSync(path, 'w', 0o600));
  chmodSync(path, 0o600);
}

/** Puts a finished file in place with its mode (the work dir is inside the output dir: no device crossing). */
function moveInto(from: string, to: string, mode: number): void {
  chmodSync(from, mode);
  renameSync(from, to);
}
