#!/usr/bin/env -S node --max-semi-space-size=1
// The `cove` command: subcommands to run the daemon or work on its data directory.
//
// The daemon's modules (main.js and all it loads), the logger and undici are imported by the
// commands that use them, not here: a command such as `cove import` would otherwise spend most of
// a second loading a daemon it only talks to.
import { createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import type { Agent, Response } from 'undici';
import { uploadArchive } from './archive/upload.js';
import { CONFIG_FLAGS, loadAdminSockets, loadAdminToken, loadConfig, loadDataDir, loadListen } from './config.js';
import { ConfigError } from './errors.js';
import { createProgress } from './cli/progress.js';
import { certCommand, DEFAULT_CERT_DIR, DEFAULT_SERVER_DAYS } from './cli/cert.js';
import { clientConfig } from './cli/client-config.js';
import { formatBytes } from './units.js';
import { VERSION } from './version.js';

const HELP = `cove ${VERSION} — edge cache for container images (an OCI pull-through mirror in front of Harbor)

Usage:
  cove serve [options]     run the cache daemon
  cove reindex [options]   rebuild the index from the blob files (run while Cove is stopped)
  cove invalidate REPO[:TAG] [--ns REGISTRY] [--url URL]
                           make the next pull of a cached tag (or of every tag of REPO) ask the
                           origin, whatever COVE_TAG_TTL says; talks to the Cove running on this
                           host (over its admin socket, or --url with the admin token)
  cove ls [--json]         the cached images: repository, tag, digest, size, last pull, pinned
  cove pin REF | cove unpin REF
                           keep an image (REPO:TAG or REPO@DIGEST) whatever eviction decides;
                           a pinned tag protects what it points to now
  cove prewarm REF... [--platforms linux/arm64,...] [--ns REGISTRY]
                           fetch images into the cache before anyone pulls them; from a
                           multi-arch index only the listed platforms (default COVE_PLATFORMS);
                           with site peers and COVE_PEER_KEY, for the whole site: each blob
                           fetched once, kept on COVE_PREWARM_COPIES nodes
  cove import FILE [--tag REPO:TAG]... [--pin]
                           seed the cache offline from a docker save archive or an OCI image
                           layout tar (plain or gzip); every digest is checked
  cove export REF... -o FILE
                           write cached images to an OCI image layout tar that docker load and
                           skopeo copy oci-archive: read
  cove gc [--dry-run]      evict now: images idle past COVE_MAX_IDLE, then least recently pulled
                           ones until the cache is under the low watermark of COVE_MAX_CACHE_BYTES
  cove peers [--json] [--url URL]
                           the running Cove's peer table: each sibling, how it was found
                           (COVE_PEERS or mDNS), its state (live, down, unproven, quarantined, self) and
                           what this node took from it
  cove client-config docker|containerd|podman|hosts --cache URL [--registry HOST] [--write] [--root DIR]
                           the client configuration that pulls through the Cove at URL: daemon.json
                           registry-mirrors, containerd certs.d/<registry>/hosts.toml (--skip-verify),
                           a podman registries.conf drop-in, or an /etc/hosts line; printed, or with
                           --write merged into place (the old file kept as <file>.bak-<timestamp>)
  cove cert --host NAME [--host NAME]... [--ip ADDR]... [--out DIR] [--ca-dir DIR] [--days N]
                           make a local CA (once; reused after) and a TLS certificate for Cove
                           under the Harbor hostname (openssl; default DIR /etc/cove/tls), and
                           print where the CA goes on clients (Docker, containerd, system store);
                           --ca-dir keeps ca.key there (e.g. on a workstation): copy only OUT's
                           ca.crt, server.crt and server.key to the node
  cove doctor [--json] [--root DIR] [--min-free SIZE] [--settings FILE]
                           check what would stop pulls on this node: the origin and its credentials,
                           clock skew, the data directory and its free space (below SIZE, default
                           1GiB, fails), the TLS certificate, the peers and their key, and the
                           client configurations under DIR (default /); exit 0 when nothing failed.
                           Reads the service's settings from FILE (default /etc/cove/cove.env when
                           it exists) and its unit's credentials (LoadCredential=), as systemd would
  cove --help | --version

Options (each also settable as COVE_* environment or in the JSON config file):
  --config FILE            JSON config file (COVE_CONFIG); see config/cove.example.json
  --listen HOST:PORT       address to serve on (COVE_LISTEN, default 0.0.0.0:5000)
  --data-dir DIR           cache directory (COVE_DATA_DIR, default /var/lib/cove)
  --upstream URL           origin registry, e.g. https://harbor.example.com (COVE_UPSTREAM)
  --tag-ttl DURATION       serve a resolved tag without asking upstream for this long (COVE_TAG_TTL, default 5m)
  --upstream-timeout DUR   connect / response-header bound for upstream requests (COVE_UPSTREAM_TIMEOUT, default 10s)
  --default-ns REGISTRY    route for requests without ?ns= (COVE_DEFAULT_NS), e.g. docker.io for a registry-mirrors listener
  --log-level LEVEL        fatal|error|warn|info|debug|trace|silent (COVE_LOG_LEVEL, default info)

Commands that talk to the running Cove (invalidate, ls, pin, unpin, prewarm, import, export, gc,
peers) use its admin socket (mode 0600: run them as root or as Cove's user), found at
COVE_ADMIN_SOCKET, $RUNTIME_DIRECTORY/admin.sock, <data dir>/admin.sock or /run/cove/admin.sock:
  --socket PATH            the admin socket to use (COVE_ADMIN_SOCKET)
  --url URL                talk HTTP to the Cove at URL instead (another host, or no socket); it
                           needs the admin token: COVE_ADMIN_TOKEN / COVE_ADMIN_TOKEN_FILE, or
  --token TOKEN            (visible to other users in the process list; prefer the variables)

Every setting is described in the README.`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      ...CONFIG_FLAGS,
      ns: { type: 'string' },
      url: { type: 'string' },
      socket: { type: 'string' },
      token: { type: 'string' },
      json: { type: 'boolean' },
      'dry-run': { type: 'boolean' },
      platforms: { type: 'string' },
      tag: { type: 'string', multiple: true },
      pin: { type: 'boolean' },
      output: { type: 'string', short: 'o' },
      host: { type: 'string', multiple: true },
      ip: { type: 'string', multiple: true },
      out: { type: 'string' },
      'ca-dir': { type: 'string' },
      days: { type: 'string' },
      cache: { type: 'string' },
      registry: { type: 'string' },
      write: { type: 'boolean' },
      root: { type: 'string' },
      'skip-verify': { type: 'boolean' },
      'min-free': { type: 'string' },
      settings: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
      version: { type: 'boolean', short: 'v' },
    },
    allowPositionals: true,
    strict: true,
  });
  if (values.version) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const command = positionals[0];
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(`${HELP}\n`);
    return command === undefined && !values.help ? 2 : 0;
  }
  const { help: _h, version: _v, ns, url, json, 'dry-run': dryRun, platforms, tag, pin: pinFlag, output, cache, registry, write, root, 'skip-verify': skipVerify, 'min-free': minFree, settings: settingsFlag, host, ip, out, 'ca-dir': caDir, days, ...flags } = values;
  switch (command) {
    case 'serve':
      return serve(flags);
    case 'reindex': {
      const dataDir = loadDataDir({ flags });
      const { createLogger } = await import('./log.js');
      const { reindexDataDir } = await import('./store/offline-reindex.js');
      const log = createLogger('info');
      const counts = await reindexDataDir(dataDir, log);
      process.stdout.write(`reindexed ${dataDir}: ${JSON.stringify(counts)}\n`);
      return 0;
    }
    case 'ls':
      return listCached(flags, typeof url === 'string' ? url : undefined, json === true);
    case 'pin':
    case 'unpin':
      return pin(command, positionals[1], flags, typeof ns === 'string' ? ns : undefined, typeof url === 'string' ? url : undefined);
    case 'prewarm':
      return prewarmRefs(positionals.slice(1), flags, {
        url: typeof url === 'string' ? url : undefined,
        ns: typeof ns === 'string' ? ns : undefined,
        platforms: typeof platforms === 'string' ? platforms : undefined,
        json: json === true,
      });
    case 'import':
      return importFile(positionals[1], flags, { url: typeof url === 'string' ? url : undefined, tags: Array.isArray(tag) ? tag : [], pin: pinFlag === true });
    case 'export':
      return exportFile(positionals.slice(1), flags, { url: typeof url === 'string' ? url : undefined, output: typeof output === 'string' ? output : undefined });
    case 'gc':
      return gc(flags, typeof url === 'string' ? url : undefined, dryRun === true, json === true);
    case 'peers':
      return peers(flags, typeof url === 'string' ? url : undefined, json === true);
    case 'client-config': {
      const result = await clientConfig({ client: positionals[1], cache, registry, write: write === true, root, skipVerify: skipVerify === true });
      process.stdout.write(result.stdout);
      process.stderr.write(result.stderr);
      return result.code;
    }
    case 'cert':
      return certCommand({
        hosts: Array.isArray(host) ? host : [],
        ips: Array.isArray(ip) ? ip : [],
        outDir: typeof out === 'string' ? out : DEFAULT_CERT_DIR,
        caDir: typeof caDir === 'string' ? caDir : undefined,
        days: typeof days === 'string' ? Number(days) : DEFAULT_SERVER_DAYS,
      });
    case 'doctor': {
      const { runDoctor } = await import('./doctor/run.js');
      const { exitCode, formatReport } = await import('./doctor/report.js');
      const result = await runDoctor({ load: { flags }, root, minFree, settings: typeof settingsFlag === 'string' ? settingsFlag : undefined });
      process.stdout.write(json === true ? `${JSON.stringify(result, null, 2)}\n` : formatReport(result));
      return exitCode(result);
    }
    case 'invalidate':
      return invalidate(positionals[1], flags, typeof ns === 'string' ? ns : undefined, typeof url === 'string' ? url : undefined);
    default:
      process.stderr.write(`cove: unknown command "${command}" (try cove --help)\n`);
      return 2;
  }
}

async function invalidate(reference: string | undefined, flags: Record<string, string | boolean | undefined>, ns?: string, url?: string): Promise<number> {
  if (!reference) {
    process.stderr.write('cove: invalidate needs REPO or REPO:TAG (e.g. cove invalidate proj/app:latest)\n');
    return 2;
  }
  const parts = splitReference(reference);
  const repo = parts?.repo ?? reference;
  const tag = parts?.ref ?? null;
  const query = new URLSearchParams({ repo, ...(tag === null ? {} : { tag }), ...(ns === undefined ? {} : { ns }) });
  const answer = await askLocal(flags, url, 'POST', `/admin/invalidate?${query}`, 'invalidate');
  if (answer === null) return 1;
  process.stdout.write(`${answer}\n`);
  return 0;
}

/** `cove peers`: the running Cove's peer table, as a table (or JSON with --json). */
async function peers(flags: Record<string, string | boolean | undefined>, url: string | undefined, json: boolean): Promise<number> {
  const answer = await askLocal(flags, url, 'GET', '/_cove/peers', 'peers');
  if (answer === null) return 1;
  if (json) {
    process.stdout.write(`${answer}\n`);
    return 0;
  }
  const table = JSON.parse(answer) as { self: string; site: string; peers: Array<Record<string, unknown>> };
  process.stdout.write(`node ${table.self}, site ${table.site}: ${table.peers.length} peer(s)\n`);
  const columns = ['id', 'url', 'source', 'state', 'lastSeenAgoS', 'hits', 'bytes', 'served', 'quarantineReason'] as const;
  const rows = [['ID', 'URL', 'FOUND BY', 'STATE', 'SEEN (s ago)', 'HITS', 'BYTES', 'SERVED', 'NOTE'], ...table.peers.map((p) => columns.map((c) => (p[c] === null || p[c] === undefined ? '-' : String(p[c]))))];
  printTable(rows);
  return 0;
}

/** REPO:TAG or REPO@DIGEST → repository and reference; null without either (a registry host:port is not a tag). */
function splitReference(reference: string): { repo: string; ref: string } | null {
  const at = reference.indexOf('@');
  if (at > 0) return { repo: reference.slice(0, at), ref: reference.slice(at + 1) };
  const colon = reference.lastIndexOf(':');
  if (colon > 0 && !reference.slice(colon).includes('/')) return { repo: reference.slice(0, colon), ref: reference.slice(colon + 1) };
  return null;
}

async function pin(command: 'pin' | 'unpin', reference: string | undefined, flags: Record<string, string | boolean | undefined>, ns?: string, url?: string): Promise<number> {
  const parts = reference ? splitReference(reference) : null;
  if (!parts) {
    process.stderr.write(`cove: ${command} needs REPO:TAG or REPO@sha256:... (e.g. cove ${command} proj/app:1.4)\n`);
    return 2;
  }
  const query = new URLSearchParams({ repo: parts.repo, ref: parts.ref, ...(ns === undefined ? {} : { ns }) });
  const answer = await askLocal(flags, url, 'POST', `/admin/${command}?${query}`, command);
  if (answer === null) return 1;
  const result = JSON.parse(answer) as { changed: boolean };
  process.stdout.write(`${reference}: ${command === 'pin' ? (result.changed ? 'pinned' : 'was pinned already') : result.changed ? 'unpinned' : 'was not pinned'}\n`);
  return 0;
}

async function listCached(flags: Record<string, string | boolean | undefined>, url: string | undefined, json: boolean): Promise<number> {
  const answer = await askLocal(flags, url, 'GET', '/admin/images', 'ls');
  if (answer === null) return 1;
  if (json) {
    process.stdout.write(`${answer}\n`);
    return 0;
  }
  const listing = JSON.parse(answer) as { bytes: number; limit: number | null; images: Array<{ repo: string; tag: string | null; digest: string; size: number; lastAccess: number; pinned: boolean }> };
  process.stdout.write(`${listing.images.length} image(s), ${formatBytes(listing.bytes)} cached${listing.limit === null ? '' : ` of ${formatBytes(listing.limit)}`}\n`);
  const rows = [
    ['REPOSITORY', 'TAG', 'DIGEST', 'SIZE', 'LAST PULL', 'PINNED'],
    ...listing.images.map((i) => [i.repo, i.tag ?? '<none>', i.digest.slice(0, 19), formatBytes(i.size), i.lastAccess > 0 ? new Date(i.lastAccess).toISOString().replace(/\.\d+Z$/, 'Z') : '-', i.pinned ? 'yes' : '']),
  ];
  printTable(rows);
  return 0;
}

async function gc(flags: Record<string, string | boolean | undefined>, url: string | undefined, dryRun: boolean, json: boolean): Promise<number> {
  const answer = await askLocal(flags, url, 'POST', `/admin/gc${dryRun ? '?dryRun=1' : ''}`, 'gc');
  if (answer === null) return 1;
  if (json) {
    process.stdout.write(`${answer}\n`);
    return 0;
  }
  const r = JSON.parse(answer) as { bytesBefore: number; bytesAfter: number; limit: number | null; evicted: Array<{ size: number }>; tagsRemoved: unknown[]; keptPinned: number; keptInUse: number };
  const freed = r.evicted.reduce((n, e) => n + e.size, 0);
  process.stdout.write(
    `${dryRun ? 'would evict' : 'evicted'} ${r.evicted.length} blob(s) and ${r.tagsRemoved.length} tag(s), ${formatBytes(freed)}: ` +
      `${formatBytes(r.bytesBefore)} -> ${formatBytes(r.bytesAfter)}${r.limit === null ? ' (no COVE_MAX_CACHE_BYTES)' : ` (cap ${formatBytes(r.limit)})`}; ` +
      `kept ${r.keptPinned} pinned and ${r.keptInUse} in-use image(s)\n`,
  );
  return 0;
}

/** `cove prewarm`: asks the running Cove to fetch images; its progress streams back as NDJSON. */
async function prewarmRefs(
  refs: string[],
  flags: Record<string, string | boolean | undefined>,
  opts: { url?: string; ns?: string; platforms?: string; json: boolean },
): Promise<number> {
  if (refs.length === 0) {
    process.stderr.write('cove: prewarm needs at least one image, e.g. cove prewarm proj/app:1.4 proj/base:2\n');
    return 2;
  }
  const body = JSON.stringify({ refs, ...(opts.platforms === undefined ? {} : { platforms: opts.platforms }), ...(opts.ns === undefined ? {} : { ns: opts.ns }) });
  const res = await callLocal(flags, opts.url, 'POST', '/admin/prewarm', 'prewarm', body, 0);
  if (res === null) return 1;
  const progress = opts.json ? null : createProgress('prewarm');
  // Each image adds its size when its plan is known; bytes done accumulate over all images.
  const plans = new Map<string, number>();
  const done = new Map<string, number>();
  type Summary = {
    ok: boolean;
    refs: Array<{ ref: string; ok: boolean; error?: string; digest?: string; blobs: { total: number; cached: number }; bytes: { total: number; fetched: number }; elsewhere?: { blobs: number } }>;
  };
  type Site = { copies: number; local: string | null; forwarded: string[]; accepted: string[]; refused: Array<{ node: string; reason: string }> };
  type Member = { node: string; ok: boolean; error?: string; refs: Array<{ ref: string; ok: boolean; error?: string; blobs: number; bytes: number }> };
  const outcome: { result: Summary | null; site: Site | null; members: Member[] } = { result: null, site: null, members: [] };
  let buffered = '';
  for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
    buffered += Buffer.from(chunk).toString('utf8');
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.trim() === '') continue;
      if (opts.json) process.stdout.write(`${line}\n`);
      const message = JSON.parse(line) as { event?: { type: string; ref: string; bytes?: number; bytesDone?: number; digest?: string }; result?: Summary; site?: Site; member?: Member };
      if (message.result) outcome.result = message.result;
      if (message.site) outcome.site = message.site;
      if (message.member) outcome.members.push(message.member);
      const event = message.event;
      if (!event || !progress) continue;
      if (event.type === 'plan') {
        plans.set(event.ref, event.bytes ?? 0);
        progress.total([...plans.values()].reduce((a, b) => a + b, 0));
      } else if (event.type === 'blob') {
        done.set(event.ref, event.bytesDone ?? 0);
        progress.update([...done.values()].reduce((a, b) => a + b, 0), `${event.ref} ${event.digest?.slice(7, 19) ?? ''}`);
      }
    }
  }
  progress?.stop();
  const result = outcome.result;
  if (!result) {
    process.stderr.write('cove: prewarm ended without a result (did the Cove stop?)\n');
    return 1;
  }
  if (!opts.json) {
    const site = outcome.site;
    if (site?.local) process.stdout.write(`site: ${site.local}\n`);
    else if (site) {
      const refused = site.refused.length > 0 ? `; refused by ${site.refused.map((r) => `${r.node} (${r.reason})`).join(', ')}` : '';
      process.stdout.write(`site: forwarded to ${site.forwarded.length} member(s), taken by ${site.accepted.join(', ') || 'none'}${refused}; each blob kept on ${site.copies} node(s)\n`);
    }
    for (const m of outcome.members) {
      const blobs = m.refs.reduce((n, r) => n + r.blobs, 0);
      const bytes = m.refs.reduce((n, r) => n + r.bytes, 0);
      const failed = m.error ?? m.refs.filter((r) => !r.ok).map((r) => `${r.ref}: ${r.error ?? 'failed'}`).join('; ');
      process.stdout.write(`site member ${m.node}: ${m.ok ? 'done' : `failed: ${failed}`}, holds ${blobs} blob(s), ${formatBytes(bytes)}\n`);
    }
    for (const r of result.refs) {
      const elsewhere = r.elsewhere ? `, ${r.elsewhere.blobs} more on other site members` : '';
      process.stdout.write(
        r.ok
          ? `${r.ref}: ${r.digest?.slice(0, 19)} ready, ${r.blobs.total} blob(s) (${r.blobs.cached} cached)${elsewhere}, ${formatBytes(r.bytes.fetched)} fetched\n`
          : `${r.ref}: failed: ${r.error}\n`,
      );
    }
  }
  return result.ok ? 0 : 1;
}

/** `cove import FILE`: streams the archive to the running Cove, which checks and stores it. */
async function importFile(file: string | undefined, flags: Record<string, string | boolean | undefined>, opts: { url?: string; tags: string[]; pin: boolean }): Promise<number> {
  if (!file) {
    process.stderr.write('cove: import needs an archive file (docker save or OCI layout tar), e.g. cove import app.tar\n');
    return 2;
  }
  let size: number;
  try {
    size = (await stat(file)).size;
  } catch (err) {
    process.stderr.write(`cove: ${file} cannot be read (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})\n`);
    return 1;
  }
  const query = new URLSearchParams([...opts.tags.map((t) => ['tag', t]), ...(opts.pin ? [['pin', '1']] : [])]);
  const target = await adminTarget(flags, opts.url);
  if (typeof target === 'string') {
    process.stderr.write(`${target}\n`);
    return 1;
  }
  const progress = createProgress(`import ${basename(file)}`);
  progress.total(size);
  const res = await answerOf(target, 'import', () => uploadArchive(target, `/admin/import${query.size > 0 ? `?${query}` : ''}`, file, (sent) => progress.update(sent)));
  progress.stop();
  if (res === null) return 1;
  const result = (await res.json()) as { format: string; images: Array<{ ref: string; digest: string }>; newBlobs: number; newBytes: number; blobs: number; pinned: boolean };
  for (const image of result.images) process.stdout.write(`${image.ref}: ${image.digest}${result.pinned ? ' (pinned)' : ''}\n`);
  process.stdout.write(`imported ${result.images.length} image(s) from a ${result.format}: ${result.blobs} blob(s), ${result.newBlobs} new, ${formatBytes(result.newBytes)} stored\n`);
  return 0;
}

/** `cove export REF... -o FILE`: the archive goes to FILE.part and is renamed once whole. */
async function exportFile(refs: string[], flags: Record<string, string | boolean | undefined>, opts: { url?: string; output?: string }): Promise<number> {
  if (refs.length === 0 || opts.output === undefined) {
    process.stderr.write('cove: export needs images and -o FILE, e.g. cove export proj/app:1 proj/base:2 -o images.tar\n');
    return 2;
  }
  const query = new URLSearchParams(refs.map((r) => ['ref', r]));
  const res = await callLocal(flags, opts.url, 'GET', `/admin/export?${query}`, 'export', undefined, 0);
  if (res === null || res.body === null) return 1;
  const partial = `${opts.output}.part`;
  const progress = createProgress(`export ${basename(opts.output)}`);
  let written = 0;
  try {
    const body = Readable.fromWeb(res.body as import('node:stream/web').ReadableStream);
    body.on('data', (chunk: Buffer) => progress.update((written += chunk.length)));
    await pipeline(body, createWriteStream(partial));
    await rename(partial, opts.output);
  } catch (err) {
    progress.stop();
    await rm(partial, { force: true });
    process.stderr.write(`cove: export broke off after ${formatBytes(written)}: ${(err as Error).message}; nothing was written to ${opts.output}\n`);
    return 1;
  }
  progress.stop();
  process.stdout.write(`exported ${refs.length} image reference(s) to ${opts.output} (${formatBytes(written)})\n`);
  return 0;
}

function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows) process.stdout.write(`${row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
}

/** Calls the Cove running on this host (at COVE_LISTEN, or --url); the body, or null after saying why. */
async function askLocal(flags: Record<string, string | boolean | undefined>, url: string | undefined, method: string, path: string, what: string): Promise<string | null> {
  const res = await callLocal(flags, url, method, path, what);
  return res === null ? null : res.text();
}

/** Where the admin requests of this command go: the admin socket, or HTTP (with the token if there is one). */
interface AdminTarget {
  base: string;
  /** What to call it in messages. */
  where: string;
  /** The admin socket, when the requests go there. */
  socketPath?: string;
  headers: Record<string, string>;
  /** Over HTTP: the sockets looked for, and why none was used, for the hint after a refusal. */
  searched?: string[];
}

/** Agents opened for admin sockets, closed when the command ends so no idle connection holds it open. */
const socketAgents: Agent[] = [];

/**
 * --url: HTTP to that Cove, with the admin token. Otherwise the admin socket when one is there
 * (--socket or COVE_ADMIN_SOCKET names it; else the places the daemon puts it), and failing
 * that HTTP to COVE_LISTEN, with the token if one is set.
 */
async function adminTarget(flags: Record<string, string | boolean | undefined>, url: string | undefined): Promise<AdminTarget | string> {
  const socketFlag = typeof flags.socket === 'string' ? flags.socket : undefined;
  const client = loadAdminSockets({ flags, socket: socketFlag });
  const searched: string[] = [];
  if (url === undefined) {
    for (const path of client.sockets) {
      const found = await stat(path).then(
        (s) => (s.isSocket() ? 'socket' : 'not a socket'),
        (err: NodeJS.ErrnoException) => err.code ?? 'unreadable',
      );
      if (found === 'socket') {
        // The file mode of the socket is the check: no token goes over it.
        return { base: 'http://localhost', where: `the admin socket ${path}`, socketPath: path, headers: {} };
      }
      searched.push(`${path} (${found === 'ENOENT' ? 'absent' : found})`);
    }
    if (client.explicit) return `cove: no admin socket to use: ${searched.join(', ') || 'COVE_ADMIN_SOCKET is off'}`;
  }
  let base = url;
  if (base === undefined) {
    const listen = loadListen({ flags });
    const host = listen.host === '0.0.0.0' || listen.host === '::' || listen.host === '' ? '127.0.0.1' : listen.host;
    base = `http://${host.includes(':') ? `[${host}]` : host}:${listen.port}`;
  }
  base = base.replace(/\/+$/, '');
  const token = typeof flags.token === 'string' ? flags.token : loadAdminToken({ flags });
  return { base, where: base, headers: token === null ? {} : { authorization: `Bearer ${token}` }, searched };
}

/** The response of the local Cove, or null (and a message) when it failed; timeoutMs 0 = none. */
async function callLocal(
  flags: Record<string, string | boolean | undefined>,
  url: string | undefined,
  method: string,
  path: string,
  what: string,
  body?: string,
  timeoutMs = 10_000,
): Promise<Response | null> {
  const target = await adminTarget(flags, url);
  if (typeof target === 'string') {
    process.stderr.write(`${target}\n`);
    return null;
  }
  // Each body goes with the one type its endpoint reads (see src/http/admin-gate.ts).
  const headers = { ...target.headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) };
  const { Agent, fetch: undiciFetch } = await import('undici');
  let dispatcher: Agent | undefined;
  if (target.socketPath !== undefined) {
    dispatcher = new Agent({ connect: { socketPath: target.socketPath } });
    socketAgents.push(dispatcher);
  }
  return answerOf(target, what, () =>
    undiciFetch(`${target.base}${path}`, {
      method,
      headers,
      ...(body === undefined ? {} : { body }),
      ...(dispatcher ? { dispatcher } : {}),
      ...(timeoutMs > 0 ? { signal: AbortSignal.timeout(timeoutMs) } : {}),
    }),
  );
}

/** The answer `send` gets from the local Cove, or null after saying why there is none or it is a failure. */
async function answerOf<R extends { ok: boolean; status: number; text(): Promise<string> }>(target: AdminTarget, what: string, send: () => Promise<R>): Promise<R | null> {
  let res: R;
  try {
    res = await send();
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    const why = cause?.code ?? cause?.message ?? (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    process.stderr.write(`cove: no Cove answered at ${target.where}: ${(err as Error).message} (${why}) (is it running? use --url or --socket)\n`);
    return null;
  }
  if (!res.ok) {
    process.stderr.write(`cove: ${what} failed (${res.status}): ${await res.text()}\n`);
    if (target.socketPath === undefined && (res.status === 401 || res.status === 403) && target.searched !== undefined) {
      const looked = target.searched.length > 0 ? ` (looked for ${target.searched.join(', ')})` : '';
      process.stderr.write(
        `cove: over HTTP, admin needs the admin token (COVE_ADMIN_TOKEN or --token). On the Cove host, run this as root or Cove's user so it can use the admin socket${looked}, or name it with --socket\n`,
      );
    }
    return null;
  }
  return res;
}

async function serve(flags: Record<string, string | boolean | undefined>): Promise<number> {
  const config = loadConfig({ flags });
  // Whatever Cove creates (index files, journals, keys) is for its own user only, as the unit's
  // UMask=0077 makes it under systemd.
  process.umask(0o077);
  // undici's HTTP parser is WebAssembly. V8 first runs it as baseline code and recompiles it
  // optimised once a body streams through it: on the first cold blob after start that compile took
  // about a sixth of the CPU and some 25 MiB of peak memory. Kept at the baseline tier, the first
  // fill is about 15% faster and later ones about 3% slower (README, Benchmark). Set before undici
  // is loaded, which compiles the parser.
  setFlagsFromString('--liftoff-only');
  const { startCove } = await import('./main.js');
  const { guardUndiciPausedParser } = await import('./undici-guard.js');
  const cove = await startCove(config);
  guardUndiciPausedParser(cove.log);
  await new Promise<void>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals) => {
      signals++;
      if (signals > 1) process.exit(1); // a second signal means "now"
      cove.log.info({ signal }, 'signal received');
      cove.stop().then(resolve, resolve);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  return 0;
}

main(process.argv.slice(2))
  .finally(() => Promise.all(socketAgents.map((agent) => agent.destroy())))
  .then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      if (err instanceof ConfigError || (err instanceof TypeError && 'code' in err && String(err.code).startsWith('ERR_PARSE_ARGS'))) {
        process.stderr.write(`cove: ${(err as Error).message}\n`);
        process.exitCode = 2;
        return;
      }
      process.stderr.write(`cove: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
