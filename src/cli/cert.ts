// `cove cert`: a local CA and a server certificate for Cove, made with the openssl CLI, for a
// deployment where clients reach Cove under the Harbor hostname (/etc/hosts or DNS pointing the
// name at the edge node). Docker, containerd and other Go clients check the subjectAltName only
// (a certificate with nothing but a CN fails with "x509: certificate relies on legacy Common Name
// field"), so every name and address goes into the SAN.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, constants as fsConstants, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
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
  /** Where server.crt and server.key go (and a copy of ca.crt when the CA lives elsewhere). */
  outDir: string;
  /** Where ca.crt and ca.key live (default: outDir). Another directory keeps the CA key off the node. */
  caDir?: string;
  days: number;
  /** The openssl binary (default: `openssl` on PATH). */
  openssl?: string;
}

export interface CertFiles {
  dir: string;
  caDir: string;
  caCert: string;
  caKey: string;
  /** The copy of ca.crt beside the server certificate, when the CA lives in another directory. */
  caCopy: string | null;
  cert: string;
  key: string;
  /** True when ca.crt/ca.key were there already and were used as they are. */
  caReused: boolean;
  /** False for a reused CA made before CAs carried name constraints: it can sign for any name. */
  caConstrained: boolean;
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

/**
 * Creates (or reuses) the CA in `caDir` (default `outDir`) and issues a fresh server certificate
 * signed by it into `outDir`. Every file is first written into a private mkdtemp directory beside
 * its destination with exclusive creation, then renamed into place; a symbolic link at any of the
 * paths is refused, never written or read through.
 */
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

  const dir = ownDir(resolve(options.outDir), 0o755, '--out');
  const caDir = options.caDir === undefined ? dir : ownDir(resolve(options.caDir), 0o700, '--ca-dir');
  const separate = caDir !== dir;
  const files = {
    caCert: join(caDir, 'ca.crt'),
    caKey: join(caDir, 'ca.key'),
    caCopy: separate ? join(dir, 'ca.crt') : null,
    cert: join(dir, 'server.crt'),
    key: join(dir, 'server.key'),
  };
  for (const path of [files.caCert, files.caKey, files.caCopy, files.cert, files.key]) if (path !== null) refuseLink(path);

  const works: string[] = [];
  const workIn = (parent: string) => {
    // mkdtemp: a fresh directory with a random name and mode 0700, so nothing planted in advance
    // can sit where openssl writes.
    const work = mkdtempSync(join(parent, '.cove-cert-'));
    works.push(work);
    return work;
  };
  try {
    const caWork = workIn(caDir);
    const work = separate ? workIn(dir) : caWork;
    const run = (args: string[], what: string) => {
      const r = spawnSync(openssl, args, { encoding: 'utf8' });
      if (r.error || r.status !== 0) throw new CertError(`openssl failed to ${what}: ${(r.error?.message ?? `${r.stderr}${r.stdout}`).trim()}`);
      return r.stdout;
    };
    const caThere = existsSync(files.caCert);
    const caKeyThere = existsSync(files.caKey);
    if (caThere !== caKeyThere) {
      throw new CertError(`${caThere ? files.caCert : files.caKey} exists without ${caThere ? files.caKey : files.caCert}; restore it, or remove both to make a new CA (clients then need the new ca.crt)`);
    }
    let caConstrained = true;
    if (!caThere) {
      const config = join(caWork, 'ca.cnf');
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
          // A stolen ca.key can then sign only for the names this Cove serves, not for any site
          // the clients that trust ca.crt visit.
          'nameConstraints = critical, @name_constraints',
          '[name_constraints]',
          ...nameConstraints(dnsNames, ips),
          '',
        ].join('\n'),
        { flag: 'wx', mode: 0o600 },
      );
      const caKeyTmp = join(caWork, 'ca.key');
      secretFile(caKeyTmp);
      run(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', caKeyTmp], 'make the CA key');
      run(['req', '-new', '-x509', '-config', config, '-key', caKeyTmp, '-days', String(CA_DAYS), '-sha256', '-set_serial', serial(), '-out', join(caWork, 'ca.crt')], 'make the CA certificate');
      moveInto(caKeyTmp, files.caKey, 0o600);
      moveInto(join(caWork, 'ca.crt'), files.caCert, 0o644);
    } else {
      caConstrained = run(['x509', '-in', files.caCert, '-noout', '-ext', 'nameConstraints'], 'read ca.crt').includes('Name Constraints');
    }

    const keyTmp = join(work, 'server.key');
    secretFile(keyTmp);
    run(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', keyTmp], 'make the server key');
    const reqConfig = join(work, 'server.cnf');
    // With no DNS name the CN must not look like one: OpenSSL checks a host-like CN against the
    // CA's DNS constraints when the certificate has no DNS SAN.
    writeFileSync(reqConfig, ['[req]', 'distinguished_name = dn', 'prompt = no', '[dn]', `CN = ${dnsNames[0] ?? `Cove ${ips[0]}`}`, ''].join('\n'), { flag: 'wx', mode: 0o600 });
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
      { flag: 'wx', mode: 0o600 },
    );
    const certTmp = join(work, 'server.crt');
    run(
      ['x509', '-req', '-in', join(work, 'server.csr'), '-CA', files.caCert, '-CAkey', files.caKey, '-set_serial', serial(), '-days', String(options.days), '-sha256', '-extfile', extConfig, '-extensions', 'v3_server', '-out', certTmp],
      'sign the server certificate with the CA',
    );
    // A reused CA is limited to the names it was made for: a certificate for another name would be
    // refused by every client, so say so now rather than at the first pull.
    const check = spawnSync(openssl, ['verify', '-CAfile', files.caCert, certTmp], { encoding: 'utf8' });
    if (check.status !== 0) {
      const why = `${check.stdout}${check.stderr}`;
      if (/subtree violation/.test(why)) {
        const allowed = run(['x509', '-in', files.caCert, '-noout', '-ext', 'nameConstraints'], 'read ca.crt').split('\n').slice(1).map((l) => l.trim()).filter((l) => l !== '').join(' ');
        throw new CertError(`${files.caCert} may only vouch for its own names (${allowed}), not for all of ${san}; make a new CA (move ca.crt and ca.key away, or use another --ca-dir) and give the clients the new ca.crt`);
      }
      throw new CertError(`the new certificate does not verify against ${files.caCert}: ${why.trim()}`);
    }
    let caCopyTmp: string | null = null;
    if (files.caCopy !== null) {
      caCopyTmp = join(work, 'ca.crt');
      copyFileSync(files.caCert, caCopyTmp, fsConstants.COPYFILE_EXCL);
    }
    moveInto(keyTmp, files.key, 0o600);
    moveInto(certTmp, files.cert, 0o644);
    if (caCopyTmp !== null && files.caCopy !== null) moveInto(caCopyTmp, files.caCopy, 0o644);
    return { dir, caDir, ...files, caReused: caThere, caConstrained, dnsNames, ips };
  } finally {
    for (const work of works) rmSync(work, { recursive: true, force: true });
  }
}

/**
 * The CA's permitted subtrees: exactly the given names and addresses. A name type with nothing
 * given is shut entirely: no DNS name → only the reserved `invalid` domain (RFC 6761) is
 * permitted; no address → every IPv4 and IPv6 address is excluded. A wildcard `*.example.com`
 * permits the subdomains of example.com (`.example.com`).
 */
export function nameConstraints(dnsNames: string[], ips: string[]): string[] {
  const lines: string[] = [];
  const dns = dnsNames.length > 0 ? dnsNames.map((n) => (n.startsWith('*.') ? n.slice(1) : n)) : ['invalid'];
  [...new Set(dns)].forEach((n, i) => lines.push(`permitted;DNS.${i} = ${n}`));
  if (ips.length === 0) {
    lines.push('excluded;IP.0 = 0.0.0.0/0.0.0.0', 'excluded;IP.1 = ::/::');
  } else {
    ips.forEach((a, i) => lines.push(`permitted;IP.${i} = ${a}/${isIP(a) === 4 ? '255.255.255.255' : 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'}`));
  }
  return lines;
}

/** Where the CA and the certificate go, as the text `cove cert` prints. */
export function instructions(f: CertFiles): string {
  const names = [...f.dnsNames, ...f.ips.map((a) => (a.includes(':') ? `[${a}]` : a))];
  const caForClients = f.caCopy ?? f.caCert;
  const lines = [
    `${f.caReused ? 'reused the CA' : 'created a CA'}: ${f.caCert} (key ${f.caKey}, mode 0600)`,
    `issued ${f.cert} (key ${f.key}, mode 0600) for ${[...f.dnsNames.map((n) => `DNS:${n}`), ...f.ips.map((a) => `IP:${a}`)].join(', ')}`,
    ...(f.caConstrained
      ? []
      : [`note: ${f.caCert} has no name constraints (made by an older cove cert): its key can sign for any site; make a new CA when you can`]),
    ...(f.caCopy === null
      ? []
      : [
          '',
          `The CA key stays in ${f.caDir}. Copy only these three files to the node's /etc/cove/tls/`,
          `(root-owned; server.key mode 0600): ${f.caCopy} ${f.cert} ${f.key}`,
        ]),
    '',
    'Cove under systemd (DynamicUser=: the key stays root-only and systemd hands it over), in a drop-in',
    '(systemctl edit cove) and cove.env:',
    '  [Service]',
    `  LoadCredential=server.crt:${f.caCopy === null ? f.cert : '/etc/cove/tls/server.crt'}`,
    `  LoadCredential=server.key:${f.caCopy === null ? f.key : '/etc/cove/tls/server.key'}`,
    '  COVE_TLS_CERT=server.crt      # cove.env: bare names are read from $CREDENTIALS_DIRECTORY',
    '  COVE_TLS_KEY=server.key',
    `  COVE_LISTEN=0.0.0.0:443      # Docker and containerd use 443 for a registry name without a port`,
    'Cove outside systemd (keep the key readable by the user Cove runs as only):',
    `  COVE_TLS_CERT=${f.caCopy === null ? f.cert : '/etc/cove/tls/server.crt'}`,
    `  COVE_TLS_KEY=${f.caCopy === null ? f.key : '/etc/cove/tls/server.key'}`,
    '',
    'Each client node trusts the CA (copy ca.crt, never ca.key):',
    '  Docker (no restart needed; with a port other than 443 the directory is <host>:<port>):',
    ...names.map((n) => `    ${`/etc/docker/certs.d/${n}/ca.crt`}`),
    '  containerd (CRI / nerdctl / ctr --hosts-dir), with `ca = "/etc/containerd/certs.d/<host>/ca.crt"` in hosts.toml:',
    ...names.map((n) => `    /etc/containerd/certs.d/${n}/ca.crt`),
    '  the system store (curl, skopeo, podman, and Go programs without their own CA setting):',
    `    cp ${caForClients} /usr/local/share/ca-certificates/cove-ca.crt && update-ca-certificates`,
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

/** Creates `dir` if need be; refuses a symbolic link there (the files would land where it points). */
function ownDir(dir: string, mode: number, flag: string): string {
  try {
    mkdirSync(dir, { recursive: true, mode });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CertError(`cannot create ${dir}: ${code ?? (err as Error).message}${code === 'EACCES' ? ` (run as root or pick ${flag} DIR)` : ''}`);
  }
  const st = lstatSync(dir);
  if (st.isSymbolicLink()) throw new CertError(`${dir} is a symbolic link; refusing to write through it (give ${flag} the real directory)`);
  if (!st.isDirectory()) throw new CertError(`${dir} is not a directory`);
  return dir;
}

/** A symbolic link (or anything but a plain file) at an output path is refused, not followed. */
function refuseLink(path: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw new CertError(`cannot inspect ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (st.isSymbolicLink()) throw new CertError(`${path} is a symbolic link; refusing to follow it (remove it and run cove cert again)`);
  if (!st.isFile()) throw new CertError(`${path} is not a regular file; refusing to replace it`);
}

/** A positive 128-bit serial as openssl's -set_serial takes it. */
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x01;
  return `0x${bytes.toString('hex')}`;
}

/** An empty file with mode 0600, so a key openssl writes into it is never readable by others. */
function secretFile(path: string): void {
  closeSync(openSync(path, 'wx', 0o600));
  chmodSync(path, 0o600);
}

/**
 * Puts a finished file in place with its mode (the work dir is inside the destination dir: no
 * device crossing). rename() replaces a link planted after refuseLink() ran rather than writing
 * through it.
 */
function moveInto(from: string, to: string, mode: number): void {
  chmodSync(from, mode);
  renameSync(from, to);
}
