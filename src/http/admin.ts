// Operator endpoints: the peer table, tag invalidation, eviction, pins, the image list, prewarm
// and Harbor's push webhook. Who may call them, and how, is admin-gate.ts's call: the admin
// socket (the `cove` command) or the admin token (COVE_ADMIN_TOKEN) over HTTP.
import { Writable, type Readable } from 'node:stream';
import { finished } from 'node:stream/promises';
import { ArchiveError } from '../archive/common.js';
import type { ImportLimits } from '../archive/decompress.js';
import { exportImages } from '../archive/export.js';
import { importArchive } from '../archive/import.js';
import { OciError } from '../errors.js';
import { splitRegistryHost } from '../oci/reference.js';
import type { Logger } from '../log.js';
import type { PeerTable } from '../peers/table.js';
import { HarborWebhookError, parseHarborWebhook, readBoundedBody } from '../prewarm/harbor-webhook.js';
import { parsePlatforms, type Platform } from '../prewarm/platforms.js';
import { ImageRefError } from '../oci/image-ref.js';
import { PREWARM_MAX_REFS, type PrewarmEvent, type PrewarmResult } from '../prewarm/prewarm.js';
import type { PrewarmQueue, Submitted } from '../prewarm/queue.js';
import { SITE_HEARTBEAT_MS, forwardPrewarm, parseCopies, parseSiteQuery, type SiteDeps, type SiteSummary } from '../prewarm/site.js';
import type { ManifestResolver } from '../resolve/manifests.js';
import type { RouteMap } from '../routes.js';
import type { BlobStore } from '../store/blobs.js';
import type { Catalog } from '../store/catalog.js';
import type { Evictor } from '../store/eviction.js';
import { listImages } from '../store/inventory.js';
import type { PinStore } from '../store/pins.js';
import type { AdminChannel, AdminGate } from './admin-gate.js';
import { breakResponse, sendJson, type Req, type RequestFacts, type Res } from './respond.js';
import type { AdminAction } from './router.js';

export { hasAdminToken } from './admin-gate.js';

/** Largest JSON body /admin/prewarm reads. */
const PREWARM_BODY_MAX = 256 * 1024;

export interface AdminDeps {
  routes: RouteMap;
  manifests: ManifestResolver;
  store: BlobStore;
  catalog: Catalog;
  pins: PinStore;
  evictor: Evictor;
  peers: PeerTable | null;
  node: { id: string; site: string };
  /** Bounds on what /admin/import may decompress (COVE_IMPORT_MAX_BYTES, COVE_IMPORT_MAX_RATIO). */
  importLimits: ImportLimits;
  /** Every prewarm (this endpoint, the webhook, the list) runs through this one queue. */
  prewarmQueue: PrewarmQueue;
  platforms: readonly Platform[];
  /** The peer table and client a prewarm is forwarded to the site with; null without peers. */
  site: SiteDeps | null;
  /** Copies of each prewarmed blob the site keeps (COVE_PREWARM_COPIES). */
  prewarmCopies: number;
  adminToken: string | null;
  /** Checks who calls and what they send, before any endpoint runs. */
  gate: AdminGate;
  log: Logger;
  /** Aborted on shutdown: webhook prewarms stop with the daemon. */
  signal: AbortSignal;
}

export async function handleAdmin(
  deps: AdminDeps,
  req: Req,
  res: Res,
  facts: RequestFacts,
  action: AdminAction,
  ns: string | null,
  channel: AdminChannel = 'tcp',
): Promise<void> {
  await deps.gate.admit(req, action, channel);
  const head = req.method === 'HEAD';
  switch (action.kind) {
    case 'peers':
      facts.bytes = sendJson(res, 200, deps.peers?.snapshot() ?? { self: deps.node.id, site: deps.node.site, peers: [] }, {}, head);
      return;
    case 'invalidate': {
      const target = deps.routes.resolve(action.name, ns);
      const invalidated = await deps.manifests.invalidate(target, action.tag);
      deps.log.info({ repo: target.repo, tag: action.tag, invalidated }, 'tags invalidated: the next pull revalidates');
      facts.bytes = sendJson(res, 200, { upstream: target.upstream, repo: target.repo, tag: action.tag, invalidated });
      return;
    }
    case 'gc':
      facts.bytes = sendJson(res, 200, await deps.evictor.run({ dryRun: action.dryRun }));
      return;
    case 'pin': {
      const target = deps.routes.resolve(action.name, ns);
      const changed = action.pin ? await deps.pins.add(target.upstream, target.repo, action.reference) : await deps.pins.remove(target.upstream, target.repo, action.reference);
      deps.log.info({ repo: target.repo, reference: action.reference, pinned: action.pin, changed }, action.pin ? 'image pinned' : 'image unpinned');
      facts.bytes = sendJson(res, 200, { upstream: target.upstream, repo: target.repo, reference: action.reference, pinned: action.pin, changed });
      return;
    }
    case 'images':
      facts.bytes = sendJson(res, 200, { bytes: deps.evictor.bytes, limit: deps.evictor.limits.maxBytes, images: await listImages(deps.catalog, deps.pins) }, {}, head);
      return;
    case 'prewarm':
      return prewarmNow(deps, req, res, facts, ns);
    case 'harbor-webhook':
      return harborWebhook(deps, req, res, facts);
    case 'import':
      return importNow(deps, req, res, facts, action.tags, action.pin);
    case 'export':
      return exportNow(deps, res, facts, action.refs);
  }
}

/**
 * Where an archive's image name goes: a registry host with a route takes that route (as a
 * containerd or dockerd mirror pull of the same name would); any other host is dropped and the
 * rest is a repository at the default upstream, as a pull through Cove's own port would be.
 */
function archiveName(routes: RouteMap, name: string): { upstream: string; repo: string } {
  const { host, path: rest } = splitRegistryHost(name);
  if (host !== null) {
    try {
      return routes.resolve(rest, host);
    } catch {
      // no route for that registry: the default upstream
    }
  }
  return routes.resolve(rest, null, true);
}

/** POST /admin/import: the body is a docker-save or OCI-layout archive (plain or gzip). */
async function importNow(deps: AdminDeps, req: Req, res: Res, facts: RequestFacts, tags: string[], pin: boolean): Promise<void> {
  let result;
  try {
    result = await importArchive(req as unknown as Readable, {
      store: deps.store,
      catalog: deps.catalog,
      log: deps.log,
      resolveName: (name) => archiveName(deps.routes, name),
      tags: tags.length > 0 ? tags : undefined,
      limits: deps.importLimits,
    });
  } catch (err) {
    if (!(err instanceof ArchiveError)) throw err;
    // The archive was refused: say why; what the client still sends is read and dropped.
    (req as unknown as Readable).resume();
    facts.bytes = sendJson(res, err.code === 'ARCHIVE_LIMIT' ? 413 : 400, { errors: [{ code: err.code, message: err.message }] });
    return;
  }
  deps.evictor.added(result.newBytes);
  if (pin) for (const image of result.images) await deps.pins.add(image.upstream, image.repo, image.tag);
  deps.log.info({ format: result.format, images: result.images.map((i) => i.ref), newBlobs: result.newBlobs, newBytes: result.newBytes, pinned: pin }, 'archive imported');
  facts.bytes = sendJson(res, 200, { ...result, pinned: pin });
}

/** GET /admin/export?ref=…: an OCI image layout that docker load reads too, streamed as it is written. */
async function exportNow(deps: AdminDeps, res: Res, facts: RequestFacts, refs: string[]): Promise<void> {
  const out = res as unknown as Writable;
  let started = false;
  const gate = new WritableGate(
    out,
    () => {
      if (!started) {
        started = true;
        res.writeHead(200, { 'content-type': 'application/x-tar', 'cache-control': 'no-store' });
      }
    },
    (n) => (facts.bytes += n),
  );
  // A failure reaches us through exportImages; the gate's own error event needs no second report.
  gate.on('error', () => undefined);
  try {
    await exportImages(refs, gate, {
      store: deps.store,
      catalog: deps.catalog,
      log: deps.log,
      resolveName: (name) => archiveName(deps.routes, name),
    });
    // Every byte the archive holds must be in the response before it ends.
    await finished(gate);
    res.end();
  } catch (err) {
    if (started) {
      breakResponse(res);
      return;
    }
    if (err instanceof ArchiveError) {
      facts.bytes = sendJson(res, err.code === 'EXPORT_UNKNOWN' ? 404 : 409, { errors: [{ code: err.code, message: err.message }] });
      return;
    }
    throw err;
  }
}

/**
 * POST /admin/prewarm {"refs": [...], "platforms"?: "linux/arm64", "ns"?: "docker.io", "copies"?: 2,
 * "local"?: true}: fetches the images now and streams progress as NDJSON, one event per line, the
 * result last. With site peers and the peer key the prewarm is forwarded to the site first
 * (a {"site": …} line says to whom, and which took it; a {"member": …} line as each finishes),
 * and this node fills only its part of the blobs; "local" keeps it on this node.
 */
async function prewarmNow(deps: AdminDeps, req: Req, res: Res, facts: RequestFacts, ns: string | null): Promise<void> {
  let body: { refs?: unknown; platforms?: unknown; ns?: unknown; copies?: unknown; local?: unknown };
  try {
    body = JSON.parse((await readBoundedBody(req as AsyncIterable<Buffer>, PREWARM_BODY_MAX)).toString('utf8')) as typeof body;
  } catch (err) {
    throw new OciError('UNSUPPORTED', `prewarm needs a JSON body {"refs": ["proj/app:1"]}: ${(err as Error).message}`);
  }
  if (!Array.isArray(body.refs) || body.refs.length === 0 || !body.refs.every((r) => typeof r === 'string')) {
    throw new OciError('UNSUPPORTED', 'prewarm needs "refs": a non-empty list of image references');
  }
  const refs = body.refs as string[];
  let platforms = deps.platforms;
  if (body.platforms !== undefined) {
    if (typeof body.platforms !== 'string') throw new OciError('UNSUPPORTED', '"platforms" must be a string like "linux/arm64,linux/amd64"');
    try {
      platforms = parsePlatforms(body.platforms, 'platforms');
    } catch (err) {
      throw new OciError('UNSUPPORTED', (err as Error).message);
    }
  }
  const copies = body.copies === undefined ? deps.prewarmCopies : parseCopies(body.copies, '"copies"');
  if (body.local !== undefined && typeof body.local !== 'boolean') throw new OciError('UNSUPPORTED', '"local" must be true or false');
  const line = (value: unknown) => {
    const text = `${JSON.stringify(value)}\n`;
    facts.bytes += Buffer.byteLength(text);
    (res as NodeJS.WritableStream).write(text);
  };
  const refNs = typeof body.ns === 'string' ? body.ns : ns;
  // A call refused as a whole (too many references) is answered as a failed result.
  const refuseWhole = (message: string) => {
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    line({ result: { ok: false, refs: [], errors: [{ ref: '', message }] } });
    res.end();
  };
  if (refs.length > PREWARM_MAX_REFS) return refuseWhole(`too many references: ${refs.length} (at most ${PREWARM_MAX_REFS} per call)`);
  // The site first: the members start on their parts while this node starts on its own, and
  // this node's part covers the blobs of members that did not take it.
  const site = await forwardPrewarm(deps.site, { refs, platforms, ns: refNs, names: 'client', copies }, { local: body.local === true, signal: deps.signal });
  // Queued before the 200 goes out, so a full queue is a plain 429 (the members that took the
  // prewarm do their parts all the same; a retry joins their jobs). The jobs belong to the cache:
  // a caller that goes away stops listening (the write fails quietly), the jobs run on; shutdown
  // aborts them through the queue.
  let submitted: Submitted[];
  try {
    submitted = deps.prewarmQueue.submit(refs, { platforms, ns: refNs, ...(site.share ? { share: site.share } : {}) });
  } catch (err) {
    if (!(err instanceof ImageRefError)) throw err;
    return refuseWhole(err.message);
  }
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  const open = () => !res.writableEnded && !res.destroyed;
  // A node without site peers answers as it always did; one with peers says where the prewarm went.
  if (deps.site !== null) line({ site: site.summary });
  for (const member of site.members) void member.done.then((outcome) => open() && line({ member: outcome }));
  try {
    const own: PrewarmResult = await deps.prewarmQueue.wait(submitted, (event) => {
      if (open()) line({ event });
    });
    const summary = await site.done;
    const result = deps.site !== null ? withSite(own, summary) : own;
    deps.log.info({ refs, ok: result.ok, errors: result.errors, ...(deps.site !== null ? { site: siteLog(summary) } : {}) }, 'prewarm done');
    if (!res.destroyed) line({ result });
  } finally {
    res.end();
  }
}

/** This node's result with the site's: ok only when every member that took the prewarm did its part. */
function withSite(own: PrewarmResult, site: SiteSummary): PrewarmResult & { site: SiteSummary } {
  const errors = [...own.errors];
  for (const member of site.members ?? []) {
    if (member.error) errors.push({ ref: '', message: `site member ${member.node}: ${member.error}` });
    for (const r of member.refs) if (!r.ok) errors.push({ ref: r.ref, message: `site member ${member.node}: ${r.error ?? 'failed'}` });
  }
  // The same tag may have moved between two nodes' lookups: say so, each node keeps what it found.
  for (const mine of own.refs) {
    for (const member of site.members ?? []) {
      const theirs = member.refs.find((r) => r.ref === mine.ref);
      if (mine.digest && theirs?.digest && theirs.digest !== mine.digest) mine.warnings.push(`site member ${member.node} found ${theirs.digest} for ${mine.ref}, this node ${mine.digest}`);
    }
  }
  return { ok: errors.length === 0, refs: own.refs, errors, site };
}

function siteLog(site: SiteSummary): Record<string, unknown> {
  return { local: site.local, copies: site.copies, accepted: site.accepted, refused: site.refused, failed: (site.members ?? []).filter((m) => !m.ok).map((m) => m.node) };
}

/**
 * GET /_cove/site-prewarm?ref=…&copies=K: a sibling forwarded a prewarm; this node takes the
 * manifests and its part of the blobs, and never forwards it again. The handler has checked
 * that the request is signed with the site's key. The answer is NDJSON: {"accepted": …} at
 * once, {"alive": …} while the jobs run, {"result": …} last.
 */
export async function handleSitePrewarm(deps: AdminDeps, res: Res, facts: RequestFacts, query: URLSearchParams, from: string): Promise<void> {
  const request = parseSiteQuery(query);
  let submitted: Submitted[];
  try {
    submitted = deps.prewarmQueue.submit(request.refs, { platforms: request.platforms, ns: request.ns, names: request.names, share: { copies: request.copies } });
  } catch (err) {
    if (err instanceof ImageRefError) throw new OciError('NAME_INVALID', err.message);
    throw err;
  }
  deps.log.info({ from, refs: request.refs, copies: request.copies, joined: submitted.filter((s) => s.joined).map((s) => s.ref) }, 'site prewarm from a sibling: taking this node\'s part');
  const line = (value: unknown) => {
    if (res.writableEnded || res.destroyed) return;
    const text = `${JSON.stringify(value)}\n`;
    facts.bytes += Buffer.byteLength(text);
    (res as NodeJS.WritableStream).write(text);
  };
  res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  line({ accepted: { node: deps.node.id, jobs: submitted.map((s) => ({ ref: s.ref, state: s.joined ? `already ${s.job.state}` : s.job.state })) } });
  const progress = { blobsDone: 0, bytesDone: 0 };
  const heartbeat = setInterval(() => line({ alive: progress }), SITE_HEARTBEAT_MS);
  heartbeat.unref();
  try {
    const result = await deps.prewarmQueue.wait(submitted, (event: PrewarmEvent) => {
      if (event.type !== 'blob') return;
      progress.blobsDone++;
      progress.bytesDone += event.size;
    });
    line({ result });
  } finally {
    clearInterval(heartbeat);
    res.end();
  }
}

/**
 * POST /admin/webhook/harbor: Harbor's "artifact pushed" event prewarms what was pushed — the
 * node-level form of Harbor's P2P preheat, for the whole site when it is forwarded. Answers 202
 * once the site members have taken it (or not); the fetch runs in the background.
 */
async function harborWebhook(deps: AdminDeps, req: Req, res: Res, facts: RequestFacts): Promise<void> {
  let event;
  try {
    event = parseHarborWebhook(await readBoundedBody(req as AsyncIterable<Buffer>));
  } catch (err) {
    if (err instanceof HarborWebhookError) {
      facts.bytes = sendJson(res, err.status, { errors: [{ code: 'UNSUPPORTED', message: err.message }] });
      return;
    }
    throw err;
  }
  if (event.refs.length === 0) {
    facts.bytes = sendJson(res, 200, { accepted: false, reason: event.ignored });
    return;
  }
  const site = await forwardPrewarm(deps.site, { refs: event.refs, platforms: deps.platforms, ns: null, names: 'upstream', copies: deps.prewarmCopies }, { signal: deps.signal });
  // Through the queue: a push Harbor reports several times (retries, several webhook policies)
  // joins the job already pending instead of starting another. A full queue answers 429.
  const submitted = deps.prewarmQueue.submit(event.refs, { platforms: deps.platforms, names: 'upstream', ...(site.share ? { share: site.share } : {}) });
  const siteFields = (summary: SiteSummary) => (deps.site !== null ? { site: siteLog(summary) } : {});
  deps.log.info(
    { type: event.type, repository: event.repository, operator: event.operator, refs: event.refs, joined: submitted.filter((s) => s.joined).map((s) => s.ref), ...siteFields(site.summary) },
    'harbor push: prewarming',
  );
  void Promise.all([deps.prewarmQueue.wait(submitted), site.done]).then(([own, summary]) => {
    const result = withSite(own, summary);
    deps.log.info({ refs: event.refs, ok: result.ok, errors: result.errors, ...siteFields(summary) }, 'harbor push prewarmed');
  });
  facts.bytes = sendJson(res, 202, {
    accepted: true,
    refs: event.refs,
    jobs: submitted.map((s) => ({ ref: s.ref, state: s.joined ? `already ${s.job.state}` : s.job.state })),
    ...(deps.site !== null ? { site: site.summary } : {}),
  });
}

/** A writable that sends the response headers before the first byte and counts what passes. */
class WritableGate extends Writable {
  readonly #out: Writable;
  readonly #first: () => void;
  readonly #count: (n: number) => void;

  constructor(out: Writable, first: () => void, count: (n: number) => void) {
    super();
    this.#out = out;
    this.#first = first;
    this.#count = count;
    // A client that goes away ends the export (its partial archive is useless).
    out.once('close', () => {
      if (!this.writableFinished && !this.destroyed) this.destroy(new Error('the client went away during the export'));
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.#first();
    this.#count(chunk.length);
    if (this.#out.write(chunk)) cb();
    else this.#out.once('drain', () => cb());
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.#first();
    cb();
  }
}
