// undici dispatchers for upstreams: keep-alive connections with the connect/header/body bounds
// from the configuration, the extra CA or `insecure`, and a proxy when HTTPS_PROXY/HTTP_PROXY
// apply (NO_PROXY excludes hosts). The environment is read by config.ts; this takes its values.
import type { LookupFunction } from 'node:net';
import { rootCertificates } from 'node:tls';
import { Agent, ProxyAgent, type Dispatcher } from 'undici';

export interface ProxySettings {
  httpProxy: string | null;
  httpsProxy: string | null;
  noProxy: string | null;
}

export interface DispatcherOptions {
  /** Bound for connecting and for response headers, in ms. */
  timeoutMs: number;
  /** Longest gap between two body chunks, in ms. */
  bodyTimeoutMs: number;
  /** Extra PEM CA bundle trusted besides the system CAs. */
  ca: string | null;
  insecure: boolean;
  proxy: ProxySettings;
  /** Name resolution for upstream connections instead of the system's (tests simulate DNS failures with it). */
  lookup?: LookupFunction;
}

/** How long an idle keep-alive connection is kept. */
const KEEP_ALIVE_MS = 30_000;

function hostOf(hostname: string): string {
  const h = hostname.toLowerCase().replace(/\.$/, '');
  return h.startsWith('[') && h.endsWith(']') ? h.slice(1, -1) : h;
}

function defaultPort(url: URL): string {
  if (url.port !== '') return url.port;
  return url.protocol === 'https:' ? '443' : '80';
}

/**
 * Whether NO_PROXY excludes `url` from proxying. Entries are comma- or space-separated:
 * `*` (everything), `host` or `.host` or `*.host` (that domain and its subdomains), an IP
 * (exact), and any of those with `:port` (only that port; IPv6 as `[::1]:port`).
 */
export function noProxyMatches(url: URL, noProxy: string | null): boolean {
  if (noProxy === null) return false;
  const host = hostOf(url.hostname);
  const port = defaultPort(url);
  for (const raw of noProxy.split(/[\s,]+/)) {
    let entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry === '*') return true;
    let entryPort: string | null = null;
    const bracketed = /^\[([^\]]+)\](?::(\d+))?$/.exec(entry);
    if (bracketed) {
      entry = bracketed[1]!;
      entryPort = bracketed[2] ?? null;
    } else {
      const colons = entry.split(':').length - 1;
      // One colon: host:port. More: a bare IPv6 address without a port.
      if (colons === 1) {
        const at = entry.lastIndexOf(':');
        entryPort = entry.slice(at + 1);
        entry = entry.slice(0, at);
      }
    }
    if (entryPort !== null && entryPort !== port) continue;
    if (entry.startsWith('*.')) entry = entry.slice(1);
    entry = entry.replace(/\.$/, '');
    if (entry.startsWith('.')) {
      const bare = entry.slice(1);
      if (host === bare || host.endsWith(entry)) return true;
    } else if (host === entry || host.endsWith(`.${entry}`)) {
      return true;
    }
  }
  return false;
}

/** The proxy URL to use for `url`, or null for a direct connection. */
export function proxyFor(url: URL, proxy: ProxySettings): string | null {
  const chosen = url.protocol === 'https:' ? (proxy.httpsProxy ?? proxy.httpProxy) : proxy.httpProxy;
  if (chosen === null || chosen === '') return null;
  if (noProxyMatches(url, proxy.noProxy)) return null;
  return chosen;
}

/** TLS options for connecting to upstreams: system CAs plus the configured bundle. */
function tlsOptions(options: DispatcherOptions): { ca?: string[]; rejectUnauthorized: boolean; lookup?: LookupFunction } {
  const lookup = options.lookup === undefined ? {} : { lookup: options.lookup };
  // Passing `ca` replaces Node's default trust store, so the system roots are added back.
  return options.ca !== null ? { ca: [...rootCertificates, options.ca], rejectUnauthorized: !options.insecure, ...lookup } : { rejectUnauthorized: !options.insecure, ...lookup };
}

/** A direct keep-alive Agent with the configured bounds and TLS settings. */
export function createAgent(options: DispatcherOptions): Agent {
  return new Agent({
    connect: { ...tlsOptions(options), timeout: options.timeoutMs },
    connectTimeout: options.timeoutMs,
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.bodyTimeoutMs,
    keepAliveTimeout: KEEP_ALIVE_MS,
  });
}

/** A ProxyAgent through `proxyUri` with the same bounds; TLS settings apply to the upstream. */
export function createProxyAgent(proxyUri: string, options: DispatcherOptions): ProxyAgent {
  return new ProxyAgent({
    uri: proxyUri,
    requestTls: { ...tlsOptions(options), timeout: options.timeoutMs },
    connect: { timeout: options.timeoutMs },
    connectTimeout: options.timeoutMs,
    headersTimeout: options.timeoutMs,
    bodyTimeout: options.bodyTimeoutMs,
    keepAliveTimeout: KEEP_ALIVE_MS,
  });
}

/** The dispatcher for one upstream: a ProxyAgent when a proxy applies to its URL, else an Agent. */
export function createDispatcher(url: URL, options: DispatcherOptions): Dispatcher {
  const proxy = proxyFor(url, options.proxy);
  return proxy !== null ? createProxyAgent(proxy, options) : createAgent(options);
}
