// Starts a Cove in this process for integration tests: real listener on 127.0.0.1 port 0, a temp
// data directory, configuration through the same loader the daemon uses.
import { mkdtempSync, rmSync } from 'node:fs';
import type { LookupFunction } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { Agent, fetch as undiciFetch, type RequestInit, type Response } from 'undici';
import { loadConfig } from '../../src/config.js';
import { startCove, type Cove } from '../../src/main.js';

export interface TestCove extends Cove {
  dataDir: string;
  /** Resolves once no fill is running: a client gets its last byte when the digest checks out, the commit to the store follows. */
  fillsDone(): Promise<void>;
  /** A request to the admin endpoints over the admin socket, as the `cove` command sends them (no token). */
  adminFetch(path: string, init?: RequestInit): Promise<Response>;
}

/** Starts Cove in front of `upstream` with extra COVE_* settings; stops it and removes its data at teardown. */
export async function startTestCove(
  t: { teardown(fn: () => unknown): void },
  upstream: string,
  env: Record<string, string> = {},
  options: { dataDir?: string; keepData?: boolean; lookup?: LookupFunction } = {},
): Promise<TestCove> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'cove-test-'));
  const config = loadConfig({
    env: { COVE_LISTEN: '127.0.0.1:0', COVE_DATA_DIR: dataDir, COVE_UPSTREAM: upstream, COVE_UPSTREAM_TIMEOUT: '2s', COVE_SHUTDOWN_GRACE: '1s', ...env },
  });
  const base = pino({ level: process.env.COVE_TEST_LOG ?? 'silent' });
  // Several Coves share one test process: name each node in its log lines.
  const log = env.COVE_NODE_ID ? base.child({ node: env.COVE_NODE_ID }) : base;
  const cove = await startCove(config, { log, upstreamLookup: options.lookup });
  const socketAgent = cove.adminSocket === null ? null : new Agent({ connect: { socketPath: cove.adminSocket } });
  t.teardown(async () => {
    await socketAgent?.destroy();
    await cove.stop();
    if (!options.keepData) rmSync(dataDir, { recursive: true, force: true });
  });
  const fillsDone = async () => {
    for (let i = 0; i < 200; i++) {
      const health = (await (await fetch(`${cove.url}/healthz`)).json()) as { activeFills: number };
      if (health.activeFills === 0) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error('fills still running after 5 s');
  };
  const adminFetch = (path: string, init: RequestInit = {}) => {
    if (socketAgent === null) throw new Error('this Cove has no admin socket (COVE_ADMIN_SOCKET=off)');
    const body = init.body;
    // Each body with the type its endpoint reads, as the cove command sends it.
    const type = body === undefined || body === null ? {} : { 'content-type': typeof body === 'string' ? 'application/json' : 'application/x-tar' };
    return undiciFetch(`http://localhost${path}`, { ...init, headers: { ...type, ...(init.headers as Record<string, string> | undefined) }, dispatcher: socketAgent });
  };
  return Object.assign(cove, { dataDir, fillsDone, adminFetch });
}
