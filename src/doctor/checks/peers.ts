// The static peers (COVE_PEERS): does each answer GET /_cove/node, and does it hold the same
// COVE_PEER_KEY? With a key, the node-info request carries a challenge the peer answers with a
// proof: no proof means the peer has no key, a wrong one that the keys differ; then a signed peer
// request (a HEAD of a blob in `local` mode, which never leaves the peer) must be accepted and its
// answer signed. Without a key here, an unsigned peer request refused with 401 means the peer has one.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import type { Config } from '../../config.js';
import { PeerAuthError, PeerClient } from '../../peers/client.js';
import { NODE_ID_PATTERN, PEER_CHALLENGE_HEADER, PEER_HEADER, PEER_NODE_HEADER, PEER_PROOF_HEADER, newNonce } from '../../peers/protocol.js';
import { explainNetworkError } from '../net-error.js';
import type { CheckResult } from '../report.js';

/** A blob no node holds: the signed probe's 404 (or 200) proves acceptance, nothing is fetched. */
const PROBE_PATH = `/v2/cove-doctor/probe/blobs/sha256:${'0'.repeat(64)}`;

/** This node's id as its peers know it: configured, or kept in the data directory (never created here). */
async function selfId(config: Pick<Config, 'node' | 'dataDir'>): Promise<string> {
  if (config.node.id !== null) return config.node.id;
  const kept = await readFile(join(config.dataDir, 'node-id'), 'utf8').then((t) => t.trim(), () => '');
  return NODE_ID_PATTERN.test(kept) ? kept : 'cove-doctor';
}

export async function checkPeers(config: Pick<Config, 'peers' | 'node' | 'dataDir'>): Promise<CheckResult[]> {
  const { urls, key, timeoutMs } = config.peers;
  if (urls.length === 0) return [{ name: 'peers', status: 'skip', message: `COVE_PEERS is not set: no static peers to check${config.peers.mdns ? ' (peers found by mDNS are not checked)' : ''}` }];
  const self = await selfId(config);
  const client = new PeerClient({ selfId: self, key, timeoutMs, fetchTimeoutMs: timeoutMs, bodyTimeoutMs: timeoutMs });
  try {
    return await Promise.all(urls.map((url) => checkPeer(client, url, self, config.node.site, key, timeoutMs)));
  } finally {
    await client.close();
  }
}

async function checkPeer(client: PeerClient, url: string, self: string, site: string, key: string | null, timeoutMs: number): Promise<CheckResult> {
  const name = `peer ${url}`;
  const fail = (message: string): CheckResult => ({ name, status: 'fail', message });
  const target = { what: 'the peer', url: new URL(url), timeoutMs, timeoutSetting: 'COVE_PEER_TIMEOUT' };
  let info;
  try {
    info = await client.nodeInfo(url, AbortSignal.timeout(timeoutMs + 1000));
  } catch (err) {
    if (err instanceof Error && /^answered/.test(err.message)) return fail(`peer ${url} ${err.message} to GET /_cove/node: is it a Cove (and the URL its COVE_LISTEN)?`);
    return fail(explainNetworkError(err, target));
  }
  if (info.id === self) return { name, status: 'skip', message: `${url} is this node (${self}); Cove skips itself in COVE_PEERS` };
  const who = `peer ${info.id} at ${url}`;
  const otherSite = info.site !== site ? ` (it is in site ${info.site}, this node in ${site}: only nodes of one site share a cache)` : '';
  if (key !== null) {
    if (!info.proven) {
      const proof = await proofHeader(url, self, timeoutMs);
      return proof === null
        ? fail(`${who} has no COVE_PEER_KEY (it answered the key challenge with no proof): it and this node cannot trust each other; give every node of the site the same key`)
        : fail(`${who} holds a different COVE_PEER_KEY (its proof does not match this node's key): peer requests are refused both ways; give every node of the site the same key`);
    }
    try {
      const res = await client.request({ url, id: info.id }, 'HEAD', PROBE_PATH, 'local', {}, AbortSignal.timeout(timeoutMs + 1000));
      res.body.resume();
      if (res.status === 401) return fail(`${who} refused a request signed with this node's key (401): check that the clocks agree (within 5 minutes) and that its node id is ${info.id}`);
    } catch (err) {
      if (err instanceof PeerAuthError) return fail(`${who} answered a signed request without a valid signature of its own: it does not hold this node's COVE_PEER_KEY`);
      return fail(explainNetworkError(err, target));
    }
    return { name, status: otherSite ? 'warn' : 'ok', message: `${who} answers and holds the same COVE_PEER_KEY${otherSite}` };
  }
  // No key here: an unsigned peer request; a keyed peer refuses it.
  try {
    const res = await request(`${url}${PROBE_PATH}`, {
      method: 'HEAD',
      headers: { [PEER_HEADER]: 'local', [PEER_NODE_HEADER]: self },
      signal: AbortSignal.timeout(timeoutMs + 1000),
      headersTimeout: timeoutMs,
    });
    res.body.resume();
    if (res.statusCode === 401) return fail(`${who} has a COVE_PEER_KEY and this node has none: it refuses this node's peer requests; give every node of the site the same key`);
  } catch (err) {
    return fail(explainNetworkError(err, target));
  }
  return { name, status: otherSite ? 'warn' : 'ok', message: `${who} answers; neither it nor this node uses a COVE_PEER_KEY, so peer requests are not signed${otherSite}` };
}

/** The proof header a peer sent to a challenge, or null when it sent none (it has no key). */
async function proofHeader(url: string, self: string, timeoutMs: number): Promise<string | null> {
  try {
    const res = await request(`${url}/_cove/node`, {
      headers: { [PEER_NODE_HEADER]: self, [PEER_CHALLENGE_HEADER]: newNonce() },
      signal: AbortSignal.timeout(timeoutMs + 1000),
      headersTimeout: timeoutMs,
    });
    res.body.resume();
    const value = res.headers[PEER_PROOF_HEADER];
    return typeof value === 'string' ? value : null;
  } catch {
    return null;
  }
}
