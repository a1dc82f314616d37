// The only reader of the environment and the config file: defaults < JSON file < COVE_* environment
// < command-line flags, validated once at start-up into a frozen Config. Every bad value stops
// start-up with a ConfigError of one line naming the key and the value (never a password).
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
// env-var is CommonJS whose exports Node cannot name statically: take the default export.
import envVar from 'env-var';
import { ConfigError } from './errors.js';
import { parseRef } from './oci/image-ref.js';
import { NOT_FOUND_POLICIES, type NotFoundPolicy } from './resolve/manifests.js';
import { parsePlatforms, type Platform } from './prewarm/platforms.js';
import { parseDuration, parseSize } from './units.js';

/** One upstream registry (the origin Harbor, or another) Cove fetches from. */
export interface UpstreamConfig {
  /** Name used by routes and logs; the default upstream is "origin". */
  name: string;
  /** Base URL without trailing slash, e.g. "https://harbor.example.com". */
  url: string;
  username: string | null;
  password: string | null;
  /** PEM bundle contents to trust in addition to the system CAs, or null. */
  ca: string | null;
  /** Skip TLS verification (self-signed Harbor); off unless set explicitly. */
  insecure: boolean;
  /** Bound for connecting and for response headers, in ms. */
  timeoutMs: number;
  /** Longest gap between two body chunks, in ms. */
  bodyTimeoutMs: number;
  /** Proxy settings from HTTPS_PROXY / HTTP_PROXY / NO_PROXY. */
  proxy: { httpProxy: string | null; httpsProxy: string | null; noProxy: string | null };
  /**
   * Origins (scheme://host[:port]) besides the upstream's own whose token realms may be
   * followed and sent credentials (e.g. a registry whose token service has its own host).
   */
  tokenRealms: string[];
}

/** Maps requests selected by `?ns=<match>` (or the default ns) to an upstream and a repo prefix. */
export interface RouteConfig {
  /** The registry host clients think they pull from, e.g. "docker.io". */
  match: string;
  /** Name of the upstream the route sends to. */
  upstream: string;
  /** Repository prefix at that upstream, e.g. "dockerhub/" (may be ""). */
  prefix: string;
  /** Add "library/" to one-component names (Docker Hub official images). */
  libraryPrefix: boolean;
}

export interface Config {
  listen: { host: string; port: number };
  dataDir: string;
  /** At least one; the first is the default for port mode. */
  upstreams: UpstreamConfig[];
  routes: RouteConfig[];
  /** ns applied to requests that carry no ?ns= (e.g. "docker.io" for a dockerd registry-mirrors listener); null = port mode. */
  defaultNs: string | null;
  tagTtlMs: number;
  tls: { cert: string; key: string } | null;
  /** With TLS on, a second plain-HTTP listener (e.g. :80 beside :443), or null. */
  listenHttp: { host: string; port: number } | null;
  /** What one client may ask of the listeners: deadlines, header size, connection caps. */
  listenLimits: ListenLimitsConfig;
  logLevel: string;
  shutdownGraceMs: number;
  /** Never contact an upstream: serve only what is cached (a site cut off on purpose). */
  offline: boolean;
  /** When the upstream answers 404 for a cached tag: pass the 404 on (Harbor's way) or keep serving the cached copy. */
  onUpstreamNotFound: NotFoundPolicy;
  /** Past the tag TTL, answer from cache at once and revalidate in the background. */
  staleWhileRevalidate: boolean;
  /** How long a pull waits for a cached tag's revalidation before the cached answer goes out stale (0: no deadline). */
  revalidateDeadlineMs: number;
  /** Tier asks of cached tags' revalidations running at once on this node (the rest wait their turn). */
  revalidateConcurrency: number;
  /**
   * After an upstream comes back from an outage, revalidations are spread at random over this
   * long from its recovery (0: not spread); never longer than the tag TTL, in use.
   */
  recoverySpreadMs: number;
  /** This node among its siblings: its id (null: the one kept in the data directory) and site. */
  node: { id: string | null; site: string };
  peers: PeersConfig;
  /** Parent Coves (or registries) asked in order before the origin, e.g. a regional cache. */
  parents: UpstreamConfig[];
  /**
   * Byte cap, watermarks and idle limit for eviction. With no byte cap given, `maxShare` is the
   * share of the data directory's file system the cache may take (computed at start); both null
   * only when the operator turned the cap off.
   */
  cache: { maxBytes: number | null; maxShare: number | null; highWater: number; lowWater: number; maxIdleMs: number | null };
  /** Bounds on cold blobs coming in: concurrent fills, the wait for a slot, abandoned fills, blob size. */
  fills: FillLimitsConfig;
  /**
   * Images fetched before anyone asks, refreshed on an interval; platforms taken from multi-arch
   * images; copies of each blob a site prewarm keeps in the site (COVE_PREWARM_COPIES).
   */
  prewarm: { refs: string[]; intervalMs: number; platforms: Platform[]; jobs: number; queueMax: number; copies: number };
  /** Bounds on an archive import: decompressed bytes in all, and decompressed per compressed byte (0: no ratio check). */
  import: { maxBytes: number; maxRatio: number };
  /** Token that opens the admin endpoints over HTTP (a Harbor webhook, a remote operator); null = admin over HTTP is off. */
  adminToken: string | null;
  /** Unix socket the `cove` command uses for admin without a token (mode 0600), or null when off. */
  adminSocket: string | null;
  /** Host names besides the built-in ones (loopback, own addresses, host name, TLS names, upstream hosts) that admin requests may carry in Host. */
  adminHosts: string[];
  /** Who may pull what: everyone (open) or what the origin lets each client pull (passthrough). */
  clientAuth: ClientAuthConfig;
}

export const CLIENT_AUTH_MODES = ['open', 'passthrough'] as const;
export type ClientAuthMode = (typeof CLIENT_AUTH_MODES)[number];

/** Pull authorization for clients. */
export interface ClientAuthConfig {
  mode: ClientAuthMode;
  /** How long a decision the origin made is reused without asking it again. */
  ttlMs: number;
  /** With the origin unreachable, decisions made before are honoured this long. */
  graceMs: number;
}

/** How many fills may run, how long a request waits for one, and how large a blob may grow. */
export interface FillLimitsConfig {
  /** Fills for clients and peers running at once (joining a running fill never counts). */
  max: number;
  /** Fills one client address may have running at once. */
  maxPerClient: number;
  /** How long a request over a cap waits for a slot before 429 TOOMANYREQUESTS (0: at once). */
  queueWaitMs: number;
  /** A fill nobody waits for any more is cancelled after this long (prewarm fills never are). */
  abandonGraceMs: number;
  /** No blob grows past this many bytes when nothing better bounds it (manifest, tier, HEAD). */
  maxBlobBytes: number;
}

/** Deadlines, sizes and caps the listeners hold every client to. */
export interface ListenLimitsConfig {
  /** A request's headers must be complete this long after the connection opened (TLS included) or the request began. */
  headersTimeoutMs: number;
  /** The whole request, body included, within this long; 0: no bound. */
  requestTimeoutMs: number;
  /** Largest request head (HTTP/1.1) or header list (HTTP/2), in bytes. */
  maxHeaderBytes: number;
  /** Open connections in all, over every listener. */
  maxConnections: number;
  /** Open connections from one client address (an IPv6 client: its /64). */
  maxConnectionsPerClient: number;
}

/** Sibling Coves on the site's LAN. */
export interface PeersConfig {
  /** Peer base URLs from COVE_PEERS; the same list may go to every node (a node skips itself). */
  urls: string[];
  /** Find peers with mDNS (advertise and browse _cove._tcp). */
  mdns: boolean;
  /** Interface names mDNS uses; empty = every interface. */
  mdnsInterfaces: string[];
  /** Shared key that signs peer requests; when set, unsigned peer requests are refused. */
  key: string | null;
  /** Connect / answer bound when asking a peer what it holds, in ms. */
  timeoutMs: number;
  /** Discovered (mDNS) peers kept at most; static COVE_PEERS entries are not counted. */
  mdnsMaxPeers: number;
}


/** Command-line options that override configuration, for node:util parseArgs. */
export const CONFIG_FLAGS = {
  config: { type: 'string' },
  listen: { type: 'string' },
  'data-dir': { type: 'string' },
  upstream: { type: 'string' },
  'tag-ttl': { type: 'string' },
  'upstream-timeout': { type: 'string' },
  'log-level': { type: 'string' },
  'default-ns': { type: 'string' },
} as const;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/** Values used when no layer sets a key (the data directory also honours systemd's $STATE_DIRECTORY). */
export const DEFAULTS = Object.freeze({
  listen: '0.0.0.0:5000',
  dataDir: '/var/lib/cove',
  upstreamTimeout: '10s',
  upstreamBodyTimeout: '30s',
  tagTtl: '5m',
  revalidateDeadline: '1s',
  revalidateConcurrency: 8,
  recoverySpread: '10s',
  shutdownGrace: '10s',
  logLevel: 'info',
  site: 'default',
  peerTimeout: '1s',
  mdnsMaxPeers: '32',
  parentTimeout: '5s',
  prewarmInterval: '1h',
  /** Prewarm jobs (one image each) running at once, from the webhook, /admin/prewarm and the list together. */
  prewarmJobs: 2,
  /** Prewarm jobs waiting; as many as one /admin/prewarm call may name, so any single call fits an idle queue. */
  prewarmQueue: 1000,
  /** Copies of each blob a prewarm forwarded to the site keeps there (its owners in rank order). */
  prewarmCopies: 1,
  /** Decompressed bytes one import may produce when no cache cap is set (with one, the cap). */
  importMaxBytes: '64GiB',
  /** Decompressed bytes per compressed byte an import may reach (a gzip of zeros reaches ~1000). */
  importMaxRatio: 100,
  clientAuth: 'open',
  clientAuthTtl: '5m',
  clientAuthGrace: '24h',
  maxCache: '80%',
  maxFills: 64,
  maxFillsPerClient: 32,
  fillQueueWait: '10s',
  fillAbandonGrace: '2s',
  maxBlobBytes: '16GiB',
  /** The admin socket's file name, in $RUNTIME_DIRECTORY (systemd) or else the data directory. */
  adminSocketName: 'admin.sock',
  /** Where the unit's RuntimeDirectory=cove puts it; the `cove` command looks there too. */
  runtimeDir: '/run/cove',
  headersTimeout: '30s',
  requestTimeout: '5m',
  maxHeaderSize: '64KiB',
  maxConnections: 4096,
  maxConnectionsPerClient: 256,
});

/** Most copies of a blob a site prewarm may ask for (more than any site has nodes). */
export const PREWARM_COPIES_MAX = 256;

/** Name of the single upstream configured by COVE_UPSTREAM. */
export const ORIGIN = 'origin';

/** Docker Hub's names: a route for one serves all three, and adds "library/" to official images. */
const DOCKER_HUB = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];

/** Every setting by its JSON key, with its environment name and (some) its command-line flag. */
const SETTINGS = {
  listen: { env: 'COVE_LISTEN', flag: 'listen' },
  dataDir: { env: 'COVE_DATA_DIR', flag: 'data-dir' },
  upstream: { env: 'COVE_UPSTREAM', flag: 'upstream' },
  username: { env: 'COVE_UPSTREAM_USERNAME' },
  password: { env: 'COVE_UPSTREAM_PASSWORD' },
  passwordFile: { env: 'COVE_UPSTREAM_PASSWORD_FILE' },
  ca: { env: 'COVE_UPSTREAM_CA' },
  insecure: { env: 'COVE_UPSTREAM_INSECURE' },
  tokenRealms: { env: 'COVE_UPSTREAM_TOKEN_REALMS' },
  upstreamTimeout: { env: 'COVE_UPSTREAM_TIMEOUT', flag: 'upstream-timeout' },
  upstreamBodyTimeout: { env: 'COVE_UPSTREAM_BODY_TIMEOUT' },
  tagTtl: { env: 'COVE_TAG_TTL', flag: 'tag-ttl' },
  shutdownGrace: { env: 'COVE_SHUTDOWN_GRACE' },
  logLevel: { env: 'COVE_LOG_LEVEL', flag: 'log-level' },
  tlsCert: { env: 'COVE_TLS_CERT' },
  tlsKey: { env: 'COVE_TLS_KEY' },
  listenHttp: { env: 'COVE_LISTEN_HTTP' },
  routes: { env: 'COVE_ROUTES' },
  defaultNs: { env: 'COVE_DEFAULT_NS', flag: 'default-ns' },
  offline: { env: 'COVE_OFFLINE' },
  onUpstreamNotFound: { env: 'COVE_ON_UPSTREAM_NOT_FOUND' },
  staleWhileRevalidate: { env: 'COVE_STALE_WHILE_REVALIDATE' },
  revalidateDeadline: { env: 'COVE_REVALIDATE_DEADLINE' },
  revalidateConcurrency: { env: 'COVE_REVALIDATE_CONCURRENCY' },
  recoverySpread: { env: 'COVE_RECOVERY_SPREAD' },
  nodeId: { env: 'COVE_NODE_ID' },
  site: { env: 'COVE_SITE' },
  peers: { env: 'COVE_PEERS' },
  mdns: { env: 'COVE_MDNS' },
  mdnsInterfaces: { env: 'COVE_MDNS_INTERFACES' },
  mdnsMaxPeers: { env: 'COVE_MDNS_MAX_PEERS' },
  peerKey: { env: 'COVE_PEER_KEY' },
  peerKeyFile: { env: 'COVE_PEER_KEY_FILE' },
  peerTimeout: { env: 'COVE_PEER_TIMEOUT' },
  parents: { env: 'COVE_PARENTS' },
  parentTimeout: { env: 'COVE_PARENT_TIMEOUT' },
  maxCacheBytes: { env: 'COVE_MAX_CACHE_BYTES' },
  cacheHighWatermark: { env: 'COVE_CACHE_HIGH_WATERMARK' },
  cacheLowWatermark: { env: 'COVE_CACHE_LOW_WATERMARK' },
  maxIdle: { env: 'COVE_MAX_IDLE' },
  platforms: { env: 'COVE_PLATFORMS' },
  prewarm: { env: 'COVE_PREWARM' },
  prewarmInterval: { env: 'COVE_PREWARM_INTERVAL' },
  prewarmJobs: { env: 'COVE_PREWARM_JOBS' },
  prewarmQueue: { env: 'COVE_PREWARM_QUEUE' },
  prewarmCopies: { env: 'COVE_PREWARM_COPIES' },
  importMaxBytes: { env: 'COVE_IMPORT_MAX_BYTES' },
  importMaxRatio: { env: 'COVE_IMPORT_MAX_RATIO' },
  adminToken: { env: 'COVE_ADMIN_TOKEN' },
  adminTokenFile: { env: 'COVE_ADMIN_TOKEN_FILE' },
  adminSocket: { env: 'COVE_ADMIN_SOCKET' },
  adminHosts: { env: 'COVE_ADMIN_HOSTS' },
  clientAuth: { env: 'COVE_CLIENT_AUTH' },
  clientAuthTtl: { env: 'COVE_CLIENT_AUTH_TTL' },
  clientAuthGrace: { env: 'COVE_CLIENT_AUTH_GRACE' },
  maxFills: { env: 'COVE_MAX_FILLS' },
  maxFillsPerClient: { env: 'COVE_MAX_FILLS_PER_CLIENT' },
  fillQueueWait: { env: 'COVE_FILL_QUEUE_WAIT' },
  fillAbandonGrace: { env: 'COVE_FILL_ABANDON_GRACE' },
  maxBlobBytes: { env: 'COVE_MAX_BLOB_BYTES' },
  headersTimeout: { env: 'COVE_HEADERS_TIMEOUT' },
  requestTimeout: { env: 'COVE_REQUEST_TIMEOUT' },
  maxHeaderSize: { env: 'COVE_MAX_HEADER_SIZE' },
  maxConnections: { env: 'COVE_MAX_CONNECTIONS' },
  maxConnectionsPerClient: { env: 'COVE_MAX_CONNECTIONS_PER_CLIENT' },
} as const satisfies Record<string, { env: string; flag?: keyof typeof CONFIG_FLAGS }>;

type Key = keyof typeof SETTINGS;

type Flags = Readonly<Record<string, string | boolean | undefined>>;
type Env = Readonly<Record<string, string | undefined>>;

/** Where configuration comes from; each defaults to the real process (argv flags aside). */
export interface LoadOptions {
  /** Values from parseArgs with CONFIG_FLAGS. */
  flags?: Flags;
  /** Environment; defaults to process.env. */
  env?: Env;
  /** JSON config file path; overrides --config and COVE_CONFIG. */
  file?: string;
}

/** One value as read from one layer, with what to call it in an error. */
interface Raw {
  value: unknown;
  /** "COVE_TAG_TTL", "--tag-ttl" or "tagTtl in /etc/cove/cove.json". */
  label: string;
  /** Higher wins: file 1, environment 2, flag 3. */
  rank: number;
  /** Relative paths are resolved against this (the config file's folder, or the working directory). */
  baseDir: string;
}

/** Reads the JSON config file, the environment and the flags, and builds the validated, frozen Config. */
export function loadConfig(options: LoadOptions = {}): Config {
  const src = new Sources(options);
  const upstream = buildUpstream(src);
  const routes = buildRoutes(src.get('routes'), [upstream.name]);
  const dataDir = dataDirFrom(src);
  const cache = buildCache(src);
  const config: Config = {
    listen: parseListen(src.get('listen') ?? defaultRaw(DEFAULTS.listen)),
    dataDir,
    upstreams: [upstream],
    routes,
    defaultNs: parseDefaultNs(src.get('defaultNs'), routes),
    tagTtlMs: durationOf(src, 'tagTtl', DEFAULTS.tagTtl, 0),
    tls: buildTls(src),
    listenHttp: buildListenHttp(src),
    listenLimits: buildListenLimits(src),
    logLevel: parseLogLevel(src.get('logLevel') ?? defaultRaw(DEFAULTS.logLevel)),
    shutdownGraceMs: durationOf(src, 'shutdownGrace', DEFAULTS.shutdownGrace, 0),
    offline: parseBool(src.get('offline'), false),
    onUpstreamNotFound: parseNotFoundPolicy(src.get('onUpstreamNotFound')),
    staleWhileRevalidate: parseBool(src.get('staleWhileRevalidate'), false),
    revalidateDeadlineMs: durationOf(src, 'revalidateDeadline', DEFAULTS.revalidateDeadline, 0),
    revalidateConcurrency: wholeOf(src, 'revalidateConcurrency', DEFAULTS.revalidateConcurrency, 1, 10_000),
    recoverySpreadMs: durationOf(src, 'recoverySpread', DEFAULTS.recoverySpread, 0),
    node: { id: parseNodeId(src.get('nodeId')), site: parseSite(src.get('site')) },
    peers: {
      urls: parseUrlList(src.get('peers'), 'http://10.0.0.2:5000,http://10.0.0.3:5000'),
      mdns: parseBool(src.get('mdns'), false),
      mdnsInterfaces: parseNameList(src.get('mdnsInterfaces')),
      key: secretOf(src, 'peerKey', 'peerKeyFile'),
      timeoutMs: durationOf(src, 'peerTimeout', DEFAULTS.peerTimeout, 1),
      mdnsMaxPeers: countOf(src.get('mdnsMaxPeers') ?? defaultRaw(DEFAULTS.mdnsMaxPeers), 1, 1024),
    },
    parents: parseUrlList(src.get('parents'), 'http://regional-cove:5000').map((url) => ({
      ...upstream,
      name: `parent:${new URL(url).host}`,
      url,
      username: null,
      password: null,
      timeoutMs: durationOf(src, 'parentTimeout', DEFAULTS.parentTimeout, 1),
    })),
    cache,
    fills: buildFillLimits(src),
    prewarm: {
      refs: parseRefList(src.get('prewarm')),
      intervalMs: durationOf(src, 'prewarmInterval', DEFAULTS.prewarmInterval, 60_000),
      platforms: parsePlatformSetting(src.get('platforms')),
      jobs: wholeOf(src, 'prewarmJobs', DEFAULTS.prewarmJobs, 1, 64),
      queueMax: wholeOf(src, 'prewarmQueue', DEFAULTS.prewarmQueue, 1, 100_000),
      copies: wholeOf(src, 'prewarmCopies', DEFAULTS.prewarmCopies, 1, PREWARM_COPIES_MAX),
    },
    import: buildImportLimits(src, cache),
    adminToken: secretOf(src, 'adminToken', 'adminTokenFile'),
    adminSocket: adminSocketFrom(src, dataDir),
    adminHosts: parseHostNames(src.get('adminHosts')),
    clientAuth: {
      mode: parseClientAuthMode(src.get('clientAuth')),
      ttlMs: durationOf(src, 'clientAuthTtl', DEFAULTS.clientAuthTtl, 0),
      graceMs: durationOf(src, 'clientAuthGrace', DEFAULTS.clientAuthGrace, 0),
    },
  };
  if (config.clientAuth.mode === 'passthrough' && config.peers.key === null && (config.peers.urls.length > 0 || config.peers.mdns)) {
    // Without a key a peer request is a plain request marked by a header anyone can send.
    throw new ConfigError('COVE_CLIENT_AUTH=passthrough with peers (COVE_PEERS or COVE_MDNS) needs COVE_PEER_KEY: peers are served only over the keyed peer channel');
  }
  return deepFreeze(config);
}

/** Only the listen address, for commands that talk to the running daemon (invalidate). */
export function loadListen(options: LoadOptions = {}): { host: string; port: number } {
  return parseListen(new Sources(options).get('listen') ?? defaultRaw(DEFAULTS.listen));
}

/**
 * Where the `cove` command looks for the running daemon's admin socket, in order (none with
 * COVE_ADMIN_SOCKET=off); `explicit` when --socket (`socket`, which wins) or the setting names it.
 */
export function loadAdminSockets(options: LoadOptions & { socket?: string } = {}): { sockets: string[]; explicit: boolean } {
  const src = new Sources(options);
  if (options.socket !== undefined) {
    const path = parseSocketPath({ value: options.socket, label: '--socket', rank: 3, baseDir: process.cwd() });
    return { sockets: path === null ? [] : [path], explicit: true };
  }
  if (src.get('adminSocket') !== undefined) {
    const path = adminSocketFrom(src, '');
    return { sockets: path === null ? [] : [path], explicit: true };
  }
  // Where the daemon puts it: under systemd ($RUNTIME_DIRECTORY, which a shell lacks, so also
  // the unit's /run/cove), or else in its data directory.
  const runtime = src.env('RUNTIME_DIRECTORY')?.split(':')[0];
  const candidates = [
    ...(runtime ? [join(resolve(runtime), DEFAULTS.adminSocketName)] : []),
    join(dataDirFrom(src), DEFAULTS.adminSocketName),
    join(DEFAULTS.runtimeDir, DEFAULTS.adminSocketName),
  ];
  return { sockets: [...new Set(candidates)], explicit: false };
}

/** The admin token, for the `cove` command talking HTTP (read only then: the socket needs none). */
export function loadAdminToken(options: LoadOptions = {}): string | null {
  return secretOf(new Sources(options), 'adminToken', 'adminTokenFile');
}

/** Only the data directory, for tools that work on it without talking to an upstream (reindex). */
export function loadDataDir(options: LoadOptions = {}): string {
  return dataDirFrom(new Sources(options));
}

/** The three layers, asked key by key; the highest layer that sets a key wins. */
class Sources {
  readonly #flags: Flags;
  readonly #readEnv: (name: string) => string | undefined;
  readonly #file: { path: string; values: Record<string, unknown> } | null;

  constructor(options: LoadOptions) {
    this.#flags = options.flags ?? {};
    const vars = envVar.from(options.env ?? process.env);
    this.#readEnv = (name) => vars.get(name).asString();
    const flagPath = this.#flag('config');
    const envPath = this.env('COVE_CONFIG');
    if (options.file !== undefined) this.#file = readConfigFile(options.file, 'config file');
    else if (flagPath !== undefined) this.#file = readConfigFile(flagPath, '--config');
    else if (envPath !== undefined) this.#file = readConfigFile(envPath, 'COVE_CONFIG');
    else this.#file = null;
  }

  /** An environment variable; set-but-empty counts as unset, as most shells and unit files mean it. */
  env(name: string): string | undefined {
    const value = this.#readEnv(name);
    return value === undefined || value === '' ? undefined : value;
  }

  get(key: Key): Raw | undefined {
    const setting: { env: string; flag?: string } = SETTINGS[key];
    const flag = setting.flag === undefined ? undefined : this.#flag(setting.flag);
    if (flag !== undefined) return { value: flag, label: `--${setting.flag}`, rank: 3, baseDir: process.cwd() };
    const env = this.env(setting.env);
    if (env !== undefined) return { value: env, label: setting.env, rank: 2, baseDir: process.cwd() };
    if (this.#file && this.#file.values[key] !== undefined && this.#file.values[key] !== null) {
      return { value: this.#file.values[key], label: `${key} in ${this.#file.path}`, rank: 1, baseDir: dirname(this.#file.path) };
    }
    return undefined;
  }

  #flag(name: string): string | undefined {
    const value = this.#flags[name];
    return typeof value === 'string' ? value : undefined;
  }
}

function readConfigFile(path: string, label: string): { path: string; values: Record<string, unknown> } {
  const full = resolve(path);
  let text: string;
  try {
    text = readFileSync(full, 'utf8');
  } catch (err) {
    throw new ConfigError(`${label}: ${show(path)} cannot be read (${errorCode(err)})`);
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${label}: ${show(path)} is not valid JSON (${oneLine(err)})`);
  }
  if (!isPlainObject(parsed)) throw new ConfigError(`${label}: ${show(path)} must hold a JSON object of settings`);
  const values: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(parsed)) {
    if (key.startsWith('//')) continue; // comments, as in config/cove.example.json
    if (!Object.hasOwn(SETTINGS, key)) {
      throw new ConfigError(`${full}: unknown key ${show(key)} (known keys: ${Object.keys(SETTINGS).join(', ')})`);
    }
    values[key] = value;
  }
  return { path: full, values };
}

function buildUpstream(src: Sources): UpstreamConfig {
  const raw = src.get('upstream');
  if (raw === undefined) {
    throw new ConfigError(
      'COVE_UPSTREAM is required: the origin registry URL, e.g. https://harbor.example.com (or --upstream, or "upstream" in the config file)',
    );
  }
  const { username, password } = credentials(src);
  const caRaw = src.get('ca');
  return {
    name: ORIGIN,
    url: parseUpstreamUrl(raw),
    username,
    password,
    ca: caRaw === undefined ? null : readPem(caRaw, 'CERTIFICATE'),
    insecure: parseBool(src.get('insecure'), false),
    timeoutMs: durationOf(src, 'upstreamTimeout', DEFAULTS.upstreamTimeout, 1),
    bodyTimeoutMs: durationOf(src, 'upstreamBodyTimeout', DEFAULTS.upstreamBodyTimeout, 1),
    proxy: {
      httpsProxy: proxyUrl(src, 'HTTPS_PROXY', 'https_proxy'),
      httpProxy: proxyUrl(src, 'HTTP_PROXY', 'http_proxy'),
      noProxy: src.env('NO_PROXY') ?? src.env('no_proxy') ?? null,
    },
    tokenRealms: parseUrlList(src.get('tokenRealms'), 'https://auth.example.com').map((url) => new URL(url).origin),
  };
}

function parseUpstreamUrl(raw: Raw): string {
  const text = str(raw).trim();
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return fail(raw, 'is not a URL (e.g. https://harbor.example.com)');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return fail(raw, 'must be an http:// or https:// URL');
  if (url.username !== '' || url.password !== '') {
    // The value holds a password: name the key only.
    throw new ConfigError(`${raw.label}: the URL must not carry credentials; set COVE_UPSTREAM_USERNAME and COVE_UPSTREAM_PASSWORD`);
  }
  if (url.pathname !== '/' || url.search !== '' || url.hash !== '') {
    return fail(raw, 'must name the registry host only, with no path (Cove adds /v2/ itself)');
  }
  return `${url.protocol}//${url.host}`;
}

function credentials(src: Sources): { username: string | null; password: string | null } {
  const userRaw = src.get('username');
  const username = userRaw === undefined ? null : str(userRaw) === '' ? null : str(userRaw);
  const pwRaw = src.get('password');
  const fileRaw = src.get('passwordFile');
  let password: string | null = null;
  let pwLabel = '';
  if (pwRaw !== undefined && fileRaw !== undefined && pwRaw.rank === fileRaw.rank) {
    throw new ConfigError(`${pwRaw.label} and ${fileRaw.label} are both set; set only one`);
  }
  if (fileRaw !== undefined && (pwRaw === undefined || fileRaw.rank > pwRaw.rank)) {
    password = readPasswordFile(src, fileRaw);
    pwLabel = fileRaw.label;
  } else if (pwRaw !== undefined) {
    if (typeof pwRaw.value !== 'string') throw new ConfigError(`${pwRaw.label}: must be a string (value not shown)`);
    password = pwRaw.value === '' ? null : pwRaw.value;
    pwLabel = pwRaw.label;
  }
  if (username !== null && password === null) {
    throw new ConfigError(`${userRaw!.label} is set but no password is (set COVE_UPSTREAM_PASSWORD or COVE_UPSTREAM_PASSWORD_FILE)`);
  }
  if (username === null && password !== null) {
    throw new ConfigError(`${pwLabel} is set but no user name is (set COVE_UPSTREAM_USERNAME)`);
  }
  return { username, password };
}

/** Reads a password file; a relative name is looked up in systemd's $CREDENTIALS_DIRECTORY when set (LoadCredential=). */
function readPasswordFile(src: Sources, raw: Raw): string {
  const name = str(raw);
  const credentialsDir = src.env('CREDENTIALS_DIRECTORY');
  const path = isAbsolute(name) ? name : credentialsDir !== undefined ? join(credentialsDir, name) : resolve(raw.baseDir, name);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(`${raw.label}: ${show(path)} cannot be read (${errorCode(err)})`);
  }
  const password = text.replace(/[\r\n]+$/, '');
  if (password === '') throw new ConfigError(`${raw.label}: ${show(path)} is empty`);
  return password;
}

function proxyUrl(src: Sources, upper: string, lower: string): string | null {
  const name = src.env(upper) !== undefined ? upper : lower;
  const value = src.env(name);
  if (value === undefined) return null;
  let url: URL | null = null;
  try {
    url = new URL(value);
  } catch {
    // fall through to the error below
  }
  if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
    // Proxy URLs often carry a password: show the value with it blanked out.
    throw new ConfigError(`${name}: ${show(value.replace(/\/\/[^/@]*@/, '//***@'))} is not an http:// or https:// proxy URL`);
  }
  return value;
}

function parseListen(raw: Raw): { host: string; port: number } {
  const text = str(raw).trim();
  const bad = (why: string): never => fail(raw, `${why} (e.g. 0.0.0.0:5000, [::1]:5000 or :5000)`);
  let host: string;
  let portText: string;
  const bracketed = /^\[([^\]]*)\]:([^:]*)$/.exec(text);
  if (bracketed) {
    host = bracketed[1]!;
    portText = bracketed[2]!;
    if (isIP(host) !== 6) bad('is not an IPv6 address in brackets');
  } else if (/^\d+$/.test(text)) {
    host = '0.0.0.0';
    portText = text;
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) bad('is not HOST:PORT');
    if (text.indexOf(':') !== colon) bad('is not HOST:PORT; write an IPv6 address in brackets');
    host = text.slice(0, colon) || '0.0.0.0';
    portText = text.slice(colon + 1);
    if (isIP(host) === 0 && !/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/.test(host)) {
      bad('does not name a valid host');
    }
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) bad('has no port from 0 to 65535');
  return { host, port: Number(portText) };
}

function dataDirFrom(src: Sources): string {
  const raw = src.get('dataDir');
  if (raw !== undefined) {
    const text = str(raw);
    if (text.trim() === '') fail(raw, 'must name a directory');
    return resolve(raw.baseDir, text);
  }
  // systemd StateDirectory= may list several, colon-separated; the first is Cove's.
  const state = src.env('STATE_DIRECTORY')?.split(':')[0];
  return state ? resolve(state) : DEFAULTS.dataDir;
}

/**
 * COVE_ADMIN_SOCKET (a path, or "off"); unset: $RUNTIME_DIRECTORY/admin.sock under systemd,
 * else admin.sock in the data directory.
 */
function adminSocketFrom(src: Sources, dataDir: string): string | null {
  const raw = src.get('adminSocket');
  if (raw !== undefined) return parseSocketPath(raw);
  // systemd RuntimeDirectory= may list several, colon-separated; the first is Cove's.
  const runtime = src.env('RUNTIME_DIRECTORY')?.split(':')[0];
  const path = join(runtime ? resolve(runtime) : dataDir, DEFAULTS.adminSocketName);
  return checkSocketLength(path, runtime ? 'RUNTIME_DIRECTORY' : 'the data directory');
}

function parseSocketPath(raw: Raw): string | null {
  const text = str(raw).trim();
  if (['off', 'none', 'false', '0', 'no'].includes(text.toLowerCase())) return null;
  if (text === '' || text.endsWith('/')) fail(raw, 'must name a socket file (e.g. /run/cove/admin.sock), or be "off"');
  return checkSocketLength(resolve(raw.baseDir, text), raw.label);
}

/**
 * A Unix socket path has at most 107 bytes on Linux. Cove binds first inside a private temporary
 * directory beside the socket (src/http/admin-socket.ts), whose path is longer: check both.
 */
function checkSocketLength(path: string, label: string): string {
  const temporary = join(dirname(path), '.admin-sock-XXXXXX', 's');
  const longest = Math.max(Buffer.byteLength(path), Buffer.byteLength(temporary));
  if (longest > 107 || basename(path) === '') {
    throw new ConfigError(`${label}: the admin socket ${show(path)} is too long for a Unix socket path (107 bytes); set COVE_ADMIN_SOCKET to a shorter path, or "off"`);
  }
  return path;
}

/** COVE_ADMIN_HOSTS: host names (or addresses), comma-separated or a JSON array. */
function parseHostNames(raw: Raw | undefined): string[] {
  if (raw === undefined) return [];
  const items = Array.isArray(raw.value) ? raw.value : str(raw).split(',');
  const names: string[] = [];
  for (const item of items) {
    if (typeof item !== 'string') fail(raw, 'must list host names or addresses, e.g. edge-7.site.example.com,10.0.0.7');
    const name = (item as string).trim().toLowerCase().replace(/\.$/, '').replace(/^\[(.*)\]$/, '$1');
    if (name === '') continue;
    // A leading "*." matches one label, as in a certificate.
    if (isIP(name) === 0 && !/^(\*\.)?[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/.test(name)) {
      fail(raw, 'must list host names or addresses, e.g. edge-7.site.example.com,10.0.0.7');
    }
    if (!names.includes(name)) names.push(name);
  }
  return names;
}

/**
 * The routes, from COVE_ROUTES ("docker.io=dockerhub/,ghcr.io=origin:ghcr/") or the file's
 * `routes` (an object match→prefix, or an array of such strings or of {match, prefix, upstream}).
 */
function buildRoutes(raw: Raw | undefined, upstreams: string[]): RouteConfig[] {
  if (raw === undefined) return [];
  const specs: Array<{ match: unknown; upstream: unknown; prefix: unknown; text: string }> = [];
  // Name the one bad entry rather than repeating the whole list.
  const bad = (why: string): never => {
    throw new ConfigError(`${raw.label}: ${why}`);
  };
  const fromText = (text: string) => {
    const eq = text.indexOf('=');
    if (eq < 0) bad(`${show(text)} is not MATCH=PREFIX (e.g. docker.io=dockerhub/,ghcr.io=ghcr/)`);
    const target = text.slice(eq + 1).trim();
    const colon = target.indexOf(':');
    specs.push({
      match: text.slice(0, eq),
      upstream: colon < 0 ? ORIGIN : target.slice(0, colon),
      prefix: colon < 0 ? target : target.slice(colon + 1),
      text,
    });
  };
  const value = raw.value;
  if (typeof value === 'string') {
    for (const part of value.split(',')) if (part.trim() !== '') fromText(part.trim());
  } else if (Array.isArray(value)) {
    for (const entry of value) {
      if (typeof entry === 'string') fromText(entry);
      else if (isPlainObject(entry)) {
        specs.push({ match: entry.match, upstream: entry.upstream ?? ORIGIN, prefix: entry.prefix ?? '', text: JSON.stringify(entry) });
      } else bad(`${show(entry)} is neither "MATCH=PREFIX" nor {"match": ..., "prefix": ...}`);
    }
  } else if (isPlainObject(value)) {
    for (const [match, target] of Object.entries(value)) {
      if (match.startsWith('//')) continue;
      if (typeof target !== 'string') bad(`${show(match)}: ${show(target)} is not a prefix string like "dockerhub/"`);
      fromText(`${match}=${target as string}`);
    }
  } else {
    fail(raw, 'must be MATCH=PREFIX,... or an object {"docker.io": "dockerhub/"}');
  }

  const routes: RouteConfig[] = [];
  const seen = new Set<string>();
  for (const spec of specs) {
    const match = typeof spec.match === 'string' ? spec.match.trim().toLowerCase() : '';
    if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*(:\d{1,5})?$/.test(match)) {
      bad(`${show(spec.text)}: ${show(spec.match)} is not a registry host name like docker.io`);
    }
    const upstream = typeof spec.upstream === 'string' ? spec.upstream.trim() : '';
    if (!upstreams.includes(upstream)) {
      bad(`${show(spec.text)}: ${show(spec.upstream)} is not a configured upstream (there is one: ${show(ORIGIN)})`);
    }
    let prefix = typeof spec.prefix === 'string' ? spec.prefix.trim() : null;
    if (prefix !== null && prefix !== '' && !prefix.endsWith('/')) prefix += '/'; // "dockerhub" means "dockerhub/"
    const component = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
    if (prefix === null || !new RegExp(`^(?:${component}/)*$`).test(prefix)) {
      bad(`${show(spec.text)}: ${show(spec.prefix)} is not a repository prefix like dockerhub/`);
    }
    if (seen.has(match)) bad(`${show(match)} is routed twice`);
    seen.add(match);
    routes.push({ match, upstream, prefix: prefix!, libraryPrefix: DOCKER_HUB.includes(match) });
  }
  // Clients name Docker Hub three ways; a route for one serves all three unless they are routed apart.
  for (const route of [...routes]) {
    if (!route.libraryPrefix) continue;
    for (const alias of DOCKER_HUB) {
      if (seen.has(alias)) continue;
      seen.add(alias);
      routes.push({ ...route, match: alias });
    }
  }
  return routes;
}

function parseDefaultNs(raw: Raw | undefined, routes: RouteConfig[]): string | null {
  if (raw === undefined) return null;
  const ns = str(raw).trim().toLowerCase();
  if (ns === '') return null;
  if (!routes.some((r) => r.match === ns)) {
    const known = routes.length === 0 ? 'none; set COVE_ROUTES' : routes.map((r) => r.match).join(', ');
    fail(raw, `names no configured route (routes: ${known})`);
  }
  return ns;
}

function buildTls(src: Sources): { cert: string; key: string } | null {
  const cert = src.get('tlsCert');
  const key = src.get('tlsKey');
  if (cert === undefined && key === undefined) return null;
  if (cert === undefined) throw new ConfigError(`${key!.label} is set but COVE_TLS_CERT is not; set both or neither`);
  if (key === undefined) throw new ConfigError(`${cert.label} is set but COVE_TLS_KEY is not; set both or neither`);
  const credentialsDir = src.env('CREDENTIALS_DIRECTORY');
  return { cert: readPem(cert, 'CERTIFICATE', credentialsDir), key: readPem(key, 'PRIVATE KEY', credentialsDir) };
}

/** COVE_LISTEN_HTTP: a plain-HTTP listener beside the TLS one; meaningless without TLS. */
function buildListenHttp(src: Sources): { host: string; port: number } | null {
  const raw = src.get('listenHttp');
  if (raw === undefined) return null;
  if (src.get('tlsCert') === undefined) throw new ConfigError(`${raw.label} is set but COVE_TLS_CERT is not: without TLS, COVE_LISTEN is already plain HTTP`);
  return parseListen(raw);
}

/** Deadlines, header size and connection caps of the listeners. */
function buildListenLimits(src: Sources): ListenLimitsConfig {
  const headersTimeoutMs = durationOf(src, 'headersTimeout', DEFAULTS.headersTimeout, 100);
  const requestTimeoutMs = durationOf(src, 'requestTimeout', DEFAULTS.requestTimeout, 0);
  if (requestTimeoutMs !== 0 && requestTimeoutMs < headersTimeoutMs) {
    throw new ConfigError(`${src.get('requestTimeout')?.label ?? 'COVE_REQUEST_TIMEOUT'} (${requestTimeoutMs} ms) must be 0 (no bound) or at least COVE_HEADERS_TIMEOUT (${headersTimeoutMs} ms)`);
  }
  const headerRaw = src.get('maxHeaderSize') ?? defaultRaw(DEFAULTS.maxHeaderSize);
  let maxHeaderBytes: number;
  try {
    maxHeaderBytes = typeof headerRaw.value === 'number' ? headerRaw.value : parseSize(str(headerRaw));
  } catch (err) {
    throw new ConfigError(`${headerRaw.label}: ${oneLine(err)}`);
  }
  // Below 4 KiB ordinary requests with a token fail; above 1 MiB one header block costs too much memory.
  if (!Number.isSafeInteger(maxHeaderBytes) || maxHeaderBytes < 4096 || maxHeaderBytes > 1048576) fail(headerRaw, 'must be a size from 4KiB to 1MiB');
  const maxConnections = connectionsOf(src, 'maxConnections', DEFAULTS.maxConnections);
  const maxConnectionsPerClient = connectionsOf(src, 'maxConnectionsPerClient', DEFAULTS.maxConnectionsPerClient);
  if (maxConnectionsPerClient > maxConnections) {
    throw new ConfigError(`COVE_MAX_CONNECTIONS_PER_CLIENT (${maxConnectionsPerClient}) must not be above COVE_MAX_CONNECTIONS (${maxConnections})`);
  }
  return { headersTimeoutMs, requestTimeoutMs, maxHeaderBytes, maxConnections, maxConnectionsPerClient };
}

/** A whole number of at least 1 (a count of connections). */
function connectionsOf(src: Sources, key: Key, fallback: number): number {
  const raw = src.get(key);
  if (raw === undefined) return fallback;
  const n = typeof raw.value === 'number' ? raw.value : /^\s*\d{1,9}\s*$/.test(str(raw)) ? Number(str(raw)) : NaN;
  if (!Number.isSafeInteger(n) || n < 1) fail(raw, 'must be a whole number of at least 1');
  return n;
}

/** Reads a PEM file named by `raw` and checks it holds at least one block of the given kind. */
/** With `credentialsDir` ($CREDENTIALS_DIRECTORY, LoadCredential=), a relative name is looked up there, as for passwords. */
function readPem(raw: Raw, kind: 'CERTIFICATE' | 'PRIVATE KEY', credentialsDir?: string): string {
  const name = str(raw);
  const path = isAbsolute(name) ? name : credentialsDir !== undefined ? join(credentialsDir, name) : resolve(raw.baseDir, name);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    return fail(raw, `cannot be read (${errorCode(err)})${path !== resolve(raw.baseDir, name) ? ` at ${show(path)} ($CREDENTIALS_DIRECTORY)` : ''}`);
  }
  // "PRIVATE KEY" also matches "RSA PRIVATE KEY" and "EC PRIVATE KEY".
  if (!new RegExp(`-----BEGIN [A-Z ]*${kind}-----`).test(text)) return fail(raw, `holds no PEM ${kind.toLowerCase()}`);
  return text;
}

/** Node ids appear in Via headers and mDNS names: lower-case letters, digits and dashes. */
function parseNodeId(raw: Raw | undefined): string | null {
  if (raw === undefined) return null;
  const id = str(raw).trim();
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(id)) fail(raw, 'is not a node id (lower-case letters, digits and dashes, at most 63)');
  return id;
}

function parseSite(raw: Raw | undefined): string {
  if (raw === undefined) return DEFAULTS.site;
  const site = str(raw).trim();
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(site)) fail(raw, 'is not a site name (letters, digits, ".", "_" and "-", at most 63)');
  return site;
}

/** A comma-separated string or a JSON array of http(s) base URLs, each without a path. */
function parseUrlList(raw: Raw | undefined, example: string): string[] {
  if (raw === undefined) return [];
  const items = Array.isArray(raw.value) ? raw.value : str(raw).split(',');
  const urls: string[] = [];
  for (const item of items) {
    if (typeof item !== 'string') fail(raw, `must list URLs, e.g. ${example}`);
    const text = (item as string).trim();
    if (text === '') continue;
    const url = parseUpstreamUrl({ ...raw, value: text, label: `${raw.label} entry` });
    if (!urls.includes(url)) urls.push(url);
  }
  return urls;
}

function parseNameList(raw: Raw | undefined): string[] {
  if (raw === undefined) return [];
  const items = Array.isArray(raw.value) ? raw.value : str(raw).split(',');
  return items.map((item) => {
    if (typeof item !== 'string' || !/^[A-Za-z0-9._@-]{1,15}$/.test(item.trim())) fail(raw, 'must list interface names, e.g. eth0,br0');
    return (item as string).trim();
  }).filter((name) => name !== '');
}

/** A secret given inline or in a file (LoadCredential= names work as for the origin password). */
function secretOf(src: Sources, key: Key, fileKey: Key): string | null {
  const inline = src.get(key);
  const file = src.get(fileKey);
  if (inline !== undefined && file !== undefined && inline.rank === file.rank) {
    throw new ConfigError(`${inline.label} and ${file.label} are both set; set only one`);
  }
  if (file !== undefined && (inline === undefined || file.rank > inline.rank)) return readPasswordFile(src, file);
  if (inline === undefined) return null;
  if (typeof inline.value !== 'string') throw new ConfigError(`${inline.label}: must be a string (value not shown)`);
  if (inline.value !== '' && inline.value.length < 16) throw new ConfigError(`${inline.label}: needs at least 16 characters (value not shown)`);
  return inline.value === '' ? null : inline.value;
}

/**
 * The byte cap with its watermarks, and the idle limit. The cap is a size ("20GiB"), a share of
 * the data directory's file system ("80%", the default, worked out at start), or "off" (also
 * "none" or 0): no cap, only when the operator says so.
 */
function buildCache(src: Sources): Config['cache'] {
  const capRaw = src.get('maxCacheBytes') ?? defaultRaw(DEFAULTS.maxCache);
  let maxBytes: number | null = null;
  let maxShare: number | null = null;
  const capText = typeof capRaw.value === 'string' ? capRaw.value.trim().toLowerCase() : null;
  if (capRaw.value === 0 || capText === 'off' || capText === 'none' || capText === '0') {
    // No cap at all: asked for explicitly.
  } else if (capText !== null && capText.endsWith('%')) {
    maxShare = Number(capText.slice(0, -1)) / 100;
    if (!Number.isFinite(maxShare) || maxShare <= 0 || maxShare > 1 || capText.slice(0, -1).trim() === '') {
      fail(capRaw, 'must be a share of the file system between 0% and 100% (e.g. 80%), a size (20GiB) or off');
    }
  } else {
    try {
      maxBytes = typeof capRaw.value === 'number' ? capRaw.value : parseSize(str(capRaw));
    } catch (err) {
      throw new ConfigError(`${capRaw.label}: ${oneLine(err)} (or a share of the file system such as 80%, or off)`);
    }
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 1) fail(capRaw, 'must be a size of at least 1 byte, e.g. 20GiB');
  }
  const share = (key: Key, fallback: number): number => {
    const raw = src.get(key);
    if (raw === undefined) return fallback;
    const n = typeof raw.value === 'number' ? raw.value : Number(str(raw).trim().replace(/%$/, '')) / (str(raw).trim().endsWith('%') ? 100 : 1);
    if (!Number.isFinite(n) || n <= 0 || n > 1) fail(raw, 'must be a share of the cap between 0 and 1 (e.g. 0.9 or 90%)');
    return n;
  };
  const highWater = share('cacheHighWatermark', 0.9);
  const lowWater = share('cacheLowWatermark', 0.8);
  if (lowWater >= highWater) {
    throw new ConfigError(`COVE_CACHE_LOW_WATERMARK (${lowWater}) must be below COVE_CACHE_HIGH_WATERMARK (${highWater})`);
  }
  const idleRaw = src.get('maxIdle');
  return { maxBytes, maxShare, highWater, lowWater, maxIdleMs: idleRaw === undefined ? null : durationOf(src, 'maxIdle', '0s', 60_000) };
}

/** Fill admission caps, the wait for a slot, the grace of an abandoned fill, the largest blob. */
function buildFillLimits(src: Sources): FillLimitsConfig {
  const count = (key: Key, fallback: number): number => {
    const raw = src.get(key);
    if (raw === undefined) return fallback;
    const n = typeof raw.value === 'number' ? raw.value : /^\s*\d+\s*$/.test(str(raw)) ? Number(str(raw)) : NaN;
    if (!Number.isSafeInteger(n) || n < 1 || n > 100_000) fail(raw, 'must be a whole number from 1 to 100000');
    return n;
  };
  const max = count('maxFills', DEFAULTS.maxFills);
  const maxPerClient = count('maxFillsPerClient', Math.min(DEFAULTS.maxFillsPerClient, max));
  if (maxPerClient > max) {
    throw new ConfigError(`COVE_MAX_FILLS_PER_CLIENT (${maxPerClient}) must not be above COVE_MAX_FILLS (${max})`);
  }
  const blobRaw = src.get('maxBlobBytes') ?? defaultRaw(DEFAULTS.maxBlobBytes);
  let maxBlobBytes: number;
  try {
    maxBlobBytes = typeof blobRaw.value === 'number' ? blobRaw.value : parseSize(str(blobRaw));
  } catch (err) {
    throw new ConfigError(`${blobRaw.label}: ${oneLine(err)}`);
  }
  if (!Number.isSafeInteger(maxBlobBytes) || maxBlobBytes < 1024 * 1024) fail(blobRaw, 'must be a size of at least 1MiB, e.g. 16GiB');
  return {
    max,
    maxPerClient,
    queueWaitMs: durationOf(src, 'fillQueueWait', DEFAULTS.fillQueueWait, 0),
    abandonGraceMs: durationOf(src, 'fillAbandonGrace', DEFAULTS.fillAbandonGrace, 0),
    maxBlobBytes,
  };
}

/** COVE_PLATFORMS: linux/arm64,linux/amd64 (empty: every platform). */
function parsePlatformSetting(raw: Raw | undefined): Platform[] {
  if (raw === undefined) return [];
  const text = Array.isArray(raw.value) ? raw.value.join(',') : str(raw);
  try {
    return parsePlatforms(text, raw.label);
  } catch (err) {
    throw new ConfigError(oneLine(err));
  }
}

/** COVE_PREWARM: image references, comma-separated (or a JSON array), each checked now. */
function parseRefList(raw: Raw | undefined): string[] {
  if (raw === undefined) return [];
  const items = Array.isArray(raw.value) ? raw.value : str(raw).split(',');
  const refs: string[] = [];
  for (const item of items) {
    if (typeof item !== 'string') fail(raw, 'must list image references, e.g. proj/app:1,proj/base:2');
    const ref = (item as string).trim();
    if (ref === '') continue;
    try {
      parseRef(ref);
    } catch (err) {
      throw new ConfigError(`${raw.label}: ${show(ref)}: ${oneLine(err)}`);
    }
    refs.push(ref);
  }
  return refs;
}

function parseLogLevel(raw: Raw): string {
  const level = str(raw).trim().toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(level)) fail(raw, `is not a log level (use ${LOG_LEVELS.join('|')})`);
  return level;
}

function parseClientAuthMode(raw: Raw | undefined): ClientAuthMode {
  if (raw === undefined) return DEFAULTS.clientAuth;
  const mode = str(raw).trim().toLowerCase();
  if (!(CLIENT_AUTH_MODES as readonly string[]).includes(mode)) fail(raw, `is not a client auth mode (use ${CLIENT_AUTH_MODES.join(' or ')})`);
  return mode as ClientAuthMode;
}

function parseNotFoundPolicy(raw: Raw | undefined): NotFoundPolicy {
  if (raw === undefined) return 'not-found';
  const policy = str(raw).trim().toLowerCase();
  if (!(NOT_FOUND_POLICIES as readonly string[]).includes(policy)) fail(raw, `is not a policy (use ${NOT_FOUND_POLICIES.join(' or ')})`);
  return policy as NotFoundPolicy;
}

function parseBool(raw: Raw | undefined, fallback: boolean): boolean {
  if (raw === undefined) return fallback;
  if (typeof raw.value === 'boolean') return raw.value;
  const text = str(raw).trim().toLowerCase();
  if (['true', '1', 'yes', 'on'].includes(text)) return true;
  if (['false', '0', 'no', 'off'].includes(text)) return false;
  return fail(raw, 'is not a boolean (use true or false)');
}

/** A whole number between `min` and `max`, from a JSON number or a string. */
function countOf(raw: Raw, min: number, max: number): number {
  const n = typeof raw.value === 'number' ? raw.value : /^\s*\d+\s*$/.test(str(raw)) ? Number(str(raw)) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) fail(raw, `must be a whole number from ${min} to ${max}`);
  return n;
}

/** A duration in ms from a layer or the default; `min` refuses e.g. a zero timeout. */
function durationOf(src: Sources, key: Key, fallback: string, min: number): number {
  const raw = src.get(key) ?? defaultRaw(fallback);
  let ms: number;
  if (typeof raw.value === 'number') {
    // A JSON number means seconds, as a bare number in a string does.
    if (!Number.isFinite(raw.value) || raw.value < 0) fail(raw, 'is not a duration (use a number of seconds, or "500ms", "30s", "5m", "14d")');
    ms = Math.round(raw.value * 1000);
  } else {
    const text = str(raw);
    try {
      ms = parseDuration(text);
    } catch (err) {
      throw new ConfigError(`${raw.label}: ${oneLine(err)}`);
    }
  }
  if (ms < min) fail(raw, `must be at least ${min} ms`);
  return ms;
}

/** A whole number from a layer or the default, within [min, max]. */
function wholeOf(src: Sources, key: Key, fallback: number, min: number, max: number): number {
  const raw = src.get(key);
  if (raw === undefined) return fallback;
  const n = typeof raw.value === 'number' ? raw.value : /^\s*\d+\s*$/.test(str(raw)) ? Number(str(raw)) : NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) fail(raw, `must be a whole number from ${min} to ${max}`);
  return n;
}

/**
 * COVE_IMPORT_MAX_BYTES (default: the cache cap when it is a size, else 64 GiB) and
 * COVE_IMPORT_MAX_RATIO (0 turns the ratio check off).
 */
function buildImportLimits(src: Sources, cache: Config['cache']): Config['import'] {
  const raw = src.get('importMaxBytes');
  let maxBytes: number;
  if (raw === undefined) {
    maxBytes = cache.maxBytes ?? parseSize(DEFAULTS.importMaxBytes);
  } else {
    try {
      maxBytes = typeof raw.value === 'number' ? raw.value : parseSize(str(raw));
    } catch (err) {
      throw new ConfigError(`${raw.label}: ${oneLine(err)}`);
    }
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 1024 * 1024) fail(raw, 'must be a size of at least 1MiB, e.g. 20GiB');
  }
  const maxRatio = wholeOf(src, 'importMaxRatio', DEFAULTS.importMaxRatio, 0, 1_000_000);
  if (maxRatio === 1) fail(src.get('importMaxRatio')!, 'must be 0 (no ratio check) or at least 2');
  return { maxBytes, maxRatio };
}

function defaultRaw(value: string): Raw {
  return { value, label: 'default', rank: 0, baseDir: process.cwd() };
}

function str(raw: Raw): string {
  if (typeof raw.value !== 'string') fail(raw, 'must be a string');
  return raw.value as string;
}

function fail(raw: Raw, why: string): never {
  throw new ConfigError(`${raw.label}: ${show(raw.value)} ${why}`);
}

/** A value quoted for a one-line message, shortened when long. */
function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 200 ? `${text.slice(0, 197)}...` : text;
}

function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').trim();
}

function errorCode(err: unknown): string {
  return err instanceof Error && 'code' in err ? String(err.code) : oneLine(err);
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
