// What Cove advertises over mDNS, as an independent implementation sees it: Debian's avahi-daemon
// and avahi-browse in one namespace of a private LAN (test/helpers/netns.ts), a Cove mDNS node
// (test/helpers/mdns-node.js, the same startMdns the daemon runs) in another, then the daemon
// itself (`cove serve` with COVE_MDNS=true).
//
// avahi-browse talks to avahi-daemon over the D-Bus system bus, so the test runs its own
// dbus-daemon (a config in the temp dir, listening on a socket there) and points both avahi
// programs at it with DBUS_SYSTEM_BUS_ADDRESS. avahi-daemon keeps its PID file and socket in
// /run/avahi-daemon, shared with a host that may run avahi itself: here it runs under a tmpfs of
// its own on /run, mounted inside the private mount namespace `ip netns exec` gives every
// process, so the host's /run is never touched and a host avahi is no obstacle.
import t from 'tap';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Cleanup, requireTools, tempDir, waitFor } from './real.js';
import { createLan, helperScript } from '../helpers/netns.js';
import { VERSION } from '../../src/version.js';

const COVE_CLI = new URL('../../src/cli.js', import.meta.url).pathname;

/** One resolved line of `avahi-browse -rp`: =;iface;proto;name;type;domain;host;address;port;txt */
interface Resolved {
  iface: string;
  proto: string;
  name: string;
  type: string;
  host: string;
  address: string;
  port: number;
  txt: string[];
}

/** avahi-browse -p escapes ';' '\' and non-printables in fields as \DDD (decimal). */
const unescape = (s: string) => s.replace(/\\(\d{3})/g, (_, d: string) => String.fromCharCode(Number(d))).replace(/\\(.)/g, '$1');

function parseBrowse(text: string): { resolved: Resolved[]; removed: string[] } {
  const resolved: Resolved[] = [];
  const removed: string[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(/(?<!\\);/);
    if (f[0] === '-' && f.length >= 6) removed.push(unescape(f[3]!));
    if (f[0] !== '=' || f.length < 10) continue;
    const txt = [...f.slice(9).join(';').matchAll(/"((?:[^"\\]|\\.)*)"/g)].map((m) => m[1]!.replace(/\\(.)/g, '$1'));
    resolved.push({ iface: f[1]!, proto: f[2]!, name: unescape(f[3]!), type: f[4]!, host: f[6]!, address: f[7]!, port: Number(f[8]), txt });
  }
  return { resolved, removed };
}

t.test('avahi-browse sees the _cove._tcp service, its TXT records and its goodbye', async (t) => {
  if (!requireTools(t, ['avahi-daemon', 'avahi-browse', 'dbus-daemon'])) return;
  const cleanup = Cleanup.forTest(t);
  const lan = await createLan(t, cleanup, 2);
  if (!lan) return;
  const [cove, avahi] = lan.hosts as [(typeof lan.hosts)[0], (typeof lan.hosts)[0]];
  const dir = tempDir(cleanup, 'cove-avahi-');
  const bus = join(dir, 'bus.sock');
  const env = { ...process.env, DBUS_SYSTEM_BUS_ADDRESS: `unix:path=${bus}` };

  writeFileSync(
    join(dir, 'bus.conf'),
    `<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=${bus}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="org.freedesktop.Avahi"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
`,
  );
  // Browse only: no host name or workstation records of its own, IPv4 on the LAN's eth0 only.
  writeFileSync(
    join(dir, 'avahi.conf'),
    `[server]
host-name=cove-avahi-${process.pid}
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
[wide-area]
enable-wide-area=no
[publish]
disable-publishing=yes
[reflector]
enable-reflector=no
`,
  );

  const dbus = lan.exec(avahi.ns, 'dbus-daemon', [`--config-file=${join(dir, 'bus.conf')}`, '--nofork', '--nopidfile'], { logFile: join(dir, 'dbus.log'), name: 'dbus-daemon' });
  await waitFor('the private D-Bus socket', () => {
    if (!dbus.running) throw new Error(`dbus-daemon exited:\n${dbus.tail()}`);
    return existsSync(bus);
  }, 10_000, 50);

  const daemon = lan.exec(
    avahi.ns,
    'sh',
    ['-c', `mount -t tmpfs -o size=1m,mode=0755 cove-avahi-run /run && mkdir /run/avahi-daemon && exec avahi-daemon --no-drop-root --no-chroot -f ${join(dir, 'avahi.conf')}`],
    { logFile: join(dir, 'avahi-daemon.log'), env, name: 'avahi-daemon' },
  );
  await waitFor('avahi-daemon to start', () => {
    if (!daemon.running) throw new Error(`avahi-daemon exited:\n${daemon.tail()}`);
    return daemon.log().includes('Server startup complete');
  }, 15_000, 100);

  // Dots in the id and site, a pre-release version: values DNS name encoding would have split.
  const node = { id: 'edge-1.example', site: 'site.eu-west', port: 5443, scheme: 'https', version: '0.1.0-rc.1', queryIntervalMs: 30_000, interfaces: ['eth0'] };
  const browse = lan.exec(avahi.ns, 'avahi-browse', ['-rp', '_cove._tcp'], { logFile: join(dir, 'browse.log'), env, name: 'avahi-browse' });
  const cove1 = lan.exec(cove.ns, process.execPath, [helperScript('mdns-node.js'), JSON.stringify(node)], { logFile: join(dir, 'cove.log'), name: 'mdns-node' });

  const found = () => parseBrowse(browse.log()).resolved.find((r) => r.txt.includes(`id=${node.id}`));
  await waitFor('avahi-browse to resolve the Cove service', () => {
    if (!browse.running) throw new Error(`avahi-browse exited:\n${browse.tail()}`);
    return found() !== undefined;
  }, 15_000, 100);
  const r = found()!;
  t.equal(r.type, '_cove._tcp', 'service type _cove._tcp');
  t.equal(r.name, 'cove-edge-1-example', 'instance name cove-<id> (one DNS label: the dots of the id become dashes)');
  t.equal(r.iface, 'eth0', 'seen on the LAN interface');
  t.equal(r.proto, 'IPv4', 'over IPv4');
  t.equal(r.host, 'cove-edge-1-example.local', 'SRV target host name');
  t.equal(r.address, cove.address, 'the target resolves to the node\'s LAN address');
  t.equal(r.port, node.port, 'SRV port is the registry API port');
  t.same(
    [...r.txt].sort(),
    [`id=${node.id}`, `port=${node.port}`, `scheme=${node.scheme}`, `site=${node.site}`, `v=${node.version}`].sort(),
    'TXT: exactly id, site, v, scheme, port, each one whole string',
  );

  // Stop the node: its goodbye makes avahi drop the service at once (no 75-minute TTL wait).
  await cove1.stop(8000);
  t.equal(cove1.exitCode, 0, 'the Cove node exited on its own after stop()');
  await waitFor('avahi-browse to report the service removed', () => parseBrowse(browse.log()).removed.includes('cove-edge-1-example'), 5000, 100).then(
    () => t.pass('avahi saw the goodbye and removed the service'),
    () => t.fail(`avahi saw the goodbye and removed the service; avahi-browse said:\n${browse.tail()}`),
  );
  // The daemon itself, as an operator runs it: `cove serve` with COVE_MDNS=true.
  const data = tempDir(cleanup, 'cove-avahi-data-');
  const daemonEnv = {
    ...process.env,
    COVE_UPSTREAM: 'http://127.0.0.1:9',
    COVE_LISTEN: '0.0.0.0:5000',
    COVE_DATA_DIR: data,
    COVE_NODE_ID: 'edge-2',
    COVE_SITE: 'site-b',
    COVE_MDNS: 'true',
    COVE_MDNS_INTERFACES: 'eth0',
  };
  const served = lan.exec(cove.ns, process.execPath, [COVE_CLI, 'serve'], { logFile: join(dir, 'cove-serve.log'), env: daemonEnv, name: 'cove serve' });
  const daemonFound = () => parseBrowse(browse.log()).resolved.find((x) => x.txt.includes('id=edge-2'));
  await waitFor('avahi-browse to resolve the cove serve daemon', () => {
    if (!served.running) throw new Error(`cove serve exited:\n${served.tail()}`);
    return daemonFound() !== undefined;
  }, 15_000, 100);
  const d = daemonFound()!;
  t.equal(d.name, 'cove-edge-2', 'the daemon advertises cove-<node id>');
  t.equal(d.address, cove.address);
  t.equal(d.port, 5000, 'SRV port is COVE_LISTEN\'s port');
  t.same([...d.txt].sort(), ['id=edge-2', 'port=5000', 'scheme=http', 'site=site-b', `v=${VERSION}`].sort(), 'TXT from the daemon\'s configuration');
  await served.stop(8000);
  await waitFor('avahi-browse to report the daemon gone', () => parseBrowse(browse.log()).removed.includes('cove-edge-2'), 5000, 100).then(
    () => t.pass('a stopped daemon says goodbye'),
    () => t.fail(`the daemon's goodbye was not seen; avahi-browse said:\n${browse.tail()}`),
  );

  t.notOk(readFileSync('/proc/self/mountinfo', 'utf8').includes('cove-avahi-run'), 'the tmpfs over /run stayed inside avahi-daemon\'s mount namespace');
});
