// `npm run demo`: Cove's main job on an embedded default, with no network, Docker or config.
// An in-process origin registry holds a generated image; a Cove in front of it serves a cold
// pull, a warm pull, five clients at once, a site of three Coves sharing one cold pull as LAN
// peers, and a pull with the origin switched off.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../src/config.js';
import { startCove, type Cove } from '../src/main.js';
import { formatBytes } from '../src/units.js';
import { makeImage } from '../test/helpers/images.js';
import { OriginRegistry } from '../test/helpers/origin-registry.js';
import { pullImage, type PullResult } from './pull-client.js';

const say = (line = '') => process.stdout.write(`${line}\n`);

function describe(label: string, r: PullResult, originBlobGets: number, originBytes: number): void {
  const results = new Map<string, number>();
  for (const b of r.blobs) results.set(b.cacheStatus, (results.get(b.cacheStatus) ?? 0) + 1);
  const rate = r.bytes / (r.ms / 1000);
  say(`${label.padEnd(22)} ${formatBytes(r.bytes).padStart(10)} in ${r.ms.toFixed(0).padStart(5)} ms (${formatBytes(rate)}/s)`);
  say(`${''.padEnd(22)} manifest: ${r.manifestCache}`);
  for (const [status, n] of results) say(`${''.padEnd(22)} ${n} blob(s): ${status}`);
  say(`${''.padEnd(22)} origin: ${originBlobGets} blob GET(s), ${formatBytes(originBytes)} of blob bytes`);
}

async function main(): Promise<void> {
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-demo-'));
  const origin = await OriginRegistry.start();
  const image = makeImage({ layers: [12_000_000, 8_000_000, 4_000_000, 1_000_000], seed: 'cove-demo' });
  origin.putImage('demo/app', '1.0', image);
  const config = loadConfig({
    env: { COVE_UPSTREAM: origin.url, COVE_LISTEN: '127.0.0.1:0', COVE_DATA_DIR: dataDir, COVE_TAG_TTL: '0s', COVE_UPSTREAM_TIMEOUT: '1s' },
  });
  const cove = await startCove(config, { log: pino({ level: 'silent' }) });
  try {
    say(`Cove demo: origin registry ${origin.url} holds demo/app:1.0 (${image.layers.length} layers, ${formatBytes(image.totalBytes)})`);
    say(`           Cove ${cove.url} caches into ${dataDir}`);
    say();

    const step = async (label: string, run: () => Promise<PullResult>) => {
      origin.resetCounters();
      const r = await run();
      describe(label, r, origin.count({ method: 'GET', kind: 'blob' }), origin.blobBytesServed);
      say();
      return r;
    };
    await step('cold pull', () => pullImage(cove.url, 'demo/app', '1.0'));
    await step('warm pull', () => pullImage(cove.url, 'demo/app', '1.0'));

    const image2 = makeImage({ layers: [10_000_000, 5_000_000], seed: 'cove-demo-2' });
    origin.putImage('demo/other', '2.0', image2);
    origin.resetCounters();
    const started = performance.now();
    const five = await Promise.all(Array.from({ length: 5 }, () => pullImage(cove.url, 'demo/other', '2.0')));
    const ms = performance.now() - started;
    say(`5 clients at once      demo/other:2.0 (${formatBytes(image2.totalBytes)}) each, all done in ${ms.toFixed(0)} ms`);
    say(`${''.padEnd(22)} origin: ${origin.count({ method: 'GET', kind: 'blob' })} blob GET(s), ${formatBytes(origin.blobBytesServed)} of blob bytes (one copy, shared)`);
    say(`${''.padEnd(22)} every client's digests verified: ${five.every((r) => r.blobs.length === image2.layers.length + 1)}`);
    say();

    await siteDemo(origin);

    await origin.stop();
    await step('origin down, warm pull', () => pullImage(cove.url, 'demo/app', '1.0'));

    const c = cove.counters.snapshot();
    say(`Cove counters: ${JSON.stringify(c)}`);
  } finally {
    await cove.stop();
    await origin.close();
    rmSync(dataDir, { recursive: true, force: true });
  }
}

/** A free loopback port, so that every node of the site can be told every node's URL up front. */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer().on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** Three Coves of one site, given the same COVE_PEERS list, pull one cold image at the same moment. */
async function siteDemo(origin: OriginRegistry): Promise<void> {
  const ports = [await freePort(), await freePort(), await freePort()];
  const peers = ports.map((p) => `http://127.0.0.1:${p}`).join(',');
  const nodes: Array<{ cove: Cove; dir: string }> = [];
  try {
    for (const [i, port] of ports.entries()) {
      const dir = mkdtempSync(join(tmpdir(), 'cove-demo-site-'));
      const env = { COVE_UPSTREAM: origin.url, COVE_LISTEN: `127.0.0.1:${port}`, COVE_DATA_DIR: dir, COVE_NODE_ID: `demo-node-${i + 1}`, COVE_PEERS: peers };
      nodes.push({ cove: await startCove(loadConfig({ env }), { log: pino({ level: 'silent' }) }), dir });
    }
    for (const { cove } of nodes) {
      for (let tries = 0; tries < 100; tries++) {
        const table = (await (await fetch(`${cove.url}/_cove/peers`)).json()) as { peers: Array<{ state: string }> };
        if (table.peers.filter((p) => p.state === 'live').length === 2) break;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    const image = makeImage({ layers: [9_000_000, 6_000_000, 3_000_000], seed: 'cove-demo-site' });
    origin.putImage('demo/site', '3.0', image);
    origin.resetCounters();
    const started = performance.now();
    const pulls = await Promise.all(nodes.map(({ cove }) => pullImage(cove.url, 'demo/site', '3.0')));
    const ms = performance.now() - started;
    const blobBytes = image.totalBytes - image.manifest.length;
    say(`site of 3 Coves        demo/site:3.0 (${formatBytes(image.totalBytes)}) on every node at once, all done in ${ms.toFixed(0)} ms`);
    say(`${''.padEnd(22)} origin: ${origin.count({ method: 'GET', kind: 'blob' })} blob GET(s), ${formatBytes(origin.blobBytesServed)} of blob bytes (${(origin.blobBytesServed / blobBytes).toFixed(2)}× the image, for 3 nodes)`);
    for (const { cove } of nodes) {
      const fetched = cove.counters.snapshot().bytesFetched as Record<string, number>;
      const from = Object.entries(fetched).map(([tier, n]) => `${formatBytes(n)} from ${tier}`).join(', ');
      say(`${''.padEnd(22)} ${cove.url}: ${from}`);
    }
    say(`${''.padEnd(22)} every node's digests verified: ${pulls.every((r) => r.blobs.length === image.layers.length + 1)}`);
    say();
  } finally {
    for (const { cove, dir } of nodes) {
      await cove.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`demo failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exitCode = 1;
});
