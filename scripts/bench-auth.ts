// `node dist/scripts/bench-auth.js [--requests N]`: what client auth (COVE_CLIENT_AUTH=passthrough)
// adds to a warm pull, against the named baseline "open" measured in the same run. Two Coves on
// loopback in this process, one per mode, in front of one in-process Bearer origin with per-user
// grants; one image is pulled once through each (cold, decisions made), then N warm requests
// (manifest by tag and each blob, round robin; a token held as a client holds it) are timed on
// each, alternating in blocks so machine noise falls on both. Prints the medians and the added
// time per request, and writes bench/auth.json.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { request, Agent } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { loadConfig } from '../src/config.js';
import { startCove, type Cove } from '../src/main.js';
import { OriginRegistry } from '../test/helpers/origin-registry.js';
import { makeImage } from '../test/helpers/images.js';
import { positiveIntArg } from './args.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const ACCEPT = 'application/vnd.docker.distribution.manifest.v2+json';
const BLOCK = 50;

/** One GET on a kept-alive connection; resolves with status and elapsed ms once the body is read. */
function get(agent: Agent, url: string, headers: Record<string, string>): Promise<{ status: number; ms: number }> {
  const t0 = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const req = request(url, { agent, headers }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: Number(process.hrtime.bigint() - t0) / 1e6 }));
      res.on('error', reject);
    });
    req.setTimeout(30_000, () => req.destroy(new Error(`no answer from ${url}`)));
    req.on('error', reject);
    req.end();
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const p99 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.99)]!;

async function main(): Promise<void> {
  const requests = positiveIntArg('requests', 4000);
  const origin = await OriginRegistry.start({
    auth: 'bearer',
    users: { robot: { password: 'robot-secret', prefixes: ['*'] }, reader: { password: 'reader-secret', prefixes: ['team/'] } },
  });
  const image = makeImage({ layers: [200_000, 50_000], seed: 'bench-auth' });
  origin.putImage('team/app', '1', image);
  const dirs: string[] = [];
  const coves: Cove[] = [];
  const start = async (mode: 'open' | 'passthrough') => {
    const dataDir = mkdtempSync(join(tmpdir(), `cove-bench-auth-${mode}-`));
    dirs.push(dataDir);
    const config = loadConfig({
      env: { COVE_LISTEN: '127.0.0.1:0', COVE_DATA_DIR: dataDir, COVE_UPSTREAM: origin.url, COVE_UPSTREAM_USERNAME: 'robot', COVE_UPSTREAM_PASSWORD: 'robot-secret', COVE_TAG_TTL: '1h', COVE_CLIENT_AUTH: mode },
    });
    const cove = await startCove(config, { log: pino({ level: 'silent' }) });
    coves.push(cove);
    return cove;
  };
  try {
    const open = await start('open');
    const guarded = await start('passthrough');
    // A client's token, as docker holds it after its first 401.
    const basic = `Basic ${Buffer.from('reader:reader-secret').toString('base64')}`;
    const tokenRes = await fetch(`${guarded.url}/_cove/token?service=cove:origin&scope=repository:team/app:pull`, { headers: { authorization: basic } });
    const token = ((await tokenRes.json()) as { token: string }).token;
    const paths = ['/v2/team/app/manifests/1', `/v2/team/app/blobs/${image.configDigest}`, ...image.layers.map((l) => `/v2/team/app/blobs/${l.digest}`)];
    const runs = { open: { cove: open, headers: { accept: ACCEPT } as Record<string, string>, ms: [] as number[] }, passthrough: { cove: guarded, headers: { accept: ACCEPT, authorization: `Bearer ${token}` }, ms: [] as number[] } };
    const agents = { open: new Agent({ keepAlive: true, maxSockets: 1 }), passthrough: new Agent({ keepAlive: true, maxSockets: 1 }) };
    // Cold pulls, then a warm-up round, untimed.
    for (const mode of ['open', 'passthrough'] as const) {
      for (let i = 0; i < paths.length * 20; i++) {
        const r = await get(agents[mode], `${runs[mode].cove.url}${paths[i % paths.length]}`, runs[mode].headers);
        if (r.status !== 200) throw new Error(`${mode}: ${paths[i % paths.length]} answered ${r.status}`);
      }
    }
    for (let done = 0; done < requests; done += BLOCK) {
      for (const mode of done % (2 * BLOCK) === 0 ? (['open', 'passthrough'] as const) : (['passthrough', 'open'] as const)) {
        for (let i = 0; i < BLOCK; i++) {
          const r = await get(agents[mode], `${runs[mode].cove.url}${paths[(done + i) % paths.length]}`, runs[mode].headers);
          if (r.status !== 200) throw new Error(`${mode}: answered ${r.status}`);
          runs[mode].ms.push(r.ms);
        }
      }
    }
    agents.open.destroy();
    agents.passthrough.destroy();
    const result = {
      requests,
      image: { blobs: image.layers.length + 1, bytes: image.totalBytes },
      open: { medianMs: median(runs.open.ms), p99Ms: p99(runs.open.ms) },
      passthrough: { medianMs: median(runs.passthrough.ms), p99Ms: p99(runs.passthrough.ms) },
      addedMedianMs: median(runs.passthrough.ms) - median(runs.open.ms),
      ratio: median(runs.passthrough.ms) / median(runs.open.ms),
      notes: 'warm requests on one kept-alive connection per mode, the same mix (manifest by tag, config, layers) in alternating blocks of 50; passthrough requests carry a Cove token obtained once',
    };
    process.stdout.write(
      [
        `warm requests (${requests} per mode, ${paths.length}-request mix: manifest by tag, config, layers)`,
        `| mode | median ms | p99 ms |`,
        `|---|---|---|`,
        `| open (baseline) | ${result.open.medianMs.toFixed(3)} | ${result.open.p99Ms.toFixed(3)} |`,
        `| passthrough | ${result.passthrough.medianMs.toFixed(3)} | ${result.passthrough.p99Ms.toFixed(3)} |`,
        `added per request (median): ${result.addedMedianMs.toFixed(3)} ms (${result.ratio.toFixed(2)}x open)`,
        '',
      ].join('\n'),
    );
    writeFileSync(join(ROOT, 'bench', 'auth.json'), `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    for (const cove of coves) await cove.stop();
    await origin.close();
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench-auth: ${(err as Error).stack ?? String(err)}\n`);
  process.exitCode = 1;
});
