// The name, tag and digest grammar the router enforces before any I/O.
import t from 'tap';
import { isValidName, isValidTag, parseDigest, parseReference } from '../../src/oci/reference.js';

const hex64 = 'a'.repeat(64);

t.test('repository names', async (t) => {
  const valid = ['nginx', 'library/nginx', 'proj/sub/app', 'a.b_c__d-e--f', 'x1/y2', 'a'.repeat(255)];
  const invalid = ['', 'Nginx', '/nginx', 'nginx/', 'a//b', 'a..b', 'a_-b', '-a', 'a-', 'a b', 'a:b', 'a'.repeat(256), 'proj/../etc', '.hidden'];
  for (const name of valid) t.ok(isValidName(name), `valid: ${name.slice(0, 30)}`);
  for (const name of invalid) t.notOk(isValidName(name), `invalid: ${JSON.stringify(name.slice(0, 30))}`);
});

t.test('tags', async (t) => {
  for (const tag of ['latest', '1.0', 'v1.2.3-rc_1', '_x', 'A', 'a'.repeat(128)]) t.ok(isValidTag(tag), `valid: ${tag}`);
  for (const tag of ['', '.x', '-x', 'a:b', 'a/b', 'a'.repeat(129), 'ünï']) t.notOk(isValidTag(tag), `invalid: ${tag}`);
});

t.test('digests', async (t) => {
  t.same(parseDigest(`sha256:${hex64}`), { algorithm: 'sha256', hex: hex64 });
  t.same(parseDigest(`sha512:${'0'.repeat(128)}`), { algorithm: 'sha512', hex: '0'.repeat(128) });
  const invalid = [
    `sha256:${'A'.repeat(64)}`, // uppercase hex
    `sha256:${'a'.repeat(63)}`,
    `sha256:${'a'.repeat(65)}`,
    `sha512:${hex64}`,
    `md5:${'a'.repeat(32)}`, // well-formed but not verifiable
    `SHA256:${hex64}`,
    hex64,
    'sha256:',
    `sha256:${'g'.repeat(64)}`,
  ];
  for (const d of invalid) t.equal(parseDigest(d), null, `invalid: ${d.slice(0, 20)}…`);
});

t.test('references', async (t) => {
  t.same(parseReference('latest'), { tag: 'latest' });
  t.same(parseReference(`sha256:${hex64}`), { digest: `sha256:${hex64}` });
  t.equal(parseReference('sha256:abc'), null);
  t.equal(parseReference('-bad'), null);
});
