// The pace of revalidations: the bound on tier asks at once, their first-come order, slots
// released by failed asks, and the random delay that spreads revalidations over the window after a
// recovery — only then: never while the tier is marked down or when it was never down. Then the
// pace in a ManifestResolver: a revalidation waiting its turn is not the tier's silence.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import t, { type Test } from 'tap';
import { Counters } from '../../src/metrics.js';
import { ManifestResolver } from '../../src/resolve/manifests.js';
import { Resolver } from '../../src/resolve/resolver.js';
import { RevalidationPace } from '../../src/resolve/revalidation-pace.js';
import { BlobStore } from '../../src/store/blobs.js';
import { Catalog } from '../../src/store/catalog.js';
import type { Tier } from '../../src/tiers/tier.js';
import { makeImage } from '../helpers/images.js';

/** A promise with its resolve and reject at hand. */
function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: Error) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/** Lets every queued promise callback run. */
const settle = () => new Promise((r) => setImmediate(r));
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

t.test('at most `concurrency` asks at once; the others wait, first come first asked', async (t) => {
  const pace = new RevalidationPace({ concurrency: 2, spreadMs: 0 });
  const started: number[] = [];
  const gates = Array.from({ length: 5 }, () => deferred<string>());
  let running = 0;
  let peak = 0;
  const runs = gates.map((gate, i) =>
    pace.run(0, async () => {
      started.push(i);
      running++;
      peak = Math.max(peak, running);
      try {
        return await gate.promise;
      } finally {
        running--;
      }
    }),
  );
  await settle();
  t.same(started, [0, 1], 'two asks went out');
  t.equal(pace.running, 2);
  t.equal(pace.waiting, 3, 'three wait for a slot');
  gates[3]!.resolve('early'); // answering before being asked changes nothing for the order
  gates[1]!.resolve('b');
  await settle();
  t.same(started, [0, 1, 2], 'a freed slot goes to the oldest waiter');
  gates[0]!.resolve('a');
  gates[2]!.resolve('c');
  await settle();
  t.same(started, [0, 1, 2, 3, 4], 'then the next ones, in the order they came');
  gates[4]!.resolve('e');
  t.same(await Promise.all(runs), ['a', 'b', 'c', 'early', 'e'], 'each run answers its own ask');
  t.equal(peak, 2, 'never more than two at once');
  t.equal(pace.running, 0, 'every slot released');
  t.equal(pace.waiting, 0);
});

t.test('a failed ask releases its slot and its run rejects with the error', async (t) => {
  const pace = new RevalidationPace({ concurrency: 1, spreadMs: 0 });
  const gate = deferred<string>();
  const first = pace.run(0, () => gate.promise);
  let secondAsked = false;
  const second = pace.run(0, async () => {
    secondAsked = true;
    return 'second';
  });
  const thrown = pace.run(0, async () => {
    throw new Error('connection refused');
  });
  await settle();
  t.notOk(secondAsked, 'the second waits while the first holds the only slot');
  gate.reject(new Error('upstream reset'));
  await t.rejects(first, /upstream reset/, 'the first run rejects with its ask\'s error');
  t.equal(await second, 'second', 'the slot went on to the next ask');
  await t.rejects(thrown, /connection refused/);
  t.equal(await pace.run(0, async () => 'after'), 'after', 'and a slot is free again after a thrown ask');
  t.equal(pace.running, 0);
});

t.test('no delay while the tier is marked down, when it was never down, or with the spread off', async (t) => {
  const pace = new RevalidationPace({ concurrency: 4, spreadMs: 10_000, random: () => 0.99, now: () => 50_000 });
  t.equal(pace.delayFor(null), 0, 'marked down: ask at once, it fails fast');
  t.equal(pace.delayFor(0), 0, 'never down: normal operation does not wait');
  t.equal(pace.delayFor(30_000), 0, 'recovered longer ago than the spread: no delay');
  t.equal(pace.delayFor(40_000), 0, 'the window just closed');
  const off = new RevalidationPace({ concurrency: 4, spreadMs: 0, random: () => 0.99, now: () => 50_000 });
  t.equal(off.delayFor(49_999), 0, 'COVE_RECOVERY_SPREAD=0: never a delay');
  // Asked at once means within the same turn of the event loop, before any timer could fire.
  for (const upSince of [null, 0]) {
    let asked = false;
    const run = pace.run(upSince, async () => {
      asked = true;
      return 'ok';
    });
    await settle();
    t.ok(asked, `upSince ${upSince}: asked without waiting`);
    t.equal(await run, 'ok');
  }
});

t.test('right after a recovery, a random share of what is left of the window', async (t) => {
  let now = 100_000;
  let random = 0.5;
  const pace = new RevalidationPace({ concurrency: 4, spreadMs: 4000, random: () => random, now: () => now });
  // Recovered at 99 000: 3 s of the 4 s window are left.
  t.equal(pace.delayFor(99_000), 1500, 'half of the 3 s left');
  random = 0;
  t.equal(pace.delayFor(99_000), 0, 'the start of what is left');
  random = 0.9999;
  t.ok(pace.delayFor(99_000) < 3000, 'never past the window\'s end');
  t.equal(pace.delayFor(99_000), 2999);
  now = 102_500;
  random = 0.5;
  t.equal(pace.delayFor(99_000), 250, 'later in the window, less is left to spread over');
  // Many revalidations with evenly spread random numbers land evenly over what is left.
  now = 100_000;
  const delays = Array.from({ length: 10 }, (_, i) => {
    random = i / 10;
    return pace.delayFor(100_000);
  });
  t.same(delays, [0, 400, 800, 1200, 1600, 2000, 2400, 2800, 3200, 3600], 'spread over the whole window after a recovery just now');
});

t.test('the delay is really waited, before the ask takes a slot', async (t) => {
  // The pace's timers do not hold the process open (shutdown must not wait for them): this does.
  const keepAlive = setTimeout(() => undefined, 5000);
  t.teardown(() => clearTimeout(keepAlive));
  const recoveredAt = Date.now();
  const pace = new RevalidationPace({ concurrency: 1, spreadMs: 600, random: () => 0.5 });
  const started = Date.now();
  let delayedAsked = false;
  const delayed = pace.run(recoveredAt, async () => {
    delayedAsked = true;
    return Date.now() - started;
  });
  // While the first waits out its delay it holds no slot: an ask for a tier never down goes first.
  const other = await pace.run(0, async () => 'not delayed');
  t.equal(other, 'not delayed');
  t.notOk(delayedAsked, 'the delayed ask has not gone out yet');
  const waited = await delayed;
  t.ok(waited >= 250, `waited about half the window (${waited} ms; about 300 expected)`);
});

t.test('bad settings are refused', async (t) => {
  t.throws(() => new RevalidationPace({ concurrency: 0, spreadMs: 0 }), RangeError);
  t.throws(() => new RevalidationPace({ concurrency: 1.5, spreadMs: 0 }), RangeError);
  t.throws(() => new RevalidationPace({ concurrency: 1, spreadMs: -1 }), RangeError);
});

/** A ManifestResolver over one fake origin tier whose HEADs the test holds, times and counts. */
async function resolverWith(t: Test, pace: RevalidationPace, upSince: () => number | null) {
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-pace-'));
  const log = pino({ level: 'silent' });
  const store = new BlobStore(dataDir);
  await store.open();
  const catalog = await Catalog.open(dataDir, store, log);
  t.teardown(async () => {
    await catalog.close();
    rmSync(dataDir, { recursive: true, force: true });
  });
  const image = makeImage({ layers: [100], seed: 'pace-resolver' });
  const heads: number[] = [];
  const suspects: Array<{ at: number; since: number }> = [];
  let headGate: Promise<void> = Promise.resolve();
  const manifest = { bytes: image.manifest, digest: image.manifestDigest, mediaType: image.mediaType, size: image.manifest.length };
  const notHere = async () => null;
  const tier: Tier = {
    name: 'origin',
    kind: 'origin',
    headManifest: async () => {
      heads.push(Date.now());
      await headGate;
      return { digest: manifest.digest, mediaType: manifest.mediaType, size: manifest.size };
    },
    getManifest: async () => manifest,
    headBlob: notHere,
    openBlob: notHere,
    openBlobSpan: notHere,
    listTags: notHere,
    referrers: notHere,
    suspect: (_target, _reason, since) => {
      suspects.push({ at: Date.now(), since });
    },
    upSince: () => upSince(),
  };
  let clock = 1_000_000;
  const manifests = new ManifestResolver({
    store,
    catalog,
    resolver: new Resolver([tier], log),
    counters: new Counters(),
    log,
    tagTtlMs: 60_000,
    revalidateDeadlineMs: 300,
    revalidationPace: pace,
    now: () => clock,
  });
  const target = { upstream: 'origin', repo: 'proj/app' };
  const pull = () => manifests.byTag(target, 'v1', [image.mediaType]);
  return {
    image,
    heads,
    suspects,
    pull,
    /** Moves the resolver's clock past the TTL. */
    age: () => {
      clock += 120_000;
    },
    /** HEADs from now on wait until the returned function is called. */
    holdHeads: () => {
      let release!: () => void;
      headGate = new Promise((r) => (release = r));
      return release;
    },
  };
}

t.test('a revalidation still waiting its turn past the deadline: stale answer, and the tier is not marked down', async (t) => {
  const keepAlive = setTimeout(() => undefined, 5000);
  t.teardown(() => clearTimeout(keepAlive));
  const recoveredAt = Date.now();
  // Just recovered, a 1.6 s window, the middle of it drawn: the HEAD waits about 800 ms.
  const r = await resolverWith(t, new RevalidationPace({ concurrency: 8, spreadMs: 1600, random: () => 0.5 }), () => recoveredAt);
  t.equal((await r.pull()).cache, 'miss', 'cached');
  r.age();
  const started = Date.now();
  const stale = await r.pull();
  t.equal(stale.cache, 'stale', 'stale at the deadline');
  t.equal(stale.digest, r.image.manifestDigest);
  t.equal(r.heads.length, 0, 'the HEAD has not gone out yet: it waits its turn in the recovery window');
  t.same(r.suspects, [], 'waiting is not the tier\'s silence: it is not marked down');
  for (let i = 0; i < 60 && r.heads.length === 0; i++) await sleep(50);
  t.equal(r.heads.length, 1, 'then the revalidation asks');
  t.ok(r.heads[0]! - started >= 500, `after its delay (${r.heads[0]! - started} ms; about 800 expected)`);
  await sleep(50);
  t.equal((await r.pull()).cache, 'hit', 'and the tag is fresh again');
  t.same(r.suspects, []);
});

t.test('asked late in its deadline and then silent: marked down once the tier has had the whole deadline', async (t) => {
  const keepAlive = setTimeout(() => undefined, 5000);
  t.teardown(() => clearTimeout(keepAlive));
  const recoveredAt = Date.now();
  // The HEAD goes out about 200 ms into the 300 ms deadline, and never answers.
  const r = await resolverWith(t, new RevalidationPace({ concurrency: 8, spreadMs: 400, random: () => 0.5 }), () => recoveredAt);
  await r.pull();
  r.age();
  const release = r.holdHeads();
  t.teardown(release);
  const stale = await r.pull();
  t.equal(stale.cache, 'stale', 'stale at the deadline');
  t.equal(r.heads.length, 1, 'the HEAD went out during the deadline');
  t.same(r.suspects, [], 'but it has kept silent only part of it: not marked down yet');
  for (let i = 0; i < 40 && r.suspects.length === 0; i++) await sleep(25);
  t.equal(r.suspects.length, 1, 'marked down once its own deadline was up');
  const { at, since } = r.suspects[0]!;
  t.ok(at - since >= 290, `silent for the whole deadline first (${at - since} ms)`);
  // Two clock readings of one moment (the resolver's, the test tier's) may straddle a millisecond.
  t.ok(Math.abs(since - r.heads[0]!) <= 5, `counted from when the tier was asked (${since} vs ${r.heads[0]})`);
  release();
});
