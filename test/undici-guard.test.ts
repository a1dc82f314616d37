// The guard for undici's paused-parser assertion (nodejs/undici#5360): without it an upstream
// that closes its connection while Cove holds back reading a body ends the process; with it the
// process lives on. Run in child processes, since the failure is uncatchable by design.
import { spawnSync } from 'node:child_process';
import t from 'tap';
import { isPausedParserAssertion } from '../src/undici-guard.js';

const FIXTURE = new URL('./fixtures/paused-parser.js', import.meta.url).pathname;

t.test('an upstream closing while its body is paused ends an unguarded process, not a guarded one', async (t) => {
  const bare = spawnSync(process.execPath, [FIXTURE, 'none'], { encoding: 'utf8', timeout: 20_000 });
  if (bare.status === 0) {
    // A future undici without the assertion: nothing left to guard against.
    t.comment('this undici no longer asserts on a paused parser; the guard is idle');
  } else {
    t.match(bare.stderr, /assert\(!this\.paused\)/, 'unguarded: undici\'s assertion ended the process');
  }
  const guarded = spawnSync(process.execPath, [FIXTURE, 'guard'], { encoding: 'utf8', timeout: 20_000 });
  t.equal(guarded.status, 0, 'guarded: the process lives on');
  t.match(guarded.stdout, /alive/);
});

t.test('only that assertion is swallowed', async (t) => {
  const other = Object.assign(new Error('boom'), { code: 'ERR_ASSERTION' });
  t.equal(isPausedParserAssertion(other), false, 'another assertion is not');
  t.equal(isPausedParserAssertion(new TypeError('assert(!this.paused)')), false, 'a look-alike message is not');
});
