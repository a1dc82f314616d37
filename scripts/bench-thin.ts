// The "thin" scenario of `npm run bench` (issue 16, part 4): a site behind a thin uplink. The
// origin (Debian's docker-registry) runs in a network namespace of its own, behind a veth pair
// whose origin-side egress is shaped with `tc … tbf rate 200mbit burst 256kb latency 200ms`
// (test/helpers/shaped-net.ts); everything else runs in a second namespace, the site, which
// reaches the origin only over that link. A cold ~50 MB image of five incompressible layers.
// BENCH_THIN_RATE sets another rate (e.g. 50mbit). In one run:
//   1. one copy: one skopeo in the site pulls the image straight from the origin (BENCH_THIN_ONE
//      runs, default 3; the median is the baseline time);
//   2. Cove's site: five Coves (one COVE_PEERS list, on the site's loopback) each pulled by one
//      skopeo at once; the slowest pull;
//      then the same five pulls again, warm: the local floor (clients and Coves on this machine's
//      CPUs and disk, nothing over the link) under the cold time;
//   3. five independent distribution proxies (docker-registry with proxy.remoteurl) pulled the
//      same way.
// Reported: site time / one-copy time (target ≤ 1.15) and the same for the proxies, and for each
// the bytes the origin sent / the image's bytes, both on the wire (the veth's tx counter: frames
// with their TCP/IP and HTTP headers) and in the origin's access log (blob bodies). Every copy is
// hashed against the pushed digests. Each round also records how busy the machine's CPUs were
// (/proc/stat, every process): on a small machine five Coves and five clients can saturate them,
// and then the CPUs, not the link, set the time. Only namespaces made here; everything is
// stopped and removed.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Cleanup, buildTarImage, tempDir, versionOf, type TestImage } from '../test/e2e/real.js';
import {
  THIN_LINK,
  ShapedNet,
  blobBytesOf,
  copyProblems,
  coveIn,
  fillsDone,
  pushImageIn,
  registryIn,
  skopeoPullIn,
  waitPeersLive,
  type NsCove,
  type NsRegistry,
  type ShapedLink,
} from '../test/helpers/shaped-net.js';

const MiB = 1024 * 1024;
const LAYERS = [16 * MiB, 12 * MiB, 10 * MiB, 6 * MiB, 4 * MiB];
const NODES = 5;
const ONE_COPY_RUNS = Number(process.env.BENCH_THIN_ONE ?? 3);
/** The link's rate (a tc rate, "200mbit" by default): a slower link shows the site where the link, not the CPUs, bounds it. */
const RATE = process.env.BENCH_THIN_RATE ?? THIN_LINK.rate;
/** The target: the slowest node of a site, against one copy over the same link. */
export const THIN_TARGET = { siteTimeOverOneCopy: 1.15 } as const;
/** Bound of one skopeo pull over the thin link. */
const PULL_LIMIT_MS = 180_000;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The machine's CPU time so far (/proc/stat, all CPUs, in ticks): busy and in all. */
export function cpuTicks(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const total = fields.reduce((a, b) => a + b, 0);
  // idle and iowait are the not-busy ones
  return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
}

/** Share of the machine's CPU time that was busy between two cpuTicks() readings (every process, ours or not). */
export const busyShare = (a: { busy: number; total: number }, b: { busy: number; total: number }) => (b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : 0);

/** One measured pull round: its times and what the origin sent for it. */
export interface ThinRound {
  pullMs: number[];
  slowestMs: number;
  /** Bytes the origin's end of the link sent (veth tx, headers included). */
  wireBytes: number;
  wireBytesPerImageByte: number;
  /** Blob body bytes in the origin's access log. */
  originBlobBytes: number;
  originBlobBytesPerBlobByte: number;
  originBlobGets: number;
  /** Share of the machine's CPU time busy while the pulls ran (all processes: the machine may be shared). */
  cpuBusy: number;
}

export interface ThinResult {
  link: { rate: string; burst: string; latency: string };
  image: { totalBytes: number; blobBytes: number; layers: number[] };
  nodes: number;
  baseline: string;
  oneCopy: ThinRound & { runs: ThinRound[] };
  site: ThinRound & { peerBytes: number; warm: ThinRound };
  proxies: ThinRound;
  ratios: { siteTimeOverOneCopy: number; proxiesTimeOverOneCopy: number; siteOriginBytes: number; proxiesOriginBytes: number };
  target: typeof THIN_TARGET;
  meetsTarget: boolean;
  notes: string;
}

/**
 * Pulls `refs` (one skopeo each, all at once, inside the site namespace), verifies each copy, waits
 * until the link is quiet (a proxy keeps filling after its client is done) and counts what the
 * origin sent.
 */
async function round(net: ShapedNet, link: ShapedLink, origin: NsRegistry, image: TestImage, refs: string[], work: string, what: string): Promise<ThinRound> {
  await net.quiet(500, 10_000);
  const before = await net.downBytes(link);
  origin.markNow();
  const outs = refs.map((_, i) => join(work, `${what}-${i + 1}`));
  const cpu0 = cpuTicks();
  const pullMs = await Promise.all(refs.map((ref, i) => skopeoPullIn(net, 'site', ref, outs[i]!, PULL_LIMIT_MS)));
  const cpuBusy = busyShare(cpu0, cpuTicks());
  for (const [i, out] of outs.entries()) {
    const problems = copyProblems(out, image);
    if (problems.length > 0) throw new Error(`thin: ${what} client ${i + 1} got bad bytes: ${problems.join('; ')}`);
  }
  await net.quiet(1500, 120_000);
  const wireBytes = (await net.downBytes(link)) - before;
  const served = origin.blobGetsSinceMark();
  return {
    pullMs,
    slowestMs: Math.max(...pullMs),
    wireBytes,
    wireBytesPerImageByte: wireBytes / image.totalBytes,
    originBlobBytes: served.bytes,
    originBlobBytesPerBlobByte: served.bytes / blobBytesOf(image),
    originBlobGets: served.requests,
    cpuBusy,
  };
}

const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const pct = (r: ThinRound) => `${(100 * r.cpuBusy).toFixed(0)}%`;

export async function thinScenario(say: (line?: string) => void): Promise<ThinResult> {
  const c = new Cleanup();
  try {
    const work = tempDir(c, 'cove-thin-');
    const image = await buildTarImage(join(work, 'layout'), 'thin', LAYERS, `thin-${Date.now()}`);
    const net = (await ShapedNet.create(null, c, ['origin', 'site']))!;
    const link = await net.link('origin', 'site', RATE);
    const origin = await registryIn(net, c, 'origin', { listen: '0.0.0.0:5000', label: 'origin' });
    await pushImageIn(net, 'origin', image, origin.localHostPort, 'proj/app:1');
    const originHost = `${link.up.address}:5000`;
    say(
      `thin: a ${(image.totalBytes / 1e6).toFixed(1)} MB image (${image.layers.length} layers) behind tbf ${RATE} burst ${THIN_LINK.burst} latency ${THIN_LINK.latency}; ` +
        `origin in one namespace, mirrors and clients in another; one copy (${ONE_COPY_RUNS} runs), a site of ${NODES} Coves, ${NODES} distribution proxies`,
    );

    // 1. One copy, straight from the origin.
    const runs: ThinRound[] = [];
    for (let i = 0; i < ONE_COPY_RUNS; i++) {
      const r = await round(net, link, origin, image, [`${originHost}/proj/app:1`], work, 'one');
      runs.push(r);
      say(`  one copy, run ${i + 1}: ${secs(r.slowestMs)}, link ${(r.wireBytes / 1e6).toFixed(1)} MB = ${r.wireBytesPerImageByte.toFixed(3)}x the image, CPUs ${pct(r)} busy`);
    }
    const mid = runs.find((r) => r.slowestMs === median(runs.map((x) => x.slowestMs))) ?? runs[0]!;
    const oneCopy = { ...mid, slowestMs: median(runs.map((r) => r.slowestMs)), runs };

    // 2. A site of Coves.
    const urls = Array.from({ length: NODES }, (_, i) => `http://127.0.0.1:${5001 + i}`);
    const coves: NsCove[] = await Promise.all(
      urls.map((url, i) =>
        coveIn(net, c, 'site', { id: `node-${i + 1}`, listen: new URL(url).host, url, upstream: `http://${originHost}`, env: { COVE_PEERS: urls.join(','), COVE_TAG_TTL: '1h' } }),
      ),
    );
    await waitPeersLive(coves);
    const siteRound = await round(net, link, origin, image, coves.map((cv) => `${cv.hostPort}/proj/app:1`), work, 'site');
    await fillsDone(coves);
    const healths = await Promise.all(coves.map((cv) => cv.health()));
    const peerBytes = healths.reduce((n, h) => n + Object.entries(h.bytesFetched).reduce((m, [k, v]) => m + (k.startsWith('peer:') ? v : 0), 0), 0);
    const site = { ...siteRound, peerBytes };
    say(
      `  site of ${NODES} Coves: slowest ${secs(site.slowestMs)} (${site.pullMs.map(secs).join(', ')}), link ${(site.wireBytes / 1e6).toFixed(1)} MB = ${site.wireBytesPerImageByte.toFixed(3)}x the image, ` +
        `${(peerBytes / 1e6).toFixed(1)} MB between peers, CPUs ${pct(site)} busy`,
    );
    // The same five pulls again, warm: nothing crosses the link, so this is what five clients and
    // five Coves cost this machine's CPUs and disk, the floor under the cold time.
    const warm = await round(net, link, origin, image, coves.map((cv) => `${cv.hostPort}/proj/app:1`), work, 'warm');
    say(`  the same site, warm (nothing over the link): slowest ${secs(warm.slowestMs)} (${warm.pullMs.map(secs).join(', ')}), CPUs ${pct(warm)} busy`);
    await Promise.all(coves.map((cv) => cv.stop()));

    // 3. Independent distribution proxies.
    const proxies = await Promise.all(
      Array.from({ length: NODES }, (_, i) => registryIn(net, c, 'site', { listen: `127.0.0.1:${5101 + i}`, label: `proxy-${i + 1}`, proxyRemote: `http://${originHost}` })),
    );
    const proxyRound = await round(net, link, origin, image, proxies.map((p) => `${p.localHostPort}/proj/app:1`), work, 'proxy');
    say(
      `  ${NODES} distribution proxies: slowest ${secs(proxyRound.slowestMs)} (${proxyRound.pullMs.map(secs).join(', ')}), link ${(proxyRound.wireBytes / 1e6).toFixed(1)} MB = ${proxyRound.wireBytesPerImageByte.toFixed(3)}x the image, CPUs ${pct(proxyRound)} busy`,
    );
    await Promise.all(proxies.map((p) => p.stop()));

    const ratios = {
      siteTimeOverOneCopy: site.slowestMs / oneCopy.slowestMs,
      proxiesTimeOverOneCopy: proxyRound.slowestMs / oneCopy.slowestMs,
      siteOriginBytes: site.wireBytesPerImageByte,
      proxiesOriginBytes: proxyRound.wireBytesPerImageByte,
    };
    const result: ThinResult = {
      link: { ...THIN_LINK, rate: RATE },
      image: { totalBytes: image.totalBytes, blobBytes: blobBytesOf(image), layers: image.layers.map((l) => l.size) },
      nodes: NODES,
      baseline: `docker-registry (${versionOf('docker-registry', ['--version'])}) in proxy mode`,
      oneCopy,
      site: { ...site, warm },
      proxies: proxyRound,
      ratios,
      target: THIN_TARGET,
      meetsTarget: ratios.siteTimeOverOneCopy <= THIN_TARGET.siteTimeOverOneCopy,
      notes:
        'times are skopeo copy docker:// dir: wall times (process start included), all clients started at once; origin bytes/image = bytes the origin end of the shaped veth sent (ip -s link tx, headers included) / image bytes (manifest, config, layers); origin log = blob body bytes in its access log',
    };

    const row = (cells: string[]) => say(cells.map((cell, i) => (i === 0 ? cell.padEnd(34) : cell.padStart(14))).join(' '));
    say();
    say(`thin uplink (tbf ${RATE}), one cold ${(image.totalBytes / 1e6).toFixed(1)} MB image; every copy verified against its digests`);
    row(['', 'slowest pull', 'vs one copy', 'origin/image', 'origin log', 'CPU busy']);
    row(['one copy (1 client, direct)', secs(oneCopy.slowestMs), '1.00x', `${oneCopy.wireBytesPerImageByte.toFixed(3)}x`, `${oneCopy.originBlobBytesPerBlobByte.toFixed(3)}x`, pct(oneCopy)]);
    row([`Cove site (${NODES} nodes, 1 client each)`, secs(site.slowestMs), `${ratios.siteTimeOverOneCopy.toFixed(2)}x`, `${site.wireBytesPerImageByte.toFixed(3)}x`, `${site.originBlobBytesPerBlobByte.toFixed(3)}x`, pct(site)]);
    row([`  the same site, warm`, secs(warm.slowestMs), `${(warm.slowestMs / oneCopy.slowestMs).toFixed(2)}x`, `${warm.wireBytesPerImageByte.toFixed(3)}x`, `${warm.originBlobBytesPerBlobByte.toFixed(3)}x`, pct(warm)]);
    row([`${NODES} distribution proxies`, secs(proxyRound.slowestMs), `${ratios.proxiesTimeOverOneCopy.toFixed(2)}x`, `${proxyRound.wireBytesPerImageByte.toFixed(3)}x`, `${proxyRound.originBlobBytesPerBlobByte.toFixed(3)}x`, pct(proxyRound)]);
    say(
      `  target: site time / one-copy time ≤ ${THIN_TARGET.siteTimeOverOneCopy}: ${result.meetsTarget ? 'met' : 'NOT met'} (${ratios.siteTimeOverOneCopy.toFixed(2)}x); ` +
        'origin/image = the link\'s tx bytes (headers included) / image bytes; origin log = blob bytes the origin logged / blob bytes',
    );
    say(`  the warm row is the local floor: ${NODES} skopeo clients and ${NODES} Coves on this machine's ${cpus().length} CPUs with nothing to fetch`);
    say('  CPU busy = share of all CPU time on the machine (every process, other work included) while the pulls ran: near 100% means the CPUs, not the link, set the time');
    return result;
  } finally {
    await c.run();
  }
}
