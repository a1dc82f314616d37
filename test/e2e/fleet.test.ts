// A fleet, simulated (issue 16): three sites of three Coves, each site behind its own thin link
// (tbf, 200 mbit/s) to a regional parent Cove, the parent behind a thin link to the origin
// (Debian's docker-registry). Every host is a network namespace made here (test/helpers/
// shaped-net.ts): a site reaches only the parent, the parent only the origin.
//   1. A cold image pulled through every node of every site at once (nine skopeo processes,
//      each inside its site's namespace): every copy hashes to the pushed digests.
//   2. The origin sent about one copy: its access log's blob bytes ≤ 1.05× the image's blobs.
//   3. Each link carried about one copy: the bytes the veth's upper end sent down (`ip -s link`,
//      frames with their TCP/IP and HTTP headers) ≤ 1.10× the image.
//   4. The per-tier counters on /metrics add up: the parent fetched one copy from the origin; per
//      site, the nodes' bytes fetched from the parent add up to one copy, and every node fetched
//      (parent + siblings) at least the image's blobs.
//   5. The origin stops: every node still serves the image (past the tag TTL, so each node asks
//      the parent, which answers from what it holds), byte for byte; and a new site of one Cove,
//      started cold now behind its own thin link, pulls the image from what the parent holds.
// The "one copy per site" assertions (3, 4) are the target of the site's ownership work; the
// numbers observed are printed as comments either way.
import t, { type Test } from 'tap';
import { join } from 'node:path';
import { Cleanup, requireTools, tempDir } from './real.js';
import {
  THIN_LINK,
  addSite,
  blobBytesOf,
  copyProblems,
  fillsDone,
  fleetLinkBytes,
  fleetTierBytes,
  pullEverywhere,
  skopeoPullIn,
  startFleet,
  type NodePull,
} from '../helpers/shaped-net.js';

const MiB = 1024 * 1024;
const LAYERS = [8 * MiB, 6 * MiB, 4 * MiB, 2 * MiB];
const SITES = 3;
const NODES = 3;
/** Bound of one skopeo pull (the pulls of a round run at once); the whole test is bounded by its tap timeout. */
const PULL_MS = 90_000;

const mb = (n: number) => `${(n / 1e6).toFixed(2)} MB`;
const badPulls = (pulls: NodePull[]) => pulls.filter((p) => p.problems.length > 0).map((p) => `${p.node}: ${p.problems.join('; ')}`);
/** The failed pulls, one comment line each (tap's diff wraps long strings past reading). */
const tellBad = (t: Test, pulls: NodePull[]) => badPulls(pulls).forEach((line) => t.comment(line));

t.test('three sites behind thin links to a regional Cove: one copy per link, and the fleet serves on with the origin gone', { timeout: 180_000 }, async (t) => {
  if (!requireTools(t, ['docker-registry', 'skopeo'])) return;
  const cleanup = Cleanup.forTest(t);
  const work = tempDir(cleanup, 'cove-fleet-');
  const fleet = await startFleet(t, cleanup, {
    sites: SITES,
    nodesPerSite: NODES,
    layerBytes: LAYERS,
    rate: THIN_LINK.rate,
    work,
    seed: `fleet-${Date.now()}`,
    // A short tag TTL: after the origin stops, every pull revalidates through the parent.
    coveEnv: { COVE_TAG_TTL: '2s', COVE_UPSTREAM_TIMEOUT: '2s' },
  });
  if (!fleet) return;
  const image = fleet.image;
  const blobBytes = blobBytesOf(image);
  t.comment(`image ${mb(image.totalBytes)} (${image.layers.length} layers, blobs ${mb(blobBytes)}); links tbf ${THIN_LINK.rate}; ${fleet.coves.length} Coves up`);

  // ---- 1. the cold pull, everywhere at once
  fleet.origin.markNow();
  const before = await fleetLinkBytes(fleet);
  const t0 = performance.now();
  const pulls = await pullEverywhere(fleet, join(work, 'out'), PULL_MS);
  const wallMs = performance.now() - t0;
  tellBad(t, pulls);
  t.same(badPulls(pulls), [], `all ${pulls.length} nodes pulled the image, every blob and the manifest hashing to the pushed digests`);
  t.comment(`cold pull: all ${pulls.length} nodes in ${(wallMs / 1000).toFixed(1)} s; per node ${pulls.map((p) => `${p.node} ${(p.ms / 1000).toFixed(1)} s`).join(', ')}`);
  await fillsDone(fleet.coves);
  await fleet.net.quiet(1000, 20_000);

  // ---- 2. the origin sent one copy
  const served = fleet.origin.blobGetsSinceMark();
  t.ok(served.bytes >= blobBytes && served.bytes <= 1.05 * blobBytes, `the origin served ${mb(served.bytes)} of blobs in ${served.requests} GETs for ${pulls.length} nodes (${(served.bytes / blobBytes).toFixed(3)}× the image's blobs; target ≤ 1.05×)`);

  // ---- 3. each link carried one copy
  const after = await fleetLinkBytes(fleet);
  const originLink = after.origin - before.origin;
  t.ok(originLink <= 1.1 * image.totalBytes, `origin→parent link carried ${mb(originLink)} = ${(originLink / image.totalBytes).toFixed(3)}× the image (target ≤ 1.10×, headers included)`);
  for (const [i, s] of fleet.sites.entries()) {
    const carried = after.sites[i]! - before.sites[i]!;
    t.ok(carried <= 1.1 * image.totalBytes, `parent→${s.name} link carried ${mb(carried)} = ${(carried / image.totalBytes).toFixed(3)}× the image (target ≤ 1.10×, headers included)`);
  }

  // ---- 4. the counters add up
  const tiers = await fleetTierBytes(fleet);
  t.ok(
    tiers.parentFromOrigin >= blobBytes && tiers.parentFromOrigin <= 1.05 * image.totalBytes,
    `the parent fetched ${mb(tiers.parentFromOrigin)} from the origin (${(tiers.parentFromOrigin / image.totalBytes).toFixed(3)}× the image)`,
  );
  for (const [i, s] of tiers.sites.entries()) {
    const name = fleet.sites[i]!.name;
    t.comment(`${name}: ${s.perNode.map((p) => `${p.node} ${JSON.stringify(p.tiers)}`).join('; ')}`);
    t.equal(s.fromOrigin, 0, `${name}'s nodes fetched nothing from the origin (they have no route to it)`);
    t.ok(
      s.fromParent >= blobBytes && s.fromParent <= 1.05 * image.totalBytes,
      `${name}'s nodes fetched ${mb(s.fromParent)} from the parent in all (${(s.fromParent / image.totalBytes).toFixed(3)}× the image; target one copy, ≤ 1.05×) and ${mb(s.fromPeers)} from each other`,
    );
    const short = s.perNode.filter((p) => Object.entries(p.tiers).reduce((n, [k, v]) => n + (k === 'origin' ? 0 : v), 0) < blobBytes);
    t.same(short.map((p) => p.node), [], `every node of ${name} fetched at least the image's blobs from the parent and its siblings`);
  }

  // ---- 5. the origin stops; the fleet serves on
  await fleet.origin.stop();
  t.notOk(fleet.origin.proc.running, 'the origin is stopped');
  await new Promise((r) => setTimeout(r, 2500)); // past the tag TTL
  const t1 = performance.now();
  const again = await pullEverywhere(fleet, join(work, 'out2'), PULL_MS);
  tellBad(t, again);
  t.same(badPulls(again), [], `with the origin down, all ${again.length} nodes still serve the image, byte for byte`);
  t.comment(`origin down: all ${again.length} nodes in ${((performance.now() - t1) / 1000).toFixed(1)} s`);

  // ---- a site that joins now, cold, with the origin still down: all it gets is what the parent holds
  const late = await addSite(fleet, cleanup, 'late', 1);
  const lateBefore = await fleet.net.downBytes(late.link);
  const latePull = await skopeoPullIn(fleet.net, late.name, `${late.nodes[0]!.hostPort}/${fleet.repo}:${fleet.tag}`, join(work, 'late'), PULL_MS).then(
    () => copyProblems(join(work, 'late'), image),
    (err: unknown) => [err instanceof Error ? err.message : String(err)],
  );
  t.same(latePull, [], 'a new site started with the origin down pulls the image, byte for byte, from the parent');
  const lateTiers = await late.nodes[0]!.fetched();
  const lateFromParent = Object.entries(lateTiers).reduce((n, [k, v]) => n + (k.startsWith('parent:') ? v : 0), 0);
  t.ok(lateFromParent >= blobBytes, `the new site's node fetched ${mb(lateFromParent)} from the parent`, { tiers: lateTiers });
  const lateCarried = (await fleet.net.downBytes(late.link)) - lateBefore;
  t.ok(lateCarried >= blobBytes && lateCarried <= 1.1 * image.totalBytes, `parent→late link carried ${mb(lateCarried)} = ${(lateCarried / image.totalBytes).toFixed(3)}× the image`);

  const stopped = [...fleet.coves, ...late.nodes].filter((c) => !c.proc.running).map((c) => c.id);
  t.same(stopped, [], 'every Cove is still running');
});
