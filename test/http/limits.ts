// Listener limits for tests that start a bare listener: the defaults a Cove gets, with overrides.
import { loadConfig } from '../../src/config.js';
import type { ListenerLimits } from '../../src/http/server.js';

/** The default listener limits (from the configuration loader), with `overrides` on top. */
export function defaultLimits(overrides: Partial<ListenerLimits> = {}): ListenerLimits {
  return { ...loadConfig({ env: { COVE_UPSTREAM: 'http://127.0.0.1:1' } }).listenLimits, ...overrides };
}
