// Fill admission on its own: the overall and per-client caps, the bounded wait for a slot, the
// bound on waiters, a waiter whose client left, prewarm's own budget, and unsigned peers.
import t from 'tap';
import { OciError } from '../../src/errors.js';
import { BACKGROUND, FillAdmission } from '../../src/resolve/admission.js';

const client = (address: string) => ({ kind: 'client' as const, address });
const peer = (address: string) => ({ kind: 'peer' as const, address });

t.test('per-client and overall caps; a 429 names the cap and carries Retry-After', async (t) => {
  let refused = 0;
  const a = new FillAdmission({ max: 3, maxPerClient: 2, queueWaitMs: 0 }, () => refused++);
  const r1 = await a.admit(client('10.0.0.1'));
  await a.admit(client('10.0.0.1'));
  const perClient = await a.admit(client('10.0.0.1')).catch((e: unknown) => e);
  t.ok(perClient instanceof OciError && perClient.code === 'TOOMANYREQUESTS' && perClient.status === 429);
  t.match((perClient as OciError).message, /COVE_MAX_FILLS_PER_CLIENT/);
  t.equal((perClient as OciError).headers['retry-after'], '5');
  await a.admit(client('10.0.0.2'));
  const overall = await a.admit(client('10.0.0.3')).catch((e: unknown) => e);
  t.match((overall as OciError).message, /COVE_MAX_FILLS\)/);
  t.equal(refused, 2);
  r1();
  r1(); // a second release is a no-op
  t.equal(a.running, 2);
  await a.admit(client('10.0.0.3'));
});

t.test('a request over a cap waits for a slot, oldest first, for at most queueWaitMs', async (t) => {
  const a = new FillAdmission({ max: 2, maxPerClient: 2, queueWaitMs: 2000 });
  const first = await a.admit(client('10.0.0.1'));
  const second = await a.admit(client('10.0.0.1'));
  const order: string[] = [];
  const w1 = a.admit(client('10.0.0.2')).then((r) => (order.push('w1'), r));
  const w2 = a.admit(client('10.0.0.3')).then((r) => (order.push('w2'), r));
  t.equal(a.waiting, 2);
  first();
  const r1 = await w1;
  t.same(order, ['w1'], 'one slot freed: the oldest waiter has it');
  second();
  (await w2)();
  r1();
  t.same(order, ['w1', 'w2']);
  t.equal(a.running, 0);
  const short = new FillAdmission({ max: 1, maxPerClient: 1, queueWaitMs: 50 });
  await short.admit(client('10.0.0.1'));
  const started = Date.now();
  await t.rejects(short.admit(client('10.0.0.2')), { code: 'TOOMANYREQUESTS' });
  t.ok(Date.now() - started >= 40, 'refused once the wait ran out');
  t.equal(short.waiting, 0);
});

t.test('waiting is bounded, and ends when the client leaves', async (t) => {
  const a = new FillAdmission({ max: 1, maxPerClient: 1, queueWaitMs: 10_000 });
  const held = await a.admit(client('10.0.0.1'));
  const gone = new AbortController();
  const waiting = a.admit(client('10.0.0.2'), gone.signal);
  await t.rejects(a.admit(client('10.0.0.3')), { code: 'TOOMANYREQUESTS' }, 'no more waiters than slots');
  gone.abort(new Error('client left'));
  await t.rejects(waiting, /client left/);
  t.equal(a.waiting, 0);
  held();
  t.equal(a.running, 0, 'the slot was not handed to the waiter that left');
});

t.test('prewarm has its own budget and waits without a limit; signed peers count only overall', async (t) => {
  const a = new FillAdmission({ max: 2, maxPerClient: 1, queueWaitMs: 0, background: 1 });
  const bg = await a.admit(BACKGROUND);
  const bgWait = a.admit(BACKGROUND);
  await a.admit(client('10.0.0.1'));
  t.equal(a.running, 1, 'prewarm slots are apart from clients\'');
  bg();
  (await bgWait)();
  const unsigned = new FillAdmission({ max: 4, maxPerClient: 1, queueWaitMs: 0 });
  await unsigned.admit(peer('10.0.0.9'));
  await t.rejects(unsigned.admit(peer('10.0.0.9')), { code: 'TOOMANYREQUESTS' }, 'unsigned: a peer is its address');
  const signed = new FillAdmission({ max: 4, maxPerClient: 1, queueWaitMs: 0, peersSigned: true });
  await signed.admit(peer('10.0.0.9'));
  await signed.admit(peer('10.0.0.9'));
  t.equal(signed.running, 2, 'signed: only the overall cap');
});
