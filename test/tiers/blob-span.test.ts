// Tier.openBlobSpan against every tier — the origin (a registry), a parent (a Cove in front of
// it) and the LAN peers (a Cove that holds the image): exactly the asked bytes with the total
// size, null for a missing blob, and null (not a whole second copy) from a server ignoring Range.
import t, { type Test } from 'tap';
import { pino } from 'pino';
import { PeerClient } from '../../src/peers/client.js';
import { PeerTable } from '../../src/peers/table.js';
import { PeerTier } from '../../src/tiers/peers.js';
import { RegistryTier } from '../../src/tiers/registry.js';
import type { Target, Tier } from '../../src/tiers/tier.js';
import type { UpstreamClient } from '../../src/upstream/client.js';
import { startTestCove } from '../helpers/cove.js';
import { makeImage, type Image } from '../helpers/images.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { pullImage } from '../helpers/site.js';
import { readAll, testClient } from '../upstream/servers.js';

const target: Target = { upstream: 'origin', repo: 'proj/app' };
const MISSING = `sha256:${'0'.repeat(64)}`;
const silent = pino({ level: 'silent' });

type Make = (t: Test, url: string) => Promise<Tier>;

const origin: Make = async (t, url) => RegistryTier.origin(new Map<string, UpstreamClient>([['origin', testClient(t, url)]]));
const parent: Make = async (t, url) => {
  const client = testClient(t, url);
  return new RegistryTier({ name: 'parent:test', kind: 'parent', clientFor: () => client, headers: () => ({ via: '1.1 edge-test (cove)' }) });
};
const peers: Make = async (t, url) => {
  const client = new PeerClient({ selfId: 'edge-test', key: null, timeoutMs: 500, fetchTimeoutMs: 2000, bodyTimeoutMs: 5000 });
  t.teardown(() => client.close());
  const table = new PeerTable({ selfId: 'edge-test', site: 'default', staticUrls: [url], client, log: silent });
  await table.probe();
  return new PeerTier(table, client, silent);
};

async function serve(t: Test, kind: 'origin' | 'parent' | 'peers', image: Image): Promise<{ url: string; registry: OriginRegistry }> {
  const registry = await OriginRegistry.start();
  t.teardown(() => registry.close());
  registry.putImage('proj/app', '1', image);
  if (kind === 'origin') return { url: registry.url, registry };
  const cove = await startTestCove(t, registry.url, { COVE_NODE_ID: 'holder' });
  // A parent or a peer answers a Range from what it holds.
  await pullImage(cove.url, 'proj/app', '1', image);
  await cove.fillsDone();
  return { url: cove.url, registry };
}

for (const [kind, make] of [['origin', origin], ['parent', parent], ['peers', peers]] as const) {
  t.test(`${kind} tier: a blob span`, async (t) => {
    const image = makeImage({ layers: [50_000], seed: `span-${kind}` });
    const layer = image.layers[0]!;
    const { url } = await serve(t, kind, image);
    const tier = await make(t, url);

    const span = await tier.openBlobSpan(target, layer.digest, 49_000, 49_999);
    t.ok(span, 'the span is found');
    t.equal(span!.offset, 49_000);
    t.equal(span!.size, layer.bytes.length, 'the total size comes with it');
    t.same(await readAll(span!.body), layer.bytes.subarray(49_000, 50_000), 'exactly the asked bytes');
    const first = await tier.openBlobSpan(target, layer.digest, 0, 0);
    t.same(await readAll(first!.body), layer.bytes.subarray(0, 1), 'a one-byte span');
    t.equal(await tier.openBlobSpan(target, MISSING, 0, 9), null, 'a missing blob is null');
  });
}

t.test('origin tier: a server that ignores Range gives null, not the whole blob as a span', async (t) => {
  const image = makeImage({ layers: [50_000], seed: 'span-ignored' });
  const layer = image.layers[0]!;
  const { url, registry } = await serve(t, 'origin', image);
  registry.setFault({ digest: layer.digest }, { type: 'ignore-range' });
  const tier = await origin(t, url);
  t.equal(await tier.openBlobSpan(target, layer.digest, 100, 199), null);
});
