// What the cache holds, image by image, for `cove ls`: every cached tag and every image cached
// by digest alone, with its size (the manifest and everything it reaches), last pull and pins.
import type { Catalog } from './catalog.js';
import { imageOf } from './eviction.js';
import type { PinStore } from './pins.js';

export interface ImageRow {
  upstream: string;
  repo: string;
  /** The tag, or null for an image cached by digest only. */
  tag: string | null;
  digest: string;
  mediaType: string | null;
  /** Bytes of the manifest and every cached blob it reaches. */
  size: number;
  lastAccess: number;
  pinned: boolean;
}

export async function listImages(catalog: Catalog, pins: PinStore): Promise<ImageRow[]> {
  const { records, refs } = await catalog.blobGraph();
  // References count only from manifests the index has a record of.
  for (const digest of refs.keys()) if (!records.has(digest)) refs.delete(digest);
  const referenced = new Set<string>();
  for (const list of refs.values()) for (const d of list) referenced.add(d);
  const pinned = (upstream: string, repo: string, ref: string) => pins.has(upstream, repo, ref);

  const rows: ImageRow[] = [];
  const tagged = new Set<string>();
  for (const { key, record } of await catalog.listTags()) {
    if (!records.has(record.digest)) continue;
    tagged.add(record.digest);
    const image = imageOf(record.digest, records, refs);
    rows.push({
      upstream: key.upstream,
      repo: key.repo,
      tag: key.tag,
      digest: record.digest,
      mediaType: record.mediaType,
      size: image.size,
      lastAccess: image.lastAccess,
      pinned: pinned(key.upstream, key.repo, key.tag) || pins.list().some((p) => p.reference === record.digest),
    });
  }
  // Manifests cached by digest alone (pulled as repo@sha256:…), not reached from another one.
  for (const [digest, record] of records) {
    if (tagged.has(digest) || referenced.has(digest) || record.mediaType === null) continue;
    const pin = pins.list().find((p) => p.reference === digest);
    const image = imageOf(digest, records, refs);
    rows.push({ upstream: pin?.upstream ?? '-', repo: pin?.repo ?? '-', tag: null, digest, mediaType: record.mediaType, size: image.size, lastAccess: image.lastAccess, pinned: pin !== undefined });
  }
  return rows.sort((a, b) => b.lastAccess - a.lastAccess);
}
