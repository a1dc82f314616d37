// The configuration loader: defaults < JSON file < environment < flags, and one clear line for
// every bad value. Files are created in a temp folder; the example config is read from the repo.
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { CONFIG_FLAGS, DEFAULTS, loadAdminSockets, loadAdminToken, loadConfig, loadDataDir, type Config } from '../src/config.js';
import { ConfigError } from '../src/errors.js';

const ORIGIN_URL = 'https://harbor.example.com';
const PEM_CERT = '-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUZm9v\n-----END CERTIFICATE-----\n';
const PEM_KEY = '-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEG\n-----END PRIVATE KEY-----\n';

const dir = mkdtempSync(join(tmpdir(), 'cove-config-test-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Writes a file into the test folder and returns its absolute path. */
function file(name: string, contents: string): string {
  const path = join(dir, name);
  mkdirSync(join(path, '..'), { recursive: true });
  writeFileSync(path, contents);
  return path;
}

function json(name: string, value: unknown): string {
  return file(name, JSON.stringify(value, null, 2));
}

/** Loads with only the given environment (never the test runner's). */
function load(env: Record<string, string>, flags: Record<string, string> = {}): Config {
  return loadConfig({ env: { COVE_UPSTREAM: ORIGIN_URL, ...env }, flags });
}

/** The ConfigError a load throws; fails the test when it does not throw one. */
function configError(t: Tap, run: () => unknown, name: string): ConfigError | null {
  try {
    run();
  } catch (err) {
    t.type(err, ConfigError, `${name}: a ConfigError`);
    if (err instanceof ConfigError) {
      t.equal(err.code, 'CONFIG_INVALID', `${name}: code`);
      t.notMatch(err.message, /\n/, `${name}: one line`);
      return err;
    }
    return null;
  }
  t.fail(`${name}: expected a ConfigError`);
  return null;
}

/** The assertions configError uses, which every subtest has. */
type Tap = Pick<typeof t, 'type' | 'equal' | 'notMatch' | 'fail'>;

t.test('defaults', async (t) => {
  const c = loadConfig({ env: { COVE_UPSTREAM: ORIGIN_URL } });
  t.same(c.listen, { host: '0.0.0.0', port: 5000 });
  t.equal(c.dataDir, '/var/lib/cove');
  t.equal(c.dataDir, DEFAULTS.dataDir);
  t.same(c.upstreams, [
    {
      name: 'origin',
      url: ORIGIN_URL,
      username: null,
      password: null,
      ca: null,
      insecure: false,
      timeoutMs: 10_000,
      bodyTimeoutMs: 30_000,
      proxy: { httpProxy: null, httpsProxy: null, noProxy: null },
      tokenRealms: [],
    },
  ]);
  t.same(c.routes, []);
  t.equal(c.defaultNs, null);
  t.equal(c.tagTtlMs, 300_000);
  t.equal(c.revalidateDeadlineMs, 1_000, 'a revalidation waits at most 1 s by default');
  t.equal(c.tls, null);
  t.equal(c.logLevel, 'info');
  t.equal(c.shutdownGraceMs, 10_000);
});

t.test('the config is frozen all the way down', async (t) => {
  const c = load({ COVE_ROUTES: 'docker.io=dockerhub/' });
  for (const part of [c, c.listen, c.upstreams, c.upstreams[0], c.upstreams[0]!.proxy, c.routes, c.routes[0]]) t.ok(Object.isFrozen(part));
  t.throws(() => {
    (c as { tagTtlMs: number }).tagTtlMs = 1;
  });
});

t.test('CONFIG_FLAGS are parseArgs string options', async (t) => {
  t.same(Object.keys(CONFIG_FLAGS).sort(), ['config', 'data-dir', 'default-ns', 'listen', 'log-level', 'tag-ttl', 'upstream', 'upstream-timeout']);
  for (const option of Object.values(CONFIG_FLAGS)) t.equal(option.type, 'string');
});

t.test('precedence: defaults < file < environment < flags', async (t) => {
  const path = json('precedence.json', {
    '//': 'comment keys are ignored',
    upstream: 'https://file.example.com',
    listen: '127.0.0.1:1001',
    tagTtl: '1m',
    logLevel: 'debug',
    upstreamTimeout: 3,
    shutdownGrace: '4s',
  });
  const env = { COVE_CONFIG: path, COVE_LISTEN: '127.0.0.1:1002', COVE_TAG_TTL: '2m', COVE_UPSTREAM: 'https://env.example.com' };
  const flags = { 'tag-ttl': '3m', upstream: 'https://flag.example.com' };
  const c = loadConfig({ env, flags });
  const cases: Array<[string, unknown, unknown]> = [
    ['flag beats env and file', c.tagTtlMs, 180_000],
    ['flag beats env and file (upstream)', c.upstreams[0]!.url, 'https://flag.example.com'],
    ['env beats file', c.listen, { host: '127.0.0.1', port: 1002 }],
    ['file beats default', c.logLevel, 'debug'],
    ['file number is seconds', c.upstreams[0]!.timeoutMs, 3000],
    ['file string duration', c.shutdownGraceMs, 4000],
    ['default when no layer sets it', c.upstreams[0]!.bodyTimeoutMs, 30_000],
  ];
  for (const [name, got, want] of cases) t.same(got, want, name);

  t.equal(loadConfig({ env: {}, flags: { config: path } }).upstreams[0]!.url, 'https://file.example.com', '--config names the file');
  const other = json('other.json', { upstream: 'https://other.example.com' });
  t.equal(loadConfig({ env: { COVE_CONFIG: path }, flags: { config: other } }).upstreams[0]!.url, 'https://other.example.com', '--config beats COVE_CONFIG');
  t.equal(loadConfig({ env: { COVE_CONFIG: path }, file: other }).upstreams[0]!.url, 'https://other.example.com', 'the file option beats COVE_CONFIG');
  t.equal(load({ COVE_TAG_TTL: '' }).tagTtlMs, 300_000, 'an empty variable counts as unset');
});

t.test('listen addresses', async (t) => {
  const good: Array<[string, { host: string; port: number }]> = [
    ['127.0.0.1:5000', { host: '127.0.0.1', port: 5000 }],
    ['localhost:8080', { host: 'localhost', port: 8080 }],
    ['[::1]:5000', { host: '::1', port: 5000 }],
    ['[::]:443', { host: '::', port: 443 }],
    [':5000', { host: '0.0.0.0', port: 5000 }],
    ['5001', { host: '0.0.0.0', port: 5001 }],
    ['127.0.0.1:0', { host: '127.0.0.1', port: 0 }],
  ];
  for (const [text, want] of good) t.same(load({ COVE_LISTEN: text }).listen, want, text);
  const bad = ['nowhere', '127.0.0.1', '127.0.0.1:65536', '127.0.0.1:http', '::1:5000', '[nothost]:5000', 'a b:5000', '127.0.0.1:-1'];
  for (const text of bad) {
    const err = configError(t, () => load({ COVE_LISTEN: text }), text);
    t.match(err?.message, `COVE_LISTEN: ${JSON.stringify(text)}`, `${text}: names key and value`);
  }
  t.same(load({}, { listen: '127.0.0.2:7' }).listen, { host: '127.0.0.2', port: 7 }, '--listen');
});

t.test('upstream URL', async (t) => {
  const good: Array<[string, string]> = [
    ['https://harbor.example.com', 'https://harbor.example.com'],
    ['https://harbor.example.com/', 'https://harbor.example.com'],
    ['http://127.0.0.1:8080/', 'http://127.0.0.1:8080'],
    ['HTTPS://Harbor.Example.com:443', 'https://harbor.example.com'],
  ];
  for (const [text, url] of good) t.equal(load({ COVE_UPSTREAM: text }).upstreams[0]!.url, url, text);

  const missing = configError(t, () => loadConfig({ env: {} }), 'missing');
  t.match(missing?.message, /COVE_UPSTREAM is required/);
  const bad: Array<[string, RegExp]> = [
    ['ftp://x', /COVE_UPSTREAM: "ftp:\/\/x" must be an http/],
    ['harbor.example.com', /COVE_UPSTREAM: "harbor.example.com" is not a URL/],
    ['https://harbor.example.com/v2/', /COVE_UPSTREAM: "https:\/\/harbor.example.com\/v2\/" must name the registry host only/],
    ['https://harbor.example.com/?x=1', /no path/],
  ];
  for (const [text, pattern] of bad) t.match(configError(t, () => load({ COVE_UPSTREAM: text }), text)?.message, pattern, text);
  const flagged = configError(t, () => loadConfig({ env: {}, flags: { upstream: 'ftp://x' } }), 'flag');
  t.match(flagged?.message, /^--upstream: "ftp:\/\/x"/, 'a flag is named as a flag');
  const withPassword = configError(t, () => load({ COVE_UPSTREAM: 'https://edge:s3cret-pw@harbor.example.com' }), 'credentials in URL');
  t.match(withPassword?.message, /COVE_UPSTREAM: the URL must not carry credentials/);
  t.notMatch(withPassword?.message, /s3cret-pw/, 'the password is not shown');
});

t.test('credentials: password, password file, $CREDENTIALS_DIRECTORY', async (t) => {
  const credDir = join(dir, 'credentials');
  file('credentials/upstream-password', 'from-credentials\n');
  const absolute = file('password.txt', 'from-file\r\n\n');
  const cases: Array<[string, Record<string, string>, string]> = [
    ['plain password', { COVE_UPSTREAM_USERNAME: 'robot$edge', COVE_UPSTREAM_PASSWORD: 'hunter2' }, 'hunter2'],
    ['absolute file, trailing newlines dropped', { COVE_UPSTREAM_USERNAME: 'u', COVE_UPSTREAM_PASSWORD_FILE: absolute }, 'from-file'],
    [
      'relative name in $CREDENTIALS_DIRECTORY',
      { COVE_UPSTREAM_USERNAME: 'u', COVE_UPSTREAM_PASSWORD_FILE: 'upstream-password', CREDENTIALS_DIRECTORY: credDir },
      'from-credentials',
    ],
    [
      'absolute file ignores $CREDENTIALS_DIRECTORY',
      { COVE_UPSTREAM_USERNAME: 'u', COVE_UPSTREAM_PASSWORD_FILE: absolute, CREDENTIALS_DIRECTORY: credDir },
      'from-file',
    ],
  ];
  for (const [name, env, password] of cases) {
    const u = load(env).upstreams[0]!;
    t.equal(u.password, password, name);
    t.equal(u.username, env.COVE_UPSTREAM_USERNAME, `${name}: user`);
  }

  const inFile = json('creds/cove.json', { upstream: ORIGIN_URL, username: 'u', passwordFile: 'pw' });
  file('creds/pw', 'beside-the-file\n');
  t.equal(loadConfig({ env: {}, file: inFile }).upstreams[0]!.password, 'beside-the-file', 'relative to the config file without $CREDENTIALS_DIRECTORY');
  t.equal(
    loadConfig({ env: { COVE_UPSTREAM_PASSWORD: 'env-wins' }, file: inFile }).upstreams[0]!.password,
    'env-wins',
    'a password in the environment beats a password file in the config file',
  );

  const bad: Array<[string, Record<string, string>, RegExp]> = [
    ['both in one layer', { COVE_UPSTREAM_USERNAME: 'u', COVE_UPSTREAM_PASSWORD: 's3cret-pw', COVE_UPSTREAM_PASSWORD_FILE: absolute }, /COVE_UPSTREAM_PASSWORD and COVE_UPSTREAM_PASSWORD_FILE are both set/],
    ['missing file', { COVE_UPSTREAM_USERNAME: 'u', COVE_UPSTREAM_PASSWORD_FILE: 'nope', CREDENTIALS_DIRECTORY: credDir }, /COVE_UPSTREAM_PASSWORD_FILE: ".*credentials\/nope" cannot be read \(ENOENT\)/],
    ['empty file', { COVE_UPSTREAM_USERNAME: 'u', COVE_UPSTREAM_PASSWORD_FILE: file('empty', '\n') }, /COVE_UPSTREAM_PASSWORD_FILE: ".*empty" is empty/],
    ['user without password', { COVE_UPSTREAM_USERNAME: 'u' }, /COVE_UPSTREAM_USERNAME is set but no password/],
    ['password without user', { COVE_UPSTREAM_PASSWORD: 's3cret-pw' }, /COVE_UPSTREAM_PASSWORD is set but no user name/],
  ];
  for (const [name, env, pattern] of bad) {
    const err = configError(t, () => load(env), name);
    t.match(err?.message, pattern, name);
    t.notMatch(err?.message, /s3cret-pw/, `${name}: the password is not shown`);
  }
  const typed = json('typed-password.json', { upstream: ORIGIN_URL, username: 'u', password: 12345678 });
  const err = configError(t, () => loadConfig({ env: {}, file: typed }), 'password of the wrong type');
  t.match(err?.message, /password in .*typed-password.json: must be a string \(value not shown\)/);
  t.notMatch(err?.message, /12345678/);
});

t.test('CA bundle', async (t) => {
  const ca = file('ca.pem', PEM_CERT + PEM_CERT);
  t.equal(load({ COVE_UPSTREAM_CA: ca }).upstreams[0]!.ca, PEM_CERT + PEM_CERT, 'contents loaded');
  const inFile = json('ca-dir/cove.json', { upstream: ORIGIN_URL, ca: 'bundle.pem' });
  file('ca-dir/bundle.pem', PEM_CERT);
  t.equal(loadConfig({ env: {}, file: inFile }).upstreams[0]!.ca, PEM_CERT, 'relative to the config file');
  const missing = join(dir, 'missing-ca.pem');
  t.match(configError(t, () => load({ COVE_UPSTREAM_CA: missing }), 'unreadable')?.message, `COVE_UPSTREAM_CA: ${JSON.stringify(missing)} cannot be read (ENOENT)`);
  const notPem = file('not.pem', 'hello');
  t.match(configError(t, () => load({ COVE_UPSTREAM_CA: notPem }), 'not PEM')?.message, /COVE_UPSTREAM_CA: ".*not.pem" holds no PEM certificate/);
  t.match(configError(t, () => load({ COVE_UPSTREAM_CA: dir }), 'a folder')?.message, /COVE_UPSTREAM_CA: ".*" cannot be read \(EISDIR\)/);
});

t.test('insecure', async (t) => {
  const cases: Array<[string, boolean]> = [
    ['true', true],
    ['TRUE', true],
    ['1', true],
    ['yes', true],
    ['false', false],
    ['0', false],
    ['off', false],
  ];
  for (const [text, want] of cases) t.equal(load({ COVE_UPSTREAM_INSECURE: text }).upstreams[0]!.insecure, want, text);
  t.equal(loadConfig({ env: {}, file: json('insecure.json', { upstream: ORIGIN_URL, insecure: true }) }).upstreams[0]!.insecure, true, 'JSON boolean');
});

t.test('TLS: both or neither', async (t) => {
  const cert = file('tls/cert.pem', PEM_CERT);
  const key = file('tls/key.pem', PEM_KEY);
  t.same(load({ COVE_TLS_CERT: cert, COVE_TLS_KEY: key }).tls, { cert: PEM_CERT, key: PEM_KEY });
  const rsaKey = file('tls/rsa.pem', PEM_KEY.replace(/PRIVATE KEY/g, 'RSA PRIVATE KEY'));
  t.ok(load({ COVE_TLS_CERT: cert, COVE_TLS_KEY: rsaKey }).tls, 'an RSA key');
  t.match(configError(t, () => load({ COVE_TLS_CERT: cert }), 'cert only')?.message, /COVE_TLS_CERT is set but COVE_TLS_KEY is not/);
  t.match(configError(t, () => load({ COVE_TLS_KEY: key }), 'key only')?.message, /COVE_TLS_KEY is set but COVE_TLS_CERT is not/);
  t.match(configError(t, () => load({ COVE_TLS_CERT: key, COVE_TLS_KEY: key }), 'key as cert')?.message, /COVE_TLS_CERT: ".*key.pem" holds no PEM certificate/);
  t.match(configError(t, () => load({ COVE_TLS_CERT: cert, COVE_TLS_KEY: cert }), 'cert as key')?.message, /COVE_TLS_KEY: ".*cert.pem" holds no PEM private key/);
  t.match(configError(t, () => load({ COVE_TLS_CERT: cert, COVE_TLS_KEY: join(dir, 'nope.pem') }), 'missing key')?.message, /COVE_TLS_KEY: ".*nope.pem" cannot be read/);
});

t.test('TLS: bare names are read from $CREDENTIALS_DIRECTORY (LoadCredential= under DynamicUser=)', async (t) => {
  file('tls-creds/server.crt', PEM_CERT);
  file('tls-creds/server.key', PEM_KEY);
  const credDir = join(dir, 'tls-creds');
  t.same(load({ COVE_TLS_CERT: 'server.crt', COVE_TLS_KEY: 'server.key', CREDENTIALS_DIRECTORY: credDir }).tls, { cert: PEM_CERT, key: PEM_KEY });
  const absolute = file('tls/abs.pem', PEM_CERT);
  t.same(load({ COVE_TLS_CERT: absolute, COVE_TLS_KEY: 'server.key', CREDENTIALS_DIRECTORY: credDir }).tls, { cert: PEM_CERT, key: PEM_KEY }, 'an absolute path stays as it is');
  t.match(configError(t, () => load({ COVE_TLS_CERT: 'server.crt', COVE_TLS_KEY: 'other.key', CREDENTIALS_DIRECTORY: credDir }), 'missing credential')?.message, /COVE_TLS_KEY: "other.key" cannot be read \(ENOENT\) at ".*tls-creds\/other.key" \(\$CREDENTIALS_DIRECTORY\)/);
});

t.test('routes', async (t) => {
  const hub = (match: string) => ({ match, upstream: 'origin', prefix: 'dockerhub/', libraryPrefix: true });
  const cases: Array<[string, Record<string, string>, string | null, unknown]> = [
    [
      'docker.io brings its aliases',
      { COVE_ROUTES: 'docker.io=dockerhub/,ghcr.io=ghcr/' },
      null,
      [hub('docker.io'), { match: 'ghcr.io', upstream: 'origin', prefix: 'ghcr/', libraryPrefix: false }, hub('index.docker.io'), hub('registry-1.docker.io')],
    ],
    [
      'any Docker Hub name brings the others',
      { COVE_ROUTES: 'registry-1.docker.io=dockerhub/' },
      null,
      [hub('registry-1.docker.io'), hub('docker.io'), hub('index.docker.io')],
    ],
    [
      'an explicit alias route wins',
      { COVE_ROUTES: 'docker.io=dockerhub/,index.docker.io=other/' },
      null,
      [hub('docker.io'), { match: 'index.docker.io', upstream: 'origin', prefix: 'other/', libraryPrefix: true }, hub('registry-1.docker.io')],
    ],
    [
      'upstream name, empty prefix, missing slash, spaces, case',
      { COVE_ROUTES: ' Quay.io = origin:quay ,harbor.example.com=, localhost:5001=a/b/ ' },
      null,
      [
        { match: 'quay.io', upstream: 'origin', prefix: 'quay/', libraryPrefix: false },
        { match: 'harbor.example.com', upstream: 'origin', prefix: '', libraryPrefix: false },
        { match: 'localhost:5001', upstream: 'origin', prefix: 'a/b/', libraryPrefix: false },
      ],
    ],
    ['empty', { COVE_ROUTES: ',' }, null, []],
  ];
  for (const [name, env, defaultNs, want] of cases) {
    const c = load(env);
    t.same(c.routes, want, name);
    t.equal(c.defaultNs, defaultNs, `${name}: default ns`);
  }

  const objectFile = json('routes-object.json', { upstream: ORIGIN_URL, routes: { '//': 'comment', 'docker.io': 'dockerhub/', 'ghcr.io': 'origin:ghcr/' } });
  t.same(
    loadConfig({ env: {}, file: objectFile }).routes.map((r) => `${r.match}=${r.upstream}:${r.prefix}`),
    ['docker.io=origin:dockerhub/', 'ghcr.io=origin:ghcr/', 'index.docker.io=origin:dockerhub/', 'registry-1.docker.io=origin:dockerhub/'],
    'file: object',
  );
  const arrayFile = json('routes-array.json', { upstream: ORIGIN_URL, routes: ['ghcr.io=ghcr/', { match: 'quay.io', prefix: 'quay/' }] });
  t.same(
    loadConfig({ env: {}, file: arrayFile }).routes.map((r) => `${r.match}=${r.upstream}:${r.prefix}`),
    ['ghcr.io=origin:ghcr/', 'quay.io=origin:quay/'],
    'file: array of strings and objects',
  );
  t.same(
    loadConfig({ env: { COVE_ROUTES: 'gcr.io=gcr/' }, file: objectFile }).routes.map((r) => r.match),
    ['gcr.io'],
    'COVE_ROUTES replaces the file routes',
  );

  const bad: Array<[string, unknown, RegExp]> = [
    ['no =', 'docker.io', /COVE_ROUTES: "docker.io" is not MATCH=PREFIX/],
    ['bad host', 'docker io=x/', /COVE_ROUTES: "docker io=x\/": "docker io" is not a registry host name/],
    ['empty match', '=x/', /COVE_ROUTES: "=x\/": "" is not a registry host name/],
    ['unknown upstream', 'ghcr.io=github:ghcr/', /COVE_ROUTES: "ghcr.io=github:ghcr\/": "github" is not a configured upstream/],
    ['bad prefix', 'ghcr.io=Ghcr/', /COVE_ROUTES: "ghcr.io=Ghcr\/": "Ghcr\/" is not a repository prefix/],
    ['double slash', 'ghcr.io=a//b/', /"a\/\/b\/" is not a repository prefix/],
    ['twice', 'ghcr.io=a/,GHCR.io=b/', /COVE_ROUTES: "ghcr.io" is routed twice/],
  ];
  for (const [name, value, pattern] of bad) t.match(configError(t, () => load({ COVE_ROUTES: value as string }), name)?.message, pattern, name);

  const badFiles: Array<[string, unknown, RegExp]> = [
    ['number', 5, /routes in .*: 5 must be MATCH=PREFIX/],
    ['non-string prefix', { 'docker.io': 5 }, /routes in .*: "docker.io": 5 is not a prefix string/],
    ['bad array entry', [5], /routes in .*: 5 is neither "MATCH=PREFIX" nor/],
    ['object without match', [{ prefix: 'x/' }], /routes in .*: ".*": undefined is not a registry host name|is not a registry host name/],
  ];
  for (const [name, routes, pattern] of badFiles) {
    const path = json(`bad-routes-${name.replace(/\W/g, '-')}.json`, { upstream: ORIGIN_URL, routes });
    t.match(configError(t, () => loadConfig({ env: {}, file: path }), name)?.message, pattern, name);
  }
});

t.test('default ns must name a configured route', async (t) => {
  t.equal(load({ COVE_ROUTES: 'docker.io=dockerhub/', COVE_DEFAULT_NS: 'docker.io' }).defaultNs, 'docker.io');
  t.equal(load({ COVE_ROUTES: 'docker.io=dockerhub/', COVE_DEFAULT_NS: 'Index.Docker.IO' }).defaultNs, 'index.docker.io', 'an alias, any case');
  t.equal(load({ COVE_ROUTES: 'docker.io=dockerhub/' }, { 'default-ns': 'registry-1.docker.io' }).defaultNs, 'registry-1.docker.io', '--default-ns');
  t.match(
    configError(t, () => load({ COVE_ROUTES: 'docker.io=dockerhub/', COVE_DEFAULT_NS: 'quay.io' }), 'unrouted')?.message,
    /COVE_DEFAULT_NS: "quay.io" names no configured route \(routes: docker.io, index.docker.io, registry-1.docker.io\)/,
  );
  t.match(configError(t, () => load({ COVE_DEFAULT_NS: 'docker.io' }), 'no routes')?.message, /COVE_DEFAULT_NS: "docker.io" names no configured route \(routes: none; set COVE_ROUTES\)/);
});

t.test('proxy settings from the environment', async (t) => {
  const cases: Array<[string, Record<string, string>, unknown]> = [
    ['none', {}, { httpProxy: null, httpsProxy: null, noProxy: null }],
    [
      'upper case',
      { HTTPS_PROXY: 'http://proxy:3128', HTTP_PROXY: 'http://proxy:3129', NO_PROXY: 'localhost,.internal' },
      { httpProxy: 'http://proxy:3129', httpsProxy: 'http://proxy:3128', noProxy: 'localhost,.internal' },
    ],
    [
      'lower case',
      { https_proxy: 'http://p:1', http_proxy: 'http://p:2', no_proxy: '*' },
      { httpProxy: 'http://p:2', httpsProxy: 'http://p:1', noProxy: '*' },
    ],
    ['upper case first', { HTTPS_PROXY: 'http://upper:1', https_proxy: 'http://lower:1' }, { httpProxy: null, httpsProxy: 'http://upper:1', noProxy: null }],
  ];
  for (const [name, env, want] of cases) t.same(load(env).upstreams[0]!.proxy, want, name);
  const err = configError(t, () => load({ HTTPS_PROXY: 'socks5://user:s3cret-pw@proxy:1080' }), 'bad proxy');
  t.match(err?.message, /HTTPS_PROXY: "socks5:\/\/\*\*\*@proxy:1080" is not an http/);
  t.notMatch(err?.message, /s3cret-pw/);
});

t.test('data directory', async (t) => {
  const cases: Array<[string, Record<string, string>, Record<string, string>, string]> = [
    ['default', {}, {}, '/var/lib/cove'],
    ['$STATE_DIRECTORY', { STATE_DIRECTORY: '/var/lib/cove-a' }, {}, '/var/lib/cove-a'],
    ['first of several $STATE_DIRECTORY', { STATE_DIRECTORY: '/var/lib/cove-a:/var/lib/cove-b' }, {}, '/var/lib/cove-a'],
    ['COVE_DATA_DIR beats $STATE_DIRECTORY', { STATE_DIRECTORY: '/var/lib/cove-a', COVE_DATA_DIR: '/srv/cove' }, {}, '/srv/cove'],
    ['flag beats env', { COVE_DATA_DIR: '/srv/cove' }, { 'data-dir': '/mnt/cove' }, '/mnt/cove'],
    ['relative to the working directory', { COVE_DATA_DIR: 'cache' }, {}, join(process.cwd(), 'cache')],
  ];
  for (const [name, env, flags, want] of cases) {
    t.equal(load(env, flags).dataDir, want, name);
    t.equal(loadDataDir({ env, flags }), want, `${name}: loadDataDir, which needs no upstream`);
  }
  const inFile = json('dd/cove.json', { dataDir: 'cache' });
  t.equal(loadDataDir({ env: {}, file: inFile }), join(dir, 'dd', 'cache'), 'relative to the config file');
  t.equal(loadDataDir({ env: { COVE_CONFIG: inFile } }), join(dir, 'dd', 'cache'), 'file named by COVE_CONFIG');
  t.match(configError(t, () => load({ COVE_DATA_DIR: ' ' }), 'blank')?.message, /COVE_DATA_DIR: " " must name a directory/);
});

t.test('every bad value gives one line naming the key and the value', async (t) => {
  const cases: Array<[Record<string, string>, Record<string, string>, string]> = [
    [{ COVE_TAG_TTL: '5x' }, {}, 'COVE_TAG_TTL: "5x" is not a duration (use 500ms, 30s, 5m, 14d; a bare number means seconds)'],
    [{ COVE_TAG_TTL: '5 minutes' }, {}, 'COVE_TAG_TTL: "5 minutes" is not a duration'],
    [{}, { 'tag-ttl': '-1s' }, '--tag-ttl: "-1s" is not a duration'],
    [{ COVE_UPSTREAM_TIMEOUT: 'soon' }, {}, 'COVE_UPSTREAM_TIMEOUT: "soon" is not a duration'],
    [{ COVE_UPSTREAM_TIMEOUT: '0s' }, {}, 'COVE_UPSTREAM_TIMEOUT: "0s" must be at least 1 ms'],
    [{}, { 'upstream-timeout': '1y' }, '--upstream-timeout: "1y" is not a duration'],
    [{ COVE_UPSTREAM_BODY_TIMEOUT: '0' }, {}, 'COVE_UPSTREAM_BODY_TIMEOUT: "0" must be at least 1 ms'],
    [{ COVE_SHUTDOWN_GRACE: 'later' }, {}, 'COVE_SHUTDOWN_GRACE: "later" is not a duration'],
    [{ COVE_LOG_LEVEL: 'verbose' }, {}, 'COVE_LOG_LEVEL: "verbose" is not a log level (use fatal|error|warn|info|debug|trace|silent)'],
    [{}, { 'log-level': 'loud' }, '--log-level: "loud" is not a log level'],
    [{ COVE_UPSTREAM_INSECURE: 'maybe' }, {}, 'COVE_UPSTREAM_INSECURE: "maybe" is not a boolean (use true or false)'],
    [{ COVE_LISTEN: 'nowhere' }, {}, 'COVE_LISTEN: "nowhere" is not HOST:PORT'],
    [{ COVE_UPSTREAM: 'ftp://x' }, {}, 'COVE_UPSTREAM: "ftp://x" must be an http:// or https:// URL'],
    [{ COVE_ROUTES: 'docker.io' }, {}, 'COVE_ROUTES: "docker.io" is not MATCH=PREFIX'],
    [{ COVE_DEFAULT_NS: 'ghcr.io' }, {}, 'COVE_DEFAULT_NS: "ghcr.io" names no configured route'],
    [{ HTTP_PROXY: 'proxy:3128' }, {}, 'HTTP_PROXY: "proxy:3128" is not an http:// or https:// proxy URL'],
  ];
  for (const [env, flags, message] of cases) {
    const name = JSON.stringify({ ...env, ...flags });
    const err = configError(t, () => load(env, flags), name);
    t.ok(err?.message.startsWith(message), `${name}: ${err?.message}`);
  }
});

t.test('bad values in the config file name the key and the file', async (t) => {
  const cases: Array<[string, Record<string, unknown>, RegExp]> = [
    ['duration', { tagTtl: '5x' }, /^tagTtl in .*bad-duration.json: "5x" is not a duration/],
    ['negative number', { shutdownGrace: -1 }, /^shutdownGrace in .*: -1 is not a duration/],
    ['listen type', { listen: 5000 }, /^listen in .*: 5000 must be a string/],
    ['bool', { insecure: 'sure' }, /^insecure in .*: "sure" is not a boolean/],
    ['log level', { logLevel: 'chatty' }, /^logLevel in .*: "chatty" is not a log level/],
    ['unknown key', { tagTTL: '5m' }, /bad-unknown-key.json: unknown key "tagTTL" \(known keys: listen, /],
  ];
  for (const [name, values, pattern] of cases) {
    const path = json(`bad-${name.replace(/\W/g, '-')}.json`, { upstream: ORIGIN_URL, ...values });
    t.match(configError(t, () => loadConfig({ env: {}, file: path }), name)?.message, pattern, name);
  }
  const broken = file('broken.json', '{ "upstream": ');
  t.match(configError(t, () => loadConfig({ env: {}, flags: { config: broken } }), 'invalid JSON')?.message, /^--config: ".*broken.json" is not valid JSON \(/);
  const array = file('array.json', '[]');
  t.match(configError(t, () => loadConfig({ env: { COVE_CONFIG: array } }), 'not an object')?.message, /^COVE_CONFIG: ".*array.json" must hold a JSON object/);
  t.match(
    configError(t, () => loadConfig({ env: { COVE_CONFIG: join(dir, 'absent.json') } }), 'missing file')?.message,
    /^COVE_CONFIG: ".*absent.json" cannot be read \(ENOENT\)$/,
  );
});

t.test('the example config loads cleanly', async (t) => {
  const example = join(process.cwd(), 'config', 'cove.example.json');
  const c = loadConfig({ env: {}, file: example });
  t.equal(c.upstreams[0]!.url, 'https://harbor.example.com');
  t.same(c.listen, { host: '0.0.0.0', port: 5000 });
  t.equal(c.tagTtlMs, 300_000);
  t.equal(c.revalidateConcurrency, 8);
  t.equal(c.recoverySpreadMs, 10_000);
  t.ok(c.routes.some((r) => r.match === 'docker.io' && r.libraryPrefix), 'a docker.io route');
  t.equal(loadConfig({ env: { COVE_CONFIG: example } }).upstreams[0]!.url, 'https://harbor.example.com', 'through COVE_CONFIG');
});

t.test('token realms besides the upstream\'s own origin', async (t) => {
  const base = { COVE_UPSTREAM: 'https://harbor.example.com' };
  t.same(loadConfig({ env: { ...base, COVE_UPSTREAM_TOKEN_REALMS: 'https://auth.example.com, https://auth2.example.com:8443' }, flags: {} }).upstreams[0]!.tokenRealms, [
    'https://auth.example.com',
    'https://auth2.example.com:8443',
  ]);
  t.throws(() => loadConfig({ env: { ...base, COVE_UPSTREAM_TOKEN_REALMS: 'auth.example.com' }, flags: {} }), /COVE_UPSTREAM_TOKEN_REALMS/);
  t.throws(() => loadConfig({ env: { ...base, COVE_UPSTREAM_TOKEN_REALMS: 'https://auth.example.com/token' }, flags: {} }), /COVE_UPSTREAM_TOKEN_REALMS entry: .* no path/, 'an origin, not a realm URL');
});

t.test('client auth: mode, decision TTL and grace', async (t) => {
  const base = { COVE_UPSTREAM: 'http://127.0.0.1:1' };
  t.same(loadConfig({ env: base, flags: {} }).clientAuth, { mode: 'open', ttlMs: 300_000, graceMs: 86_400_000 });
  const set = loadConfig({ env: { ...base, COVE_CLIENT_AUTH: 'Passthrough', COVE_CLIENT_AUTH_TTL: '30s', COVE_CLIENT_AUTH_GRACE: '2h' }, flags: {} });
  t.same(set.clientAuth, { mode: 'passthrough', ttlMs: 30_000, graceMs: 7_200_000 });
  t.throws(() => loadConfig({ env: { ...base, COVE_CLIENT_AUTH: 'ldap' }, flags: {} }), /COVE_CLIENT_AUTH: "ldap" is not a client auth mode \(use open or passthrough\)/);
  t.throws(() => loadConfig({ env: { ...base, COVE_CLIENT_AUTH_GRACE: 'soon' }, flags: {} }), /COVE_CLIENT_AUTH_GRACE/);
  t.throws(
    () => loadConfig({ env: { ...base, COVE_CLIENT_AUTH: 'passthrough', COVE_PEERS: 'http://127.0.0.1:5001' }, flags: {} }),
    /passthrough with peers .* needs COVE_PEER_KEY/,
    'peers without a key cannot be told from plain clients',
  );
  t.equal(
    loadConfig({ env: { ...base, COVE_CLIENT_AUTH: 'passthrough', COVE_PEERS: 'http://127.0.0.1:5001', COVE_PEER_KEY: 'k'.repeat(32) }, flags: {} }).clientAuth.mode,
    'passthrough',
  );
});

t.test('offline mode and the upstream-404 policy', async (t) => {
  const base = { COVE_UPSTREAM: 'http://127.0.0.1:1' };
  const defaults = loadConfig({ env: base, flags: {} });
  t.equal(defaults.offline, false);
  t.equal(defaults.onUpstreamNotFound, 'not-found');
  const set = loadConfig({ env: { ...base, COVE_OFFLINE: 'yes', COVE_ON_UPSTREAM_NOT_FOUND: 'serve-stale' }, flags: {} });
  t.equal(set.offline, true);
  t.equal(set.onUpstreamNotFound, 'serve-stale');
  t.throws(() => loadConfig({ env: { ...base, COVE_ON_UPSTREAM_NOT_FOUND: 'ignore' }, flags: {} }), /COVE_ON_UPSTREAM_NOT_FOUND: "ignore" is not a policy/);
  t.throws(() => loadConfig({ env: { ...base, COVE_OFFLINE: 'maybe' }, flags: {} }), /COVE_OFFLINE: "maybe" is not a boolean/);
});

t.test('site, peers and parents', async (t) => {
  const base = { COVE_UPSTREAM: 'http://127.0.0.1:1' };
  const defaults = loadConfig({ env: base, flags: {} });
  t.same(defaults.node, { id: null, site: 'default' });
  t.same(defaults.peers, { urls: [], mdns: false, mdnsInterfaces: [], key: null, timeoutMs: 1000, mdnsMaxPeers: 32 });
  t.same(defaults.parents, []);
  const set = loadConfig({
    env: {
      ...base,
      COVE_NODE_ID: 'edge-7',
      COVE_SITE: 'berlin',
      COVE_PEERS: 'http://10.0.0.2:5000, http://10.0.0.3:5000/,http://10.0.0.2:5000',
      COVE_MDNS: 'true',
      COVE_MDNS_INTERFACES: 'eth0,br0',
      COVE_MDNS_MAX_PEERS: '100',
      COVE_PEER_KEY: 'a-site-key-of-some-length',
      COVE_PEER_TIMEOUT: '300ms',
      COVE_PARENTS: 'https://regional:5000,http://backup:5000',
      COVE_PARENT_TIMEOUT: '2s',
    },
    flags: {},
  });
  t.same(set.node, { id: 'edge-7', site: 'berlin' });
  t.same(set.peers.urls, ['http://10.0.0.2:5000', 'http://10.0.0.3:5000'], 'trimmed, trailing slash dropped, duplicates once');
  t.equal(set.peers.mdns, true);
  t.same(set.peers.mdnsInterfaces, ['eth0', 'br0']);
  t.equal(set.peers.mdnsMaxPeers, 100);
  t.equal(set.peers.key, 'a-site-key-of-some-length');
  t.equal(set.peers.timeoutMs, 300);
  t.same(set.parents.map((p) => [p.name, p.url, p.timeoutMs, p.username]), [
    ['parent:regional:5000', 'https://regional:5000', 2000, null],
    ['parent:backup:5000', 'http://backup:5000', 2000, null],
  ]);
  const bad = (env: Record<string, string>, pattern: RegExp) => t.throws(() => loadConfig({ env: { ...base, ...env }, flags: {} }), pattern);
  bad({ COVE_NODE_ID: 'Edge 7' }, /COVE_NODE_ID: "Edge 7" is not a node id/);
  bad({ COVE_SITE: 'a site' }, /COVE_SITE: "a site" is not a site name/);
  bad({ COVE_PEERS: "http://10.0.0.2:5000,10.0.0.3" }, /COVE_PEERS entry: "10.0.0.3" is not a URL/);
  bad({ COVE_PARENTS: 'http://regional:5000/v2/' }, /COVE_PARENTS entry: .* no path/);
  bad({ COVE_PEER_KEY: 'short' }, /COVE_PEER_KEY: needs at least 16 characters \(value not shown\)/);
  bad({ COVE_MDNS_INTERFACES: 'eth0,not an interface' }, /COVE_MDNS_INTERFACES: .* must list interface names/);
  bad({ COVE_PEER_TIMEOUT: '0s' }, /COVE_PEER_TIMEOUT: "0s" must be at least 1 ms/);
  for (const v of ['0', '1025', '3.5', 'many', '-1']) bad({ COVE_MDNS_MAX_PEERS: v }, /COVE_MDNS_MAX_PEERS: .* must be a whole number from 1 to 1024/);
});

t.test('cache cap, watermarks and idle limit', async (t) => {
  const base = { COVE_UPSTREAM: 'http://127.0.0.1:1' };
  t.same(loadConfig({ env: base, flags: {} }).cache, { maxBytes: null, maxShare: 0.8, highWater: 0.9, lowWater: 0.8, maxIdleMs: null });
  const set = loadConfig({ env: { ...base, COVE_MAX_CACHE_BYTES: '20GiB', COVE_CACHE_HIGH_WATERMARK: '95%', COVE_CACHE_LOW_WATERMARK: '0.7', COVE_MAX_IDLE: '14d' }, flags: {} });
  t.same(set.cache, { maxBytes: 20 * 1024 ** 3, maxShare: null, highWater: 0.95, lowWater: 0.7, maxIdleMs: 14 * 86_400_000 });
  t.same(loadConfig({ env: { ...base, COVE_MAX_CACHE_BYTES: 'off' }, flags: {} }).cache, { maxBytes: null, maxShare: null, highWater: 0.9, lowWater: 0.8, maxIdleMs: null }, 'off: no cap, asked for');
  t.equal(loadConfig({ env: { ...base, COVE_MAX_CACHE_BYTES: '60%' }, flags: {} }).cache.maxShare, 0.6);
  const bad = (env: Record<string, string>, pattern: RegExp) => t.throws(() => loadConfig({ env: { ...base, ...env }, flags: {} }), pattern);
  bad({ COVE_MAX_CACHE_BYTES: 'lots' }, /^COVE_MAX_CACHE_BYTES: /);
  bad({ COVE_CACHE_HIGH_WATERMARK: '1.5' }, /COVE_CACHE_HIGH_WATERMARK: "1.5" must be a share of the cap/);
  bad({ COVE_CACHE_LOW_WATERMARK: '0.95' }, /COVE_CACHE_LOW_WATERMARK \(0.95\) must be below COVE_CACHE_HIGH_WATERMARK \(0.9\)/);
  bad({ COVE_MAX_IDLE: '10s' }, /COVE_MAX_IDLE: "10s" must be at least 60000 ms/);
});

t.test('fill caps, the wait for a slot, the abandon grace and the largest blob', async (t) => {
  const base = { COVE_UPSTREAM: 'http://127.0.0.1:1' };
  t.same(loadConfig({ env: base, flags: {} }).fills, { max: 64, maxPerClient: 32, queueWaitMs: 10_000, abandonGraceMs: 2_000, maxBlobBytes: 16 * 1024 ** 3 });
  const set = loadConfig({
    env: { ...base, COVE_MAX_FILLS: '200', COVE_MAX_FILLS_PER_CLIENT: '50', COVE_FILL_QUEUE_WAIT: '0s', COVE_FILL_ABANDON_GRACE: '500ms', COVE_MAX_BLOB_BYTES: '64GiB' },
    flags: {},
  });
  t.same(set.fills, { max: 200, maxPerClient: 50, queueWaitMs: 0, abandonGraceMs: 500, maxBlobBytes: 64 * 1024 ** 3 });
  t.equal(loadConfig({ env: { ...base, COVE_MAX_FILLS: '8' }, flags: {} }).fills.maxPerClient, 8, 'the per-client default follows a smaller overall cap');
  const bad = (env: Record<string, string>, pattern: RegExp) => t.throws(() => loadConfig({ env: { ...base, ...env }, flags: {} }), pattern);
  bad({ COVE_MAX_FILLS: '0' }, /COVE_MAX_FILLS: "0" must be a whole number from 1 to 100000/);
  bad({ COVE_MAX_FILLS: 'many' }, /COVE_MAX_FILLS: "many" must be a whole number/);
  bad({ COVE_MAX_FILLS_PER_CLIENT: '2.5' }, /COVE_MAX_FILLS_PER_CLIENT: "2.5" must be a whole number/);
  bad({ COVE_MAX_FILLS: '10', COVE_MAX_FILLS_PER_CLIENT: '20' }, /COVE_MAX_FILLS_PER_CLIENT \(20\) must not be above COVE_MAX_FILLS \(10\)/);
  bad({ COVE_FILL_QUEUE_WAIT: 'forever' }, /COVE_FILL_QUEUE_WAIT/);
  bad({ COVE_FILL_ABANDON_GRACE: '-1s' }, /COVE_FILL_ABANDON_GRACE/);
  bad({ COVE_MAX_BLOB_BYTES: '100kB' }, /COVE_MAX_BLOB_BYTES: "100kB" must be a size of at least 1MiB/);
});

t.test('prewarm list, platforms and the admin token', async (t) => {
  const base = { COVE_UPSTREAM: 'http://127.0.0.1:1' };
  const defaults = loadConfig({ env: base, flags: {} });
  t.same(defaults.prewarm, { refs: [], intervalMs: 3_600_000, platforms: [], jobs: 2, queueMax: 1000, copies: 1 });
  t.equal(defaults.adminToken, null);
  const set = loadConfig({ env: { ...base, COVE_PREWARM: 'proj/app:1, proj/base@sha256:' + 'a'.repeat(64), COVE_PREWARM_INTERVAL: '10m', COVE_PLATFORMS: 'linux/arm64,linux/arm/v7', COVE_ADMIN_TOKEN: 'an-admin-token-of-length' }, flags: {} });
  t.same(set.prewarm.refs, ['proj/app:1', `proj/base@sha256:${'a'.repeat(64)}`]);
  t.equal(set.prewarm.intervalMs, 600_000);
  t.match(set.prewarm.platforms, [{ os: 'linux', architecture: 'arm64' }, { os: 'linux', architecture: 'arm', variant: 'v7' }]);
  t.equal(set.adminToken, 'an-admin-token-of-length');
  const bad = (env: Record<string, string>, pattern: RegExp) => t.throws(() => loadConfig({ env: { ...base, ...env }, flags: {} }), pattern);
  bad({ COVE_PLATFORMS: 'linux' }, /COVE_PLATFORMS: "linux" is not OS\/ARCH/);
  bad({ COVE_PREWARM: 'proj/app:1,Not A Ref' }, /^COVE_PREWARM: "Not A Ref": /);
  bad({ COVE_ADMIN_TOKEN: 'short' }, /COVE_ADMIN_TOKEN: needs at least 16 characters/);
  bad({ COVE_PREWARM_INTERVAL: '5s' }, /COVE_PREWARM_INTERVAL: "5s" must be at least 60000 ms/);
});

t.test('admin socket and admin host names', async (t) => {
  const base = { COVE_UPSTREAM: 'http://127.0.0.1:1', COVE_DATA_DIR: '/var/lib/cove-test' };
  t.equal(loadConfig({ env: base, flags: {} }).adminSocket, '/var/lib/cove-test/admin.sock', 'default: in the data directory');
  t.equal(loadConfig({ env: { ...base, RUNTIME_DIRECTORY: '/run/cove:/run/other' }, flags: {} }).adminSocket, '/run/cove/admin.sock', "under systemd: $RUNTIME_DIRECTORY's first entry");
  t.equal(loadConfig({ env: { ...base, RUNTIME_DIRECTORY: '/run/cove', COVE_ADMIN_SOCKET: '/srv/cove.sock' }, flags: {} }).adminSocket, '/srv/cove.sock', 'the setting wins');
  t.equal(loadConfig({ env: { ...base, COVE_ADMIN_SOCKET: 'off' }, flags: {} }).adminSocket, null, '"off" turns it off');
  t.throws(() => loadConfig({ env: { ...base, COVE_ADMIN_SOCKET: `/tmp/${'x'.repeat(100)}/admin.sock` }, flags: {} }), /COVE_ADMIN_SOCKET: the admin socket .* is too long for a Unix socket path/);
  t.throws(() => loadConfig({ env: { ...base, COVE_ADMIN_SOCKET: '/run/cove/' }, flags: {} }), /COVE_ADMIN_SOCKET: "\/run\/cove\/" must name a socket file/);
  t.throws(() => loadConfig({ env: { ...base, COVE_DATA_DIR: `/tmp/${'d'.repeat(100)}` }, flags: {} }), /the data directory: the admin socket .* too long.*set COVE_ADMIN_SOCKET/);

  t.same(loadConfig({ env: base, flags: {} }).adminHosts, []);
  t.same(loadConfig({ env: { ...base, COVE_ADMIN_HOSTS: 'Edge-7.Site.example.com., 10.0.0.7,[fd00::7],*.edge.example.com' }, flags: {} }).adminHosts, [
    'edge-7.site.example.com',
    '10.0.0.7',
    'fd00::7',
    '*.edge.example.com',
  ]);
  t.throws(() => loadConfig({ env: { ...base, COVE_ADMIN_HOSTS: 'edge 7' }, flags: {} }), /COVE_ADMIN_HOSTS: "edge 7" must list host names or addresses/);

  // What the cove command looks for.
  t.same(loadAdminSockets({ env: base }), { sockets: ['/var/lib/cove-test/admin.sock', '/run/cove/admin.sock'], explicit: false });
  t.same(loadAdminSockets({ env: { ...base, RUNTIME_DIRECTORY: '/run/x' } }).sockets, ['/run/x/admin.sock', '/var/lib/cove-test/admin.sock', '/run/cove/admin.sock']);
  t.same(loadAdminSockets({ env: { ...base, COVE_ADMIN_SOCKET: '/srv/a.sock' } }), { sockets: ['/srv/a.sock'], explicit: true });
  t.same(loadAdminSockets({ env: { ...base, COVE_ADMIN_SOCKET: '/srv/a.sock' }, socket: '/srv/b.sock' }).sockets, ['/srv/b.sock'], '--socket wins');
  t.same(loadAdminSockets({ env: { ...base, COVE_ADMIN_SOCKET: 'off' } }), { sockets: [], explicit: true });
  // A token file the socket does not need is not read (a credential name outside systemd, say).
  t.same(loadAdminSockets({ env: { ...base, COVE_ADMIN_TOKEN_FILE: 'cove-admin-token' } }).explicit, false);
  t.equal(loadAdminToken({ env: { ...base, COVE_ADMIN_TOKEN: 'an-admin-token-of-length' } }), 'an-admin-token-of-length');
  t.equal(loadAdminToken({ env: base }), null);
});

t.test('prewarm queue and import limits', async (t) => {
  const defaults = load({});
  t.equal(defaults.prewarm.jobs, 2);
  t.equal(defaults.prewarm.queueMax, 1000);
  t.same(defaults.import, { maxBytes: 64 * 1024 ** 3, maxRatio: 100 });
  t.equal(load({ COVE_MAX_CACHE_BYTES: '20GiB' }).import.maxBytes, 20 * 1024 ** 3, 'the cache cap bounds an import by default');
  t.equal(load({ COVE_MAX_CACHE_BYTES: '50%' }).import.maxBytes, 64 * 1024 ** 3, 'a share of the file system is no size yet: 64 GiB');
  t.equal(load({ COVE_MAX_CACHE_BYTES: 'off' }).import.maxBytes, 64 * 1024 ** 3, 'no cache cap: 64 GiB');
  const set = load({ COVE_PREWARM_JOBS: '4', COVE_PREWARM_QUEUE: '50', COVE_IMPORT_MAX_BYTES: '2GiB', COVE_IMPORT_MAX_RATIO: '0' });
  t.same([set.prewarm.jobs, set.prewarm.queueMax], [4, 50]);
  t.same(set.import, { maxBytes: 2 * 1024 ** 3, maxRatio: 0 }, '0 turns the ratio check off');
  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ COVE_PREWARM_JOBS: '0' }, /COVE_PREWARM_JOBS: "0" must be a whole number from 1 to 64/],
    [{ COVE_PREWARM_JOBS: '2.5' }, /COVE_PREWARM_JOBS: "2.5" must be a whole number/],
    [{ COVE_PREWARM_QUEUE: 'lots' }, /COVE_PREWARM_QUEUE: "lots" must be a whole number from 1 to 100000/],
    [{ COVE_IMPORT_MAX_BYTES: '10KiB' }, /COVE_IMPORT_MAX_BYTES: "10KiB" must be a size of at least 1MiB/],
    [{ COVE_IMPORT_MAX_BYTES: 'big' }, /COVE_IMPORT_MAX_BYTES: /],
    [{ COVE_IMPORT_MAX_RATIO: '1' }, /COVE_IMPORT_MAX_RATIO: "1" must be 0 \(no ratio check\) or at least 2/],
    [{ COVE_IMPORT_MAX_RATIO: '-5' }, /COVE_IMPORT_MAX_RATIO: "-5" must be a whole number/],
  ];
  for (const [env, pattern] of bad) t.match(configError(t, () => load(env), JSON.stringify(env))?.message, pattern);
});

t.test('listener limits: deadlines, header size, connection caps', async (t) => {
  const base = { COVE_UPSTREAM: 'http://127.0.0.1:1' };
  t.same(loadConfig({ env: base, flags: {} }).listenLimits, {
    headersTimeoutMs: 30_000,
    requestTimeoutMs: 300_000,
    maxHeaderBytes: 65_536,
    maxConnections: 4096,
    maxConnectionsPerClient: 256,
  });
  const set = loadConfig({
    env: { ...base, COVE_HEADERS_TIMEOUT: '10s', COVE_REQUEST_TIMEOUT: '0', COVE_MAX_HEADER_SIZE: '32KiB', COVE_MAX_CONNECTIONS: '20000', COVE_MAX_CONNECTIONS_PER_CLIENT: '2000' },
    flags: {},
  });
  t.same(set.listenLimits, { headersTimeoutMs: 10_000, requestTimeoutMs: 0, maxHeaderBytes: 32_768, maxConnections: 20_000, maxConnectionsPerClient: 2000 });
  const file = json('limits.json', { upstream: ORIGIN_URL, headersTimeout: 20, maxConnections: 64, maxConnectionsPerClient: 8, maxHeaderSize: '16KiB' });
  t.same(loadConfig({ env: {}, file }).listenLimits, { headersTimeoutMs: 20_000, requestTimeoutMs: 300_000, maxHeaderBytes: 16_384, maxConnections: 64, maxConnectionsPerClient: 8 }, 'from the config file');
  const bad = (env: Record<string, string>, pattern: RegExp) => t.throws(() => loadConfig({ env: { ...base, ...env }, flags: {} }), pattern);
  bad({ COVE_HEADERS_TIMEOUT: '0' }, /^COVE_HEADERS_TIMEOUT: "0" must be at least 100 ms/);
  bad({ COVE_HEADERS_TIMEOUT: 'soon' }, /^COVE_HEADERS_TIMEOUT: "soon" is not a duration/);
  bad({ COVE_REQUEST_TIMEOUT: '10s' }, /^COVE_REQUEST_TIMEOUT \(10000 ms\) must be 0 \(no bound\) or at least COVE_HEADERS_TIMEOUT \(30000 ms\)/);
  bad({ COVE_MAX_HEADER_SIZE: '1KiB' }, /^COVE_MAX_HEADER_SIZE: "1KiB" must be a size from 4KiB to 1MiB/);
  bad({ COVE_MAX_HEADER_SIZE: 'huge' }, /^COVE_MAX_HEADER_SIZE: "huge" is not a size/);
  bad({ COVE_MAX_CONNECTIONS: '0' }, /^COVE_MAX_CONNECTIONS: "0" must be a whole number of at least 1/);
  bad({ COVE_MAX_CONNECTIONS: 'many' }, /^COVE_MAX_CONNECTIONS: "many" must be a whole number/);
  bad({ COVE_MAX_CONNECTIONS_PER_CLIENT: '1.5' }, /^COVE_MAX_CONNECTIONS_PER_CLIENT: "1.5" must be a whole number/);
  bad({ COVE_MAX_CONNECTIONS: '100', COVE_MAX_CONNECTIONS_PER_CLIENT: '200' }, /COVE_MAX_CONNECTIONS_PER_CLIENT \(200\) must not be above COVE_MAX_CONNECTIONS \(100\)/);
});

t.test('the revalidation deadline', async (t) => {
  const base = { COVE_UPSTREAM: 'http://127.0.0.1:1' };
  t.equal(loadConfig({ env: { ...base, COVE_REVALIDATE_DEADLINE: '250ms' }, flags: {} }).revalidateDeadlineMs, 250);
  t.equal(loadConfig({ env: { ...base, COVE_REVALIDATE_DEADLINE: '0' }, flags: {} }).revalidateDeadlineMs, 0, '0: no deadline, wait for the upstream');
  t.throws(() => loadConfig({ env: { ...base, COVE_REVALIDATE_DEADLINE: 'soon' }, flags: {} }), /^COVE_REVALIDATE_DEADLINE: "soon" is not a duration/);
});

t.test('the pace of revalidations: concurrency and the spread after a recovery', async (t) => {
  const base = { COVE_UPSTREAM: 'http://127.0.0.1:1' };
  const defaults = loadConfig({ env: base, flags: {} });
  t.equal(defaults.revalidateConcurrency, 8, 'eight revalidations ask at once by default');
  t.equal(defaults.recoverySpreadMs, 10_000, 'spread over 10 s after a recovery by default');
  const set = loadConfig({ env: { ...base, COVE_REVALIDATE_CONCURRENCY: '2', COVE_RECOVERY_SPREAD: '30s' }, flags: {} });
  t.equal(set.revalidateConcurrency, 2);
  t.equal(set.recoverySpreadMs, 30_000);
  t.equal(loadConfig({ env: { ...base, COVE_RECOVERY_SPREAD: '0' }, flags: {} }).recoverySpreadMs, 0, '0: no spread');
  t.throws(() => loadConfig({ env: { ...base, COVE_REVALIDATE_CONCURRENCY: '0' }, flags: {} }), /^COVE_REVALIDATE_CONCURRENCY: "0" must be a whole number from 1 to 10000/);
  t.throws(() => loadConfig({ env: { ...base, COVE_REVALIDATE_CONCURRENCY: 'many' }, flags: {} }), /^COVE_REVALIDATE_CONCURRENCY: "many" must be a whole number/);
  t.throws(() => loadConfig({ env: { ...base, COVE_RECOVERY_SPREAD: 'later' }, flags: {} }), /^COVE_RECOVERY_SPREAD: "later" is not a duration/);
  t.throws(() => loadConfig({ env: { ...base, COVE_RECOVERY_SPREAD: '-1s' }, flags: {} }), /^COVE_RECOVERY_SPREAD: /);
});
