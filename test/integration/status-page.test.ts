// The status page (GET / and /_cove/): the per-minute ring of bytes by tier; then a real Cove after
// a cold and a warm pull, its page opened in headless Chromium (Debian's, driven by playwright-core,
// loopback only): the rendered hit ratio, bytes saved, origin bytes and hits equal what /metrics
// says, the images tables name the pulled repository, the origin state follows the breaker, no
// secret reaches the page or its JSON, and a screenshot of the page is a real, non-blank PNG.
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import t from 'tap';
import { Counters } from '../../src/metrics.js';
import { HISTORY_MINUTES, Status } from '../../src/http/status.js';
import { requireTools, which } from '../e2e/real.js';
import { startTestCove } from '../helpers/cove.js';
import { fetchAll } from '../helpers/http.js';
import { makeImage } from '../helpers/images.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { ACCEPT_ALL, freePort, pullImage } from '../helpers/site.js';

const CHROMIUM = '/usr/bin/chromium';
const VIEWPORT = { width: 1200, height: 900 };

t.test('the ring keeps per-minute bytes by tier for the last 60 minutes', async (t) => {
  let now = 0;
  const counters = new Counters();
  const status = new Status(
    {
      counters,
      node: { id: 'n', site: 's', version: 'v' },
      started: 0,
      upstreams: () => ({}),
      origins: ['origin'],
      cache: () => ({ bytes: 0, limit: null, leased: 0 }),
      activeFills: () => 0,
      peers: () => null,
      images: async () => [],
    },
    { now: () => now },
  );
  for (let minute = 0; minute < 70; minute++) {
    counters.add(counters.bytesServed, 'local', 100 + minute);
    counters.add(counters.bytesFetched, 'origin', 10);
    now += 60_000;
    status.sample();
  }
  counters.add(counters.bytesServed, 'origin', 7);
  const series = status.series();
  t.equal(series.length, HISTORY_MINUTES, 'sixty minutes, the minute in progress last');
  t.same(series.at(-1), { t: now, served: { origin: 7 }, fetched: {}, partial: true }, 'the minute in progress: what moved since the last sample');
  t.same(series.at(-2), { t: now - 60_000, served: { local: 169 }, fetched: { origin: 10 }, partial: false }, 'a closed minute: the deltas of that minute');
  t.equal(series[0]!.served.local, 111, 'older minutes have left the ring');
  status.recordPull('origin', 'a');
  status.recordPull('origin', 'b');
  status.recordPull('origin', 'b');
  const json = (await status.json()) as { images: { mostPulled: Array<{ repo: string; pulls: number }> } };
  t.same(json.images.mostPulled.map((p) => [p.repo, p.pulls]), [['b', 2], ['a', 1]], 'most pulled first');
});

t.test('the status page renders what /metrics reports, in headless Chromium', async (t) => {
  if (!requireTools(t, ['chromium'])) return;
  const { chromium } = await import('playwright-core');

  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const image = makeImage({ layers: [300_000, 900_000], seed: 'status-page' });
  origin.putImage('proj/app', '1', image);
  const secrets = { COVE_PEER_KEY: 'peer-key-do-not-show-0123456789', COVE_ADMIN_TOKEN: 'admin-token-do-not-show-0123456789' };
  // One static peer on a loopback port nobody listens on: the page lists it, not live.
  const deadPeer = `http://127.0.0.1:${await freePort()}`;
  const cove = await startTestCove(t, origin.url, { COVE_TAG_TTL: '1h', COVE_PEERS: deadPeer, ...secrets });

  const cold = await pullImage(cove.url, 'proj/app', '1', image);
  await cove.fillsDone();
  const warm = await pullImage(cove.url, 'proj/app', '1', image);
  t.ok(cold.blobs.every((b) => b.cache.includes('fwd=miss')) && warm.blobs.every((b) => b.cache === 'cove; hit'), 'a cold pull, then a warm one');

  // The page and its data over plain HTTP first.
  for (const path of ['/', '/_cove/']) {
    const r = await fetchAll(`${cove.url}${path}`);
    t.equal(r.status, 200, `GET ${path} is 200`);
    t.match(r.headers['content-type'], /^text\/html; charset=utf-8/);
    t.match(r.headers['content-security-policy'], /default-src 'none'/, 'a CSP that allows nothing external');
    const html = r.body.toString();
    t.notMatch(html, /\s(src|href)=/i, 'no external assets: no src or href attributes at all');
    t.notMatch(html, /https?:\/\/(?!www\.w3\.org\/2000\/svg)/, 'no absolute URLs besides the SVG namespace');
  }
  const head = await fetchAll(`${cove.url}/`, { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.body.length, 0, 'HEAD / has no body');
  const json = await fetchAll(`${cove.url}/_cove/status.json`);
  t.equal(json.status, 200);
  const text = json.body.toString();
  for (const secret of Object.values(secrets)) t.notOk(text.includes(secret), 'status.json carries no peer key or admin token');
  t.notOk(text.includes(origin.url), 'status.json names upstreams, not their URLs');

  // Headless Chromium, a fresh profile in a temp dir, no network beyond this Cove.
  const profile = mkdtempSync(join(tmpdir(), 'cove-status-chromium-'));
  t.teardown(() => rmSync(profile, { recursive: true, force: true }));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: which('chromium') ?? CHROMIUM,
    headless: true,
    viewport: VIEWPORT,
    deviceScaleFactor: 1,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  t.teardown(() => context.close());
  const page = context.pages()[0] ?? (await context.newPage());
  const foreign: string[] = [];
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith(`${cove.url}/`)) return route.continue();
    foreign.push(url);
    return route.abort();
  });
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' && !/favicon/.test(msg.location().url)) problems.push(`console: ${msg.text()}`);
  });

  await page.goto(`${cove.url}/`);
  await page.waitForFunction(() => Number(document.body.dataset.rendered ?? 0) >= 1, undefined, { timeout: 15_000 });
  const shown = async (id: string) => (await page.locator(`#${id}`).textContent())?.trim() ?? '';
  const number = (s: string) => Number(s.replace(/[,\sB]/g, ''));

  const scrape = (await fetchAll(`${cove.url}/metrics`)).body.toString();
  const metric = (name: string) => {
    const line = scrape.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? 0 : Number(line.split(' ').at(-1));
  };
  const hits = ['hit', 'revalidated', 'stale'].reduce((n, r) => n + metric(`cove_requests_total{result="${r}"}`), 0);
  const misses = ['miss', 'joined', 'vary-miss'].reduce((n, r) => n + metric(`cove_requests_total{result="${r}"}`), 0);
  t.equal(hits, 4, '/metrics: four hits (the manifest and three blobs)');
  t.equal(number(await shown('hits')), hits, `hits shown equal /metrics (${hits})`);
  t.equal(number(await shown('misses')), misses, `misses shown equal /metrics (${misses})`);
  t.equal(await shown('hit-ratio'), `${((hits / (hits + misses)) * 100).toFixed(1)} %`, 'hit ratio shown');
  const local = metric('cove_served_bytes_total{tier="local"}');
  const fromOrigin = metric('cove_fetched_bytes_total{tier="origin"}');
  t.equal(fromOrigin, image.totalBytes, '/metrics: the image crossed from the origin once');
  t.equal(number(await shown('saved-bytes')), local, `bytes saved shown equal cove_served_bytes_total{tier="local"} (${local})`);
  t.equal(number(await shown('origin-bytes')), fromOrigin, `origin bytes shown equal cove_fetched_bytes_total{tier="origin"} (${fromOrigin})`);
  t.ok(local > 0 && (await shown('saved')).length > 0, 'a human-readable bytes saved');
  t.equal(await shown('origin-state'), 'reachable', 'origin state: reachable (breaker closed)');
  t.match(await shown('upstreams'), /origin.*reachable/, 'the upstreams table shows the origin reachable');
  t.equal(await shown('origin-since'), '', 'no outage line while it is reachable');
  t.match(await shown('largest'), /proj\/app:1/, 'the largest images table has the pulled image');
  const pulled = await page.locator('#most-pulled tr', { hasText: 'proj/app' }).locator('td').allTextContents();
  t.equal(pulled[0], 'proj/app', 'the most pulled table has the pulled repository');
  t.equal(pulled[2], '2', 'pulled twice');
  t.match(await shown('peers'), /127\.0\.0\.1/, 'the peers table lists the configured peer');
  t.ok((await page.locator('#chart rect').count()) > 0, 'the chart has bars for this minute');
  t.ok((await page.locator('#chart polyline').count()) === 1, 'and the fetched line');
  const content = await page.content();
  for (const secret of Object.values(secrets)) t.notOk(content.includes(secret), 'the rendered page carries no secret');

  // The screenshot: a PNG of the viewport's size that is not one flat colour.
  const shot = join(profile, 'status.png');
  await page.screenshot({ path: shot });
  t.ok(statSync(shot).size > 0, 'screenshot written');
  const png = decodePng(readFileSync(shot));
  t.same({ width: png.width, height: png.height }, VIEWPORT, `screenshot is ${VIEWPORT.width}x${VIEWPORT.height}`);
  t.ok(png.colours > 20, `not blank: ${png.colours} distinct colours`);
  t.ok(png.dominantShare < 0.9, `no single colour covers the page (${(png.dominantShare * 100).toFixed(1)} %)`);
  t.comment(`screenshot: ${statSync(shot).size} bytes, ${png.colours} colours`);
  // The check itself: an empty page of the same size is one colour.
  const blank = await context.newPage();
  await blank.setContent('<html><body></body></html>');
  const empty = decodePng(await blank.screenshot());
  await blank.close();
  t.equal(empty.colours, 1, 'an empty page decodes as one colour (the check can tell)');

  // /_cove/ serves the same page; the origin going down shows on the next poll.
  await page.goto(`${cove.url}/_cove/`);
  await page.waitForFunction(() => Number(document.body.dataset.rendered ?? 0) >= 1, undefined, { timeout: 15_000 });
  t.equal(await shown('origin-state'), 'reachable', '/_cove/ renders too');
  await origin.stop();
  for (let i = 0; i < 10; i++) {
    await fetchAll(`${cove.url}/v2/proj/app/manifests/2`, { headers: { accept: ACCEPT_ALL } });
    const m = (await fetchAll(`${cove.url}/metrics`)).body.toString();
    if (m.includes('cove_upstream_breaker_open{upstream="origin"} 1')) break;
  }
  await page.waitForFunction(() => document.getElementById('origin-state')?.textContent?.startsWith('unreachable'), undefined, { timeout: 15_000 });
  t.equal(await shown('origin-state'), 'unreachable (origin)', 'origin state follows the breaker within a poll');
  t.match(await shown('origin-since'), /^since \S+.* · \d+ stale answers meanwhile · last error: refused$/, 'since when, the stale answers meanwhile and the last error class');
  t.match(await shown('upstreams'), /origin.*unreachable.*ago.*refused/, 'the upstreams table shows it unreachable, since when, and the error class');

  t.same(foreign, [], 'the page requested nothing but this Cove');
  t.same(problems, [], 'no script errors and no CSP violations');
});

/** Decodes an 8-bit, non-interlaced RGB/RGBA PNG enough to count its colours. */
function decodePng(buf: Buffer): { width: number; height: number; colours: number; dominantShare: number } {
  if (!buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) throw new Error('not a PNG');
  let width = 0;
  let height = 0;
  let channels = 0;
  const idat: Buffer[] = [];
  for (let off = 8; off < buf.length; ) {
    const len = buf.readUInt32BE(off);
    const type = buf.toString('latin1', off + 4, off + 8);
    const data = buf.subarray(off + 8, off + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      if (data[8] !== 8 || data[12] !== 0) throw new Error('only 8-bit non-interlaced PNGs');
      channels = { 2: 3, 6: 4 }[data[9]!] ?? 0;
      if (channels === 0) throw new Error(`colour type ${data[9]} not handled`);
    } else if (type === 'IDAT') idat.push(data);
    off += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  const stride = width * channels;
  let prev = Buffer.alloc(stride);
  const counts = new Map<number, number>();
  for (let y = 0; y < height; y++) {
    const filter = raw[y * (stride + 1)]!;
    const line = Buffer.from(raw.subarray(y * (stride + 1) + 1, (y + 1) * (stride + 1)));
    for (let x = 0; x < stride; x++) {
      const a = x >= channels ? line[x - channels]! : 0;
      const b = prev[x]!;
      const c = x >= channels ? prev[x - channels]! : 0;
      let add = 0;
      if (filter === 1) add = a;
      else if (filter === 2) add = b;
      else if (filter === 3) add = (a + b) >> 1;
      else if (filter === 4) {
        const p = a + b - c;
        const pa = Math.abs(p - a);
        const pb = Math.abs(p - b);
        const pc = Math.abs(p - c);
        add = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      line[x] = (line[x]! + add) & 0xff;
    }
    for (let x = 0; x < stride; x += channels) {
      const key = (line[x]! << 16) | (line[x + 1]! << 8) | line[x + 2]!;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    prev = line;
  }
  const dominant = Math.max(...counts.values());
  return { width, height, colours: counts.size, dominantShare: dominant / (width * height) };
}
