// Starts a Cove in this process for integration tests: real listener on 127.0.0.1 port 0, a temp
// data directory, configuration through the same loader the daemon uses.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { loadConfig } from '../../src/config.js';
import { startCove, type Cove } from '../../src/main.js';

export interface TestCove extends Cove {
  dataDir: string;
}

/** Starts Cove in front of `upstream` with extra COVE_* settings; stops it and removes its data at teardown. */
export async function startTestCove(
  t: { teardown(fn: () => unknown): void },
  upstream: string,
  env: Record<string, string> = {},
  options: { dataDir?: string; keepData?: boolean } = {},
): Promise<TestCove> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'cove-test-'));
  const config = loadConfig({
    env: { COVE_LISTEN: '127.0.0.1:0', COVE_DATA_DIR: dataDir, COVE_UPSTREAM: upstream, COVE_UPSTREAM_TIMEOUT: '2s', COVE_SHUTDOWN_GRACE: '1s', ...env },
  });
  const log = pino({ level: process.env.COVE_TEST_LOG ?? 'silent' });
  const cove = await startCove(config, { log });
  t.teardown(async () => {
    await cove.stop();
    if (!options.keepData) rmSync(dataDir, { recursive: true, force: true });
  });
  return Object.assign(cove, { dataDir });
}
