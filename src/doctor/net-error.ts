// A network error in plain words: which step failed (name lookup, connecting, TLS, waiting) and
// what the operator can change. undici wraps the socket's error in `cause`; both are looked at.
import { formatDuration } from '../units.js';

/** TLS verification codes of Node's OpenSSL binding that mean "this certificate is not trusted". */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_UNTRUSTED',
  'CERT_SIGNATURE_FAILURE',
]);

const TIMEOUTS = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'ETIMEDOUT', 'ABORT_ERR', 'TimeoutError', 'AbortError']);

function codeOf(err: unknown): string | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { code?: unknown; name?: unknown; cause?: unknown };
  const inner = codeOf(e.cause);
  if (inner !== undefined) return inner;
  if (typeof e.code === 'string') return e.code;
  return typeof e.name === 'string' && TIMEOUTS.has(e.name) ? e.name : undefined;
}

function messageOf(err: unknown): string {
  const cause = (err as { cause?: unknown }).cause;
  const text = cause instanceof Error ? cause.message : err instanceof Error ? err.message : String(err);
  return text.replace(/\s+/g, ' ').trim();
}

export interface Target {
  /** What it is, for the sentence: "the origin", "peer http://10.0.0.2:5000". */
  what: string;
  url: URL;
  timeoutMs: number;
  /** The setting that bounds the wait, named in a timeout's explanation. */
  timeoutSetting: string;
  /** What to say about an untrusted certificate: the settings that fix it. */
  trustHint?: string;
}

/** "the origin at https://harbor.example.com cannot be reached: ..." as one sentence. */
export function explainNetworkError(err: unknown, t: Target): string {
  const code = codeOf(err);
  const host = t.url.hostname;
  const port = t.url.port || (t.url.protocol === 'https:' ? '443' : '80');
  const at = `${t.what} at ${t.url.origin}`;
  if (code === 'ECONNREFUSED') return `${at} refused the connection: nothing listens on ${host} port ${port}; is it running, and is the port in the URL right?`;
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN' || code === 'EAI_NODATA' || code === 'EAI_NONAME') {
    return `the name ${host} of ${t.what} does not resolve (DNS ${code}); check the name, /etc/resolv.conf and /etc/hosts`;
  }
  if (code === 'EHOSTUNREACH' || code === 'ENETUNREACH') return `${at} cannot be reached: no route to ${host} (${code}); check the network and the firewall`;
  if (code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET') return `${at} dropped the connection (${code}); a firewall, a proxy or a TLS/plain-HTTP mix-up may be in the way`;
  if (code !== undefined && TIMEOUTS.has(code)) {
    return `${at} did not answer within ${formatDuration(t.timeoutMs)} (${t.timeoutSetting}); check the network, a firewall that drops packets, or a proxy`;
  }
  if (code === 'CERT_HAS_EXPIRED') return `the TLS certificate of ${at} has expired (or this host's clock is wrong); renew it on that side`;
  if (code === 'CERT_NOT_YET_VALID') return `the TLS certificate of ${at} is not valid yet: this host's clock is probably behind; fix the time (timedatectl, NTP)`;
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `the TLS certificate of ${at} is not for the name ${host} (${messageOf(err)}); use the name the certificate carries`;
  if (code !== undefined && UNTRUSTED.has(code)) {
    return `the TLS certificate of ${at} is not trusted here (${code}); ${t.trustHint ?? 'add its CA to the system store'}`;
  }
  if (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number/i.test(messageOf(err))) {
    return `${at} does not speak TLS on port ${port} (it answered plain HTTP?); use http:// in the URL, or the TLS port`;
  }
  return `${at} cannot be reached: ${messageOf(err)}${code === undefined ? '' : ` (${code})`}`;
}
