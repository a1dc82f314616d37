// The per-upstream circuit breaker: opens after consecutive failures, fails fast while open,
// probes with capped, jittered exponential back-off, and closes when the upstream answers.
import t from 'tap';
import { pino } from 'pino';
import { Breaker } from '../../src/upstream/breaker.js';
import { UpstreamUnavailableError } from '../../src/errors.js';

const log = pino({ level: 'silent' });
const down = new UpstreamUnavailableError('origin', 'connect ECONNREFUSED');

t.test('opens after the threshold, fails fast, closes on a successful probe', async (t) => {
  let probes = 0;
  let upstreamUp = false;
  const breaker = new Breaker('origin', log, async () => {
    probes++;
    if (!upstreamUp) throw new Error('still down');
  }, { threshold: 3, baseMs: 20, maxMs: 80, random: () => 0.5 });
  t.teardown(() => breaker.stop());

  breaker.failure(down);
  breaker.failure(down);
  t.doesNotThrow(() => breaker.check(), 'two failures: still closed');
  breaker.failure(down);
  t.equal(breaker.snapshot().state, 'open');
  t.throws(() => breaker.check(), UpstreamUnavailableError, 'open: fails at once');
  t.match((() => { try { breaker.check(); } catch (e) { return (e as Error).message; } return ''; })(), /marked down after 3 failed attempts.*ECONNREFUSED/);

  await new Promise((r) => setTimeout(r, 60));
  t.ok(probes >= 1, 'a probe ran');
  t.equal(breaker.snapshot().state, 'open', 'a failed probe keeps it open');
  upstreamUp = true;
  for (let i = 0; i < 40 && breaker.isOpen; i++) await new Promise((r) => setTimeout(r, 10));
  t.equal(breaker.snapshot().state, 'closed', 'a successful probe closes it');
  t.doesNotThrow(() => breaker.check());
  t.equal(breaker.snapshot().opened, 1);
});

t.test('a success resets the count; a request success closes an open breaker', async (t) => {
  const breaker = new Breaker('origin', log, async () => { throw new Error('down'); }, { threshold: 2, baseMs: 10_000 });
  t.teardown(() => breaker.stop());
  breaker.failure(down);
  breaker.success();
  breaker.failure(down);
  t.equal(breaker.snapshot().state, 'closed', 'failures must be consecutive');
  breaker.failure(down);
  t.equal(breaker.snapshot().state, 'open');
  breaker.success();
  t.equal(breaker.snapshot().state, 'closed');
});

t.test('back-off doubles per failed probe, is capped, and jitters within its upper half', async (t) => {
  let r = 0;
  const breaker = new Breaker('origin', log, async () => { throw new Error('down'); }, { threshold: 1, baseMs: 5, maxMs: 40, random: () => r });
  t.teardown(() => breaker.stop());
  t.equal(breaker.backoffMs(), 3, 'base 5 ms, jitter 0: 2.5 ms rounded');
  r = 0.999;
  t.equal(breaker.backoffMs(), 5, 'jitter ~1: the full base');
  breaker.failure(down);
  // Let probes fail until the back-off reaches the cap.
  await new Promise((res) => setTimeout(res, 300));
  t.equal(breaker.backoffMs(), 40, 'capped at maxMs');
});

t.test('trip: one silence past a deadline opens it at once; a probe that gets an answer closes it', async (t) => {
  let probes = 0;
  const breaker = new Breaker('origin', log, async () => {
    probes++;
  }, { threshold: 3, baseMs: 20, maxMs: 80, random: () => 0.5 });
  t.teardown(() => breaker.stop());
  breaker.trip('no answer within the revalidation deadline (1000 ms)');
  t.equal(breaker.snapshot().state, 'open', 'open without three failures');
  t.equal(breaker.snapshot().opened, 1);
  t.equal(breaker.snapshot().lastError, 'no answer within the revalidation deadline (1000 ms)');
  t.throws(() => breaker.check(), /marked down \(no answer within the revalidation deadline \(1000 ms\)\).*next probe in/);
  breaker.trip('again');
  t.equal(breaker.snapshot().opened, 1, 'tripping an open breaker does not count a second opening');
  for (let i = 0; i < 50 && breaker.snapshot().state === 'open'; i++) await new Promise((r) => setTimeout(r, 10));
  t.ok(probes >= 1);
  t.equal(breaker.snapshot().state, 'closed', 'the probe got an answer');
});

t.test('says since when, how many stale answers were given while down, and logs once per change', async (t) => {
  let now = 1_000_000;
  let stale = 7;
  const lines: Array<{ level: number; msg: string }> = [];
  const recording = pino({ level: 'debug' }, { write: (line: string) => lines.push(JSON.parse(line)) });
  let opened = 0;
  const breaker = new Breaker('origin', recording, async () => undefined, { threshold: 3, baseMs: 60_000, now: () => now, staleCount: () => stale, onOpen: () => opened++ });
  t.teardown(() => breaker.stop());
  t.equal(breaker.snapshot().since, null, 'never down: no since');
  t.equal(breaker.snapshot().lastErrorClass, null);

  const refused = new UpstreamUnavailableError('origin', 'connect ECONNREFUSED', { cause: Object.assign(new Error('x'), { code: 'ECONNREFUSED' }) });
  for (let i = 0; i < 5; i++) breaker.failure(refused);
  t.equal(breaker.snapshot().state, 'open');
  t.equal(breaker.snapshot().since, now, 'down since the third failure');
  t.equal(breaker.snapshot().lastErrorClass, 'refused');
  t.equal(opened, 1, 'waiters released once');
  stale += 4;
  now += 30_000;
  t.equal(breaker.snapshot().staleWhileDown, 4, 'stale answers since it was marked down');
  breaker.success();
  t.equal(breaker.snapshot().state, 'closed');
  t.equal(breaker.snapshot().since, now, 'reachable again since now');
  stale += 10;
  t.equal(breaker.snapshot().staleWhileDown, 4, 'after the outage: the last outage\'s count');
  const changes = lines.filter((l) => l.level >= 30).map((l) => l.msg);
  t.same(changes, ['upstream marked down: answering from cache without waiting', 'upstream reachable again'], 'one line per state change, not per failure');

  breaker.trip('silent');
  t.equal(opened, 1, 'a trip leaves waiting requests to the silence check');
  t.equal(breaker.snapshot().lastErrorClass, 'timeout');
});

t.test('a request that finds the upstream marked down starts a probe unless one ran within the demand interval', async (t) => {
  let probes = 0;
  let up = false;
  let now = 5_000_000;
  const breaker = new Breaker('origin', log, async () => {
    probes++;
    if (!up) throw new Error('still down');
  }, { threshold: 1, baseMs: 600_000, maxMs: 600_000, demandIntervalMs: 1000, now: () => now });
  t.teardown(() => breaker.stop());
  breaker.failure(down);
  t.throws(() => breaker.check(), UpstreamUnavailableError);
  await new Promise((r) => setImmediate(r));
  t.equal(probes, 1, 'the first request probes at once, though the back-off is ten minutes');
  for (let i = 0; i < 5; i++) t.throws(() => breaker.check());
  await new Promise((r) => setImmediate(r));
  t.equal(probes, 1, 'no more than one probe per interval');
  now += 1000;
  up = true;
  t.throws(() => breaker.check(), UpstreamUnavailableError, 'this request still fails fast: the probe runs in the background');
  await new Promise((r) => setImmediate(r));
  t.equal(probes, 2);
  t.equal(breaker.snapshot().state, 'closed', 'the probe found the origin back');
  t.doesNotThrow(() => breaker.check());
});

t.test('settle: a request with nothing cached waits for the next probe when the last ended lately, within its budget', async (t) => {
  let probes = 0;
  let up = false;
  const breaker = new Breaker('origin', log, async () => {
    probes++;
    if (!up) throw new Error('still down');
  }, { threshold: 1, baseMs: 600_000, maxMs: 600_000, demandIntervalMs: 300 });
  t.teardown(() => breaker.stop());
  breaker.failure(down);
  await breaker.settle(1000);
  t.equal(probes, 1, 'a probe ran and the request waited for it');
  t.equal(breaker.snapshot().state, 'open', 'still down');
  up = true;
  const started = Date.now();
  await breaker.settle(1000);
  t.equal(probes, 2, 'the last probe ended lately: the next one ran once the interval passed');
  t.equal(breaker.snapshot().state, 'closed', 'and found the upstream back');
  t.ok(Date.now() - started >= 250 && Date.now() - started < 1000, `within the budget (${Date.now() - started} ms)`);

  up = false;
  breaker.failure(down);
  await breaker.settle(1000);
  const before = Date.now();
  await breaker.settle(100);
  t.ok(Date.now() - before < 80, 'a budget shorter than the interval left: no wait, the verdict stands');
  t.equal(probes, 3);
});
