// `cove doctor`: reads the configuration `cove serve` would read and runs every check against it.
// A configuration error is a failed check of its own (the daemon would not start); the checks
// that need a configuration are then reported as not run, and the data directory is still checked
// when its own setting can be read.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig, loadDataDir, type Config, type LoadOptions } from '../config.js';
import { ETC_HOSTS } from '../cli/client-config.js';
import { ConfigError } from '../errors.js';
import { parseSize } from '../units.js';
import { checkCertificate } from './checks/certificate.js';
import { checkContainerd, checkDockerDaemon, checkHostsFile, checkPodman } from './checks/clients.js';
import { checkDataDir, DEFAULT_MIN_FREE_BYTES } from './checks/data-dir.js';
import { checkOrigin } from './checks/origin.js';
import { checkPeers } from './checks/peers.js';
import { report, type CheckResult, type Report } from './report.js';
import { SERVICE_ENV_FILE, serviceEnvironment } from './service-env.js';
import { thisCove } from './this-host.js';

export interface DoctorOptions {
  /** Configuration sources, as for `cove serve`. */
  load: LoadOptions;
  /** Where the client configuration files are looked for (default "/"). */
  root?: string;
  /** Free-space floor of the data directory (--min-free, e.g. "1GiB"). */
  minFree?: string;
  /** The service's settings file (--settings); by default /etc/cove/cove.env when it exists. */
  settings?: string | undefined;
}

export async function runDoctor(o: DoctorOptions): Promise<Report> {
  // The service's settings: the file its unit reads (when it is there), under this shell's COVE_*.
  const settings = o.settings ?? (existsSync(SERVICE_ENV_FILE) ? SERVICE_ENV_FILE : undefined);
  const service = settings === undefined ? null : serviceEnvironment(settings);
  try {
    return await diagnose(o, service ? { ...o.load, env: service.env } : o.load, settings);
  } finally {
    service?.dispose();
  }
}

async function diagnose(o: DoctorOptions, load: LoadOptions, settingsFrom: string | undefined): Promise<Report> {
  const checks: CheckResult[] = [];
  let minFreeBytes = DEFAULT_MIN_FREE_BYTES;
  if (o.minFree !== undefined) {
    try {
      minFreeBytes = parseSize(o.minFree);
    } catch (err) {
      throw new ConfigError(`--min-free: ${(err as Error).message}`);
    }
  }
  let config: Config;
  try {
    config = loadConfig(load);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    checks.push({ name: 'config', status: 'fail', message: `${err.message} (cove serve stops on this too)` });
    let dataDir: string | null = null;
    try {
      dataDir = loadDataDir(load);
    } catch {
      // the same error, already reported
    }
    if (dataDir !== null) checks.push(await checkDataDir({ dataDir, cache: null }, minFreeBytes));
    checks.push({ name: 'other checks', status: 'skip', message: 'origin, clock, certificate, peers and client configurations are checked once the configuration is valid' });
    return report(checks);
  }
  const up = config.upstreams[0]!;
  checks.push({ name: 'config', status: 'ok', message: `origin ${up.url}, listening on ${config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host}:${config.listen.port}${config.tls === null ? '' : ' (TLS)'}, data in ${config.dataDir}${settingsFrom === undefined ? '' : `; settings from ${settingsFrom}`}` });
  const root = o.root ?? '/';
  const hostsText = await readFile(join(root, ETC_HOSTS), 'utf8').catch(() => null);
  const cove = thisCove(config, hostsText);
  // The network checks run side by side; each is bounded by its own timeout.
  const [origin, dataDir, certificate, peers, docker, containerd, podman, hosts] = await Promise.all([
    guard('origin', () => checkOrigin(up, config.offline)),
    guard('data-dir', () => checkDataDir(config, minFreeBytes)),
    guard('certificate', async () => checkCertificate(config)),
    guard('peers', () => checkPeers(config)),
    guard('docker daemon.json', () => checkDockerDaemon(root, cove, config)),
    guard('containerd certs.d', () => checkContainerd(root, cove, config)),
    guard('podman registries.conf.d', () => checkPodman(root, cove, config)),
    guard('hosts file', () => checkHostsFile(root, config)),
  ]);
  checks.push(...origin, ...dataDir, ...certificate, ...peers, ...docker, ...containerd, ...podman, ...hosts);
  return report(checks);
}

/** A check that throws (something no check foresaw) is a failed check that says so; the others still report. */
async function guard(name: string, run: () => Promise<CheckResult | CheckResult[]>): Promise<CheckResult[]> {
  try {
    const result = await run();
    return Array.isArray(result) ? result : [result];
  } catch (err) {
    return [{ name, status: 'fail', message: `the check itself failed: ${err instanceof Error ? err.message : String(err)}` }];
  }
}
