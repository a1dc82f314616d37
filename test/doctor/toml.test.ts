// The doctor's TOML reader: what containerd's hosts.toml and podman's registries.conf use, and
// the line of the first syntax error.
import t from 'tap';
import { parseToml, TomlError } from '../../src/doctor/toml.js';

t.test('the shapes of hosts.toml and registries.conf', async (t) => {
  t.same(
    parseToml(['# comment', 'server = "https://registry-1.docker.io"', '', '[host."http://10.0.0.5:5000"]', '  capabilities = ["pull", "resolve"] # trailing', '  skip_verify = true', '  dial_timeout = \'2s\'', '[host."http://10.0.0.5:5000".header]', '  x-a = ["b"]'].join('\n')),
    { server: 'https://registry-1.docker.io', host: { 'http://10.0.0.5:5000': { capabilities: ['pull', 'resolve'], skip_verify: true, dial_timeout: '2s', header: { 'x-a': ['b'] } } } },
  );
  t.same(
    parseToml('unqualified-search-registries = [\n  "docker.io",\n  "quay.io", # the other\n]\n[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n[[registry.mirror]]\nlocation = "edge:5000"\ninsecure = true\n[[registry.mirror]]\nlocation = "b"\n[[registry]]\nprefix = "q"\n'),
    { 'unqualified-search-registries': ['docker.io', 'quay.io'], registry: [{ prefix: 'docker.io', location: 'docker.io', mirror: [{ location: 'edge:5000', insecure: true }, { location: 'b' }] }, { prefix: 'q' }] },
  );
  t.same(parseToml('a.b = 1\nc = { d = "e\\u0041\\n", f = 2.5 }\ns = """\nx\\\n  y"""\nl = \'\'\'r\\aw\'\'\'\nt = 1979-05-27T07:32:00Z'), { a: { b: 1 }, c: { d: 'eA\n', f: 2.5 }, s: 'xy', l: 'r\\aw', t: '1979-05-27T07:32:00Z' });
});

t.test('syntax errors name their line', async (t) => {
  const cases: Array<[string, RegExp]> = [
    ['a = 1\nb = "open\n', /^line 2: a string is not closed on its line$/],
    ['a = 1\na = 2', /^line 2: the key a is set twice$/],
    ['[x\n', /^line 1: a table header must end with \]$/],
    ['a = yes', /^line 1: "yes" is not a value/],
    ['a = [1 2]', /^line 1: array items must be separated by ","$/],
    ['a = 1 b = 2', /^line 1: unexpected "b" after a value$/],
    ['= 1', /^line 1: "=" cannot start a key$/],
    ['a\n', /^line 1: expected "=" after the key a$/],
    ['a = "\\q"', /^line 1: \\q is not an escape$/],
    ['a = 1\n[a]\n', /^line 2: a is already a value$/],
  ];
  for (const [text, message] of cases) {
    const err = (() => {
      try {
        parseToml(text);
        return null;
      } catch (e) {
        return e;
      }
    })();
    t.type(err, TomlError, JSON.stringify(text));
    t.match((err as Error).message, message, JSON.stringify(text));
  }
});
