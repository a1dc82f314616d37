// The "fleet" scenario of `npm run bench` (issue 16, part 5): three sites of three Coves, each
// site behind its own thin link (tbf 200 mbit/s) to a regional parent Cove, the parent behind a
// thin link to the origin (Debian's docker-registry); every host a network namespace
// (test/helpers/shaped-net.ts startFleet, the same fleet as test/e2e/fleet.test.ts). In one run:
//   1. one copy: one skopeo in the parent's namespace pulls the image straight from the origin
//      over its thin link (a reference time);
//   2. the cold ~50 MB image pulled through all nine site nodes at once (one skopeo each, inside
//      its site's namespace): the slowest node, the bytes each link carried down (`ip -s link` on
//      the upper end's veth, headers included), the origin's blob bytes (its access log), and what
//      each Cove's /metrics says it fetched from which tier;
//   3. the origin stopped: the nine pulls again, past the 2 s tag TTL (each revalidates through the
//      parent, which answers from what it holds).
// Every copy is hashed against the pushed digests. Prints a table and redraws bench/fleet.svg
// (scripts/fleet-figure.ts) from the measured numbers.
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Cleanup, ROOT, tempDir } from '../test/e2e/real.js';
import {
  THIN_LINK,
  blobBytesOf,
  copyProblems,
  fillsDone,
  fleetLinkBytes,
  fleetTierBytes,
  pullEverywhere,
  skopeoPullIn,
  startFleet,
  type NodePull,
} from '../test/helpers/shaped-net.js';
import { fleetSvg } from './fleet-figure.js';
import { busyShare, cpuTicks } from './bench-thin.js';

const MiB = 1024 * 1024;
const LAYERS = [16 * MiB, 12 * MiB, 10 * MiB, 6 * MiB, 4 * MiB];
const SITES = 3;
const NODES = 3;
const PULL_LIMIT_MS = 180_000;
const TAG_TTL = '2s';

export interface FleetResult {
  link: typeof THIN_LINK;
  sites: number;
  nodesPerSite: number;
  image: { totalBytes: number; blobBytes: number; layers: number[] };
  /** One skopeo pulling straight from the origin over one thin link. */
  oneCopyMs: number;
  cold: {
    pullMs: Record<string, number>;
    /** Share of the machine's CPU time busy during the pulls (every process; see bench-thin.ts cpuTicks). */
    cpuBusy: number;
    slowestMs: number;
    /** Bytes down each link (veth tx, headers included). */
    links: { originToParent: number; parentToSite: number[] };
    /** Blob body bytes in the origin's access log, and its blob GETs. */
    originBlobBytes: number;
    originBlobGets: number;
    /** From /metrics: the parent's bytes from the origin; per site, its nodes' bytes from the parent, siblings and origin. */
    tiers: { parentFromOrigin: number; sites: Array<{ fromParent: number; fromPeers: number; fromOrigin: number; perNode: Array<{ node: string; tiers: Record<string, number> }> }> };
  };
  originDown: { pullMs: Record<string, number>; slowestMs: number; cpuBusy: number; links: { originToParent: number; parentToSite: number[] } };
  notes: string;
}

const secs = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const byNode = (pulls: NodePull[]) => Object.fromEntries(pulls.map((p) => [p.node, Math.round(p.ms)]));

function checkPulls(pulls: NodePull[], what: string): void {
  const bad = pulls.filter((p) => p.problems.length > 0);
  if (bad.length > 0) throw new Error(`fleet: ${what}: ${bad.map((p) => `${p.node}: ${p.problems.join('; ')}`).join(' | ')}`);
}

export async function fleetScenario(say: (line?: string) => void, svgFile = join(ROOT, 'bench', 'fleet.svg')): Promise<FleetResult> {
  const c = new Cleanup();
  try {
    const work = tempDir(c, 'cove-fleetb-');
    const fleet = (await startFleet(null, c, {
      sites: SITES,
      nodesPerSite: NODES,
      layerBytes: LAYERS,
      rate: THIN_LINK.rate,
      work,
      seed: `fleet-bench-${Date.now()}`,
      coveEnv: { COVE_TAG_TTL: TAG_TTL, COVE_UPSTREAM_TIMEOUT: '2s' },
    }))!;
    const image = fleet.image;
    const blobBytes = blobBytesOf(image);
    say(
      `fleet: ${SITES} sites of ${NODES} Coves, each site behind tbf ${THIN_LINK.rate} to a regional parent Cove, the parent behind tbf ${THIN_LINK.rate} to the origin; ` +
        `a cold ${(image.totalBytes / 1e6).toFixed(1)} MB image (${image.layers.length} layers)`,
    );

    // 1. One copy over one thin link, for reference (before anything is marked or counted).
    const oneOut = join(work, 'one');
    const oneCopyMs = await skopeoPullIn(fleet.net, 'parent', `${fleet.originLink.up.address}:5000/${fleet.repo}:${fleet.tag}`, oneOut, PULL_LIMIT_MS);
    const oneProblems = copyProblems(oneOut, image);
    if (oneProblems.length > 0) throw new Error(`fleet: the one-copy pull got bad bytes: ${oneProblems.join('; ')}`);
    say(`  one copy straight from the origin over one thin link: ${secs(oneCopyMs)}`);
    await fleet.net.quiet(500, 10_000);

    // 2. The cold pull everywhere.
    fleet.origin.markNow();
    const before = await fleetLinkBytes(fleet);
    const cpu0 = cpuTicks();
    const cold = await pullEverywhere(fleet, join(work, 'cold'), PULL_LIMIT_MS);
    const coldCpuBusy = busyShare(cpu0, cpuTicks());
    checkPulls(cold, 'cold pull');
    await fillsDone(fleet.coves);
    await fleet.net.quiet(1500, 60_000);
    const after = await fleetLinkBytes(fleet);
    const served = fleet.origin.blobGetsSinceMark();
    const tiers = await fleetTierBytes(fleet);
    const coldLinks = { originToParent: after.origin - before.origin, parentToSite: after.sites.map((b, i) => b - before.sites[i]!) };
    const coldSlowest = Math.max(...cold.map((p) => p.ms));
    say(`  cold pull on all ${cold.length} nodes: slowest ${secs(coldSlowest)} (${cold.map((p) => `${p.node} ${secs(p.ms)}`).join(', ')}), CPUs ${(100 * coldCpuBusy).toFixed(0)}% busy`);

    // 3. The origin stops; the same pulls past the tag TTL.
    await fleet.origin.stop();
    await new Promise((r) => setTimeout(r, 2500));
    const beforeDown = await fleetLinkBytes(fleet);
    const cpu1 = cpuTicks();
    const down = await pullEverywhere(fleet, join(work, 'down'), PULL_LIMIT_MS);
    const downCpuBusy = busyShare(cpu1, cpuTicks());
    checkPulls(down, 'pull with the origin down');
    const afterDown = await fleetLinkBytes(fleet);
    const downLinks = { originToParent: afterDown.origin - beforeDown.origin, parentToSite: afterDown.sites.map((b, i) => b - beforeDown.sites[i]!) };
    const downSlowest = Math.max(...down.map((p) => p.ms));
    say(`  origin down, all ${down.length} nodes again: slowest ${secs(downSlowest)}, CPUs ${(100 * downCpuBusy).toFixed(0)}% busy`);

    const result: FleetResult = {
      link: THIN_LINK,
      sites: SITES,
      nodesPerSite: NODES,
      image: { totalBytes: image.totalBytes, blobBytes, layers: image.layers.map((l) => l.size) },
      oneCopyMs,
      cold: { pullMs: byNode(cold), cpuBusy: coldCpuBusy, slowestMs: coldSlowest, links: coldLinks, originBlobBytes: served.bytes, originBlobGets: served.requests, tiers },
      originDown: { pullMs: byNode(down), slowestMs: downSlowest, cpuBusy: downCpuBusy, links: downLinks },
      notes:
        'link bytes = what the upper end of each shaped veth sent down (ip -s link tx: frames with TCP/IP and HTTP headers); origin blob bytes from its access log; per-tier bytes from each Cove\'s /metrics (cove_fetched_bytes_total); times are skopeo copy docker:// dir: wall times inside the namespaces, all nine started at once',
    };

    const x = (n: number) => `${(n / image.totalBytes).toFixed(3)}x`;
    const row = (cells: string[]) => say(cells.map((cell, i) => (i === 0 ? cell.padEnd(30) : cell.padStart(14))).join(' '));
    say();
    say(`fleet: ${SITES} sites x ${NODES} Coves behind tbf ${THIN_LINK.rate} links; one cold ${(image.totalBytes / 1e6).toFixed(1)} MB image pulled on every node at once; every copy verified`);
    row(['link / tier', 'MB', 'x image']);
    row(['origin -> parent (wire)', (coldLinks.originToParent / 1e6).toFixed(2), x(coldLinks.originToParent)]);
    row(['  origin access log, blobs', (served.bytes / 1e6).toFixed(2), x(served.bytes)]);
    row(['  parent /metrics from origin', (tiers.parentFromOrigin / 1e6).toFixed(2), x(tiers.parentFromOrigin)]);
    for (const [i, s] of fleet.sites.entries()) {
      const t = tiers.sites[i]!;
      row([`parent -> ${s.name} (wire)`, (coldLinks.parentToSite[i]! / 1e6).toFixed(2), x(coldLinks.parentToSite[i]!)]);
      row([`  ${s.name} /metrics from parent`, (t.fromParent / 1e6).toFixed(2), x(t.fromParent)]);
      row([`  ${s.name} /metrics between peers`, (t.fromPeers / 1e6).toFixed(2), x(t.fromPeers)]);
    }
    say(`  time: one copy over one link ${secs(oneCopyMs)}; all ${cold.length} nodes cold ${secs(coldSlowest)} (${(coldSlowest / oneCopyMs).toFixed(2)}x one copy, CPUs ${(100 * coldCpuBusy).toFixed(0)}% busy); origin down ${secs(downSlowest)}`);
    say(`  origin down: links carried ${(downLinks.originToParent / 1e6).toFixed(3)} MB to the parent and ${downLinks.parentToSite.map((b) => (b / 1e6).toFixed(3)).join(' / ')} MB to the sites`);

    mkdirSync(join(svgFile, '..'), { recursive: true });
    writeFileSync(
      svgFile,
      fleetSvg({
        title: `A simulated fleet: ${SITES} sites × ${NODES} Coves pull one cold ${(image.totalBytes / 1e6).toFixed(1)} MB image at once`,
        subtitle: `every link tbf ${THIN_LINK.rate}; slowest node ${secs(coldSlowest)} (one copy over one link: ${secs(oneCopyMs)}); measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC`,
        imageBytes: image.totalBytes,
        originLinkBytes: coldLinks.originToParent,
        originServedBytes: served.bytes,
        sites: fleet.sites.map((s, i) => ({
          name: s.name,
          linkBytes: coldLinks.parentToSite[i]!,
          nodes: s.nodes.map((n) => {
            const t = tiers.sites[i]!.perNode.find((p) => p.node === n.id)!.tiers;
            const sum = (pick: (k: string) => boolean) => Object.entries(t).reduce((m, [k, v]) => m + (pick(k) ? v : 0), 0);
            return { id: n.id, seconds: (cold.find((p) => p.node === n.id)?.ms ?? NaN) / 1000, fromParent: sum((k) => k.startsWith('parent:')), fromPeers: sum((k) => k.startsWith('peer:')) };
          }),
        })),
        notes: [
          'Link labels: bytes the upper end of each shaped veth sent down (ip -s link tx, TCP/IP and HTTP headers included), and that over the image size.',
          'Node boxes: skopeo pull time, and bytes the node fetched from the parent and from its siblings (its /metrics, cove_fetched_bytes_total).',
          `With the origin then stopped, all ${down.length} nodes pulled the image again in ${secs(downSlowest)} (slowest), from what the parent and the sites held.`,
          `All ten Coves and nine clients ran on one machine (${cpus().length} CPUs, ${(100 * coldCpuBusy).toFixed(0)}% busy during the cold pull): the CPUs, not the links, set these times.`,
          'npm run bench -- --only fleet (scripts/bench-fleet.ts) drew this; every copy was hashed against the pushed digests.',
        ],
      }),
    );
    say(`  wrote ${svgFile}`);
    return result;
  } finally {
    await c.run();
  }
}
