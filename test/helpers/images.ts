// Generated test images: deterministic, incompressible layers (AES-CTR keystream of a seed), a
// config and a schema2 or OCI manifest, and manifest lists / OCI indexes over several images.
import { createCipheriv, createHash } from 'node:crypto';

export const MEDIA = {
  docker: {
    manifest: 'application/vnd.docker.distribution.manifest.v2+json',
    index: 'application/vnd.docker.distribution.manifest.list.v2+json',
    config: 'application/vnd.docker.container.image.v1+json',
    layer: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  },
  oci: {
    manifest: 'application/vnd.oci.image.manifest.v1+json',
    index: 'application/vnd.oci.image.index.v1+json',
    config: 'application/vnd.oci.image.config.v1+json',
    layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  },
} as const;

export interface Layer {
  digest: string;
  bytes: Buffer;
  mediaType: string;
}

export interface Image {
  manifest: Buffer;
  manifestDigest: string;
  mediaType: string;
  config: Buffer;
  configDigest: string;
  layers: Layer[];
  /** Manifest + config + layers: every byte a full pull moves. */
  totalBytes: number;
}

export interface Index {
  bytes: Buffer;
  digest: string;
  mediaType: string;
}

export function sha256Of(bytes: Buffer): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
}

/** `size` incompressible bytes that depend only on `seed`. */
export function randomBytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(seed).digest();
  const cipher = createCipheriv('aes-128-ctr', key.subarray(0, 16), key.subarray(16, 32));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}

export function makeImage(options: { layers: number[]; seed: string; mediaType?: 'docker' | 'oci'; architecture?: string }): Image {
  const kind = MEDIA[options.mediaType ?? 'docker'];
  const layers = options.layers.map((size, i) => {
    const bytes = randomBytes(`${options.seed}/layer/${i}`, size);
    return { digest: sha256Of(bytes), bytes, mediaType: kind.layer };
  });
  const config = Buffer.from(
    JSON.stringify({
      architecture: options.architecture ?? 'amd64',
      os: 'linux',
      config: { Env: [`SEED=${options.seed}`] },
      rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) },
    }),
  );
  const configDigest = sha256Of(config);
  const manifest = Buffer.from(
    JSON.stringify(
      {
        schemaVersion: 2,
        mediaType: kind.manifest,
        config: { mediaType: kind.config, size: config.length, digest: configDigest },
        layers: layers.map((l) => ({ mediaType: l.mediaType, size: l.bytes.length, digest: l.digest })),
      },
      null,
      3,
    ),
  );
  return {
    manifest,
    manifestDigest: sha256Of(manifest),
    mediaType: kind.manifest,
    config,
    configDigest,
    layers,
    totalBytes: manifest.length + config.length + layers.reduce((n, l) => n + l.bytes.length, 0),
  };
}

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
}

/** A Docker manifest list or an OCI image index over `children`; a missing platform is read from the child's config. */
export function makeIndex(children: Array<{ image: Image; platform?: Platform }>, kind: 'docker' | 'oci'): Index {
  const mediaType = MEDIA[kind].index;
  const bytes = Buffer.from(
    JSON.stringify(
      {
        schemaVersion: 2,
        mediaType,
        manifests: children.map(({ image, platform }) => ({
          mediaType: image.mediaType,
          size: image.manifest.length,
          digest: image.manifestDigest,
          platform: platform ?? platformOf(image),
        })),
      },
      null,
      3,
    ),
  );
  return { bytes, digest: sha256Of(bytes), mediaType };
}

function platformOf(image: Image): Platform {
  const config = JSON.parse(image.config.toString()) as { architecture?: string; os?: string };
  return { architecture: config.architecture ?? 'amd64', os: config.os ?? 'linux' };
}
