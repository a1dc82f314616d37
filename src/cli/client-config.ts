// `cove client-config`: the client-side configuration that sends a container client's pulls
// through a Cove: dockerd's daemon.json registry-mirrors, containerd's hosts.toml, a podman
// registries.conf drop-in, or an /etc/hosts line. The generators are pure (text in, text out);
// writeWithBackup puts a result in place, keeping the file it replaces as <file>.bak-<timestamp>.
import { spawnSync } from 'node:child_process';
import { copyFile, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { dirname, join } from 'node:path';
import { ConfigError } from '../errors.js';

export const CLIENTS = ['docker', 'containerd', 'podman', 'hosts'] as const;
export type Client = (typeof CLIENTS)[number];

/** Where each client reads its configuration (below / or --root). */
export const DOCKER_DAEMON_JSON = '/etc/docker/daemon.json';
export const CONTAINERD_CERTS_D = '/etc/containerd/certs.d';
export const PODMAN_DROP_IN = '/etc/containers/registries.conf.d/50-cove.conf';
export const ETC_HOSTS = '/etc/hosts';

/** The dial bound the hosts.toml would carry where containerd knows the key (2.1 and later). */
export const DIAL_TIMEOUT = '2s';

export interface CacheUrl {
  /** scheme://host[:port], no trailing slash */
  origin: string;
  scheme: 'http' | 'https';
  /** hostname as written (IPv6 without brackets) */
  hostname: string;
  /** host[:port] as written in the URL (IPv6 in brackets) */
  hostPort: string;
  /** path without leading or trailing slash ('' when none) */
  path: string;
}

/** Parses --cache; only http(s) URLs without credentials, query or fragment. */
export function parseCacheUrl(raw: string): CacheUrl {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ConfigError(`--cache "${raw}" is not a URL (e.g. http://10.0.0.5:5000)`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`--cache "${raw}" must be an http:// or https:// URL`);
  if (url.username || url.password || url.search || url.hash) throw new ConfigError(`--cache "${raw}" must not carry credentials, a query or a fragment`);
  const hostname = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
  return { origin: url.origin, scheme: url.protocol === 'http:' ? 'http' : 'https', hostname, hostPort: url.host, path: url.pathname.replace(/^\/+|\/+$/g, '') };
}

/** A registry host as in image names (docker.io, harbor.example.com, 10.0.0.1:5000). */
export function checkRegistry(registry: string): string {
  if (!/^[A-Za-z0-9.-]+(:\d{1,5})?$/.test(registry) && !/^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$/.test(registry)) {
    throw new ConfigError(`--registry "${registry}" is not a registry host (e.g. docker.io or harbor.example.com:8443)`);
  }
  return registry;
}

export function isLoopback(hostname: string): boolean {
  const h = hostname.toLowerCase();
  return h === 'localhost' || h.endsWith('.localhost') || h === '::1' || (isIP(h) === 4 && h.startsWith('127.'));
}

function noPath(cache: CacheUrl, client: string, why: string): void {
  if (cache.path !== '') throw new ConfigError(`--cache for ${client} must be scheme://host:port without a path (${why}); got path "/${cache.path}"`);
}

/** A generated (or merged) file: where it goes, what it holds, and what the operator must know. */
export interface Generated {
  /** absolute path as on the client host (without --root) */
  path: string;
  content: string;
  notes: string[];
}

// ------------------------------------------------------------------------------------------ docker

/**
 * dockerd's daemon.json with the Cove added to `registry-mirrors` (and, for a plain-http Cove that
 * is not on loopback, to `insecure-registries`); every other key of `existing` is kept as is.
 */
export function dockerDaemonJson(cacheRaw: string, existing: string | null, registry = 'docker.io'): Generated & { changed: boolean } {
  if (registry !== 'docker.io') {
    throw new ConfigError(`dockerd's registry-mirrors applies to Docker Hub images only; for ${registry} use containerd (hosts.toml) or podman, or pull ${registry} images by the Cove's own name (port mode)`);
  }
  const cache = parseCacheUrl(cacheRaw);
  noPath(cache, 'docker', 'dockerd sends Docker Hub names such as /v2/library/nginx/..., routed by COVE_DEFAULT_NS');
  let config: Record<string, unknown> = {};
  if (existing !== null && existing.trim() !== '') {
    let parsed: unknown;
    try {
      parsed = JSON.parse(existing);
    } catch (err) {
      throw new ConfigError(`${DOCKER_DAEMON_JSON} is not valid JSON (${(err as Error).message}); fix it first, nothing was changed`);
    }
    if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`${DOCKER_DAEMON_JSON} does not hold a JSON object; fix it first, nothing was changed`);
    config = parsed as Record<string, unknown>;
  }
  let changed = false;
  const addTo = (key: string, value: string, same: (v: string) => boolean) => {
    const list = config[key] ?? [];
    if (!Array.isArray(list) || !list.every((v) => typeof v === 'string')) throw new ConfigError(`"${key}" in ${DOCKER_DAEMON_JSON} is not a list of strings; fix it first, nothing was changed`);
    if (list.some((v: string) => same(v))) return;
    config[key] = [...(list as string[]), value];
    changed = true;
  };
  addTo('registry-mirrors', cache.origin, (v) => v.replace(/\/+$/, '').toLowerCase() === cache.origin.toLowerCase());
  if (cache.scheme === 'http' && !isLoopback(cache.hostname)) addTo('insecure-registries', cache.hostPort, (v) => v.toLowerCase() === cache.hostPort.toLowerCase());
  const notes = [
    'registry-mirrors applies to Docker Hub images only (docker pull nginx, docker.io/...); other registries are pulled directly',
    `the Cove at ${cache.origin} must run with COVE_DEFAULT_NS=docker.io and a docker.io route (e.g. COVE_ROUTES=docker.io=dockerhub/): dockerd sends /v2/library/nginx/... without ?ns=`,
    'restart dockerd (systemctl restart docker) to apply; `docker info` lists the mirror under "Registry Mirrors"',
  ];
  if (cache.scheme === 'http' && !isLoopback(cache.hostname)) notes.push(`${cache.hostPort} is plain http, so it is also listed in insecure-registries`);
  return { path: DOCKER_DAEMON_JSON, content: `${JSON.stringify(config, null, 2)}\n`, notes, changed };
}

// ------------------------------------------------------------------------------------------ containerd

/** The containerd version installed here ("1.6.20"), or null. */
export function localContainerdVersion(): string | null {
  const r = spawnSync('containerd', ['--version'], { encoding: 'utf8', timeout: 5000 });
  if (r.status !== 0 || typeof r.stdout !== 'string') return null;
  return /\s(?:v)?(\d+\.\d+\.\d+)/.exec(r.stdout)?.[1] ?? null;
}

/** dial_timeout in hosts.toml arrived in containerd 2.1 (containerd/containerd#11106). */
export function supportsDialTimeout(version: string | null): boolean {
  const m = version === null ? null : /^(\d+)\.(\d+)/.exec(version);
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 2 || (major === 2 && minor >= 1);
}

const tomlString = (s: string) => JSON.stringify(s); // a TOML basic string is a JSON string for these characters

/** /etc/containerd/certs.d/<registry>/hosts.toml: pull and resolve through the Cove, then the registry. */
export function containerdHostsToml(
  cacheRaw: string,
  opts: { registry?: string; skipVerify?: boolean; containerdVersion?: string | null } = {},
): Generated {
  const registry = checkRegistry(opts.registry ?? 'docker.io');
  const cache = parseCacheUrl(cacheRaw);
  noPath(cache, 'containerd', 'containerd appends /v2/<name> and ?ns=<registry> to the host URL');
  const server = registry === 'docker.io' ? 'https://registry-1.docker.io' : `https://${registry}`;
  const version = opts.containerdVersion ?? null;
  const lines = [
    `# Written by cove client-config: ${registry} pulls go through the Cove at ${cache.origin} first,`,
    `# then to ${server} when the Cove does not answer.`,
    `server = ${tomlString(server)}`,
    '',
    `[host.${tomlString(cache.origin)}]`,
    '  capabilities = ["pull", "resolve"]',
  ];
  if (opts.skipVerify) lines.push('  skip_verify = true');
  if (supportsDialTimeout(version)) {
    lines.push(`  # a Cove that is down costs ${DIAL_TIMEOUT} per connection, not 30 s`, `  dial_timeout = ${tomlString(DIAL_TIMEOUT)}`);
  } else {
    lines.push(
      `  # dial_timeout = ${tomlString(DIAL_TIMEOUT)} would bound each connection attempt to a Cove that is down, but only`,
      `  # containerd 2.1 and later know the key${version === null ? '' : ` (this host has ${version})`}; until then containerd waits up to 30 s per dial.`,
    );
  }
  const notes = [
    `containerd's CRI plugin reads this only when its registry config_path is set: in /etc/containerd/config.toml, [plugins."io.containerd.grpc.v1.cri".registry] config_path = "${CONTAINERD_CERTS_D}" (then restart containerd); ctr needs --hosts-dir ${CONTAINERD_CERTS_D}`,
    `containerd sends ?ns=${registry} with each request: the Cove needs a route for ${registry}${registry === 'docker.io' ? ' (e.g. COVE_ROUTES=docker.io=dockerhub/)' : ''}`,
  ];
  if (cache.scheme === 'http') notes.push('the Cove is plain http: containerd talks http to it as the host URL says');
  return { path: `${CONTAINERD_CERTS_D}/${registry}/hosts.toml`, content: `${lines.join('\n')}\n`, notes };
}

// ------------------------------------------------------------------------------------------ podman

/** A registries.conf drop-in: <registry> images are tried at the Cove (host:port[/path]) first. */
export function podmanRegistriesConf(cacheRaw: string, opts: { registry?: string } = {}): Generated {
  const registry = checkRegistry(opts.registry ?? 'docker.io');
  const cache = parseCacheUrl(cacheRaw);
  const location = cache.path === '' ? cache.hostPort : `${cache.hostPort}/${cache.path}`;
  const lines = [
    `# Written by cove client-config: ${registry} pulls try the Cove at ${location} first.`,
    '[[registry]]',
    `prefix = ${tomlString(registry)}`,
    `location = ${tomlString(registry)}`,
    '',
    '[[registry.mirror]]',
    `location = ${tomlString(location)}`,
  ];
  if (cache.scheme === 'http') lines.push('insecure = true');
  const notes = [
    `podman sends no ?ns=: it asks for /v2/${cache.path === '' ? '' : `${cache.path}/`}<name>/..., which the Cove maps 1:1 to its origin (port mode)` +
      (cache.path === '' ? `; for Docker Hub via a Harbor proxy project put the project in the URL, e.g. --cache ${cache.origin}/dockerhub` : ''),
    'podman, buildah, skopeo and CRI-O read registries.conf.d/ on each run; CRI-O needs a reload (systemctl reload crio)',
  ];
  if (cache.scheme === 'http') notes.push('insecure = true because the Cove is plain http');
  return { path: PODMAN_DROP_IN, content: `${lines.join('\n')}\n`, notes };
}

// ------------------------------------------------------------------------------------------ /etc/hosts

/** The /etc/hosts line that sends <registry>'s name to the Cove; the cache URL must name an IP. */
export function hostsLine(cacheRaw: string, registry: string | undefined): { line: string; ip: string; name: string; notes: string[] } {
  if (registry === undefined) throw new ConfigError('client-config hosts needs --registry HOST, the registry name to send to the Cove (e.g. --registry harbor.example.com)');
  checkRegistry(registry);
  const cache = parseCacheUrl(cacheRaw);
  noPath(cache, 'hosts', 'clients keep their image names and talk to the registry name');
  if (isIP(cache.hostname) === 0) throw new ConfigError(`client-config hosts needs the Cove's IP address in --cache (e.g. http://10.0.0.5:443); "${cache.hostname}" is a name`);
  const name = registry.startsWith('[') ? registry.slice(1, registry.indexOf(']')) : registry.replace(/:\d+$/, '');
  if (isIP(name) !== 0) throw new ConfigError(`--registry "${registry}" is an IP address; /etc/hosts can only redirect a name`);
  if (name === 'docker.io') throw new ConfigError('Docker Hub cannot be redirected through /etc/hosts (its clients check registry-1.docker.io\'s certificate); use client-config docker, containerd or podman');
  const port = /:(\d+)$/.exec(registry)?.[1] ?? '443';
  const cachePort = new URL(cache.origin).port || (cache.scheme === 'https' ? '443' : '80');
  const notes = [
    `clients keep pulling ${registry}/...; the Cove must answer on port ${port} with a TLS certificate whose SAN covers ${name} (its CA in /etc/docker/certs.d/${registry}/ca.crt or the system store), or ${registry} must be an insecure registry for the clients`,
  ];
  if (cachePort !== port) notes.push(`--cache names port ${cachePort}, but clients will connect to ${name} on port ${port}: /etc/hosts cannot change ports`);
  return { line: `${cache.hostname} ${name}`, ip: cache.hostname, name, notes };
}

/** Hosts file text with `line` appended when absent; refuses when the name already maps elsewhere. */
export function mergeHosts(existing: string | null, entry: { ip: string; name: string; line: string }): { content: string; changed: boolean } {
  const text = existing ?? '';
  for (const raw of text.split('\n')) {
    const fields = raw.replace(/#.*/, '').trim().split(/\s+/);
    if (fields.length < 2) continue;
    const [ip, ...names] = fields;
    if (!names.some((n) => n.toLowerCase() === entry.name.toLowerCase())) continue;
    if (ip === entry.ip) return { content: text, changed: false };
    throw new ConfigError(`${ETC_HOSTS} already maps ${entry.name} to ${ip} ("${raw.trim()}"); edit that line by hand, nothing was changed`);
  }
  const sep = text === '' || text.endsWith('\n') ? '' : '\n';
  return { content: `${text}${sep}${entry.line} # cove client-config\n`, changed: true };
}

// ------------------------------------------------------------------------------------------ writing

/** 20240131T120501Z */
export function backupStamp(now: Date): string {
  return now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
}

export type WriteOutcome = { path: string; state: 'created' | 'updated' | 'unchanged'; backup: string | null };

/**
 * Puts `content` at `path` (parents created). An existing file with other content is first copied
 * to <path>.bak-<timestamp>; the new text goes to a temp file renamed over the old one, with the
 * old file's mode. Identical content is left alone.
 */
export async function writeWithBackup(path: string, content: string, now = new Date()): Promise<WriteOutcome> {
  const old = await readIfExists(path);
  if (old === content) return { path, state: 'unchanged', backup: null };
  await mkdir(dirname(path), { recursive: true });
  let backup: string | null = null;
  let mode = 0o644;
  if (old !== null) {
    mode = (await stat(path)).mode & 0o7777;
    const stamp = backupStamp(now);
    backup = `${path}.bak-${stamp}`;
    for (let i = 1; await exists(backup); i++) backup = `${path}.bak-${stamp}-${i}`;
    await copyFile(path, backup);
  }
  const tmp = `${path}.cove-tmp-${process.pid}`;
  await writeFile(tmp, content, { mode });
  await rename(tmp, path);
  return { path, state: old === null ? 'created' : 'updated', backup };
}

export async function readIfExists(path: string): Promise<string | null> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

// ------------------------------------------------------------------------------------------ the command

export interface ClientConfigArgs {
  client: string | undefined;
  cache: string | undefined;
  registry?: string;
  write: boolean;
  root?: string;
  skipVerify: boolean;
  /** for tests: the containerd version to generate for (default: `containerd --version` here) */
  containerdVersion?: string | null;
  now?: Date;
}

/** Runs `cove client-config`; text for stdout and stderr, and the exit code. ConfigError on bad input. */
export async function clientConfig(args: ClientConfigArgs): Promise<{ stdout: string; stderr: string; code: number }> {
  const { client, cache } = args;
  if (client === undefined || !(CLIENTS as readonly string[]).includes(client)) {
    throw new ConfigError(`client-config needs one of ${CLIENTS.join(', ')} (e.g. cove client-config containerd --cache http://10.0.0.5:5000)`);
  }
  if (cache === undefined) throw new ConfigError(`client-config ${client} needs --cache URL, the Cove clients should use (e.g. --cache http://10.0.0.5:5000)`);
  if (args.skipVerify && client !== 'containerd') throw new ConfigError('--skip-verify applies to containerd only');
  const root = args.root ?? '/';
  const under = (p: string) => join(root, p);
  const notes = (list: string[]) => list.map((n) => `note: ${n}\n`).join('');

  if (client === 'hosts') {
    const entry = hostsLine(cache, args.registry);
    const merged = mergeHosts(await readIfExists(under(ETC_HOSTS)), entry);
    if (!args.write) return { stdout: `# add to ${under(ETC_HOSTS)}\n${entry.line}\n`, stderr: notes(entry.notes), code: 0 };
    const out = merged.changed ? await writeWithBackup(under(ETC_HOSTS), merged.content, args.now) : { path: under(ETC_HOSTS), state: 'unchanged' as const, backup: null };
    return { stdout: describe(out), stderr: notes(entry.notes), code: 0 };
  }

  let generated: Generated;
  if (client === 'docker') {
    generated = dockerDaemonJson(cache, await readIfExists(under(DOCKER_DAEMON_JSON)), args.registry);
  } else if (client === 'containerd') {
    const version = args.containerdVersion === undefined ? localContainerdVersion() : args.containerdVersion;
    generated = containerdHostsToml(cache, { registry: args.registry, skipVerify: args.skipVerify, containerdVersion: version });
  } else {
    generated = podmanRegistriesConf(cache, { registry: args.registry });
  }
  const path = under(generated.path);
  if (!args.write) return { stdout: `# ${path}\n${generated.content}`, stderr: notes(generated.notes), code: 0 };
  // A daemon.json that already lists the Cove keeps its own formatting.
  const keep = 'changed' in generated && generated.changed === false && (await readIfExists(path)) !== null;
  const out = keep ? { path, state: 'unchanged' as const, backup: null } : await writeWithBackup(path, generated.content, args.now);
  return { stdout: describe(out), stderr: notes(generated.notes), code: 0 };
}

function describe(out: WriteOutcome): string {
  if (out.state === 'unchanged') return `${out.path}: already up to date, not changed\n`;
  return `${out.path}: ${out.state}${out.backup === null ? '' : ` (previous file kept as ${out.backup})`}\n`;
}
