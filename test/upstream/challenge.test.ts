// WWW-Authenticate parsing: a table of the shapes registries and RFC 7235 send.
import t from 'tap';
import { findChallenge, parseChallenges } from '../../src/upstream/challenge.js';

const cases: Array<{ name: string; header: string | undefined; want: ReturnType<typeof parseChallenges> }> = [
  { name: 'missing header', header: undefined, want: [] },
  { name: 'empty header', header: '', want: [] },
  {
    name: 'Harbor bearer',
    header: 'Bearer realm="https://harbor.x/service/token",service="harbor-registry",scope="repository:proj/repo:pull"',
    want: [{ scheme: 'bearer', params: { realm: 'https://harbor.x/service/token', service: 'harbor-registry', scope: 'repository:proj/repo:pull' } }],
  },
  { name: 'basic with realm', header: 'Basic realm="Registry Realm"', want: [{ scheme: 'basic', params: { realm: 'Registry Realm' } }] },
  { name: 'scheme is case-insensitive', header: 'BEARER Realm="r"', want: [{ scheme: 'bearer', params: { realm: 'r' } }] },
  { name: 'bare scheme', header: 'Basic', want: [{ scheme: 'basic', params: {} }] },
  {
    name: 'quoted-pair escapes and commas inside quotes',
    header: 'Bearer realm="a \\"quoted\\" \\\\ realm, with comma",service="s"',
    want: [{ scheme: 'bearer', params: { realm: 'a "quoted" \\ realm, with comma', service: 's' } }],
  },
  {
    name: 'RFC 7235 example: two challenges in one header',
    header: 'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Basic realm="simple"',
    want: [
      { scheme: 'newauth', params: { realm: 'apps', type: '1', title: 'Login to "apps"' } },
      { scheme: 'basic', params: { realm: 'simple' } },
    ],
  },
  {
    name: 'bearer then basic, spaces around =',
    header: 'Bearer realm = "https://h/token" , service="reg", Basic realm="h"',
    want: [
      { scheme: 'bearer', params: { realm: 'https://h/token', service: 'reg' } },
      { scheme: 'basic', params: { realm: 'h' } },
    ],
  },
  {
    name: 'unquoted scope with host:port and slashes',
    header: 'Bearer realm="https://h:5000/token",scope=repository:h:5000/a/b:pull,service=reg',
    want: [{ scheme: 'bearer', params: { realm: 'https://h:5000/token', scope: 'repository:h:5000/a/b:pull', service: 'reg' } }],
  },
  {
    name: 'error params from an insufficient-scope answer',
    header: 'Bearer realm="r",service="s",scope="repository:a:pull",error="insufficient_scope"',
    want: [{ scheme: 'bearer', params: { realm: 'r', service: 's', scope: 'repository:a:pull', error: 'insufficient_scope' } }],
  },
  { name: 'token68', header: 'Negotiate abc+/==', want: [{ scheme: 'negotiate', params: { '': 'abc+/==' } }] },
  {
    name: 'token68 then another challenge',
    header: 'Negotiate abc==, Basic realm="x"',
    want: [
      { scheme: 'negotiate', params: { '': 'abc==' } },
      { scheme: 'basic', params: { realm: 'x' } },
    ],
  },
  { name: 'param names are case-insensitive', header: 'Bearer REALM="r",Service="s"', want: [{ scheme: 'bearer', params: { realm: 'r', service: 's' } }] },
  { name: 'stray commas', header: ', Basic realm="x",, ,', want: [{ scheme: 'basic', params: { realm: 'x' } }] },
  { name: 'unterminated quote', header: 'Bearer realm="https://h/token', want: [{ scheme: 'bearer', params: { realm: 'https://h/token' } }] },
  { name: 'empty quoted value', header: 'Bearer realm="",service="s"', want: [{ scheme: 'bearer', params: { realm: '', service: 's' } }] },
];

for (const c of cases) {
  t.test(c.name, async (t) => {
    t.same(parseChallenges(c.header), c.want);
  });
}

t.test('several header lines are joined', async (t) => {
  const got = parseChallenges(['Basic realm="a"', 'Bearer realm="b"']);
  t.same(got.map((c) => c.scheme), ['basic', 'bearer']);
  t.equal(findChallenge(got, 'BEARER')?.params.realm, 'b');
  t.equal(findChallenge(got, 'digest'), undefined);
});
