// Harbor webhooks: a push to Harbor tells this Cove what to prewarm. Harbor 2.x posts one of two
// JSON formats (per webhook policy):
//   Default:     {"type":"PUSH_ARTIFACT","occur_at":…,"operator":"…","event_data":{"resources":[
//                  {"digest":"sha256:…","tag":"1","resource_url":"harbor.example.com/proj/app:1"}],
//                  "repository":{"name":"app","namespace":"proj","repo_full_name":"proj/app","repo_type":"private"}}}
//   CloudEvents: {"specversion":"1.0","type":"harbor.artifact.pushed",…,"data":{"resources":[…],"repository":{…}}}
// Pushes become references "proj/app:1@sha256:…" (the digest decides what is fetched; the tag is
// refreshed too); every other event is ignored with a reason. The names are Harbor's repository
// paths: prewarm them with `names: 'upstream'`.
import { CoveError } from '../errors.js';
import { isValidName, isValidTag, parseDigest } from '../oci/reference.js';

/** Largest webhook body read. A push event is well under 4 KiB; this leaves room for many tags. */
export const HARBOR_WEBHOOK_MAX_BYTES = 256 * 1024;
/** Most resources taken from one event. */
const MAX_RESOURCES = 100;

const PUSH_TYPES = new Set(['PUSH_ARTIFACT', 'harbor.artifact.pushed']);

/** A body that is not a Harbor webhook Cove can read; `status` is 400, or 413 when too large. */
export class HarborWebhookError extends CoveError {
  readonly status: number;
  constructor(message: string, status = 400) {
    super('WEBHOOK_INVALID', message);
    this.status = status;
  }
}

export interface HarborWebhookEvent {
  /** The event type as sent ("PUSH_ARTIFACT", "harbor.artifact.pushed", "PULL_ARTIFACT", …). */
  type: string;
  /** "default" or "cloudevents". */
  format: 'default' | 'cloudevents';
  /** References to prewarm, Harbor repository paths: "proj/app:1@sha256:…", "proj/app@sha256:…". */
  refs: string[];
  /** Why nothing is to be prewarmed (another event type), or null. */
  ignored: string | null;
  /** The repository ("proj/app") and who pushed, for the log. */
  repository: string | null;
  operator: string | null;
}

/** Reads a request body, refusing (413) one longer than `maxBytes` without buffering the rest. */
export async function readBoundedBody(body: AsyncIterable<Buffer | string>, maxBytes = HARBOR_WEBHOOK_MAX_BYTES): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  for await (const chunk of body) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
    length += buf.length;
    if (length > maxBytes) throw new HarborWebhookError(`webhook body is larger than ${maxBytes} bytes`, 413);
    chunks.push(buf);
  }
  return Buffer.concat(chunks, length);
}

/** Parses a Harbor webhook body into references to prewarm; throws HarborWebhookError when malformed. */
export function parseHarborWebhook(body: Buffer | string, maxBytes = HARBOR_WEBHOOK_MAX_BYTES): HarborWebhookEvent {
  const size = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  if (size > maxBytes) throw new HarborWebhookError(`webhook body is larger than ${maxBytes} bytes`, 413);
  if (size === 0) throw new HarborWebhookError('webhook body is empty');
  let doc: unknown;
  try {
    doc = JSON.parse(typeof body === 'string' ? body : body.toString('utf8'));
  } catch (err) {
    throw new HarborWebhookError(`webhook body is not JSON: ${(err as Error).message}`);
  }
  if (!isObject(doc)) throw new HarborWebhookError('webhook body is not a JSON object');
  if (typeof doc.type !== 'string' || doc.type === '') throw new HarborWebhookError('webhook body has no "type" (not a Harbor webhook?)');

  const cloud = doc.specversion !== undefined;
  const type = doc.type;
  const data = cloud ? doc.data : doc.event_data;
  const operator = typeof doc.operator === 'string' ? doc.operator : null;
  const event: HarborWebhookEvent = { type, format: cloud ? 'cloudevents' : 'default', refs: [], ignored: null, repository: null, operator };
  if (!PUSH_TYPES.has(type)) {
    event.ignored = `event type ${type} is not an artifact push`;
    return event;
  }
  const where = cloud ? 'data' : 'event_data';
  if (!isObject(data)) throw new HarborWebhookError(`${type} webhook has no "${where}" object`);
  const repository = repositoryOf(data.repository, where);
  event.repository = repository;
  if (!Array.isArray(data.resources) || data.resources.length === 0) throw new HarborWebhookError(`${type} webhook has no "${where}.resources"`);
  if (data.resources.length > MAX_RESOURCES) throw new HarborWebhookError(`${type} webhook has ${data.resources.length} resources (at most ${MAX_RESOURCES})`);

  const refs = new Set<string>();
  data.resources.forEach((resource: unknown, i: number) => {
    const at = `${where}.resources[${i}]`;
    if (!isObject(resource)) throw new HarborWebhookError(`${at} is not an object`);
    const digest = resource.digest === undefined || resource.digest === '' ? null : resource.digest;
    if (digest !== null && (typeof digest !== 'string' || !parseDigest(digest))) {
      throw new HarborWebhookError(`${at}.digest ${JSON.stringify(digest)} is not a sha256 digest`);
    }
    // Harbor puts the digest in "tag" for an untagged artifact; only a real tag is a tag.
    const rawTag = resource.tag;
    let tag: string | null = null;
    if (typeof rawTag === 'string' && rawTag !== '' && !rawTag.includes(':')) {
      if (!isValidTag(rawTag)) throw new HarborWebhookError(`${at}.tag ${JSON.stringify(rawTag)} is not a valid tag`);
      tag = rawTag;
    } else if (rawTag !== undefined && rawTag !== null && typeof rawTag !== 'string') {
      throw new HarborWebhookError(`${at}.tag is not a string`);
    }
    if (digest === null && tag === null) throw new HarborWebhookError(`${at} has neither a digest nor a tag`);
    refs.add(`${repository}${tag !== null ? `:${tag}` : ''}${digest !== null ? `@${digest}` : ''}`);
  });
  event.refs = [...refs];
  return event;
}

/** "proj/app" from repo_full_name, else namespace + name. */
function repositoryOf(value: unknown, where: string): string {
  if (!isObject(value)) throw new HarborWebhookError(`webhook has no "${where}.repository" object`);
  let name: unknown = value.repo_full_name;
  if (typeof name !== 'string' || name === '') {
    if (typeof value.namespace === 'string' && typeof value.name === 'string' && value.namespace !== '' && value.name !== '') {
      name = `${value.namespace}/${value.name}`;
    } else {
      throw new HarborWebhookError(`webhook has no "${where}.repository.repo_full_name" (nor namespace and name)`);
    }
  }
  if (!isValidName(name as string)) throw new HarborWebhookError(`${where}.repository ${JSON.stringify(name)} is not a repository name`);
  return name as string;
}

function isObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}
