// Cove's own tokens: what verify() accepts and refuses, and reading another issuer's grants.
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { DecisionBook } from '../../src/client-auth/decisions.js';
import { TokenSigner, grantsPull, readGrants } from '../../src/client-auth/token.js';

const KEY = Buffer.alloc(32, 7);

t.test('a token verifies until it expires, and only with its key and issuer', async (t) => {
  const signer = new TokenSigner(KEY, 'cove:node-1');
  const now = Date.UTC(2026, 10, 30, 12);
  const { token, expiresIn } = signer.issue('reader-a', 'cove:origin', [{ type: 'repository', name: 'team-a/app', actions: ['pull'] }], now);
  const claims = signer.verify(token, now + 1000);
  t.equal(claims?.sub, 'reader-a');
  t.ok(claims && grantsPull(claims.access, 'team-a/app'));
  t.notOk(claims && grantsPull(claims.access, 'team-b/app'));
  t.equal(signer.verify(token, now + expiresIn * 1000), null, 'expired');
  t.equal(new TokenSigner(Buffer.alloc(32, 8), 'cove:node-1').verify(token, now), null, 'another key');
  t.equal(new TokenSigner(KEY, 'cove:node-2').verify(token, now), null, 'another issuer');
  const [h, p, s] = token.split('.');
  const widened = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p!, 'base64url').toString()), access: [{ type: 'repository', name: 'team-b/app', actions: ['pull'] }] })).toString('base64url');
  t.equal(signer.verify(`${h}.${widened}.${s}`, now), null, 'a widened grant fails its signature');
  t.equal(signer.verify(`${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.`, now), null, 'alg none is refused');
  t.equal(signer.verify('garbage', now), null);
});

t.test('the key is made once, 0600, and kept', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cove-key-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const a = await TokenSigner.forDataDir(dir, 'x');
  const b = await TokenSigner.forDataDir(dir, 'x');
  t.equal(statSync(join(dir, 'client-auth.key')).mode & 0o777, 0o600);
  const credential = 'Basic cm9ib3Q6cGFzc3dvcmQ=';
  t.equal(a.credentialDigest(credential), b.credentialDigest(credential), 'the same key on the second start');
  t.not(a.credentialDigest(credential), a.credentialDigest('Basic cm9ib3Q6cGFzc3dvcmE='));
  // The key file is hex; a credential with letters past 'f' and punctuation cannot appear in it by chance.
  t.notMatch(readFileSync(join(dir, 'client-auth.key'), 'utf8'), /cm9ib3Q|password/);
  writeFileSync(join(dir, 'client-auth.key'), 'not a key');
  await t.rejects(TokenSigner.forDataDir(dir, 'x'), /does not hold a token key/);
});

t.test("another issuer's grants are read from its access claim", async (t) => {
  const payload = Buffer.from(JSON.stringify({ sub: 'reader-a', access: [{ type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] }, { bad: 1 }] })).toString('base64url');
  t.same(readGrants(`e30.${payload}.sig`), { sub: 'reader-a', access: [{ type: 'repository', name: 'team-a/app', actions: ['pull', 'push'] }] });
  t.equal(readGrants('opaque-token'), null);
  t.equal(readGrants(`e30.${Buffer.from('{"sub":"x"}').toString('base64url')}.sig`), null, 'no access claim: not readable');
});

t.test('decisions: allowances survive a reopen, refusals do not, a damaged file is not fatal', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'cove-book-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const log = pino({ level: 'silent' });
  const book = await DecisionBook.open(dir, log);
  book.put('k-allowed', { subject: 'reader-a', allowed: true, decidedAt: 1 });
  book.put('k-refused', { subject: 'reader-b', allowed: false, decidedAt: 2 });
  await book.close();
  const text = readFileSync(join(dir, 'client-auth', 'decisions.json'), 'utf8');
  t.notMatch(text, /reader-b/, 'refusals are not written');
  t.equal(statSync(join(dir, 'client-auth', 'decisions.json')).mode & 0o777, 0o600);
  const again = await DecisionBook.open(dir, log);
  t.same(again.get('k-allowed'), { subject: 'reader-a', allowed: true, decidedAt: 1 });
  t.equal(again.get('k-refused'), null);
  writeFileSync(join(dir, 'client-auth', 'decisions.json'), '{broken');
  const fresh = await DecisionBook.open(dir, log);
  t.equal(fresh.size, 0, 'a damaged file starts an empty book');
});
