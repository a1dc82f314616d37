// The cove command: --version, --help, and start-up refusing bad configuration with one line.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import t from 'tap';

const CLI = fileURLToPath(new URL('../src/cli.js', import.meta.url));
const PKG = JSON.parse(readFileSync(fileURLToPath(new URL('../../package.json', import.meta.url)), 'utf8')) as { version: string };

function cove(args: string[], env: Record<string, string> = {}) {
  return spawnSync(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH, ...env }, encoding: 'utf8', timeout: 20_000 });
}

t.test('--version and --help', async (t) => {
  const v = cove(['--version']);
  t.equal(v.status, 0);
  t.equal(v.stdout.trim(), PKG.version);
  const h = cove(['--help']);
  t.equal(h.status, 0);
  t.match(h.stdout, /cove serve/);
  t.match(h.stdout, /COVE_UPSTREAM/);
});

t.test('bad configuration stops start-up with one line naming the key and value', async (t) => {
  const cases: Array<[string, string[], Record<string, string>, RegExp]> = [
    ['missing upstream', ['serve'], {}, /COVE_UPSTREAM/],
    ['bad ttl', ['serve'], { COVE_UPSTREAM: 'http://127.0.0.1:1', COVE_TAG_TTL: '5 minutes' }, /COVE_TAG_TTL.*5 minutes/],
    ['bad listen', ['serve'], { COVE_UPSTREAM: 'http://127.0.0.1:1', COVE_LISTEN: 'nowhere' }, /COVE_LISTEN.*nowhere/],
    ['bad flag value', ['serve', '--upstream', 'ftp://x'], {}, /ftp:\/\/x/],
    ['unknown flag', ['serve', '--frobnicate'], {}, /frobnicate/],
    ['unknown command', ['frob'], {}, /unknown command/],
  ];
  for (const [name, args, env, pattern] of cases) {
    const r = cove(args, env);
    t.equal(r.status, 2, `${name}: exit 2`);
    t.match(r.stderr, pattern, `${name}: names the problem`);
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`);
    t.notMatch(r.stderr, /at .*\.js:\d+/, `${name}: no stack trace`);
  }
});
