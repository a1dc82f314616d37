// Image references as operators type them: `[HOST/]REPO[:TAG][@DIGEST]`, for prewarm lists,
// `cove prewarm`, pins and the configuration, all parsed by one function.
import { CoveError } from '../errors.js';
import { isValidName, isValidTag, parseDigest, splitRegistryHost } from './reference.js';

/** Longest reference accepted (host + name + tag + digest). */
const REF_MAX_LENGTH = 512;

/** A parsed reference: optional registry host, repository name, tag and/or digest. */
export interface ParsedRef {
  host: string | null;
  name: string;
  tag: string | null;
  digest: string | null;
}

/** Thrown for a reference that cannot be parsed; the message names it. */
export class ImageRefError extends CoveError {
  constructor(message: string) {
    super('IMAGE_REF_INVALID', message);
  }
}

/**
 * Parses `[HOST/]REPO[:TAG][@DIGEST]`. The first component is a host when it contains "." or ":"
 * or is "localhost" (Docker's rule). Without tag and digest the tag is "latest", as `docker pull`.
 * With both, the digest decides what is fetched and the tag is recorded too.
 */
export function parseRef(text: string): ParsedRef {
  const input = text.trim();
  const bad = (why: string): never => {
    throw new ImageRefError(`invalid reference ${JSON.stringify(input.length > 120 ? `${input.slice(0, 117)}...` : input)}: ${why}`);
  };
  if (input === '') bad('empty');
  if (input.length > REF_MAX_LENGTH) bad(`longer than ${REF_MAX_LENGTH} characters`);
  let rest = input;
  let digest: string | null = null;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!parseDigest(digest)) bad(`${JSON.stringify(digest)} is not a sha256 or sha512 digest`);
  }
  const split = splitRegistryHost(rest);
  const host = split.host?.toLowerCase() ?? null;
  rest = split.path;
  if (host !== null && !/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:\d{1,5})?$/.test(host) && !/^\[[0-9a-f:]+\](:\d{1,5})?$/.test(host)) {
    bad(`${JSON.stringify(split.host)} is not a registry host`);
  }
  let tag: string | null = null;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) bad(`${JSON.stringify(tag)} is not a valid tag`);
  }
  if (!isValidName(rest)) bad(`${JSON.stringify(rest)} is not a repository name (lowercase, e.g. proj/app)`);
  if (tag === null && digest === null) tag = 'latest';
  return { host, name: rest, tag, digest };
}
