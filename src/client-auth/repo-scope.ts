// Which digests belong to a repository. The store is shared by every repository, so without this
// a client allowed to pull one repository could read any cached blob by naming its digest under
// that repository's path. A digest belongs to repository R when a manifest cached for R reaches
// it (R's tags, and manifests fetched under R's name), or when the origin confirms it for R.
import { OciError } from '../errors.js';
import { ALL_MANIFEST_ACCEPT } from '../oci/mediatypes.js';
import type { Resolver } from '../resolve/resolver.js';
import type { Catalog } from '../store/catalog.js';
import type { Target } from '../tiers/tier.js';

/** A repository's digests are worked out again after this long (new tags, new manifests). */
const MEMO_MS = 2_000;
/** Digests confirmed by the origin, kept per Cove (bounded). */
const MAX_CONFIRMED = 50_000;

export class RepoScope {
  readonly #catalog: Catalog;
  readonly #resolver: Resolver;
  readonly #memo = new Map<string, { at: number; digests: Set<string> }>();
  readonly #confirmed = new Set<string>();

  constructor(catalog: Catalog, resolver: Resolver) {
    this.#catalog = catalog;
    this.#resolver = resolver;
  }

  /** Resolves when `digest` belongs to the target's repository; throws a 404 when it does not. */
  async check(target: Target, digest: string, kind: 'blob' | 'manifest'): Promise<void> {
    const key = JSON.stringify([target.upstream, target.repo, digest]);
    if (this.#confirmed.has(key)) return;
    if ((await this.#digestsOf(target, false)).has(digest)) return;
    if ((await this.#digestsOf(target, true)).has(digest)) return;
    // Not reached from anything cached for this repository: only the origin can say.
    const above: Target = { ...target, reach: 'above' };
    const found = await this.#resolver
      .first(above, (tier) => (kind === 'blob' ? tier.headBlob(above, digest) : tier.headManifest(above, digest, ALL_MANIFEST_ACCEPT)))
      .catch(() => null);
    if (found) {
      if (this.#confirmed.size >= MAX_CONFIRMED) this.#confirmed.clear();
      this.#confirmed.add(key);
      return;
    }
    const code = kind === 'blob' ? 'BLOB_UNKNOWN' : 'MANIFEST_UNKNOWN';
    throw new OciError(code, `${kind} ${digest} is not known in repository ${target.repo}`, { detail: { name: target.repo, digest } });
  }

  /** Every digest reached from the manifests cached for the repository. */
  async #digestsOf(target: Target, fresh: boolean): Promise<Set<string>> {
    const memoKey = JSON.stringify([target.upstream, target.repo]);
    const memo = this.#memo.get(memoKey);
    if (memo && !fresh && Date.now() - memo.at < MEMO_MS) return memo.digests;
    const roots = new Set<string>(await this.#catalog.repoManifests(target.upstream, target.repo));
    for (const { record } of await this.#catalog.listTags(target.upstream, target.repo, { variants: true })) roots.add(record.digest);
    const digests = new Set<string>();
    const queue = [...roots];
    while (queue.length > 0) {
      const d = queue.pop()!;
      if (digests.has(d)) continue;
      digests.add(d);
      for (const ref of (await this.#catalog.manifestRefs(d)) ?? []) if (!digests.has(ref)) queue.push(ref);
    }
    if (this.#memo.size > 1000) this.#memo.clear();
    this.#memo.set(memoKey, { at: Date.now(), digests });
    return digests;
  }
}
