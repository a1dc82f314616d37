#!/usr/bin/env -S node --max-semi-space-size=1
// The `cove` command: subcommands to run the daemon or work on its data directory.
import { parseArgs } from 'node:util';
import { CONFIG_FLAGS, loadConfig, loadDataDir, loadListen } from './config.js';
import { ConfigError } from './errors.js';
import { createLogger } from './log.js';
import { startCove } from './main.js';
import { reindexDataDir } from './store/reindex.js';
import { VERSION } from './version.js';

const HELP = `cove ${VERSION} — edge cache for container images (an OCI pull-through mirror in front of Harbor)

Usage:
  cove serve [options]     run the cache daemon
  cove reindex [options]   rebuild the index from the blob files (run while Cove is stopped)
  cove invalidate REPO[:TAG] [--ns REGISTRY] [--url URL]
                           make the next pull of a cached tag (or of every tag of REPO) ask the
                           origin, whatever COVE_TAG_TTL says; talks to the Cove running on this
                           host (at COVE_LISTEN, or --url)
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

Every setting is described in the README.`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      ...CONFIG_FLAGS,
      ns: { type: 'string' },
      url: { type: 'string' },
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
  const { help: _h, version: _v, ns, url, ...flags } = values;
  switch (command) {
    case 'serve':
      return serve(flags);
    case 'reindex': {
      const dataDir = loadDataDir({ flags });
      const log = createLogger('info');
      const counts = await reindexDataDir(dataDir, log);
      process.stdout.write(`reindexed ${dataDir}: ${JSON.stringify(counts)}\n`);
      return 0;
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
  // A tag follows the last ':' unless a '/' comes after it (a registry host:port is not a tag).
  const colon = reference.lastIndexOf(':');
  const hasTag = colon > 0 && !reference.slice(colon).includes('/');
  const repo = hasTag ? reference.slice(0, colon) : reference;
  const tag = hasTag ? reference.slice(colon + 1) : null;
  let base = url;
  if (base === undefined) {
    const listen = loadListen({ flags });
    const host = listen.host === '0.0.0.0' || listen.host === '::' || listen.host === '' ? '127.0.0.1' : listen.host;
    base = `http://${host.includes(':') ? `[${host}]` : host}:${listen.port}`;
  }
  const query = new URLSearchParams({ repo, ...(tag === null ? {} : { tag }), ...(ns === undefined ? {} : { ns }) });
  const target = `${base.replace(/\/+$/, '')}/admin/invalidate?${query}`;
  let res: Response;
  try {
    res = await fetch(target, { method: 'POST', signal: AbortSignal.timeout(10_000) });
  } catch (err) {
    process.stderr.write(`cove: no Cove answered at ${base}: ${(err as Error).message} (is it running? use --url)\n`);
    return 1;
  }
  const text = await res.text();
  if (!res.ok) {
    process.stderr.write(`cove: invalidate failed (${res.status}): ${text}\n`);
    return 1;
  }
  process.stdout.write(`${text}\n`);
  return 0;
}

async function serve(flags: Record<string, string | boolean | undefined>): Promise<number> {
  const config = loadConfig({ flags });
  const cove = await startCove(config);
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

main(process.argv.slice(2)).then(
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
