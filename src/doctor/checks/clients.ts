// The container clients' configuration on this host (below --root, default /): does each file
// that exists send the pulls of a registry this Cove serves to this Cove? The files and their
// shapes are those `cove client-config` writes (src/cli/client-config.ts). A missing file is not
// a problem: a node may serve only other hosts' clients.
import { readdir, readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { CONTAINERD_CERTS_D, DOCKER_DAEMON_JSON, ETC_HOSTS } from '../../cli/client-config.js';
import type { Config } from '../../config.js';
import type { CheckResult } from '../report.js';
import { localAddresses, parseHostsFile, pointsHere, servedRegistries, type ThisCove } from '../this-host.js';
import { parseToml, TomlError, type TomlTable } from '../toml.js';

export const REGISTRIES_CONF_D = '/etc/containers/registries.conf.d';
const DOCKER_HUB = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

type ClientConfig = Pick<Config, 'upstreams' | 'routes' | 'defaultNs'>;

/** The text of a file below `root`, null when absent; other read errors are thrown. */
async function readUnder(root: string, path: string): Promise<string | null> {
  try {
    return await readFile(join(root, path), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function unreadable(name: string, path: string, err: unknown): CheckResult {
  return { name, status: 'fail', message: `${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})` };
}

function list(urls: string[]): string {
  return urls.length === 0 ? 'nowhere' : urls.join(', ');
}

/** dockerd's registry-mirrors (Docker Hub pulls only). */
export async function checkDockerDaemon(root: string, cove: ThisCove, config: ClientConfig): Promise<CheckResult> {
  const name = 'docker daemon.json';
  const file = join(root, DOCKER_DAEMON_JSON);
  let text: string | null;
  try {
    text = await readUnder(root, DOCKER_DAEMON_JSON);
  } catch (err) {
    return unreadable(name, file, err);
  }
  if (text === null) return { name, status: 'skip', message: `${file} is absent: dockerd (if any) on this host uses no mirror` };
  let parsed: unknown;
  try {
    parsed = text.trim() === '' ? {} : JSON.parse(text);
  } catch (err) {
    return { name, status: 'fail', message: `${file} is not valid JSON (${(err as Error).message}): dockerd will not start with it; fix the file (cove client-config docker shows the lines to add)` };
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return { name, status: 'fail', message: `${file} does not hold a JSON object: dockerd will not start with it` };
  const mirrors = (parsed as Record<string, unknown>)['registry-mirrors'];
  if (mirrors === undefined) return { name, status: 'skip', message: `${file} lists no registry-mirrors: dockerd on this host pulls Docker Hub directly` };
  if (!Array.isArray(mirrors) || !mirrors.every((m) => typeof m === 'string')) {
    return { name, status: 'fail', message: `"registry-mirrors" in ${file} is not a list of URL strings: dockerd will not start with it` };
  }
  const served = servedRegistries(config);
  const hub = DOCKER_HUB.some((n) => served.has(n));
  const here = (mirrors as string[]).map((m) => ({ m, where: pointsHere(cove, m.replace(/\/+$/, '')) }));
  const mine = here.filter((h) => h.where === 'yes');
  const wrongScheme = here.filter((h) => h.where === 'scheme');
  if (mine.length > 0) {
    if (!hub || config.defaultNs === null || !DOCKER_HUB.includes(config.defaultNs)) {
      return {
        name,
        status: 'fail',
        message: `${file} sends Docker Hub pulls to this Cove (${mine[0]!.m}), but dockerd asks for /v2/library/... without ?ns=: this Cove needs COVE_DEFAULT_NS=docker.io and a docker.io route (e.g. COVE_ROUTES=docker.io=dockerhub/)`,
      };
    }
    return { name, status: 'ok', message: `${file} sends Docker Hub pulls to this Cove (${mine[0]!.m})` };
  }
  if (wrongScheme.length > 0) {
    const url = new URL(wrongScheme[0]!.m);
    const speaks = url.protocol === 'https:' ? 'plain HTTP' : 'HTTPS';
    return { name, status: 'fail', message: `${file} names this Cove as ${wrongScheme[0]!.m}, but that port speaks ${speaks}; fix the scheme in registry-mirrors` };
  }
  if (!hub) return { name, status: 'skip', message: `${file} sends Docker Hub pulls to ${list(mirrors as string[])}; this Cove has no docker.io route, so that is not its business` };
  return { name, status: 'fail', message: `${file} sends Docker Hub pulls to ${list(mirrors as string[])}, not to this Cove (${cove.label}); run cove client-config docker --cache URL --write` };
}

/** containerd's certs.d/<registry>/hosts.toml, one result per registry directory. */
export async function checkContainerd(root: string, cove: ThisCove, config: ClientConfig): Promise<CheckResult[]> {
  const certsD = join(root, CONTAINERD_CERTS_D);
  let dirs: string[];
  try {
    dirs = (await readdir(join(root, CONTAINERD_CERTS_D), { withFileTypes: true })).filter((d) => d.isDirectory()).map((d) => d.name).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [{ name: 'containerd certs.d', status: 'skip', message: `${certsD} is absent: containerd (if any) on this host uses no registry hosts` }];
    return [unreadable('containerd certs.d', certsD, err)];
  }
  const served = servedRegistries(config);
  const out: CheckResult[] = [];
  for (const dir of dirs) {
    const file = `${CONTAINERD_CERTS_D}/${dir}/hosts.toml`;
    const path = join(root, file);
    const name = `containerd ${dir}`;
    let text: string | null;
    try {
      text = await readUnder(root, file);
    } catch (err) {
      out.push(unreadable(name, path, err));
      continue;
    }
    if (text === null) continue; // a directory of CA files only
    let doc: TomlTable;
    try {
      doc = parseToml(text);
    } catch (err) {
      out.push({ name, status: 'fail', message: `${path} is not valid TOML (${(err as Error).message}): containerd ignores the registry's hosts; fix the file (cove client-config containerd shows one)` });
      continue;
    }
    const hosts = typeof doc.host === 'object' && doc.host !== null && !Array.isArray(doc.host) ? Object.keys(doc.host) : [];
    const registry = dir.toLowerCase();
    const isServed = served.has(registry);
    const mine = hosts.filter((h) => pointsHere(cove, h.replace(/\/+$/, '')) === 'yes');
    if (mine.length > 0) {
      const host = (doc.host as TomlTable)[mine[0]!] as TomlTable;
      const caps = Array.isArray(host.capabilities) ? host.capabilities : null;
      if (!isServed) {
        out.push({ name, status: 'fail', message: `${path} sends ${dir} pulls to this Cove (${mine[0]}), but this Cove has no route for ${dir} (containerd adds ?ns=${dir}); add one to COVE_ROUTES` });
      } else if (caps !== null && !caps.includes('pull')) {
        out.push({ name, status: 'fail', message: `${path} names this Cove (${mine[0]}) without the "pull" capability: containerd will not pull from it; use capabilities = ["pull", "resolve"]` });
      } else {
        out.push({ name, status: 'ok', message: `${path} sends ${dir} pulls to this Cove (${mine[0]})` });
      }
      continue;
    }
    if (!isServed) {
      out.push({ name, status: 'skip', message: `${path} is for ${dir}, which this Cove does not serve` });
      continue;
    }
    const wrong = hosts.find((h) => pointsHere(cove, h.replace(/\/+$/, '')) === 'scheme');
    out.push({
      name,
      status: 'fail',
      message: wrong
        ? `${path} names this Cove as ${wrong}, but with the wrong scheme for that port; fix the [host."..."] URL`
        : `${path} sends ${dir} pulls to ${list(hosts)}${typeof doc.server === 'string' ? ` (then ${doc.server})` : ''}, not to this Cove (${cove.label}); run cove client-config containerd --registry ${dir} --cache URL --write`,
    });
  }
  if (out.length === 0) out.push({ name: 'containerd certs.d', status: 'skip', message: `${certsD} holds no hosts.toml` });
  return out;
}

/** podman's (and CRI-O's, skopeo's) registries.conf.d drop-ins. */
export async function checkPodman(root: string, cove: ThisCove, config: ClientConfig): Promise<CheckResult[]> {
  const confD = join(root, REGISTRIES_CONF_D);
  let files: string[];
  try {
    files = (await readdir(join(root, REGISTRIES_CONF_D))).filter((f) => f.endsWith('.conf')).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [{ name: 'podman registries.conf.d', status: 'skip', message: `${confD} is absent: podman (if any) on this host uses no mirror drop-in` }];
    return [unreadable('podman registries.conf.d', confD, err)];
  }
  const served = servedRegistries(config);
  const out: CheckResult[] = [];
  for (const file of files) {
    const path = join(confD, file);
    const name = `podman ${file}`;
    let doc: TomlTable;
    try {
      doc = parseToml((await readUnder(root, join(REGISTRIES_CONF_D, file))) ?? '');
    } catch (err) {
      out.push(err instanceof TomlError
        ? { name, status: 'fail', message: `${path} is not valid TOML (${err.message}): podman refuses to run with it; fix the file (cove client-config podman shows one)` }
        : unreadable(name, path, err));
      continue;
    }
    const registries = Array.isArray(doc.registry) ? (doc.registry as TomlTable[]) : [];
    const lines: CheckResult[] = [];
    for (const reg of registries) {
      const prefix = String(reg.prefix ?? reg.location ?? '').toLowerCase();
      const host = prefix.split('/')[0]!;
      const mirrors = (Array.isArray(reg.mirror) ? (reg.mirror as TomlTable[]) : []).map((m) => ({ location: String(m.location ?? ''), insecure: m.insecure === true }));
      // podman speaks HTTPS to a mirror; insecure = true lets it fall back to plain HTTP.
      const at = (m: { location: string }, scheme: 'http' | 'https') => pointsHere(cove, m.location.split('/')[0]!, scheme) === 'yes';
      const mine = mirrors.find((m) => at(m, 'https') || (m.insecure && at(m, 'http')));
      if (mine) {
        lines.push(served.has(host)
          ? { name, status: 'ok', message: `${path} sends ${prefix} pulls to this Cove (${mine.location})` }
          : { name, status: 'warn', message: `${path} sends ${prefix} pulls to this Cove (${mine.location}); this Cove serves ${[...served].join(', ')} (podman sends no ?ns=: the path must carry the Harbor project)` });
      } else if (mirrors.some((m) => at(m, 'http'))) {
        lines.push({ name, status: 'fail', message: `${path} names this Cove as a mirror of ${prefix} without insecure = true, but it speaks plain HTTP: podman will try HTTPS and fail; add insecure = true` });
      } else if (served.has(host) && mirrors.length > 0) {
        lines.push({ name, status: 'fail', message: `${path} sends ${prefix} pulls to ${list(mirrors.map((m) => m.location))}, not to this Cove (${cove.label}); run cove client-config podman --registry ${host} --cache URL --write` });
      }
    }
    out.push(...(lines.length > 0 ? lines : [{ name, status: 'skip' as const, message: `${path} has no mirror for a registry this Cove serves` }]));
  }
  if (out.length === 0) out.push({ name: 'podman registries.conf.d', status: 'skip', message: `${confD} holds no .conf drop-in` });
  return out;
}

/**
 * /etc/hosts and the origin's name. Redirecting Harbor's name to a Cove is for the clients' hosts
 * (hosts mode): on the Cove's own host it sends Cove's own upstream requests back to itself.
 */
export async function checkHostsFile(root: string, config: Pick<Config, 'upstreams'>, addresses = localAddresses()): Promise<CheckResult> {
  const name = 'hosts file';
  const file = join(root, ETC_HOSTS);
  let text: string | null;
  try {
    text = await readUnder(root, ETC_HOSTS);
  } catch (err) {
    return unreadable(name, file, err);
  }
  if (text === null) return { name, status: 'skip', message: `${file} is absent` };
  const origin = new URL(config.upstreams[0]!.url);
  const host = origin.hostname.toLowerCase();
  if (isIP(host.replace(/^\[|\]$/g, '')) !== 0) return { name, status: 'skip', message: `the origin is named by its address (${host}), which ${file} cannot redirect` };
  const entry = parseHostsFile(text).find((e) => e.names.includes(host));
  if (entry === undefined) return { name, status: 'ok', message: `${file} does not redirect the origin's name ${host}: this host reaches the origin through DNS` };
  const local = entry.ip === '0.0.0.0' || entry.ip === '::' || entry.ip.startsWith('127.') || entry.ip === '::1' || addresses.includes(entry.ip);
  if (local) {
    return {
      name,
      status: 'fail',
      message: `${file} line ${entry.line} maps the origin's name ${host} to ${entry.ip}, this host: Cove here would send its own origin requests to itself; redirect the name on the clients' hosts (hosts mode), not on the Cove node`,
    };
  }
  return { name, status: 'ok', message: `${file} line ${entry.line} pins the origin's name ${host} to ${entry.ip}, which is where Cove fetches from` };
}
