// The tags an import writes: each image's names from the archive (or the `tags` given instead),
// placed by the caller's resolveName as (upstream, repo, tag) and checked before anything of the
// archive is kept, so a name problem leaves nothing behind.
import { isValidName, isValidTag } from '../oci/reference.js';
import { ArchiveError, describeError, parseImageName } from './common.js';
import type { FoundImage } from './inventory.js';

/** How names are placed: the `resolveName` and `tags` of ImportOptions. */
export interface Naming {
  resolveName: (name: string) => { upstream: string; repo: string };
  tags?: string[];
}

/** One tag to write: the name it came from, where it goes, and the image it points at. */
export interface TagTarget {
  ref: string;
  upstream: string;
  repo: string;
  tag: string;
  image: FoundImage;
}

/** Every (name, image) pair to tag, resolved and checked. */
export function tagTargets(images: FoundImage[], opts: Naming): TagTarget[] {
  const out: TagTarget[] = [];
  const override = opts.tags ?? [];
  if (override.length > 0 && images.length !== 1) {
    throw new ArchiveError('ARCHIVE_NAME', `the archive holds ${images.length} images; a tag given on the command line must name exactly one`);
  }
  for (const image of images) {
    const names = override.length > 0 ? override : image.names;
    if (names.length === 0) {
      const why = image.bareTags.length > 0 ? `it is named only "${image.bareTags.join('", "')}", with no repository` : 'it has no name in the archive';
      throw new ArchiveError('ARCHIVE_NAME', `cannot tag ${image.source} (${image.digest}): ${why}; pass --tag REPO:TAG`);
    }
    for (const ref of names) out.push({ ref, ...place(ref, opts), image });
  }
  const seen = new Map<string, string>();
  for (const t of out) {
    const k = `${t.upstream}\0${t.repo}\0${t.tag}`;
    const other = seen.get(k);
    if (other !== undefined && other !== t.image.digest) {
      throw new ArchiveError('ARCHIVE_NAME', `${t.ref} names two different images in the archive (${other} and ${t.image.digest})`);
    }
    seen.set(k, t.image.digest);
  }
  return out.filter((t, i) => out.findIndex((u) => u.upstream === t.upstream && u.repo === t.repo && u.tag === t.tag) === i);
}

function place(ref: string, opts: Naming): { upstream: string; repo: string; tag: string } {
  const parsed = parseImageName(ref);
  if (!parsed || parsed.digest !== null) throw new ArchiveError('ARCHIVE_NAME', `"${ref}" is not a valid image name with a tag (REPO:TAG)`);
  let target: { upstream: string; repo: string };
  try {
    target = opts.resolveName(parsed.name);
  } catch (err) {
    throw new ArchiveError('ARCHIVE_NAME', `cannot place "${ref}": ${describeError(err)}`, { cause: err });
  }
  const tag = parsed.tag ?? 'latest';
  if (!isValidName(target.repo) || !isValidTag(tag)) {
    throw new ArchiveError('ARCHIVE_NAME', `"${ref}" maps to ${target.repo}:${tag}, which is not a valid repository and tag`);
  }
  return { upstream: target.upstream, repo: target.repo, tag };
}
