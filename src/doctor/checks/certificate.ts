// Cove's own TLS certificate (COVE_TLS_CERT/KEY): the key belongs to it, it is valid now and not
// about to expire, and its names (subjectAltName: Go clients ignore the CN) cover what clients
// will connect to: the COVE_LISTEN host when it names one, and in hosts mode (clients reach this
// Cove under the origin's name, redirected by /etc/hosts or DNS) the origin's host name.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { isIP } from 'node:net';
import type { Config } from '../../config.js';
import { formatDuration } from '../../units.js';
import type { CheckResult } from '../report.js';

/** A certificate expiring sooner than this is a warning. */
export const EXPIRY_WARN_MS = 14 * 86_400_000;

const NAME = 'certificate';

function covers(cert: X509Certificate, host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '');
  // subject: 'never' — the CN is not a name to Go clients, so it must not count here either.
  return isIP(bare) !== 0 ? cert.checkIP(bare) !== undefined : cert.checkHost(bare, { subject: 'never' }) !== undefined;
}

export function checkCertificate(config: Pick<Config, 'tls' | 'listen' | 'upstreams'>, now = Date.now()): CheckResult {
  if (config.tls === null) return { name: NAME, status: 'skip', message: 'COVE_TLS_CERT is not set: Cove speaks plain HTTP' };
  let cert: X509Certificate;
  try {
    cert = new X509Certificate(config.tls.cert);
  } catch (err) {
    return { name: NAME, status: 'fail', message: `COVE_TLS_CERT holds no certificate Node can read (${(err as Error).message})` };
  }
  let key;
  try {
    key = createPrivateKey(config.tls.key);
  } catch (err) {
    return { name: NAME, status: 'fail', message: `COVE_TLS_KEY holds no private key Node can read (${(err as Error).message}; an encrypted key needs its passphrase, which Cove cannot take)` };
  }
  if (!cert.checkPrivateKey(key)) return { name: NAME, status: 'fail', message: 'COVE_TLS_KEY is not the key of COVE_TLS_CERT: Cove cannot start TLS with them; give the key made with this certificate' };
  const names = cert.subjectAltName ?? '(none)';
  const validFrom = Date.parse(cert.validFrom);
  const validTo = Date.parse(cert.validTo);
  if (validTo <= now) return { name: NAME, status: 'fail', message: `the certificate expired on ${cert.validTo} (${formatDuration(now - validTo)} ago): clients refuse it; issue a new one (cove cert --host NAME)` };
  if (validFrom > now) return { name: NAME, status: 'fail', message: `the certificate is valid only from ${cert.validFrom}: clients refuse it until then; check this host's clock, or issue a new one` };

  const listenHost = config.listen.host;
  if (listenHost !== '0.0.0.0' && listenHost !== '::' && listenHost !== '' && !covers(cert, listenHost)) {
    return { name: NAME, status: 'fail', message: `the certificate's names (${names}) do not cover ${listenHost}, the COVE_LISTEN host clients connect to: they refuse it; issue one with that name (cove cert --host NAME or --ip ADDR)` };
  }
  // Hosts mode: clients keep the origin's name and port, so a Cove on the origin's port is one they reach by that name.
  const origin = new URL(config.upstreams[0]!.url);
  const originPort = Number(origin.port || (origin.protocol === 'https:' ? 443 : 80));
  const originHost = origin.hostname.replace(/^\[|\]$/g, '');
  const hostsMode = isIP(originHost) === 0 && config.listen.port === originPort;
  let note = '';
  if (hostsMode) {
    if (!covers(cert, originHost)) {
      return {
        name: NAME,
        status: 'warn',
        message: `Cove listens on port ${originPort} like the origin, as in hosts mode, but the certificate's names (${names}) do not cover the origin's name ${originHost}: clients redirected to this Cove under that name refuse it; issue one with cove cert --host ${originHost}`,
      };
    }
    note = `, including the origin's name ${originHost} for hosts mode`;
  }
  const left = validTo - now;
  if (left < EXPIRY_WARN_MS) {
    return { name: NAME, status: 'warn', message: `the certificate expires on ${cert.validTo}, in ${formatDuration(left)}: issue a new one (cove cert --host NAME) before clients refuse it` };
  }
  return { name: NAME, status: 'ok', message: `the key matches, valid until ${cert.validTo}; names ${names}${note}` };
}
