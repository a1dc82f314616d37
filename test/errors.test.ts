// Every error code Cove can answer with is documented in the README, and the mapping to OCI JSON
// never leaks internals.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import {
  DigestMismatchError,
  OCI_ERROR_STATUS,
  OciError,
  UpstreamAuthError,
  UpstreamStatusError,
  UpstreamUnavailableError,
  toOciResponse,
} from '../src/errors.js';

const README = readFileSync(fileURLToPath(new URL('../../README.md', import.meta.url)), 'utf8');

t.test('every OCI error code is documented in the README', async (t) => {
  for (const code of Object.keys(OCI_ERROR_STATUS)) t.match(README, new RegExp(`\\| \`${code}\` \\|`), `${code} documented`);
});

t.test('mapping', async (t) => {
  const cases: Array<[string, unknown, number, string]> = [
    ['oci error', new OciError('BLOB_UNKNOWN', 'gone'), 404, 'BLOB_UNKNOWN'],
    ['unreachable', new UpstreamUnavailableError('origin', 'connect refused'), 503, 'UPSTREAM_UNAVAILABLE'],
    ['429', new UpstreamStatusError('origin', 429, 'slow down', '30'), 503, 'UPSTREAM_UNAVAILABLE'],
    ['500', new UpstreamStatusError('origin', 500, 'boom'), 503, 'UPSTREAM_UNAVAILABLE'],
    ['504', new UpstreamStatusError('origin', 504, 'gateway timeout'), 503, 'UPSTREAM_UNAVAILABLE'],
    ['unexpected 4xx', new UpstreamStatusError('origin', 418, 'teapot'), 502, 'UNKNOWN'],
    ['auth', new UpstreamAuthError('origin', 401, 'bad credentials'), 502, 'UNKNOWN'],
    ['mismatch', new DigestMismatchError('wrong bytes'), 502, 'UNKNOWN'],
    ['anything else', new TypeError('x is undefined'), 500, 'UNKNOWN'],
  ];
  for (const [name, err, status, code] of cases) {
    const r = toOciResponse(err);
    t.equal(r.status, status, `${name}: status`);
    t.equal(r.body.errors[0]!.code, code, `${name}: code`);
  }
  t.equal(toOciResponse(new UpstreamStatusError('origin', 429, 'x', '30')).headers['retry-after'], '30', 'Retry-After passed on');
  t.equal(toOciResponse(new UpstreamStatusError('origin', 502, 'x')).headers['retry-after'], '5', 'a 5xx without Retry-After: Cove\'s own');
  t.equal(toOciResponse(new UpstreamStatusError('origin', 503, 'x', '0')).headers['retry-after'], '1', 'at least 1 s');
  t.equal(toOciResponse(new UpstreamStatusError('origin', 503, 'x', '86400')).headers['retry-after'], '600', 'at most 10 minutes');
  t.equal(toOciResponse(new UpstreamUnavailableError('origin', 'down', { retryAfter: '3' })).headers['retry-after'], '3', 'the breaker\'s next probe');
  t.equal(toOciResponse(new UpstreamUnavailableError('origin', 'down')).headers['retry-after'], '5', 'unreachable: Cove\'s own');
  const internal = toOciResponse(new TypeError('secret internals'));
  t.notMatch(JSON.stringify(internal.body), /secret internals/, 'internal messages are not sent to clients');
});

t.test('upstream errors tell the client what failed, never where the upstream or the proxy is', async (t) => {
  const refused = Object.assign(new Error('connect ECONNREFUSED 10.1.2.3:3128'), { code: 'ECONNREFUSED' });
  const wrapped = Object.assign(new TypeError('fetch failed'), { cause: refused });
  const cases: Array<[string, unknown, RegExp]> = [
    ['unreachable', new UpstreamUnavailableError('origin', 'upstream origin at https://harbor.internal:8443 unavailable: fetch failed', { cause: wrapped }), /^upstream origin is unreachable \(ECONNREFUSED\)$/],
    ['parent', new UpstreamUnavailableError('parent:10.9.9.9:5000', 'upstream parent:10.9.9.9:5000 at http://10.9.9.9:5000 unavailable'), /^a parent Cove is unreachable$/],
    ['500', new UpstreamStatusError('origin', 500, 'token endpoint https://harbor.internal:8443/service/token of upstream origin answered 500'), /^upstream origin answered 500$/],
    ['429', new UpstreamStatusError('origin', 429, 'https://harbor.internal:8443 said 429', '5'), /rate-limiting Cove \(429\)/],
    ['auth', new UpstreamAuthError('origin', 401, 'token endpoint https://harbor.internal:8443/service/token refused'), /did not accept Cove's credentials or token \(401\)/],
  ];
  for (const [name, err, want] of cases) {
    const body = JSON.stringify(toOciResponse(err).body);
    t.match(toOciResponse(err).body.errors[0]!.message, want, `${name}: message`);
    t.notMatch(body, /harbor\.internal|8443|10\.1\.2\.3|3128|10\.9\.9\.9|5000/, `${name}: no host, port or proxy`);
    t.match((err as Error).message, /harbor\.internal|10\.9\.9\.9/, `${name}: the log message keeps the address`);
  }
});
