// `cove doctor` and the static peers, run as the real CLI against real Coves (startTestCove):
// a peer that does not answer, one with another COVE_PEER_KEY, one with none, one keyed where
// this node has no key, and one keyed alike.
import t from 'tap';
import { startTestCove } from '../helpers/cove.js';
import { OriginRegistry } from '../helpers/origin-registry.js';
import { doctor } from './helpers.js';

const KEY = 'site-key-0123456789abcdef';
const OTHER_KEY = 'another-key-0123456789abc';

t.test('peers', async (t) => {
  const origin = await OriginRegistry.start();
  t.teardown(() => origin.close());
  const alike = await startTestCove(t, origin.url, { COVE_NODE_ID: 'peer-alike', COVE_PEER_KEY: KEY });
  const differs = await startTestCove(t, origin.url, { COVE_NODE_ID: 'peer-differs', COVE_PEER_KEY: OTHER_KEY });
  const keyless = await startTestCove(t, origin.url, { COVE_NODE_ID: 'peer-keyless' });
  const base = { COVE_UPSTREAM: origin.url, COVE_NODE_ID: 'edge-doctor', COVE_PEER_TIMEOUT: '2s' };

  t.test('keyed alike: ok, with the peer named by its id', async (t) => {
    const run = await doctor(t, { ...base, COVE_PEER_KEY: KEY, COVE_PEERS: alike.url });
    t.equal(run.code, 0, 'exit 0', { stdout: run.stdout });
    t.equal(run.check(`peer ${alike.url}`).status, 'ok');
    t.match(run.check(`peer ${alike.url}`).message, /^peer peer-alike at http:\/\/127\.0\.0\.1:\d+ answers and holds the same COVE_PEER_KEY$/);
  });

  t.test('another key: "holds a different COVE_PEER_KEY", exit 1', async (t) => {
    const run = await doctor(t, { ...base, COVE_PEER_KEY: KEY, COVE_PEERS: `${alike.url},${differs.url}` });
    t.equal(run.code, 1);
    t.equal(run.check(`peer ${alike.url}`).status, 'ok', 'the other peer still passes');
    t.equal(run.check(`peer ${differs.url}`).status, 'fail');
    t.match(run.check(`peer ${differs.url}`).message, /^peer peer-differs at .* holds a different COVE_PEER_KEY/);
  });

  t.test('no key at the peer: "has no COVE_PEER_KEY"', async (t) => {
    const run = await doctor(t, { ...base, COVE_PEER_KEY: KEY, COVE_PEERS: keyless.url });
    t.equal(run.code, 1);
    t.match(run.check(`peer ${keyless.url}`).message, /^peer peer-keyless at .* has no COVE_PEER_KEY \(it answered the key challenge with no proof\)/);
  });

  t.test('a keyed peer and no key here: refused unsigned requests are named', async (t) => {
    const run = await doctor(t, { ...base, COVE_PEERS: alike.url });
    t.equal(run.code, 1);
    t.match(run.check(`peer ${alike.url}`).message, /^peer peer-alike at .* has a COVE_PEER_KEY and this node has none/);
    const plain = await doctor(t, { ...base, COVE_PEERS: keyless.url });
    t.equal(plain.code, 0, 'two keyless nodes agree');
    t.match(plain.check(`peer ${keyless.url}`).message, /neither it nor this node uses a COVE_PEER_KEY/);
  });

  t.test('a peer that does not answer, and one that is this node', async (t) => {
    const run = await doctor(t, { ...base, COVE_PEER_KEY: KEY, COVE_PEERS: 'http://127.0.0.1:1', COVE_PEER_TIMEOUT: '500ms' });
    t.equal(run.code, 1);
    t.match(run.check('peer http://127.0.0.1:1').message, /^the peer at http:\/\/127\.0\.0\.1:1 refused the connection/);
    const self = await doctor(t, { ...base, COVE_NODE_ID: 'peer-alike', COVE_PEER_KEY: KEY, COVE_PEERS: alike.url });
    t.equal(self.check(`peer ${alike.url}`).status, 'skip');
    t.match(self.check(`peer ${alike.url}`).message, /is this node \(peer-alike\)/);
  });

  t.test('something that is not a Cove', async (t) => {
    const run = await doctor(t, { ...base, COVE_PEER_KEY: KEY, COVE_PEERS: origin.url });
    t.equal(run.code, 1);
    t.match(run.check(`peer ${origin.url}`).message, /answered 404 to GET \/_cove\/node: is it a Cove/);
  });
});
