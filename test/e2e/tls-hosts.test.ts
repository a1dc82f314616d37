// dockerd pulls harbor.test/proj/app:1 from Cove on TLS, the Harbor hostname redirected to the edge
// node the way an /etc/hosts entry does it, and Cove's CA trusted through certs.d; no
// insecure-registries anywhere.
//
// The redirection must not touch this machine's /etc/hosts or /etc/docker: dockerd runs in a
// private mount namespace (`unshare --mount --propagation private`, no fork, so the PID the harness
// signals is dockerd's) where a test-owned hosts file (its line written by `cove client-config hosts`) is bind-mounted over /etc/hosts and a
// test-owned directory over /etc/docker (holding certs.d/harbor.test/ca.crt). dockerd resolves
// names through glibc (files before dns), so harbor.test -> 127.0.0.1 for dockerd only; the
// bind mounts vanish with the namespace when dockerd exits. A wrapper named `dockerd` first on
// PATH sets this up and execs the real one; startDockerd is used unchanged.
//
// Docker uses port 443 for a registry name without a port, so Cove listens on 127.0.0.1:443 (the
// test runs as root). If 443 is taken, the image name carries the port instead
// (harbor.test:<port>/..., CA under certs.d/harbor.test:<port>/), and the test says so.
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { request as httpRequest } from 'node:http';
import { createServer } from 'node:net';
import { join } from 'node:path';
import t from 'tap';
import {
  COVE_CLI,
  Cleanup,
  buildImage,
  dockerCli,
  pushImage,
  requireRoot,
  requireTools,
  run,
  startContainerd,
  startDockerd,
  startCove,
  startRegistry,
  tempDir,
  which,
} from './real.js';
import { freePort } from '../helpers/process.js';

const TOOLS = ['docker-registry', 'skopeo', 'umoci', 'containerd', 'ctr', 'dockerd', 'unshare', 'mount', 'openssl'];
const HOST = 'harbor.test';

/** True when 127.0.0.1:`port` can be bound now. */
function bindable(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** GET over TLS to 127.0.0.1:port, the certificate checked for HOST against `ca`. */
function httpsStatus(port: number, path: string, ca: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = httpsGet({ host: '127.0.0.1', port, path, servername: HOST, ca, timeout: 2000, headers: { host: HOST } }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

t.test('dockerd pulls harbor.test/proj/app:1 from Cove over TLS via a hosts override', async (t) => {
  if (!requireTools(t, TOOLS)) return;
  if (dockerCli() === null && !requireTools(t, ['docker'])) return;
  if (!requireRoot(t, 'dockerd and bind mounts')) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup);
  const origin = await startRegistry(cleanup);
  const image = await buildImage(join(work, 'layout'), 'app', [800_000, 1_200_000], 'tls-hosts');
  await pushImage(image, origin, 'proj/app:1');

  // The certificate as an operator makes it: cove cert --host harbor.test.
  const tls = join(work, 'tls');
  const made = await run(process.execPath, [COVE_CLI, 'cert', '--host', HOST, '--out', tls, '--days', '2']);
  t.match(made.stdout, `/etc/docker/certs.d/${HOST}/ca.crt`, 'cove cert names the Docker CA path');
  const ca = readFileSync(join(tls, 'ca.crt'));

  const port = (await bindable(443)) ? 443 : await freePort();
  if (port !== 443) t.comment(`127.0.0.1:443 is taken: Cove listens on ${port} and the image is ${HOST}:${port}/proj/app:1`);
  const registryName = port === 443 ? HOST : `${HOST}:${port}`;

  // Cove on TLS: ready once /healthz answers over TLS (the plain check would get the TLS port's 400).
  const cove = await startCove(
    cleanup,
    origin.url,
    { COVE_TLS_CERT: join(tls, 'server.crt'), COVE_TLS_KEY: join(tls, 'server.key') },
    { port, ready: async (p) => (await httpsStatus(p, '/healthz', ca)) === 200 },
  );
  t.equal(await httpsStatus(port, '/v2/', ca), 200, `Cove's certificate is valid for ${HOST} under the generated CA`);

  // Plain HTTP to the TLS port: the clear 400, not a hang.
  const plain = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path: '/v2/', headers: { host: registryName }, timeout: 3000 }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('timeout', () => req.destroy(new Error('plain HTTP request hung')));
    req.on('error', reject);
    req.end();
  });
  t.equal(plain.status, 400, 'plain HTTP on the TLS port gets 400');
  t.match(plain.body, `this port speaks HTTPS; use https://${HOST}:${port}`);

  // The resolver override and the CA, for dockerd only.
  // The hosts line is the one `cove client-config hosts` writes, merged into a test-owned copy.
  const hostsRoot = join(work, 'hosts-root');
  mkdirSync(join(hostsRoot, 'etc'), { recursive: true });
  writeFileSync(join(hostsRoot, 'etc', 'hosts'), '127.0.0.1 localhost\n::1 localhost ip6-localhost\n');
  const cacheUrl = port === 443 ? 'https://127.0.0.1' : `https://127.0.0.1:${port}`;
  const generated = await run(process.execPath, [COVE_CLI, 'client-config', 'hosts', '--cache', cacheUrl, '--registry', HOST, '--write', '--root', hostsRoot]);
  t.equal(generated.code, 0, `cove client-config hosts wrote the line (${generated.stderr.trim()})`);
  const hosts = join(hostsRoot, 'etc', 'hosts');
  t.match(readFileSync(hosts, 'utf8'), new RegExp(`^127\\.0\\.0\\.1\\s+${HOST.replace(/\./g, '\\.')}(\\s|$)`, 'm'), 'the generated /etc/hosts line names the registry');
  const etcDocker = join(work, 'etc-docker');
  mkdirSync(join(etcDocker, 'certs.d', registryName), { recursive: true });
  writeFileSync(join(etcDocker, 'certs.d', registryName, 'ca.crt'), ca);
  const bin = join(work, 'bin');
  mkdirSync(bin);
  const realDockerd = which('dockerd')!;
  writeFileSync(
    join(bin, 'dockerd'),
    [
      '#!/bin/sh',
      '# dockerd in a private mount namespace with the test\'s hosts file and /etc/docker, nothing else.',
      `export NO_PROXY="\${NO_PROXY:+$NO_PROXY,}${HOST}" no_proxy="\${no_proxy:+$no_proxy,}${HOST}"`,
      `exec unshare --mount --propagation private -- /bin/sh -c 'mount --bind "${hosts}" /etc/hosts && mount --bind "${etcDocker}" /etc/docker && exec "${realDockerd}" "$@"' dockerd "$@"`,
      '',
    ].join('\n'),
  );
  chmodSync(join(bin, 'dockerd'), 0o755);
  const containerd = await startContainerd(cleanup);
  const savedPath = process.env.PATH;
  process.env.PATH = `${bin}:${savedPath ?? '/usr/bin:/bin'}`;
  let dockerd: Awaited<ReturnType<typeof startDockerd>>;
  try {
    dockerd = await startDockerd(cleanup, containerd.socket, {}); // no insecure-registries, no mirrors
  } finally {
    process.env.PATH = savedPath;
  }
  const { docker } = dockerd;
  t.notOk(readFileSync('/etc/hosts', 'utf8').includes(HOST), `this machine's /etc/hosts never names ${HOST}`);
  const info = JSON.parse((await docker(['info', '--format', '{{json .RegistryConfig.IndexConfigs}}'])).stdout) as Record<string, { Secure: boolean }>;
  t.notOk(info[registryName] && !info[registryName].Secure, `${registryName} is not an insecure registry`);

  const ref = `${registryName}/proj/app:1`;
  origin.markNow();
  const pull = await docker(['pull', '-q', ref]);
  t.comment(`docker pull ${ref}: ${pull.ms.toFixed(0)} ms`);
  const id = (await docker(['image', 'inspect', '--format', '{{.Id}}', ref])).stdout.trim();
  t.equal(id, image.config.digest, 'image ID is the config digest');
  t.ok(
    origin.since().some((e) => e.method === 'GET' && e.path === `/v2/proj/app/blobs/${image.layers[0]!.digest}`),
    'Cove fetched the layer from the origin',
  );
  t.ok(
    await cove.logged((l) => l.msg === 'request' && l.method === 'GET' && l.status === 200 && String(l.path).startsWith(`/v2/proj/app/blobs/${image.layers[0]!.digest}`)),
    'Cove logged the layer it served over TLS',
  );
});
