// The route map: which upstream, and which repository path there, a client's request names.
// Port mode maps the path 1:1 to the default upstream; `?ns=<registry>` (containerd mirrors) or a
// configured default ns (a dockerd registry-mirrors listener) selects a route with a prefix.
import type { Config, RouteConfig } from './config.js';
import { OciError } from './errors.js';
import type { Target } from './tiers/tier.js';

/** The result of mapping one request: where it goes and what selected it. */
export interface RoutedTarget extends Target {
  /** The ns that selected a route (echoed as OCI-Namespace), or null in port mode. */
  ns: string | null;
}

export class RouteMap {
  readonly #routes = new Map<string, RouteConfig>();
  readonly #defaultUpstream: string;
  readonly #defaultNs: string | null;

  constructor(config: Pick<Config, 'routes' | 'upstreams' | 'defaultNs'>) {
    for (const route of config.routes) this.#routes.set(route.match.toLowerCase(), route);
    this.#defaultUpstream = config.upstreams[0]!.name;
    this.#defaultNs = config.defaultNs;
  }

  /**
   * Maps a validated repository name and the request's `ns` query value to a target upstream.
   * `fromCove`: a peer or child Cove sent the request with a name that is already the upstream's.
   * An ns that names no route is refused: guessing would send one registry's names to another.
   */
  resolve(name: string, nsParam: string | null, fromCove = false): RoutedTarget {
    // Another Cove already mapped the name to the upstream's path; only an explicit ns remaps it.
    const ns = nsParam ?? (fromCove ? null : this.#defaultNs);
    if (ns === null || ns === '') return { upstream: this.#defaultUpstream, repo: name, ns: null };
    const route = this.#routes.get(ns.toLowerCase());
    if (!route) {
      throw new OciError('NAME_UNKNOWN', `this Cove has no route for registry "${ns}"`, {
        detail: { ns, hint: 'add it to COVE_ROUTES, e.g. COVE_ROUTES=docker.io=dockerhub/' },
      });
    }
    const path = route.libraryPrefix && !name.includes('/') ? `library/${name}` : name;
    return { upstream: route.upstream, repo: route.prefix + path, ns: nsParam };
  }
}
