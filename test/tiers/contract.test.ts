// One suite, every tier: the origin (a registry), a parent (a Cove in front of it) and the LAN
// peers (a Cove that holds the image) must answer the Tier interface the same way — exact
// manifest bytes by digest, whole and resumed blobs, null for what they lack, and no hang when
// the tier is unreachable.
import t, { type Test } from 'tap';
import { pino } from 'pino';
import { UpstreamUnavailableError } from '../../src/errors.js';
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

const ALL = ['application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.oci.image.manifest.v1+json'];
const target: Target = { upstream: 'origin', repo: 'proj/app' };
const MISSING = `sha256:${'0'.repeat(64)}`;
const DEAD = 'http://127.0.0.1:9';
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

/** Where each tier's content lives: the registry itself, or a Cove holding the image. */
async function serve(t: Test, kind: 'origin' | 'parent' | 'peers', image: Image): Promise<string> {
  const registry = await OriginRegistry.start();
  t.teardown(() => registry.close());
  registry.putImage('proj/app', '1', image);
  if (kind === 'origin') return registry.url;
  const cove = await startTestCove(t, registry.url, { COVE_NODE_ID: 'holder' });
  if (kind === 'peers') {
    // A peer answers only from what it holds: pull the image through it first.
    await pullImage(cove.url, 'proj/app', '1', image);
    await cove.fillsDone();
  }
  return cove.url;
}

for (const [kind, make] of [['origin', origin], ['parent', parent], ['peers', peers]] as const) {
  t.test(`${kind} tier`, async (t) => {
    const image = makeImage({ layers: [5000], seed: `contract-${kind}`, mediaType: 'oci' });
    const layer = image.layers[0]!;
    const tier = await make(t, await serve(t, kind, image));

    const m = await tier.getManifest(target, image.manifestDigest, ALL);
    t.ok(m, 'a manifest by digest is found');
    t.same(m!.bytes, image.manifest, 'exact manifest bytes');
    t.equal(m!.digest, image.manifestDigest);
    t.equal(m!.mediaType, image.mediaType, 'the true media type');
    t.equal(await tier.getManifest(target, MISSING, ALL), null, 'a missing manifest is null');

    const whole = await tier.openBlob(target, layer.digest, 0);
    t.ok(whole, 'a blob is found');
    t.equal(whole!.size, layer.bytes.length);
    t.same(await readAll(whole!.body), layer.bytes, 'whole blob bytes');
    const rest = await tier.openBlob(target, layer.digest, 1000);
    t.equal(rest!.offset, 1000);
    t.equal(rest!.size, layer.bytes.length, 'a resume still tells the total size');
    t.same(await readAll(rest!.body), layer.bytes.subarray(1000), 'a resume starts at the byte asked for');
    t.equal(await tier.openBlob(target, MISSING, 0), null, 'a missing blob is null');
    const head = await tier.headBlob(target, layer.digest);
    t.equal(head?.size, layer.bytes.length, 'HEAD tells the size');
  });

  t.test(`${kind} tier, unreachable: fails or answers null, quickly`, async (t) => {
    const tier = await make(t, DEAD);
    const started = Date.now();
    for (const ask of [() => tier.getManifest(target, MISSING, ALL), () => tier.openBlob(target, MISSING, 0)]) {
      const outcome = await ask().then(
        (v) => (v === null ? 'null' : 'value'),
        (err: unknown) => (err instanceof UpstreamUnavailableError ? 'unavailable' : `other: ${String(err)}`),
      );
      t.ok(outcome === 'null' || outcome === 'unavailable', `answer: ${outcome}`);
    }
    t.ok(Date.now() - started < 5000, 'within the tier timeout');
  });
}
