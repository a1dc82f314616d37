// `node dist/scripts/bench-startup.js [--blobs N] [--runs R]`: what the start-up reconcile
// (src/store/reconcile.ts) costs. A temp data dir is filled with N small blob files (default
// 100,000: images of one manifest, one config and layers) and their index records; then the
// start-up path of main.ts — Catalog open and Evictor.start — is timed in a fresh child process
// per run, against the named baseline "no reconcile" (Catalog.openWith { reconcile: false }),
// and once more with 1% of the records lost (the reconcile repairing a crash). Runs alternate
// between the modes after one untimed warm-up, and medians are reported with the child's RSS.
// Results: a table on stdout and bench/startup.json. The temp dir is removed at the end.
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Level } from 'level';
import { pino } from 'pino';
import { Counters } from '../src/metrics.js';
import { BlobStore } from '../src/store/blobs.js';
import { Catalog } from '../src/store/catalog.js';
import { Evictor } from '../src/store/eviction.js';
import { Leases } from '../src/store/leases.js';
import { PinStore } from '../src/store/pins.js';
import { positiveIntArg } from './args.js';

const SELF = fileURLToPath(import.meta.url);
const ROOT = join(dirname(SELF), '..', '..');
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
/** Blobs per image: a manifest, a config, and the rest layers. */
const PER_IMAGE = 100;

type Mode = 'baseline' | 'reconcile' | 'repair';
const MODES: readonly Mode[] = ['baseline', 'reconcile', 'repair'];
const LABEL: Record<Mode, string> = {
  baseline: 'no reconcile (baseline)',
  reconcile: 'reconcile, index agrees',
  repair: 'reconcile, 1% records lost',
};

interface Sample {
  ms: number;
  rssMiB: number;
  maxRssMiB: number;
  blobs: number;
  bytes: number;
  added: number;
}

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** A manifest writeBlobs wrote: what a tag record pointing at it needs. */
export interface WrittenManifest {
  digest: string;
  mediaType: string;
  size: number;
}

/**
 * Writes `count` blob files straight into the store layout (no fsync: this is set-up, not the
 * thing measured): images of PER_IMAGE blobs, one manifest each (bench-scale.ts tags them).
 */
export function writeBlobs(dataDir: string, count: number): { digests: string[]; bytes: number; manifests: WrittenManifest[] } {
  const digests: string[] = [];
  const manifests: WrittenManifest[] = [];
  let bytes = 0;
  const write = (content: Buffer) => {
    const hex = sha256(content);
    const dir = join(dataDir, 'blobs', 'sha256', hex.slice(0, 2));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, hex), content);
    digests.push(`sha256:${hex}`);
    bytes += content.length;
    return hex;
  };
  for (let image = 0; digests.length < count; image++) {
    const layers: string[] = [];
    const inImage = Math.min(PER_IMAGE, count - digests.length);
    for (let i = 0; i < inImage - 2; i++) layers.push(write(Buffer.from(`\x1f\x8b layer ${image}/${i} ${'x'.repeat(64 + (i % 64))}`)));
    const config = write(Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', image })));
    if (inImage < 2) continue;
    const ref = (hex: string, mediaType: string) => ({ mediaType, digest: `sha256:${hex}`, size: 1 });
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        config: ref(config, 'application/vnd.oci.image.config.v1+json'),
        layers: layers.map((l) => ref(l, 'application/vnd.oci.image.layer.v1.tar+gzip')),
      }),
    );
    manifests.push({ digest: `sha256:${write(manifest)}`, mediaType: OCI_MANIFEST, size: manifest.length });
  }
  return { digests, bytes, manifests };
}

/** One timed start-up in this (child) process: Catalog open (+ reconcile) and Evictor.start. */
async function child(dataDir: string, mode: Mode, lose: number): Promise<void> {
  if (mode === 'repair') {
    // A crash that lost the last `lose` records: the files stay, the index forgets them.
    const db = new Level<string, unknown>(join(dataDir, 'index'), { valueEncoding: 'json' });
    await db.open();
    const keys = await db.keys({ gte: 'blob\0', lt: 'blob\x01', reverse: true, limit: lose }).all();
    await db.batch(keys.map((key) => ({ type: 'del' as const, key })));
    await db.close();
  }
  const log = pino({ level: 'silent' });
  const store = new BlobStore(dataDir);
  const started = process.hrtime.bigint();
  await store.open();
  const { catalog, reconciled } = await Catalog.openWith(dataDir, store, log, { reconcile: mode !== 'baseline' });
  const evictor = new Evictor({
    store,
    catalog,
    pins: await PinStore.open(dataDir),
    leases: new Leases(),
    filling: () => [],
    limits: { maxBytes: null, highWater: 0.9, lowWater: 0.8, maxIdleMs: null },
    log,
    counters: new Counters(),
  });
  await evictor.start();
  const ms = Number(process.hrtime.bigint() - started) / 1e6;
  // Memory before the check below: listing every record for it costs more than start-up does.
  const rssMiB = process.memoryUsage().rss / 1048576;
  const maxRssMiB = process.resourceUsage().maxRSS / 1024;
  const blobs = (await catalog.listBlobs()).length;
  const sample: Sample = {
    ms,
    rssMiB,
    maxRssMiB,
    blobs,
    bytes: evictor.bytes,
    added: reconciled?.added ?? 0,
  };
  await evictor.stop();
  await catalog.close();
  process.stdout.write(`${JSON.stringify(sample)}\n`);
}

function runChild(dataDir: string, mode: Mode, lose: number): Sample {
  const r = spawnSync(process.execPath, [SELF, '--child', dataDir, mode, String(lose)], { encoding: 'utf8', maxBuffer: 1 << 20 });
  if (r.status !== 0) throw new Error(`child (${mode}) failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as Sample;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const count = positiveIntArg('blobs', 100_000);
  const runs = positiveIntArg('runs', 5);
  const lose = Math.max(1, Math.round(count / 100));
  const dataDir = mkdtempSync(join(tmpdir(), 'cove-bench-startup-'));
  try {
    const say = (s: string) => process.stdout.write(`${s}\n`);
    say(`writing ${count} blob files into ${dataDir} ...`);
    const t0 = Date.now();
    const { bytes } = writeBlobs(dataDir, count);
    // A fresh index over existing files is built by the start-up rebuild: that gives the records.
    const store = new BlobStore(dataDir);
    await store.open();
    const { catalog, rebuilt } = await Catalog.openWith(dataDir, store, pino({ level: 'silent' }));
    await catalog.close();
    if (rebuilt?.blobs !== count) throw new Error(`expected ${count} records after the rebuild, got ${rebuilt?.blobs}`);
    say(`set-up: ${count} files, ${bytes} bytes, ${rebuilt.manifests} manifests, records written in ${Date.now() - t0} ms`);

    runChild(dataDir, 'reconcile', lose); // warm-up: directory and LevelDB pages into the page cache
    const samples: Record<Mode, Sample[]> = { baseline: [], reconcile: [], repair: [] };
    for (let i = 0; i < runs; i++) {
      for (const mode of i % 2 === 0 ? MODES : [...MODES].reverse()) {
        const s = runChild(dataDir, mode, lose);
        if (s.blobs !== count || s.bytes !== bytes) throw new Error(`${mode}: ${s.blobs} records / ${s.bytes} bytes after start-up, expected ${count} / ${bytes}`);
        if (mode === 'repair' && s.added !== lose) throw new Error(`repair: reconcile added ${s.added}, expected ${lose}`);
        samples[mode].push(s);
      }
    }
    const base = median(samples.baseline.map((s) => s.ms));
    const rows = MODES.map((mode) => {
      const ms = median(samples[mode].map((s) => s.ms));
      return { mode, label: LABEL[mode], ms: Math.round(ms), ratio: Math.round((ms / base) * 100) / 100, extraMs: Math.round(ms - base), maxRssMiB: Math.round(median(samples[mode].map((s) => s.maxRssMiB))) };
    });
    say('');
    say(`start-up with ${count} blobs (Catalog open + Evictor.start), median of ${runs} runs, page cache warm`);
    say(`${'mode'.padEnd(28)}${'ms'.padStart(8)}${'x baseline'.padStart(12)}${'+ms'.padStart(8)}${'max RSS MiB'.padStart(14)}`);
    for (const r of rows) say(`${r.label.padEnd(28)}${String(r.ms).padStart(8)}${r.ratio.toFixed(2).padStart(12)}${String(r.extraMs).padStart(8)}${String(r.maxRssMiB).padStart(14)}`);
    const out = join(ROOT, 'bench', 'startup.json');
    mkdirSync(dirname(out), { recursive: true });
    writeFileSync(out, `${JSON.stringify({ blobs: count, bytes, runs, lostRecords: lose, node: process.version, cpus: cpus().length, cpu: cpus()[0]?.model ?? null, at: new Date().toISOString(), rows }, null, 2)}\n`);
    say(`\nresults: ${out}`);
  } finally {
    rmSync(dataDir, { recursive: true, force: true });
  }
}

// Run as a script only: bench-scale.ts imports writeBlobs from here.
if (process.argv[1] !== undefined && realpathSync(process.argv[1]) === SELF) {
  if (process.argv[2] === '--child') await child(process.argv[3]!, process.argv[4] as Mode, Number(process.argv[5]));
  else await main();
}
