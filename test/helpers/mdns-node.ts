// A stand-alone mDNS node for discovery tests, run inside a test's network namespace:
//   node dist/test/helpers/mdns-node.js '{"id":"a","site":"s1","port":5001,...}'
// It runs startMdns with those options and writes one JSON line per event on stdout:
//   {"event":"peer","at":<ms since start>,"peer":{id,site,url,version}}  every onPeer call
//   {"event":"stopped","ms":<stop() duration>}                            after SIGTERM
// then exits by itself once stop() has closed everything (exit code 0). If anything still holds
// the process open 5 s after stop(), it prints {"event":"still-alive",...} and exits with 3.
// Cove's own log lines (pino JSON, with "level") go to stderr.
import { pino } from 'pino';
import { startMdns, type MdnsOptions } from '../../src/discovery/mdns.js';

const t0 = Date.now();
const line = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify(o) + '\n');

const raw = JSON.parse(process.argv[2] ?? '{}') as Partial<MdnsOptions>;
const log = pino({ level: process.env.LOG_LEVEL ?? 'info', base: { node: raw.id } }, pino.destination({ fd: 2, sync: true }));

const mdns = startMdns({
  id: raw.id ?? 'node',
  site: raw.site ?? 'site',
  port: raw.port ?? 5000,
  scheme: raw.scheme ?? 'http',
  version: raw.version ?? '0.0.0',
  interfaces: raw.interfaces,
  queryIntervalMs: raw.queryIntervalMs,
  addressCheckMs: raw.addressCheckMs,
  log,
  onPeer: (peer) => line({ event: 'peer', at: Date.now() - t0, peer }),
});
line({ event: 'started', at: Date.now() - t0 });

// The mDNS timers are unref'd; this keeps the node up until it is told to stop.
const keepAlive = setInterval(() => undefined, 60_000);

process.once('SIGTERM', () => {
  clearInterval(keepAlive);
  const s = Date.now();
  void mdns.stop().then(() => {
    line({ event: 'stopped', ms: Date.now() - s });
    setTimeout(() => {
      const handles = (process as unknown as { _getActiveHandles(): object[] })._getActiveHandles().map((h) => h.constructor.name);
      line({ event: 'still-alive', handles });
      process.exit(3);
    }, 5000).unref();
  });
});
