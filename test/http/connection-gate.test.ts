// The connection gate's counting: caps in all and per client, release once, and who counts as
// one client (IPv4, IPv4-mapped IPv6, an IPv6 /64).
import t from 'tap';
import { ConnectionGate, clientKey } from '../../src/http/connection-gate.js';

t.test('caps per client and in all; a release frees one place, once', async (t) => {
  const gate = new ConnectionGate({ maxConnections: 3, maxConnectionsPerClient: 2 });
  const a1 = gate.admit('10.0.0.1');
  const a2 = gate.admit('::ffff:10.0.0.1');
  t.ok(a1.admitted && a2.admitted);
  t.same(gate.admit('10.0.0.1'), { admitted: false, reason: 'client' }, 'a third from the same client (IPv4-mapped counts as IPv4)');
  const b1 = gate.admit('10.0.0.2');
  t.ok(b1.admitted);
  t.same(gate.admit('10.0.0.3'), { admitted: false, reason: 'total' }, 'the overall cap');
  t.equal(gate.open, 3);
  if (a1.admitted) {
    a1.release();
    a1.release();
  }
  t.equal(gate.open, 2, 'a second release of the same connection changes nothing');
  t.ok(gate.admit('10.0.0.3').admitted, 'a place is free again');
  t.same(gate.admit('10.0.0.1'), { admitted: false, reason: 'total' });
});

t.test('an IPv6 client is its /64', async (t) => {
  t.equal(clientKey('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), '2001:db8:1:2::/64');
  t.equal(clientKey('2001:db8:1:2::1'), '2001:db8:1:2::/64', 'compressed');
  t.equal(clientKey('2001:0db8:0001:0002:0000:0000:0000:0001'), '2001:db8:1:2::/64', 'leading zeros');
  t.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64');
  t.equal(clientKey('::1'), '0:0:0:0::/64');
  t.equal(clientKey('fe80::1%eth0'), 'fe80:0:0:0::/64', 'zone dropped');
  t.equal(clientKey('64:ff9b::192.0.2.1'), '64:ff9b:0:0::/64', 'embedded IPv4 tail');
  t.equal(clientKey('::ffff:192.0.2.1'), '192.0.2.1', 'IPv4-mapped is the IPv4 client');
  t.equal(clientKey('192.0.2.1'), '192.0.2.1');
  t.equal(clientKey(undefined), 'unknown');
  const gate = new ConnectionGate({ maxConnections: 100, maxConnectionsPerClient: 1 });
  t.ok(gate.admit('2001:db8:1:2::1').admitted);
  t.same(gate.admit('2001:db8:1:2::2'), { admitted: false, reason: 'client' }, 'another address of the same /64 is the same client');
  t.ok(gate.admit('2001:db8:1:3::1').admitted, 'another /64 is another client');
});
