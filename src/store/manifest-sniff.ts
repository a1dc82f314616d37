// Telling a manifest among blob files without an index: a small JSON file that declares a
// manifest media type, and the digests it refers to. Shared by the rebuild and the reconcile.
import { open, readFile } from 'node:fs/promises';
import { MANIFEST_MAX_BYTES, manifestReferences, sniffMediaType } from '../oci/mediatypes.js';

/** A small JSON blob that declares itself a manifest: its media type and references; else null. */
export async function sniffManifest(path: string, size: number): Promise<{ mediaType: string; refs: string[] } | null> {
  if (size < 2 || size > MANIFEST_MAX_BYTES) return null;
  // Look at the first bytes before reading the whole file: layers (gzip, zstd, tar) never start with '{'.
  let bytes: Buffer;
  try {
    const head = Buffer.alloc(Math.min(size, 64));
    const handle = await open(path, 'r');
    try {
      await handle.read(head, 0, head.length, 0);
    } finally {
      await handle.close();
    }
    if (head.toString('latin1').trimStart()[0] !== '{') return null;
    bytes = await readFile(path);
  } catch {
    return null; // gone since the walk found it, or unreadable: recorded as a plain blob
  }
  const mediaType = sniffMediaType(bytes);
  return mediaType ? { mediaType, refs: manifestReferences(bytes) } : null;
}
