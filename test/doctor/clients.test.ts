// `cove doctor` and the client configurations on this host: the real CLI over a --root holding
// daemon.json, certs.d/*/hosts.toml, registries.conf.d drop-ins and a hosts file, and the checks
// in-process for the cases that need no origin. Files come from `cove client-config` where it
// writes them, so the doctor is held to the shapes Cove itself produces.
import t from 'tap';
import { containerdHostsToml, dockerDaemonJson, podmanRegistriesConf } from '../../src/cli/client-config.js';
import { checkContainerd, checkDockerDaemon, checkHostsFile, checkPodman } from '../../src/doctor/checks/clients.js';
import { thisCove } from '../../src/doctor/this-host.js';
import { loadConfig } from '../../src/config.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { doctor, rootWith } from './helpers.js';

const LISTEN = '127.0.0.1:5999';
const COVE = `http://${LISTEN}`;

function setup(env: Record<string, string> = {}) {
  const config = loadConfig({ env: { COVE_UPSTREAM: 'https://harbor.example.test', COVE_LISTEN: LISTEN, COVE_DATA_DIR: '/nonexistent', ...env } });
  return { config, cove: thisCove(config, null, ['127.0.0.1', '::1', '10.1.2.3']) };
}

t.test('end to end: daemon.json and a hosts.toml pointing elsewhere fail, pointing here pass', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const registry = new URL(origin.url).host;
  const env = { COVE_UPSTREAM: origin.url, COVE_LISTEN: LISTEN, COVE_ROUTES: 'docker.io=dockerhub/', COVE_DEFAULT_NS: 'docker.io' };

  const elsewhere = rootWith(t, {
    '/etc/docker/daemon.json': dockerDaemonJson('http://10.9.9.9:5000', '{"log-driver": "journald"}').content,
    [`/etc/containerd/certs.d/${registry}/hosts.toml`]: containerdHostsToml('http://10.9.9.9:5000', { registry, containerdVersion: '1.6.20' }).content,
  });
  const bad = await doctor(t, env, ['--root', elsewhere]);
  t.equal(bad.code, 1);
  t.equal(bad.check('docker daemon.json').status, 'fail');
  t.match(bad.check('docker daemon.json').message, /\/etc\/docker\/daemon\.json sends Docker Hub pulls to http:\/\/10\.9\.9\.9:5000, not to this Cove \(127\.0\.0\.1:5999\)/);
  t.equal(bad.check(`containerd ${registry}`).status, 'fail');
  t.match(bad.check(`containerd ${registry}`).message, new RegExp(`sends ${registry.replace(/\./g, '\\.')} pulls to http://10\\.9\\.9\\.9:5000 \\(then https://${registry.replace(/\./g, '\\.')}\\), not to this Cove`));
  t.equal(bad.report!.counts.fail, 2, 'those two and nothing else');

  const here = rootWith(t, {
    '/etc/docker/daemon.json': dockerDaemonJson(COVE, null).content,
    [`/etc/containerd/certs.d/${registry}/hosts.toml`]: containerdHostsToml(COVE, { registry, containerdVersion: '2.1.0' }).content,
    '/etc/containerd/certs.d/ghcr.io/hosts.toml': containerdHostsToml('http://10.9.9.9:5000', { registry: 'ghcr.io', containerdVersion: '2.1.0' }).content,
    '/etc/containers/registries.conf.d/50-cove.conf': podmanRegistriesConf(COVE, { registry }).content,
    '/etc/hosts': '127.0.0.1 localhost\n',
  });
  const good = await doctor(t, env, ['--root', here]);
  t.equal(good.code, 0, 'exit 0', { stdout: good.stdout });
  t.match(good.check('docker daemon.json').message, /sends Docker Hub pulls to this Cove \(http:\/\/127\.0\.0\.1:5999\)/);
  t.equal(good.check(`containerd ${registry}`).status, 'ok');
  t.equal(good.check('containerd ghcr.io').status, 'skip', 'a registry this Cove does not serve is not its business');
  t.equal(good.check('podman 50-cove.conf').status, 'ok');
  t.match(good.check('hosts file'), { status: 'skip', message: /the origin is named by its address/ }, 'an origin named by address cannot be redirected');

  const broken = rootWith(t, { '/etc/docker/daemon.json': '{"registry-mirrors": ["http://127.0.0.1:5999",]}' });
  const json = await doctor(t, env, ['--root', broken]);
  t.equal(json.code, 1);
  t.match(json.check('docker daemon.json').message, /\/etc\/docker\/daemon\.json is not valid JSON \(.*\): dockerd will not start with it/);
});

t.test('daemon.json in detail', async (t) => {
  const { config, cove } = setup({ COVE_ROUTES: 'docker.io=dockerhub/', COVE_DEFAULT_NS: 'docker.io' });
  const run = async (files: Record<string, string>, c = config) => checkDockerDaemon(rootWith(t, files), cove, c);
  t.equal((await run({})).status, 'skip', 'absent');
  t.match((await run({ '/etc/docker/daemon.json': '{"debug": true}' })).message, /lists no registry-mirrors/);
  t.match((await run({ '/etc/docker/daemon.json': '[1]' })).message, /does not hold a JSON object/);
  t.match((await run({ '/etc/docker/daemon.json': '{"registry-mirrors": "http://x"}' })).message, /is not a list of URL strings/);
  const scheme = await run({ '/etc/docker/daemon.json': '{"registry-mirrors": ["https://127.0.0.1:5999"]}' });
  t.equal(scheme.status, 'fail');
  t.match(scheme.message, /names this Cove as https:\/\/127\.0\.0\.1:5999, but that port speaks plain HTTP/);
  const viaName = await run({ '/etc/docker/daemon.json': '{"registry-mirrors": ["http://localhost:5999/"]}' });
  t.equal(viaName.status, 'ok', 'localhost is this Cove on loopback');
  const noNs = setup({ COVE_ROUTES: 'docker.io=dockerhub/' });
  const missing = await checkDockerDaemon(rootWith(t, { '/etc/docker/daemon.json': dockerDaemonJson(COVE, null).content }), noNs.cove, noNs.config);
  t.equal(missing.status, 'fail');
  t.match(missing.message, /needs COVE_DEFAULT_NS=docker\.io and a docker\.io route/);
  const noHub = setup();
  const other = await checkDockerDaemon(rootWith(t, { '/etc/docker/daemon.json': dockerDaemonJson('http://10.9.9.9:5000', null).content }), noHub.cove, noHub.config);
  t.equal(other.status, 'skip', 'Docker Hub mirrors elsewhere are fine when this Cove has no docker.io route');
});

t.test('a wildcard listen address: this host\'s addresses and names count', async (t) => {
  const config = loadConfig({ env: { COVE_UPSTREAM: 'https://harbor.example.test', COVE_LISTEN: '0.0.0.0:5000', COVE_DATA_DIR: '/nonexistent', COVE_ROUTES: 'docker.io=dockerhub/', COVE_DEFAULT_NS: 'docker.io' } });
  const cove = thisCove(config, '10.1.2.3 edge-1.lan edge-1\n', ['127.0.0.1', '10.1.2.3']);
  for (const url of ['http://10.1.2.3:5000', 'http://edge-1.lan:5000', 'http://127.0.0.1:5000']) {
    const r = await checkDockerDaemon(rootWith(t, { '/etc/docker/daemon.json': JSON.stringify({ 'registry-mirrors': [url] }) }), cove, config);
    t.equal(r.status, 'ok', url);
  }
  const port = await checkDockerDaemon(rootWith(t, { '/etc/docker/daemon.json': JSON.stringify({ 'registry-mirrors': ['http://10.1.2.3:5001'] }) }), cove, config);
  t.equal(port.status, 'fail', 'another port is another service');
});

t.test('containerd hosts.toml in detail', async (t) => {
  const { config, cove } = setup();
  const dir = '/etc/containerd/certs.d/harbor.example.test';
  t.equal((await checkContainerd(rootWith(t, {}), cove, config))[0]!.status, 'skip', 'absent');
  const broken = await checkContainerd(rootWith(t, { [`${dir}/hosts.toml`]: 'server = "https://harbor.example.test"\n[host."http://127.0.0.1:5999"\n' }), cove, config);
  t.equal(broken[0]!.status, 'fail');
  t.match(broken[0]!.message, /is not valid TOML \(line 2: a table header must end with \]\)/);
  const noPull = await checkContainerd(rootWith(t, { [`${dir}/hosts.toml`]: '[host."http://127.0.0.1:5999"]\ncapabilities = ["resolve"]\n' }), cove, config);
  t.match(noPull[0]!.message, /without the "pull" capability/);
  const unrouted = await checkContainerd(rootWith(t, { '/etc/containerd/certs.d/quay.io/hosts.toml': containerdHostsToml(COVE, { registry: 'quay.io', containerdVersion: null }).content }), cove, config);
  t.equal(unrouted[0]!.status, 'fail');
  t.match(unrouted[0]!.message, /this Cove has no route for quay\.io/);
  const caOnly = await checkContainerd(rootWith(t, { [`${dir}/ca.crt`]: 'x' }), cove, config);
  t.match(caOnly[0]!.message, /holds no hosts\.toml/);
});

t.test('podman drop-ins in detail', async (t) => {
  const { config, cove } = setup();
  const path = '/etc/containers/registries.conf.d/50-cove.conf';
  t.equal((await checkPodman(rootWith(t, {}), cove, config))[0]!.status, 'skip', 'absent');
  const good = await checkPodman(rootWith(t, { [path]: podmanRegistriesConf(COVE, { registry: 'harbor.example.test' }).content }), cove, config);
  t.equal(good[0]!.status, 'ok');
  const secure = await checkPodman(rootWith(t, { [path]: podmanRegistriesConf(COVE, { registry: 'harbor.example.test' }).content.replace('insecure = true\n', '') }), cove, config);
  t.equal(secure[0]!.status, 'fail');
  t.match(secure[0]!.message, /without insecure = true, but it speaks plain HTTP/);
  const elsewhere = await checkPodman(rootWith(t, { [path]: podmanRegistriesConf('http://10.9.9.9:5000', { registry: 'harbor.example.test' }).content }), cove, config);
  t.equal(elsewhere[0]!.status, 'fail');
  t.match(elsewhere[0]!.message, /sends harbor\.example\.test pulls to 10\.9\.9\.9:5000, not to this Cove/);
  const broken = await checkPodman(rootWith(t, { [path]: '[[registry]\nprefix = "x"\n' }), cove, config);
  t.match(broken[0]!.message, /is not valid TOML \(line 1: a table header must end with \]\]\): podman refuses to run with it/);
  const unrelated = await checkPodman(rootWith(t, { [path]: 'unqualified-search-registries = ["docker.io"]\n' }), cove, config);
  t.equal(unrelated[0]!.status, 'skip');
});

t.test('the hosts file: redirecting the origin\'s name to this host is a loop', async (t) => {
  const config = setup().config;
  const addresses = ['127.0.0.1', '10.1.2.3'];
  const loop = await checkHostsFile(rootWith(t, { '/etc/hosts': '127.0.0.1 localhost\n10.1.2.3 harbor.example.test # cove client-config\n' }), config, addresses);
  t.equal(loop.status, 'fail');
  t.match(loop.message, /line 2 maps the origin's name harbor\.example\.test to 10\.1\.2\.3, this host: Cove here would send its own origin requests to itself/);
  const pinned = await checkHostsFile(rootWith(t, { '/etc/hosts': '192.0.2.10 harbor.example.test\n' }), config, addresses);
  t.equal(pinned.status, 'ok');
  t.match(pinned.message, /pins the origin's name harbor\.example\.test to 192\.0\.2\.10/);
  const none = await checkHostsFile(rootWith(t, { '/etc/hosts': '127.0.0.1 localhost # harbor.example.test\n' }), config, addresses);
  t.match(none.message, /does not redirect the origin's name/);
});
