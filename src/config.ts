// PLACEHOLDER until the config helper lands: the Config type the rest of the code builds against.

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
  logLevel: string;
  shutdownGraceMs: number;
}
