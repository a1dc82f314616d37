// Site prewarm's parts: COVE_PREWARM_COPIES, the forwarded request's signed query (and its split
// when the references are many), which blobs a node fills for its share, and how the forwarding
// node reads its members' answers (taken, refused, unreachable, a stream that breaks).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { loadConfig } from '../../src/config.js';
import { ConfigError, OciError } from '../../src/errors.js';
import type { PeerResponse } from '../../src/peers/client.js';
import { parsePlatforms } from '../../src/prewarm/platforms.js';
import { fillsHere, prewarm } from '../../src/prewarm/prewarm.js';
import { PrewarmQueue, type PrewarmRunner } from '../../src/prewarm/queue.js';
import { RouteMap } from '../../src/routes.js';
import { NOT_FORWARDED_NO_KEY, SITE_PREWARM_PATH, forwardPrewarm, parseSiteQuery, sitePaths, type SiteDeps, type SiteRequest } from '../../src/prewarm/site.js';
import { makeImage } from '../helpers/images.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { startHarness } from './harness.js';

const log = pino({ level: 'silent' });

t.test('COVE_PREWARM_COPIES: default 1, a whole number from 1 to 256, a clear error otherwise', async (t) => {
  const load = (env: Record<string, string>) => loadConfig({ env: { COVE_UPSTREAM: 'https://harbor.example.com', ...env } });
  t.equal(load({}).prewarm.copies, 1, 'default 1');
  t.equal(load({ COVE_PREWARM_COPIES: '3' }).prewarm.copies, 3);
  t.equal(load({ COVE_PREWARM_COPIES: '256' }).prewarm.copies, 256);
  for (const bad of ['0', 'two', '257', '1.5', '-1']) {
    let caught: unknown = null;
    try {
      load({ COVE_PREWARM_COPIES: bad });
    } catch (err) {
      caught = err;
    }
    t.type(caught, ConfigError, `${JSON.stringify(bad)} is refused at load`);
    t.match((caught as Error).message, `COVE_PREWARM_COPIES: ${JSON.stringify(bad)} must be a whole number from 1 to 256`, 'naming the setting and the value');
  }
  const dir = mkdtempSync(join(tmpdir(), 'cove-copies-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = (copies: unknown) => {
    const path = join(dir, `c-${String(copies)}.json`);
    writeFileSync(path, JSON.stringify({ upstream: 'https://harbor.example.com', prewarmCopies: copies }));
    return path;
  };
  t.equal(loadConfig({ env: {}, file: file(3) }).prewarm.copies, 3, 'prewarmCopies in the config file');
  t.equal(loadConfig({ env: { COVE_PREWARM_COPIES: '2' }, file: file(3) }).prewarm.copies, 2, 'the environment wins over the file');
  t.throws(() => loadConfig({ env: {}, file: file(0) }), /prewarmCopies.*must be a whole number from 1 to 256/, 'a bad value in the file is named too');
});

t.test("the forwarded request's query: read back as sent; many references split over several requests", async (t) => {
  const request: SiteRequest = { refs: ['proj/app:1', 'proj/base@sha256:' + 'a'.repeat(64)], platforms: parsePlatforms('linux/arm64,linux/amd64'), ns: 'docker.io', names: 'upstream', copies: 3 };
  const [path, ...more] = sitePaths(request);
  t.same(more, [], 'two references: one request');
  t.ok(path!.startsWith(`${SITE_PREWARM_PATH}?`));
  const back = parseSiteQuery(new URL(path!, 'http://x').searchParams);
  t.same(back, { ...request, platforms: parsePlatforms('linux/arm64,linux/amd64') }, 'every field read back');

  const refs = Array.from({ length: 300 }, (_, i) => `project-${i}/some-rather-long-repository-name:release-${i}`);
  const paths = sitePaths({ refs, platforms: [], ns: null, names: 'client', copies: 2 });
  t.ok(paths.length > 1, `${refs.length} references: ${paths.length} requests`);
  t.ok(paths.every((p) => p.length <= 3500), 'each within the router\'s bound');
  const parsed = paths.map((p) => parseSiteQuery(new URL(p, 'http://x').searchParams));
  t.same(parsed.flatMap((p) => p.refs), refs, 'every reference once, in order');
  t.ok(parsed.every((p) => p.copies === 2 && p.names === 'client' && p.ns === null), 'each request carries the settings');

  const bad: Array<[string, RegExp]> = [
    ['copies=2', /no \?ref= given/],
    ['ref=a:1&copies=0', /copies must be a whole number from 1 to 256/],
    ['ref=a:1&copies=x', /copies must be a whole number/],
    ['ref=a:1', /copies must be a whole number/],
    ['ref=a:1&copies=1&names=other', /names must be client or upstream/],
    ['ref=a:1&copies=1&platforms=linux', /platforms/],
  ];
  for (const [query, message] of bad) {
    let caught: unknown = null;
    try {
      parseSiteQuery(new URLSearchParams(query));
    } catch (err) {
      caught = err;
    }
    t.type(caught, OciError, query);
    t.equal((caught as OciError).status, 400, `${query}: 400`);
    t.match((caught as Error).message, message);
  }
});

t.test('which blobs a node fills: the first `copies` owners, and a stand-in for owners not running it', async (t) => {
  const ranks: Record<string, string[]> = { d1: ['a', 'b', 'c'], d2: ['b', 'a', 'c'], d3: ['c', 'b', 'a'] };
  const site = { selfId: 'a', owners: (d: string) => ranks[d]! };
  const fill = (share: Parameters<typeof fillsHere>[1]) => Object.keys(ranks).filter(fillsHere(site, share));
  t.same(fill({ copies: 1 }), ['d1'], 'one copy: only what a ranks first');
  t.same(fill({ copies: 2 }), ['d1', 'd2'], 'two copies: what a ranks first or second');
  t.same(fill({ copies: 5 }), ['d1', 'd2', 'd3'], 'more copies than nodes: everything');
  t.same(fill({ copies: 1, running: ['a', 'b'] }), ['d1', 'd3'], "c did not take the prewarm: a fills c's blob");
  t.same(fill({ copies: 2, running: ['a', 'b', 'c'] }), ['d1', 'd2'], 'everyone runs it: no stand-in');
});

t.test('a share prewarm fills only its part; the manifests all the same', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [40_000, 30_000, 20_000, 10_000], seed: 'site-share' });
  origin.putImage('proj/app', '1', image);
  const h = await startHarness(t, origin.url);
  const all = [image.configDigest, ...image.layers.map((l) => l.digest)];
  const mine = new Set([all[1]!, all[3]!]);
  const site = { selfId: 'me', owners: (d: string) => (mine.has(d) ? ['me', 'other'] : ['other', 'me']) };
  const result = await prewarm(['proj/app:1'], { ...h.deps, site }, { platforms: [], share: { copies: 1 } });
  t.ok(result.ok);
  const r = result.refs[0]!;
  t.same(r.blobs, { total: 2, cached: 0, fetched: 2, joined: 0, failed: 0 }, 'two blobs are this node\'s part');
  const size = (d: string) => (d === image.configDigest ? image.config.length : image.layers.find((l) => l.digest === d)!.bytes.length);
  const left = all.filter((d) => !mine.has(d));
  t.same(r.elsewhere, { blobs: 3, bytes: left.reduce((n, d) => n + size(d), 0), copies: 1 }, 'the other three (config and two layers) are left to the site');
  for (const d of all) t.equal(origin.count({ kind: 'blob', digest: d }), mine.has(d) ? 1 : 0, `${d.slice(7, 15)} ${mine.has(d) ? 'fetched' : 'not asked for'}`);
  t.ok(await h.store.stat(image.manifestDigest), 'the manifest is stored');

  const whole = await prewarm(['proj/app:1'], { ...h.deps, site }, { platforms: [], share: { copies: 2 } });
  t.same(whole.refs[0]!.blobs, { total: 5, cached: 2, fetched: 3, joined: 0, failed: 0 }, 'two copies in a site of two: every blob here (the rest fetched now)');
  t.equal(whole.refs[0]!.elsewhere?.blobs, 0);
});

t.test('the queue joins a site job only to one that fills the same part', async (t) => {
  const routes = new RouteMap(loadConfig({ env: { COVE_UPSTREAM: 'http://127.0.0.1:9', COVE_DATA_DIR: '/nonexistent' } }));
  const runs: Array<{ ref: string; share: unknown; finish: () => void }> = [];
  const run: PrewarmRunner = (ref, opts) =>
    new Promise((resolve) => {
      const finish = () =>
        resolve({ ref, ok: true, platforms: [], skipped: [], manifests: { total: 1, cached: 0 }, blobs: { total: 0, cached: 0, fetched: 0, joined: 0, failed: 0 }, bytes: { total: 0, cached: 0, fetched: 0, joined: 0 }, warnings: [], ms: 1 });
      runs.push({ ref, share: opts.share, finish });
    });
  const queue = new PrewarmQueue({ routes, log } as never, { concurrency: 8, run });
  t.teardown(() => queue.close());
  const local = queue.submit(['proj/app:1'], { platforms: [] })[0]!;
  const two = queue.submit(['proj/app:1'], { platforms: [], share: { copies: 2 } })[0]!;
  const twoAgain = queue.submit(['proj/app:1'], { platforms: [], share: { copies: 2, running: ['a', 'b'] } })[0]!;
  const three = queue.submit(['proj/app:1'], { platforms: [], share: { copies: 3 } })[0]!;
  t.equal(two.joined, false, 'a site job does not join a local one (it would fill less)');
  t.equal(twoAgain.job, two.job, 'the same copies: one job');
  t.equal(three.joined, false, 'other copies: another job');
  t.not(local.job, two.job);
  await new Promise((r) => setImmediate(r));
  t.same(runs.map((r) => r.share), [undefined, { copies: 2 }, { copies: 3 }], 'each job runs with its own share');
  for (const r of runs) r.finish();
});

/** A fake peer answer. */
function answer(status: number, lines: unknown[] | string): PeerResponse {
  const text = typeof lines === 'string' ? lines : lines.map((l) => `${JSON.stringify(l)}\n`).join('');
  return { status, headers: {}, body: Readable.from([Buffer.from(text)]) };
}

t.test('forwarding: who took it, who refused and why, and each member\'s outcome', async (t) => {
  const request: SiteRequest = { refs: ['proj/app:1'], platforms: [], ns: null, names: 'client', copies: 2 };
  const result = (ok: boolean) => ({ result: { ok, refs: [{ ref: 'proj/app:1', ok, ...(ok ? { digest: 'sha256:' + 'b'.repeat(64) } : { error: 'origin said 404' }), blobs: { total: 2 }, bytes: { total: 300 } }], errors: [] } });
  const asked: Array<{ id: string; path: string; mode: string }> = [];
  const replies: Record<string, () => Promise<PeerResponse>> = {
    'n-ok': async () => answer(200, [{ accepted: { node: 'n-ok' } }, { alive: { blobsDone: 1 } }, result(true)]),
    'n-fail': async () => answer(200, [{ accepted: { node: 'n-fail' } }, result(false)]),
    'n-full': async () => answer(429, JSON.stringify({ errors: [{ code: 'TOOMANYREQUESTS', message: 'the prewarm queue is full' }] })),
    'n-gone': async () => {
      throw new Error('connect ECONNREFUSED');
    },
    'n-cut': async () => answer(200, `${JSON.stringify({ accepted: { node: 'n-cut' } })}\n{"alive":`),
  };
  const deps = (keyed: boolean, live: string[]): SiteDeps => ({
    table: { selfId: 'self', keyed, live: () => live.map((id) => ({ id, url: `http://${id}` })) },
    client: {
      request: async (peer, _method, path, mode) => {
        asked.push({ id: peer.id, path, mode });
        return replies[peer.id]!();
      },
    },
    log,
  });

  const site = await forwardPrewarm(deps(true, ['n-ok', 'n-fail', 'n-full', 'n-gone', 'n-cut']), request);
  t.same(site.summary.forwarded, ['n-ok', 'n-fail', 'n-full', 'n-gone', 'n-cut']);
  t.same(site.summary.accepted, ['n-ok', 'n-fail', 'n-cut'], 'taken by the members that answered with their first line');
  t.same(site.summary.refused, [
    { node: 'n-full', reason: 'answered 429: the prewarm queue is full' },
    { node: 'n-gone', reason: 'not reached: connect ECONNREFUSED' },
  ]);
  t.same(site.share, { copies: 2, running: ['self', 'n-ok', 'n-fail', 'n-cut'] }, 'this node stands in for the refusers');
  t.ok(asked.every((a) => a.mode === 'local' && a.path === sitePaths(request)[0]), 'one signed GET per member, at the site path');
  const done = await site.done;
  const byNode = Object.fromEntries(done.members!.map((m) => [m.node, m]));
  t.same(byNode['n-ok'], { node: 'n-ok', ok: true, refs: [{ ref: 'proj/app:1', ok: true, digest: 'sha256:' + 'b'.repeat(64), blobs: 2, bytes: 300 }] });
  t.same(byNode['n-fail'], { node: 'n-fail', ok: false, refs: [{ ref: 'proj/app:1', ok: false, error: 'origin said 404', blobs: 2, bytes: 300 }] });
  t.equal(byNode['n-cut']!.ok, false);
  t.match(byNode['n-cut']!.error, /^stream broke; its prewarm may still be running: /, 'a stream cut before the result says so');

  const stays: Array<[string, SiteDeps | null, { local?: boolean }, string | RegExp]> = [
    ['no peers', null, {}, /no site peers/],
    ['no key', deps(false, ['n-ok']), {}, NOT_FORWARDED_NO_KEY],
    ['nobody live', deps(true, []), {}, /no site member is live/],
    ['asked for this node only', deps(true, ['n-ok']), { local: true }, /this node only/],
  ];
  const before = asked.length;
  for (const [what, d, options, reason] of stays) {
    const local = await forwardPrewarm(d, request, options);
    t.match(local.summary.local, reason, `${what}: says why`);
    t.equal(local.share, undefined, `${what}: this node takes every blob`);
    t.same((await local.done).members, []);
  }
  t.equal(asked.length, before, 'and nothing was sent');
});
