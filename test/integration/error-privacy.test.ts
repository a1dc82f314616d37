// What an anonymous client learns when the origin or the egress proxy is down: that the upstream
// is unreachable, and why in a word (ECONNREFUSED), but never where the origin or the proxy is.
// Error bodies, /healthz and the status data leave the address out; the log keeps it.
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import t from 'tap';
import { loadConfig } from '../../src/config.js';
import { startCove, type Cove } from '../../src/main.js';
import { fetchAll } from '../helpers/http.js';
import { OriginRegistry } from '../helpers/origin-registry.js';

const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json';
const DIGEST = `sha256:${'ab'.repeat(32)}`;

/** A loopback port nothing listens on (bound, then closed). */
async function deadPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A Cove whose log lines are kept in `lines`. */
async function coveWithLog(t: { teardown(fn: () => unknown): void }, env: Record<string, string>): Promise<{ cove: Cove; lines: string[] }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-privacy-'));
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString());
      done();
    },
  });
  const config = loadConfig({ env: { COVE_LISTEN: '127.0.0.1:0', COVE_DATA_DIR: dataDir, COVE_UPSTREAM_TIMEOUT: '1s', COVE_SHUTDOWN_GRACE: '1s', ...env } });
  const cove = await startCove(config, { log: pino({ level: 'debug' }, sink) });
  t.teardown(async () => {
    await cove.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });
  return { cove, lines };
}

/** Pulls that must fail, the breaker opened by them, then every client-facing answer. */
async function clientViews(cove: Cove): Promise<Array<[string, number, string]>> {
  const views: Array<[string, number, string]> = [];
  const get = async (what: string, path: string) => {
    const r = await fetchAll(`${cove.url}${path}`, { headers: { accept: ACCEPT } });
    views.push([what, r.status, r.body.toString()]);
  };
  // Enough failures to open the breaker, whose "marked down" answer is checked too.
  for (let i = 0; i < 4; i++) await get(`manifest ${i}`, `/v2/proj/app/manifests/${i}`);
  await get('blob', `/v2/proj/app/blobs/${DIGEST}`);
  await get('tags list', '/v2/proj/app/tags/list');
  await get('/healthz', '/healthz');
  await get('/readyz', '/readyz');
  await get('status data', '/_cove/status.json');
  return views;
}

t.test('an unreachable origin: error bodies and /healthz do not name its host and port', async (t) => {
  const port = await deadPort();
  const { cove, lines } = await coveWithLog(t, { COVE_UPSTREAM: `http://127.0.0.1:${port}` });
  const views = await clientViews(cove);
  for (const [what, status, body] of views) {
    t.notMatch(body, String(port), `${what} (${status}): no origin port`);
    t.notMatch(body, '127.0.0.1', `${what}: no origin host`);
  }
  const first = JSON.parse(views[0]![2]).errors[0];
  t.equal(views[0]![1], 503);
  t.equal(first.code, 'UPSTREAM_UNAVAILABLE');
  t.match(first.message, /^upstream origin is unreachable \(ECONNREFUSED\)$/, 'says what failed, not where');
  t.same(first.detail, { upstream: 'origin' });
  t.match(JSON.parse(views[3]![2]).errors[0].message, /upstream origin is marked down after \d+ failed attempts; next probe in \d+ s/);
  const health = JSON.parse(views.find(([w]) => w === '/healthz')![2]);
  t.equal(health.upstreams.origin.state, 'open', '/healthz still says the origin is down');
  t.match(health.upstreams.origin.lastError, /unreachable \(ECONNREFUSED\)/, '/healthz says why');
  t.ok(lines.some((l) => l.includes(`127.0.0.1:${port}`)), 'the log keeps the origin address');
});

t.test('an unreachable proxy: error bodies and /healthz name neither the proxy nor the origin', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const proxyPort = await deadPort();
  const originPort = new URL(origin.url).port;
  const { cove, lines } = await coveWithLog(t, { COVE_UPSTREAM: origin.url, HTTP_PROXY: `http://127.0.0.1:${proxyPort}`, NO_PROXY: '' });
  const views = await clientViews(cove);
  for (const [what, status, body] of views) {
    t.notMatch(body, String(proxyPort), `${what} (${status}): no proxy port`);
    t.notMatch(body, originPort, `${what}: no origin port`);
    t.notMatch(body, '127.0.0.1', `${what}: no host`);
    t.notMatch(body, /proxy/i, `${what}: no proxy mentioned`);
  }
  t.equal(views[0]![1], 503);
  t.equal(JSON.parse(views[0]![2]).errors[0].code, 'UPSTREAM_UNAVAILABLE');
  t.equal(origin.requests.length, 0, 'nothing reached the origin: the proxy is the way there');
  t.ok(lines.some((l) => l.includes(`127.0.0.1:${proxyPort}`)), 'the log keeps the proxy address');
});
