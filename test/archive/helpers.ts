// Shared by the archive tests: a fresh store and catalog, tar archives built in memory with
// tar-stream, a name resolver like the daemon's, and a snapshot of everything a store holds.
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { pino, type Logger } from 'pino';
import * as tar from 'tar-stream';
import { BlobStore } from '../../src/store/blobs.js';
import { Catalog } from '../../src/store/catalog.js';
import { sha256Of, type Image } from '../helpers/images.js';

export interface TeardownLike {
  teardown(fn: () => unknown): unknown;
}

/** A logger that keeps its lines (and prints nothing). */
export function captureLog(): { log: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const log = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  return { log, lines };
}

export interface Env {
  dir: string;
  store: BlobStore;
  catalog: Catalog;
  log: Logger;
  lines: Array<Record<string, unknown>>;
}

/** A fresh data dir opened as src/main.ts does; closed and removed on teardown. */
export async function openStore(t: TeardownLike, dir?: string): Promise<Env> {
  const data = dir ?? mkdtempSync(join(tmpdir(), 'cove-archive-'));
  const { log, lines } = captureLog();
  const store = new BlobStore(data);
  await store.open();
  const catalog = await Catalog.open(data, store, log);
  t.teardown(async () => {
    await catalog.close().catch(() => {});
    if (!dir) rmSync(data, { recursive: true, force: true });
  });
  return { dir: data, store, catalog, log, lines };
}

/**
 * Test resolver: a first component that looks like a host ("harbor.example.com", "localhost:5000")
 * names the upstream "origin" (or "dockerhub" for docker.io); one-component docker.io names get
 * "library/"; any other name is on "origin" as it is.
 */
export function resolveName(name: string): { upstream: string; repo: string } {
  const slash = name.indexOf('/');
  const first = slash < 0 ? '' : name.slice(0, slash);
  if (slash >= 0 && (first.includes('.') || first.includes(':') || first === 'localhost')) {
    const repo = name.slice(slash + 1);
    if (first === 'docker.io') return { upstream: 'dockerhub', repo: repo.includes('/') ? repo : `library/${repo}` };
    return { upstream: 'origin', repo };
  }
  return { upstream: 'origin', repo: name };
}

export interface TarFile {
  name: string;
  body?: Buffer;
  type?: 'file' | 'symlink' | 'link' | 'directory';
  linkname?: string;
}

/** A tar archive of `files`, in that order; gzip-compressed when asked. */
export async function buildTar(files: TarFile[], opts: { gzip?: boolean } = {}): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack) chunks.push(c as Buffer);
  })();
  for (const f of files) {
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null) => (err ? reject(err) : resolve());
      if (f.type === 'symlink' || f.type === 'link') pack.entry({ name: f.name, type: f.type, linkname: f.linkname! }, cb);
      else if (f.type === 'directory') pack.entry({ name: f.name, type: 'directory' }, cb);
      else pack.entry({ name: f.name }, f.body ?? Buffer.alloc(0), cb);
    });
  }
  pack.finalize();
  await done;
  const plain = Buffer.concat(chunks);
  return opts.gzip ? gzipSync(plain) : plain;
}

export const blobName = (digest: string) => `blobs/${digest.replace(':', '/')}`;

/** The blob entries of an image: manifest, config, layers. */
export function imageBlobs(image: Image): TarFile[] {
  return [
    { name: blobName(image.manifestDigest), body: image.manifest },
    { name: blobName(image.configDigest), body: image.config },
    ...image.layers.map((l) => ({ name: blobName(l.digest), body: l.bytes })),
  ];
}

/** oci-layout + index.json naming `descriptors`. */
export function layoutFiles(descriptors: Array<{ mediaType: string; digest: string; size: number; annotations?: Record<string, string> }>): TarFile[] {
  return [
    { name: 'oci-layout', body: Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })) },
    { name: 'index.json', body: Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: descriptors })) },
  ];
}

export function descriptorOf(image: Image, annotations?: Record<string, string>) {
  return { mediaType: image.mediaType, digest: image.manifestDigest, size: image.manifest.length, ...(annotations ? { annotations } : {}) };
}

/**
 * A docker save (20.10) archive of `image`: `<id>/layer.tar` per layer (its bytes as they are,
 * so the config's diff_ids must equal the layer digests), `<confighex>.json`, repositories, and
 * manifest.json last, as docker writes it.
 */
export function dockerSaveFiles(image: Image, repoTags: string[] | null): TarFile[] {
  const ids = image.layers.map((_, i) => sha256Of(Buffer.from(`${image.configDigest}/${i}`)).slice(7));
  const configFile = `${image.configDigest.slice(7)}.json`;
  const files: TarFile[] = [];
  for (const [i, layer] of image.layers.entries()) {
    files.push({ name: `${ids[i]}/`, type: 'directory' });
    files.push({ name: `${ids[i]}/VERSION`, body: Buffer.from('1.0') });
    files.push({ name: `${ids[i]}/json`, body: Buffer.from(JSON.stringify({ id: ids[i] })) });
    files.push({ name: `${ids[i]}/layer.tar`, body: layer.bytes });
  }
  files.push({ name: configFile, body: image.config });
  const [repo, tag] = repoTags?.[0] ? splitTag(repoTags[0]) : ['', ''];
  if (repoTags?.[0]) files.push({ name: 'repositories', body: Buffer.from(JSON.stringify({ [repo]: { [tag]: ids.at(-1) } })) });
  files.push({ name: 'manifest.json', body: Buffer.from(JSON.stringify([{ Config: configFile, RepoTags: repoTags, Layers: ids.map((id) => `${id}/layer.tar`) }])) });
  return files;
}

function splitTag(ref: string): [string, string] {
  const i = ref.lastIndexOf(':');
  return [ref.slice(0, i), ref.slice(i + 1)];
}

/** Everything a data dir holds that an import could change: blob files, temp files, tags, blob records. */
export async function snapshot(env: Env): Promise<{ blobs: string[]; tmp: string[]; tags: string[]; records: string[] }> {
  const blobs: string[] = [];
  for await (const b of env.store.list()) blobs.push(`${b.digest} ${b.size}`);
  const tags = (await env.catalog.listTags()).map((t) => `${t.key.upstream}/${t.key.repo}:${t.key.tag} -> ${t.record.digest}`);
  const records: string[] = [];
  for (const b of blobs) {
    const digest = b.split(' ')[0]!;
    const r = await env.catalog.getBlob(digest);
    if (r) records.push(`${digest} ${r.mediaType} ${r.size}`);
  }
  return { blobs: blobs.sort(), tmp: readdirSync(env.store.tmpDir).sort(), tags: tags.sort(), records: records.sort() };
}

/** A deterministic shuffle (so entry order differs from the natural one, reproducibly). */
export function shuffle<T>(items: T[], seed = 7): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Reads a tar (Buffer) into name -> bytes, and the entry order. */
export async function readTar(bytes: Buffer): Promise<{ files: Map<string, Buffer>; order: string[]; types: Map<string, string> }> {
  const extract = tar.extract();
  const files = new Map<string, Buffer>();
  const types = new Map<string, string>();
  const order: string[] = [];
  const reading = (async () => {
    for await (const entry of extract) {
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      order.push(entry.header.name);
      types.set(entry.header.name, entry.header.type);
      if (entry.header.type === 'file') files.set(entry.header.name, Buffer.concat(chunks));
    }
  })();
  extract.end(bytes);
  await reading;
  return { files, order, types };
}
