// Site prewarm: a prewarm sent to any one node of a site (`cove prewarm`, Harbor's push webhook)
// warms the whole site with one copy from above. The node that receives it forwards it to every
// live sibling as a signed peer request (GET /_cove/site-prewarm, the references, platforms and
// copies in the signed query; a member never forwards it again). Every node then takes all the
// manifests (small, and a tag on every node keeps serving through an outage) but fills only the
// blobs for which it ranks among the first `copies` owners of the digest. The first owner fetches
// from above; the others take the bytes from it over the peer tier, so the origin serves each
// blob once and the site keeps `copies` of it. Without a peer key nothing is forwarded: a request
// anyone on the LAN can send must not steer every node's cache. The prewarm then stays on the
// node that received it, which takes the whole image, as before.
import type { Readable } from 'node:stream';
import { StringDecoder } from 'node:string_decoder';
import { PREWARM_COPIES_MAX } from '../config.js';
import { OciError } from '../errors.js';
import { readSmall } from '../http-util.js';
import type { Logger } from '../log.js';
import type { PeerResponse } from '../peers/client.js';
import { formatPlatform, parsePlatforms, type Platform } from './platforms.js';
import { PREWARM_MAX_REFS, type PrewarmRefResult, type PrewarmResult, type PrewarmShare } from './prewarm.js';

/** Where a sibling asks this node to take its part of a site prewarm. */
export const SITE_PREWARM_PATH = '/_cove/site-prewarm';
/**
 * While its prewarm runs a member writes a line at least this often, so the stream never looks
 * stalled to the forwarding node (whose peer client gives up after COVE_UPSTREAM_BODY_TIMEOUT
 * without a byte; an operator may set that to a few seconds). A line is some 50 bytes.
 */
export const SITE_HEARTBEAT_MS = 1000;
/** Longest forwarded request target (the router reads up to 4096); more references go in further requests. */
const MAX_FORWARD_TARGET = 3500;
/** Longest line read from a member's answer. */
const MAX_LINE_CHARS = 4 * 1024 * 1024;
/** Why a prewarm stays on this node without a peer key. */
export const NOT_FORWARDED_NO_KEY =
  'not forwarded: COVE_PEER_KEY is not set, so a site member could not tell this request from a stranger\'s; this node took the whole image';

/** A prewarm as a member takes it. */
export interface SiteRequest {
  refs: string[];
  platforms: readonly Platform[];
  ns: string | null;
  names: 'client' | 'upstream';
  copies: number;
}

/** What the forwarding node needs of the peer table and the peer client. */
export interface SiteDeps {
  table: { readonly selfId: string; readonly keyed: boolean; live(): Array<{ id: string; url: string }> };
  client: {
    request(peer: { url: string; id: string }, method: 'GET' | 'HEAD', path: string, mode: 'local' | 'fetch', headers?: Record<string, string>, signal?: AbortSignal): Promise<PeerResponse>;
  };
  log: Logger;
}

/** One reference as a member finished it. */
export interface MemberRef {
  ref: string;
  ok: boolean;
  error?: string;
  digest?: string;
  /** The blobs the member filled (its part), and their bytes. */
  blobs: number;
  bytes: number;
}

/** A member's part of a site prewarm, once it finished (or the stream broke). */
export interface MemberOutcome {
  node: string;
  ok: boolean;
  error?: string;
  refs: MemberRef[];
}

/** Where a prewarm went in the site, for the answer and the log. */
export interface SiteSummary {
  /** Copies of each blob asked for. */
  copies: number;
  /** Why the prewarm stayed on this node (it then takes every blob), or null when forwarded. */
  local: string | null;
  /** Site members it was sent to, those that took it, and those that did not (with why). */
  forwarded: string[];
  accepted: string[];
  refused: Array<{ node: string; reason: string }>;
  /** Each accepting member's outcome; only in the summary given once all finished. */
  members?: MemberOutcome[];
}

/** A forwarded prewarm: who took it, this node's part, and the members' outcomes to come. */
export interface SiteForward {
  summary: SiteSummary;
  /** This node's part of the blobs; undefined when it takes them all (the prewarm stayed here). */
  share: PrewarmShare | undefined;
  /** Each accepting member's outcome as it finishes; never rejects. */
  members: Array<{ node: string; done: Promise<MemberOutcome> }>;
  /** The summary with every member's outcome, once all finished; never rejects. */
  done: Promise<SiteSummary>;
}

/** The signed path of a forwarded prewarm (one or more, when the references are many). */
export function sitePaths(request: SiteRequest): string[] {
  const fixed = new URLSearchParams({ copies: String(request.copies), names: request.names });
  if (request.platforms.length > 0) fixed.set('platforms', request.platforms.map(formatPlatform).join(','));
  if (request.ns !== null) fixed.set('ns', request.ns);
  const paths: string[] = [];
  let refs: string[] = [];
  const pathOf = (list: string[]) => `${SITE_PREWARM_PATH}?${new URLSearchParams([...list.map((r) => ['ref', r]), ...fixed])}`;
  for (const ref of request.refs) {
    if (refs.length > 0 && pathOf([...refs, ref]).length > MAX_FORWARD_TARGET) {
      paths.push(pathOf(refs));
      refs = [];
    }
    refs.push(ref);
  }
  if (refs.length > 0) paths.push(pathOf(refs));
  return paths;
}

/** Reads a forwarded prewarm's query; throws a 400 for anything this node would not take. */
export function parseSiteQuery(q: URLSearchParams): SiteRequest {
  const refs = q.getAll('ref').filter((r) => r.trim() !== '');
  if (refs.length === 0) throw new OciError('NAME_INVALID', 'site prewarm: no ?ref= given');
  if (refs.length > PREWARM_MAX_REFS) throw new OciError('NAME_INVALID', `site prewarm: ${refs.length} references (at most ${PREWARM_MAX_REFS})`);
  const copies = parseCopies(q.get('copies') ?? '', 'site prewarm: copies');
  const names = q.get('names') ?? 'client';
  if (names !== 'client' && names !== 'upstream') throw new OciError('NAME_INVALID', `site prewarm: names must be client or upstream, got "${names.slice(0, 20)}"`);
  let platforms: Platform[] = [];
  const given = q.get('platforms');
  if (given !== null && given !== '') {
    try {
      platforms = parsePlatforms(given, 'site prewarm: platforms');
    } catch (err) {
      throw new OciError('NAME_INVALID', (err as Error).message);
    }
  }
  return { refs, platforms, ns: q.get('ns'), names, copies };
}

/** A number of copies (1 to PREWARM_COPIES_MAX) from text or JSON; throws a 400 naming `label`. */
export function parseCopies(value: unknown, label: string): number {
  const n = typeof value === 'number' ? value : typeof value === 'string' && /^\d{1,4}$/.test(value) ? Number(value) : NaN;
  if (!Number.isSafeInteger(n) || n < 1 || n > PREWARM_COPIES_MAX) {
    throw new OciError('NAME_INVALID', `${label} must be a whole number from 1 to ${PREWARM_COPIES_MAX}, got ${JSON.stringify(value)}`);
  }
  return n;
}

/**
 * Sends the prewarm to every live site member and waits until each has taken it or refused (its
 * first line, or its error); the members' outcomes arrive later through `members` and `done`.
 * With no peers, no peer key, no live member or `local` asked for, nothing is sent and this node
 * takes every blob; the summary says why.
 */
export async function forwardPrewarm(deps: SiteDeps | null, request: SiteRequest, options: { local?: boolean; signal?: AbortSignal } = {}): Promise<SiteForward> {
  const stay = (why: string): SiteForward => {
    const summary: SiteSummary = { copies: request.copies, local: why, forwarded: [], accepted: [], refused: [] };
    return { summary, share: undefined, members: [], done: Promise.resolve({ ...summary, members: [] }) };
  };
  if (options.local) return stay('not forwarded: this node only was asked for');
  if (deps === null) return stay('not forwarded: this node has no site peers (COVE_PEERS, COVE_MDNS)');
  if (!deps.table.keyed) {
    deps.log.warn({ refs: request.refs.length }, 'prewarm not forwarded to the site: COVE_PEER_KEY is not set');
    return stay(NOT_FORWARDED_NO_KEY);
  }
  const live = deps.table.live();
  if (live.length === 0) return stay('not forwarded: no site member is live now');

  const paths = sitePaths(request);
  const streams = live.map((peer) => ({ peer, batches: paths.map((path) => askMember(deps, peer, path, options.signal)) }));
  const summary: SiteSummary = { copies: request.copies, local: null, forwarded: live.map((p) => p.id), accepted: [], refused: [] };
  const members: SiteForward['members'] = [];
  for (const { peer, batches } of streams) {
    const refusals = await Promise.all(batches.map((b) => b.accepted));
    const refusal = refusals.find((r) => r !== null);
    if (refusals.every((r) => r !== null)) {
      summary.refused.push({ node: peer.id, reason: refusal! });
      continue;
    }
    summary.accepted.push(peer.id);
    members.push({ node: peer.id, done: memberOutcome(peer.id, batches) });
  }
  deps.log.info({ refs: request.refs, copies: request.copies, forwarded: summary.forwarded, accepted: summary.accepted, refused: summary.refused }, 'prewarm forwarded to the site');
  const done = Promise.all(members.map((m) => m.done)).then((outcomes) => ({ ...summary, members: outcomes }));
  // This node stands in for the members that did not take it.
  return { summary, share: { copies: request.copies, running: [deps.table.selfId, ...summary.accepted] }, members, done };
}

interface Batch {
  /** null once the member took the batch; else why it did not. */
  accepted: Promise<string | null>;
  /** The member's results for the batch, or why none came. */
  done: Promise<PrewarmRefResult[] | { error: string }>;
}

/** One forwarded request and the NDJSON answer: accepted first, heartbeats, the result last. */
function askMember(deps: SiteDeps, peer: { id: string; url: string }, path: string, signal: AbortSignal | undefined): Batch {
  let accept!: (refusal: string | null) => void;
  const accepted = new Promise<string | null>((resolve) => (accept = resolve));
  const done = (async (): Promise<PrewarmRefResult[] | { error: string }> => {
    let res: PeerResponse;
    try {
      res = await deps.client.request(peer, 'GET', path, 'local', { accept: 'application/x-ndjson' }, signal);
    } catch (err) {
      const error = `not reached: ${(err as Error).message}`;
      accept(error);
      return { error };
    }
    if (res.status !== 200) {
      const error = `answered ${res.status}: ${await errorMessage(res.body)}`;
      accept(error);
      return { error };
    }
    let taken = false;
    try {
      for await (const line of ndjsonLines(res.body)) {
        const message = JSON.parse(line) as { accepted?: unknown; result?: PrewarmResult };
        if (!taken) {
          if (message.accepted === undefined) throw new Error('answered without taking the prewarm');
          taken = true;
          accept(null);
        }
        if (message.result) return Array.isArray(message.result.refs) ? message.result.refs : [];
      }
      throw new Error('the answer ended before the result');
    } catch (err) {
      res.body.destroy();
      const error = `${taken ? 'stream broke; its prewarm may still be running' : 'refused'}: ${(err as Error).message}`;
      accept(error);
      return { error };
    }
  })();
  return { accepted, done };
}

/** A member's outcome over its batches. */
async function memberOutcome(node: string, batches: Batch[]): Promise<MemberOutcome> {
  const outcome: MemberOutcome = { node, ok: true, refs: [] };
  for (const batch of batches) {
    const got = await batch.done;
    if ('error' in got) {
      outcome.ok = false;
      outcome.error ??= got.error;
      continue;
    }
    for (const r of got) {
      if (!r.ok) outcome.ok = false;
      outcome.refs.push({
        ref: r.ref,
        ok: r.ok === true,
        ...(r.error ? { error: r.error } : {}),
        ...(r.digest ? { digest: r.digest } : {}),
        blobs: r.blobs?.total ?? 0,
        bytes: r.bytes?.total ?? 0,
      });
    }
  }
  return outcome;
}

/** The lines of an NDJSON body, each bounded. */
async function* ndjsonLines(body: Readable): AsyncGenerator<string> {
  const decoder = new StringDecoder('utf8');
  let buffered = '';
  for await (const chunk of body as AsyncIterable<Buffer>) {
    buffered += decoder.write(chunk);
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, nl);
      buffered = buffered.slice(nl + 1);
      if (line.trim() !== '') yield line;
    }
    if (buffered.length > MAX_LINE_CHARS) throw new Error(`a line longer than ${MAX_LINE_CHARS} characters`);
  }
  buffered += decoder.end();
  if (buffered.trim() !== '') yield buffered;
}

/** The message of an OCI error body, or its first characters. */
async function errorMessage(body: Readable): Promise<string> {
  try {
    const text = (await readSmall(body, 64 * 1024)).toString('utf8');
    try {
      const doc = JSON.parse(text) as { errors?: Array<{ message?: unknown }> };
      const message = doc.errors?.[0]?.message;
      if (typeof message === 'string') return message;
    } catch {
      // not JSON: its text is the message
    }
    return text.slice(0, 200) || 'no message';
  } catch (err) {
    return (err as Error).message;
  }
}
