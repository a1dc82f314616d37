// `cove client-config`: each generator's text, and --write merging into place with a backup
// (in a temp --root, never the real /etc).
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import t from 'tap';
import {
  backupStamp,
  clientConfig,
  containerdHostsToml,
  dockerDaemonJson,
  hostsLine,
  mergeHosts,
  parseCacheUrl,
  podmanRegistriesConf,
  supportsDialTimeout,
  writeWithBackup,
} from '../../src/cli/client-config.js';
import { ConfigError } from '../../src/errors.js';

const CLI = fileURLToPath(new URL('../../src/cli.js', import.meta.url));
const NOW = new Date('2024-05-06T07:08:09.123Z');

function tempRoot(t: { teardown(fn: () => unknown): unknown }): string {
  const dir = mkdtempSync(join(tmpdir(), 'cove-cc-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('parseCacheUrl', async (t) => {
  t.same(parseCacheUrl('http://10.0.0.5:5000/'), { origin: 'http://10.0.0.5:5000', scheme: 'http', hostname: '10.0.0.5', hostPort: '10.0.0.5:5000', path: '' });
  t.same(parseCacheUrl('https://[fd00::5]:5000/dockerhub/').hostname, 'fd00::5');
  t.equal(parseCacheUrl('https://edge:5000/dockerhub/').path, 'dockerhub');
  for (const bad of ['edge:5000', 'ftp://edge', 'http://u:p@edge:5000', 'http://edge:5000/?x=1', 'not a url']) {
    t.throws(() => parseCacheUrl(bad), ConfigError, `rejects ${bad}`);
  }
});

t.test('docker: registry-mirrors entry, merged into an existing daemon.json', async (t) => {
  const fresh = dockerDaemonJson('http://127.0.0.1:5000', null);
  t.same(JSON.parse(fresh.content), { 'registry-mirrors': ['http://127.0.0.1:5000'] }, 'loopback http: no insecure-registries');
  t.equal(fresh.path, '/etc/docker/daemon.json');
  t.ok(fresh.changed);
  t.ok(fresh.notes.some((n) => /Docker Hub images only/.test(n)), 'notes that mirrors apply to Docker Hub only');
  t.ok(fresh.notes.some((n) => /COVE_DEFAULT_NS=docker\.io/.test(n) && /docker\.io route/.test(n)), 'notes COVE_DEFAULT_NS and the route');

  const lan = dockerDaemonJson('http://10.0.0.5:5000/', '{"log-driver":"journald","registry-mirrors":["https://other.example"],"insecure-registries":["10.9.9.9:5000"]}');
  t.same(JSON.parse(lan.content), {
    'log-driver': 'journald',
    'registry-mirrors': ['https://other.example', 'http://10.0.0.5:5000'],
    'insecure-registries': ['10.9.9.9:5000', '10.0.0.5:5000'],
  }, 'other keys and entries kept; a LAN http Cove is also an insecure registry');

  const tls = dockerDaemonJson('https://edge.example:5000', null);
  t.same(JSON.parse(tls.content), { 'registry-mirrors': ['https://edge.example:5000'] }, 'https: no insecure-registries');

  const again = dockerDaemonJson('http://10.0.0.5:5000', lan.content);
  t.equal(again.changed, false, 'already present: unchanged');
  t.same(JSON.parse(again.content), JSON.parse(lan.content));

  t.throws(() => dockerDaemonJson('http://10.0.0.5:5000', '{not json'), /not valid JSON/);
  t.throws(() => dockerDaemonJson('http://10.0.0.5:5000', '[1]'), /JSON object/);
  t.throws(() => dockerDaemonJson('http://10.0.0.5:5000', '{"registry-mirrors":"x"}'), /not a list of strings/);
  t.throws(() => dockerDaemonJson('http://10.0.0.5:5000/dockerhub', null), /without a path/);
  t.throws(() => dockerDaemonJson('http://10.0.0.5:5000', null, 'ghcr.io'), /Docker Hub images only/);
});

t.test('containerd: hosts.toml per registry', async (t) => {
  const hub = containerdHostsToml('http://10.0.0.5:5000', { containerdVersion: '1.6.20' });
  t.equal(hub.path, '/etc/containerd/certs.d/docker.io/hosts.toml');
  t.match(hub.content, /^server = "https:\/\/registry-1\.docker\.io"$/m);
  t.match(hub.content, /^\[host\."http:\/\/10\.0\.0\.5:5000"\]\n {2}capabilities = \["pull", "resolve"\]$/m);
  t.notMatch(hub.content, /^\s*skip_verify/m, 'no skip_verify unless asked');
  t.notMatch(hub.content, /^\s*dial_timeout/m, 'containerd 1.6 does not know dial_timeout: not emitted');
  t.match(hub.content, /# dial_timeout = "2s" .*\n.*containerd 2\.1 and later/, 'explained in a comment');
  t.ok(hub.notes.some((n) => /config_path = "\/etc\/containerd\/certs\.d"/.test(n)), 'notes the CRI config_path');

  const harbor = containerdHostsToml('https://edge:5000', { registry: 'harbor.example.com:8443', skipVerify: true, containerdVersion: '2.1.0' });
  t.equal(harbor.path, '/etc/containerd/certs.d/harbor.example.com:8443/hosts.toml');
  t.match(harbor.content, /^server = "https:\/\/harbor\.example\.com:8443"$/m);
  t.match(harbor.content, /^ {2}skip_verify = true$/m);
  t.match(harbor.content, /^ {2}dial_timeout = "2s"$/m, 'containerd 2.1: dial_timeout emitted');

  t.equal(supportsDialTimeout('1.7.28'), false);
  t.equal(supportsDialTimeout('2.0.5'), false);
  t.equal(supportsDialTimeout('2.1.0'), true);
  t.equal(supportsDialTimeout(null), false);
  t.throws(() => containerdHostsToml('http://10.0.0.5:5000/x'), /without a path/);
  t.throws(() => containerdHostsToml('http://10.0.0.5:5000', { registry: 'bad host/x' }), /not a registry host/);
});

t.test('podman: registries.conf drop-in', async (t) => {
  const http = podmanRegistriesConf('http://edge:5000/dockerhub/');
  t.equal(http.path, '/etc/containers/registries.conf.d/50-cove.conf');
  t.match(http.content, /\[\[registry\]\]\nprefix = "docker\.io"\nlocation = "docker\.io"\n\n\[\[registry\.mirror\]\]\nlocation = "edge:5000\/dockerhub"\ninsecure = true\n$/);
  const tls = podmanRegistriesConf('https://edge:5000', { registry: 'harbor.example.com' });
  t.match(tls.content, /prefix = "harbor\.example\.com"/);
  t.match(tls.content, /location = "edge:5000"\n$/);
  t.notMatch(tls.content, /insecure/, 'https: not insecure');
});

t.test('hosts: an /etc/hosts line, appended once', async (t) => {
  const entry = hostsLine('https://10.0.0.5', 'harbor.example.com');
  t.equal(entry.line, '10.0.0.5 harbor.example.com');
  t.same(hostsLine('https://10.0.0.5:8443', 'harbor.example.com:8443').name, 'harbor.example.com');
  t.ok(hostsLine('http://10.0.0.5:5000', 'harbor.example.com').notes.some((n) => /cannot change ports/.test(n)), 'port mismatch noted');
  t.throws(() => hostsLine('http://edge:5000', 'harbor.example.com'), /IP address/);
  t.throws(() => hostsLine('http://10.0.0.5', undefined), /--registry/);
  t.throws(() => hostsLine('http://10.0.0.5', 'docker.io'), /Docker Hub/);

  const base = '127.0.0.1 localhost\n::1 localhost ip6-localhost';
  const added = mergeHosts(base, entry);
  t.equal(added.content, `${base}\n10.0.0.5 harbor.example.com # cove client-config\n`);
  t.same(mergeHosts(added.content, entry), { content: added.content, changed: false }, 'present: unchanged');
  t.same(mergeHosts('10.0.0.5  other harbor.example.com\n', entry).changed, false, 'present among aliases');
  t.throws(() => mergeHosts('10.1.1.1 harbor.example.com\n', entry), /already maps harbor\.example\.com to 10\.1\.1\.1/);
  t.equal(mergeHosts('# 10.1.1.1 harbor.example.com\n', entry).changed, true, 'comments do not count');
});

t.test('writeWithBackup', async (t) => {
  const root = tempRoot(t);
  const file = join(root, 'etc', 'x', 'conf');
  t.same(await writeWithBackup(file, 'one\n', NOW), { path: file, state: 'created', backup: null }, 'parents created');
  chmodSync(file, 0o600);
  t.same(await writeWithBackup(file, 'one\n', NOW), { path: file, state: 'unchanged', backup: null });
  const second = await writeWithBackup(file, 'two\n', NOW);
  t.same(second, { path: file, state: 'updated', backup: `${file}.bak-20240506T070809Z` });
  t.equal(readFileSync(`${file}.bak-20240506T070809Z`, 'utf8'), 'one\n');
  t.equal(readFileSync(file, 'utf8'), 'two\n');
  t.equal(statSync(file).mode & 0o777, 0o600, 'mode kept');
  const third = await writeWithBackup(file, 'three\n', NOW);
  t.equal(third.backup, `${file}.bak-20240506T070809Z-1`, 'a second backup in the same second does not overwrite the first');
  t.equal(readFileSync(third.backup!, 'utf8'), 'two\n');
  t.same(readdirSync(join(root, 'etc', 'x')).sort(), ['conf', 'conf.bak-20240506T070809Z', 'conf.bak-20240506T070809Z-1'], 'no temp file left');
  t.equal(backupStamp(NOW), '20240506T070809Z');
});

t.test('clientConfig --write under --root', async (t) => {
  const root = tempRoot(t);
  mkdirSync(join(root, 'etc', 'docker'), { recursive: true });
  const daemonJson = join(root, 'etc', 'docker', 'daemon.json');
  const original = '{\n  "log-driver": "journald",\n  "storage-driver": "overlay2"\n}\n';
  writeFileSync(daemonJson, original);

  const printed = await clientConfig({ client: 'docker', cache: 'http://10.0.0.5:5000', write: false, root, skipVerify: false });
  t.match(printed.stdout, new RegExp(`^# ${daemonJson}\\n`), 'prints the path');
  t.same(JSON.parse(printed.stdout.replace(/^#.*\n/, '')), { 'log-driver': 'journald', 'storage-driver': 'overlay2', 'registry-mirrors': ['http://10.0.0.5:5000'], 'insecure-registries': ['10.0.0.5:5000'] }, 'prints the merged file');
  t.equal(readFileSync(daemonJson, 'utf8'), original, 'without --write nothing changes');
  t.match(printed.stderr, /note: registry-mirrors applies to Docker Hub images only/);

  const written = await clientConfig({ client: 'docker', cache: 'http://10.0.0.5:5000', write: true, root, skipVerify: false, now: NOW });
  t.match(written.stdout, /daemon\.json: updated \(previous file kept as .*daemon\.json\.bak-20240506T070809Z\)/);
  t.equal(readFileSync(`${daemonJson}.bak-20240506T070809Z`, 'utf8'), original, 'backup holds the old file');
  t.same(JSON.parse(readFileSync(daemonJson, 'utf8')), JSON.parse(printed.stdout.replace(/^#.*\n/, '')));
  const again = await clientConfig({ client: 'docker', cache: 'http://10.0.0.5:5000', write: true, root, skipVerify: false, now: new Date() });
  t.match(again.stdout, /already up to date/);
  t.equal(readdirSync(join(root, 'etc', 'docker')).length, 2, 'no second backup');

  const ctd = await clientConfig({ client: 'containerd', cache: 'http://10.0.0.5:5000', registry: 'harbor.example.com', write: true, root, skipVerify: false, containerdVersion: '1.6.20' });
  t.match(ctd.stdout, /certs\.d\/harbor\.example\.com\/hosts\.toml: created/);
  t.match(readFileSync(join(root, 'etc/containerd/certs.d/harbor.example.com/hosts.toml'), 'utf8'), /\[host\."http:\/\/10\.0\.0\.5:5000"\]/);
  t.match(ctd.stderr, /config_path/);

  const pod = await clientConfig({ client: 'podman', cache: 'http://10.0.0.5:5000/dockerhub', write: true, root, skipVerify: false });
  t.match(pod.stdout, /50-cove\.conf: created/);
  t.match(readFileSync(join(root, 'etc/containers/registries.conf.d/50-cove.conf'), 'utf8'), /location = "10\.0\.0\.5:5000\/dockerhub"/);

  writeFileSync(join(root, 'etc', 'hosts'), '127.0.0.1 localhost\n');
  const h = await clientConfig({ client: 'hosts', cache: 'https://10.0.0.5', registry: 'harbor.example.com', write: true, root, skipVerify: false, now: NOW });
  t.match(h.stdout, /hosts: updated \(previous file kept as .*hosts\.bak-20240506T070809Z\)/);
  t.equal(readFileSync(join(root, 'etc', 'hosts'), 'utf8'), '127.0.0.1 localhost\n10.0.0.5 harbor.example.com # cove client-config\n');
  const h2 = await clientConfig({ client: 'hosts', cache: 'https://10.0.0.5', registry: 'harbor.example.com', write: true, root, skipVerify: false });
  t.match(h2.stdout, /already up to date/);

  await t.rejects(clientConfig({ client: 'rkt', cache: 'http://x', write: false, skipVerify: false }), /one of docker, containerd, podman, hosts/);
  await t.rejects(clientConfig({ client: 'docker', cache: undefined, write: false, skipVerify: false }), /--cache URL/);
  await t.rejects(clientConfig({ client: 'docker', cache: 'http://x:1', write: false, skipVerify: true }), /containerd only/);
});

t.test('the cove command: client-config prints, and refuses bad input with one line', async (t) => {
  const root = tempRoot(t);
  const ok = spawnSync(process.execPath, [CLI, 'client-config', 'containerd', '--cache', 'http://127.0.0.1:5000', '--root', root], { encoding: 'utf8', timeout: 20_000 });
  t.equal(ok.status, 0, `exit 0 ${ok.status === 0 ? '' : ok.stderr}`.trim());
  t.match(ok.stdout, new RegExp(`^# ${root}/etc/containerd/certs\\.d/docker\\.io/hosts\\.toml\\n`));
  t.match(ok.stdout, /capabilities = \["pull", "resolve"\]/);
  t.same(readdirSync(root), [], 'without --write nothing is written');
  const bad = spawnSync(process.execPath, [CLI, 'client-config', 'hosts', '--cache', 'http://edge:5000', '--registry', 'harbor.example.com'], { encoding: 'utf8', timeout: 20_000 });
  t.equal(bad.status, 2);
  t.match(bad.stderr, /^cove: client-config hosts needs the Cove's IP address/);
  t.equal(bad.stderr.trim().split('\n').length, 1);
  const help = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8', timeout: 20_000 });
  t.match(help.stdout, /cove client-config docker\|containerd\|podman\|hosts --cache URL/);
});
