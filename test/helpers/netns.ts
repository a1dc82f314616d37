// A private LAN of network namespaces for one test: a bridge namespace holding br0 and N host
// namespaces, each with eth0 (a veth whose other end sits on br0), lo up, 10.A.B.i/24 and a route
// for 224.0.0.0/4 through eth0. The veth pairs are created inside the bridge namespace, so the
// root namespace never sees an interface of ours. Names carry the PID and a counter
// (cove<pid>x<k>-br, cove<pid>x<k>-n1...), so parallel test files and runs never meet.
// Teardown stops every process started here by PID, then deletes only these namespaces; /run/netns
// is unmounted only when the tests created it and it is empty again.
import { existsSync, readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { which, run, startProc, type Cleanup, type Proc, type TestLike } from '../e2e/real.js';

/** One host of the LAN. */
export interface LanHost {
  /** Namespace name, for `ip netns exec` / `ip -n`. */
  ns: string;
  /** Its eth0 address (without prefix length). */
  address: string;
}

export interface Lan {
  /** The namespace holding the bridge. */
  bridge: string;
  hosts: LanHost[];
  /** First three octets of the /24, e.g. "10.123.45". */
  prefix: string;
  /** Starts `cmd args` inside namespace `ns`; output in `logFile`; stopped (by PID) at teardown. */
  exec(ns: string, cmd: string, args: string[], opts: { logFile: string; env?: NodeJS.ProcessEnv; graceMs?: number; name?: string }): Proc;
  /** Runs `cmd args` to completion inside `ns` (bounded). */
  run(ns: string, cmd: string, args: string[], opts?: { timeoutMs?: number; env?: NodeJS.ProcessEnv; allowFail?: boolean }): ReturnType<typeof run>;
  /**
   * Plugs namespace `ns` (a host of another LAN, say) into this LAN's bridge as interface `ifname`
   * with address `${prefix}.${octet}/24`: a dual-homed host. Returns that address.
   */
  attach(ns: string, ifname: string, octet: number): Promise<string>;
  /** Stops the processes and deletes the namespaces; also registered on the Cleanup. */
  teardown(): Promise<void>;
}

let lanCounter = 0;
export const NETNS_DIR = '/run/netns';
// `ip netns add` creates /run/netns (a bind mount of itself) when it is missing. Test files run in
// parallel, so the one that created it may finish while another still has namespaces there; this
// marker lets whichever test empties it last unmount it. It is never created when /run/netns
// existed before the tests (the host's, then, to keep).
const NETNS_MARKER = join(tmpdir(), 'cove-tests-created-run-netns');

/** Under CI a missing prerequisite fails the test; elsewhere it is a visible skip (as in real.ts). */
export function cannot(t: TestLike, reason: string): null {
  const ci = process.env.CI;
  if (ci && ci !== 'false' && ci !== '0') t.fail(`${reason} (CI is set, so this is a failure, not a skip)`);
  else {
    t.comment(`skipping: ${reason}`);
    t.pass('network namespaces', { skip: reason });
  }
  return null;
}

/** Marks /run/netns as the tests' own; call before the first `ip netns add` when it did not exist. */
export function claimRunNetns(): void {
  writeFileSync(NETNS_MARKER, `${process.pid}\n`);
}

/** Unmounts and removes /run/netns when the tests created it and no namespace is left in it. */
export async function releaseRunNetns(): Promise<void> {
  if (existsSync(NETNS_MARKER) && existsSync(NETNS_DIR) && readdirSync(NETNS_DIR).length === 0) {
    for (let i = 0; i < 5 && netnsMounted(); i++) await run('umount', [NETNS_DIR], { allowFail: true, timeoutMs: 5000 });
    try {
      rmdirSync(NETNS_DIR);
      rmSync(NETNS_MARKER, { force: true });
    } catch {
      // another test created a namespace meanwhile; the last one out removes it
    }
  }
}

const netnsMounted = () => readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((l) => l.split(' ')[4] === NETNS_DIR);

/**
 * Deletes namespaces this run made, newest first: anything still inside one was started by this
 * run (a daemon that forked) and is killed first. Then /run/netns is released if this run made it.
 */
export async function deleteNamespaces(made: readonly string[]): Promise<void> {
  for (const ns of made.slice().reverse()) {
    const pids = await run('ip', ['netns', 'pids', ns], { allowFail: true, timeoutMs: 5000 }).catch(() => null);
    for (const pid of (pids?.stdout ?? '').split(/\s+/).filter(Boolean).map(Number)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await run('ip', ['netns', 'del', ns], { allowFail: true, timeoutMs: 10_000 }).catch(() => undefined);
  }
  await releaseRunNetns();
}

/**
 * Creates the LAN, or returns null after reporting "cannot create namespaces" (not root, no `ip`,
 * `ip netns add` refused): a skip with the reason, a failure when CI is set.
 */
export async function createLan(t: TestLike, cleanup: Cleanup, hostCount: number): Promise<Lan | null> {
  if (process.getuid?.() !== 0) return cannot(t, 'cannot create network namespaces: needs root');
  if (!which('ip')) return cannot(t, 'cannot create network namespaces: ip not installed (apt-get install iproute2)');

  const k = ++lanCounter;
  const base = `cove${process.pid}x${k}`;
  // A /24 unlikely to meet another run's: derived from the PID and the counter. The namespaces are
  // isolated from the host and from each other's bridges, so a clash would be harmless anyway.
  const prefix = `10.${100 + ((process.pid >> 8) % 100)}.${(process.pid + k * 37) % 256}`;
  const bridge = `${base}-br`;
  const hosts: LanHost[] = Array.from({ length: hostCount }, (_, i) => ({ ns: `${base}-n${i + 1}`, address: `${prefix}.${i + 1}` }));
  const createdNetnsDir = !existsSync(NETNS_DIR);
  const made: string[] = [];
  const procs: Proc[] = [];
  let tornDown = false;
  let attached = 0;

  const ip = (args: string[]) => run('ip', args, { timeoutMs: 10_000 });

  const teardown = async (): Promise<void> => {
    if (tornDown) return;
    tornDown = true;
    await Promise.all(procs.map((p) => p.stop(5000)));
    await deleteNamespaces(made);
  };
  cleanup.add(teardown);

  try {
    if (createdNetnsDir) claimRunNetns();
    await ip(['netns', 'add', bridge]);
    made.push(bridge);
    await ip(['-n', bridge, 'link', 'add', 'br0', 'type', 'bridge']);
    await ip(['-n', bridge, 'link', 'set', 'br0', 'up']);
    for (const [i, h] of hosts.entries()) {
      await ip(['netns', 'add', h.ns]);
      made.push(h.ns);
      const veth = `v${i + 1}`; // lives in the bridge namespace only
      await ip(['-n', bridge, 'link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns]);
      await ip(['-n', bridge, 'link', 'set', veth, 'master', 'br0']);
      await ip(['-n', bridge, 'link', 'set', veth, 'up']);
      await ip(['-n', h.ns, 'addr', 'add', `${h.address}/24`, 'dev', 'eth0']);
      await ip(['-n', h.ns, 'link', 'set', 'lo', 'up']);
      await ip(['-n', h.ns, 'link', 'set', 'eth0', 'up']);
      await ip(['-n', h.ns, 'route', 'add', '224.0.0.0/4', 'dev', 'eth0']);
    }
  } catch (err) {
    await teardown();
    return cannot(t, `cannot create network namespaces: ${err instanceof Error ? err.message.split('\n').slice(0, 3).join(' ') : String(err)}`);
  }

  return {
    bridge,
    hosts,
    prefix,
    exec(ns, cmd, args, opts) {
      if (!made.includes(ns)) throw new Error(`${ns} is not a namespace of this LAN`);
      // `ip netns exec` execs the command in place, so the PID kept is the command's own.
      const proc = startProc(cleanup, opts.name ?? `${ns}:${cmd}`, 'ip', ['netns', 'exec', ns, cmd, ...args], {
        logFile: opts.logFile,
        env: opts.env ?? process.env,
        graceMs: opts.graceMs ?? 5000,
      });
      procs.push(proc);
      return proc;
    },
    run(ns, cmd, args, opts = {}) {
      if (!made.includes(ns)) throw new Error(`${ns} is not a namespace of this LAN`);
      return run('ip', ['netns', 'exec', ns, cmd, ...args], { timeoutMs: opts.timeoutMs ?? 30_000, env: opts.env, allowFail: opts.allowFail });
    },
    async attach(ns, ifname, octet) {
      const veth = `x${++attached}`;
      const address = `${prefix}.${octet}`;
      await ip(['-n', bridge, 'link', 'add', veth, 'type', 'veth', 'peer', 'name', ifname, 'netns', ns]);
      await ip(['-n', bridge, 'link', 'set', veth, 'master', 'br0']);
      await ip(['-n', bridge, 'link', 'set', veth, 'up']);
      await ip(['-n', ns, 'addr', 'add', `${address}/24`, 'dev', ifname]);
      await ip(['-n', ns, 'link', 'set', ifname, 'up']);
      return address;
    },
    teardown,
  };
}

/** Path of a compiled helper script next to this file (dist/test/helpers/). */
export const helperScript = (name: string) => join(new URL('.', import.meta.url).pathname, name);
