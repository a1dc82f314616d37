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
    ['429', new UpstreamStatusError('origin', 429, 'slow down', '30'), 429, 'TOOMANYREQUESTS'],
    ['500', new UpstreamStatusError('origin', 500, 'boom'), 502, 'UNKNOWN'],
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
  const internal = toOciResponse(new TypeError('secret internals'));
  t.notMatch(JSON.stringify(internal.body), /secret internals/, 'internal messages are not sent to clients');
});
