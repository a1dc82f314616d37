// This node's identity among its siblings. An id set in configuration wins; otherwise one is made
// from the host name and a random suffix on first start and kept in the data directory, so it
// survives restarts (peers rank owners by id) and stays unique when images clone a host name.
import { randomBytes } from 'node:crypto';
import { readFile, writeFile, rename } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { NODE_ID_PATTERN } from './peers/protocol.js';

const NODE_ID_FILE = 'node-id';

export async function loadNodeId(dataDir: string, configured: string | null): Promise<string> {
  if (configured !== null) return configured;
  const path = join(dataDir, NODE_ID_FILE);
  try {
    const kept = (await readFile(path, 'utf8')).trim();
    if (NODE_ID_PATTERN.test(kept)) return kept;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const base = hostname().toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 48) || 'cove';
  const id = `${base}-${randomBytes(3).toString('hex')}`;
  await writeFile(`${path}.tmp`, `${id}\n`);
  await rename(`${path}.tmp`, path);
  return id;
}
