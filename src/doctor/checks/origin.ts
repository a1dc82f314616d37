// Is the origin reachable, and does it accept the configured credentials? One GET of /v2/ (the
// registry's "do you know me" endpoint), then, on a 401, what Cove itself would do: Basic with the
// configured credentials, or a token from the challenge's realm (UpstreamAuth, the daemon's own
// code) and /v2/ again with it. Every request goes through the daemon's dispatcher (its CA, proxy
// and timeout settings) and is bounded.
import { pino } from 'pino';
import { request, type Dispatcher } from 'undici';
import type { UpstreamConfig } from '../../config.js';
import { UpstreamAuthError, UpstreamStatusError, UpstreamUnavailableError } from '../../errors.js';
import { readSmall } from '../../http-util.js';
import { UpstreamAuth, type AuthAttempt } from '../../upstream/auth.js';
import { findChallenge, parseChallenges } from '../../upstream/challenge.js';
import { createDispatcher } from '../../upstream/dispatcher.js';
import { explainNetworkError, type Target } from '../net-error.js';
import type { CheckResult } from '../report.js';
import { clockCheck } from './clock.js';

/** Largest answer read from /v2/ or a token endpoint. */
const BODY_LIMIT = 1024 * 1024;

const CREDENTIAL_SETTINGS = 'COVE_UPSTREAM_USERNAME and COVE_UPSTREAM_PASSWORD (or COVE_UPSTREAM_PASSWORD_FILE)';

interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  receivedAt: number;
}

function one(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value.join(', ') : value;
}

/** The origin check and the clock check (which needs the origin's answer). */
export async function checkOrigin(up: UpstreamConfig, offline: boolean): Promise<CheckResult[]> {
  if (offline) {
    return [
      { name: 'origin', status: 'skip', message: 'COVE_OFFLINE is on: Cove never contacts the origin, it serves only what is cached' },
      { name: 'clock', status: 'skip', message: 'not compared: COVE_OFFLINE is on' },
    ];
  }
  const base = new URL(up.url);
  const dispatcher = createDispatcher(base, up);
  try {
    return await probe(up, base, dispatcher);
  } finally {
    await dispatcher.destroy().catch(() => undefined);
  }
}

async function probe(up: UpstreamConfig, base: URL, dispatcher: Dispatcher): Promise<CheckResult[]> {
  const target: Target = {
    what: 'the origin',
    url: base,
    timeoutMs: up.timeoutMs,
    timeoutSetting: 'COVE_UPSTREAM_TIMEOUT',
    trustHint: 'give its CA certificate (PEM) in COVE_UPSTREAM_CA, or for a test origin only set COVE_UPSTREAM_INSECURE=true',
  };
  // The dispatcher bounds connecting and the headers by the timeout each; this bounds the whole.
  const get = async (url: URL, headers: Record<string, string>): Promise<Answer> => {
    const res = await request(url, { method: 'GET', headers, dispatcher, signal: AbortSignal.timeout(2 * up.timeoutMs + 1000) });
    const receivedAt = Date.now();
    const body = await readSmall(res.body, BODY_LIMIT);
    return { status: res.statusCode, headers: res.headers, body, receivedAt };
  };
  const v2 = new URL('/v2/', base);
  let first: Answer;
  try {
    first = await get(v2, {});
  } catch (err) {
    return [
      { name: 'origin', status: 'fail', message: explainNetworkError(err, target) },
      { name: 'clock', status: 'skip', message: 'not compared: the origin did not answer' },
    ];
  }
  const clock = clockCheck(one(first.headers.date), first.receivedAt);
  return [await credentials(up, base, v2, first, get), clock];
}

/** What the origin's answers to /v2/ say about reaching it and about the credentials. */
async function credentials(up: UpstreamConfig, base: URL, v2: URL, first: Answer, get: (url: URL, headers: Record<string, string>) => Promise<Answer>): Promise<CheckResult> {
  const name = 'origin';
  const fail = (message: string): CheckResult => ({ name, status: 'fail', message });
  const hasCredentials = up.username !== null && up.username !== '';
  if (first.status === 200) {
    return { name, status: 'ok', message: `the origin at ${base.origin} answers /v2/ without credentials${hasCredentials ? ' (the configured ones are sent when it asks for them)' : ''}` };
  }
  if (first.status !== 401) return statusProblem(base, first.status);

  const header = one(first.headers['www-authenticate']);
  const challenges = parseChallenges(header);
  const bearer = findChallenge(challenges, 'bearer');
  const basic = findChallenge(challenges, 'basic');
  if (!bearer && !basic) return fail(`the origin at ${base.origin} answered 401 without a Basic or Bearer challenge${header ? ` (${header.slice(0, 120)})` : ''}: it is not a registry Cove can log in to`);
  if (!bearer && !hasCredentials) return fail(`the origin at ${base.origin} asks for credentials (Basic) and none are configured: set ${CREDENTIAL_SETTINGS}`);
  const realm = bearer?.params.realm ?? null;
  const auth = new UpstreamAuth({
    upstream: up.name,
    baseUrl: base,
    tokenRealms: up.tokenRealms,
    username: up.username,
    password: up.password,
    get: async (url, headers) => {
      const answer = await get(url, headers);
      return { status: answer.status, body: answer.body };
    },
    logger: pino({ level: 'silent' }),
  });
  let attempt: AuthAttempt;
  try {
    attempt = await auth.respond(header, undefined, { authorization: null, tokenKey: null });
  } catch (err) {
    return fail(tokenProblem(err, realm, hasCredentials, up));
  }
  let second: Answer;
  try {
    second = await get(v2, attempt.authorization === null ? {} : { authorization: attempt.authorization });
  } catch (err) {
    return fail(explainNetworkError(err, { what: 'the origin', url: base, timeoutMs: up.timeoutMs, timeoutSetting: 'COVE_UPSTREAM_TIMEOUT' }));
  }
  const how = bearer ? `a token from ${realm}` : 'Basic';
  if (second.status === 200) {
    return { name, status: 'ok', message: `the origin at ${base.origin} accepts ${hasCredentials ? `the configured credentials (${how})` : `anonymous pulls (${how})`}` };
  }
  if (second.status === 401 || second.status === 403) {
    if (!hasCredentials) return fail(`the origin at ${base.origin} refuses anonymous access (${second.status}): set ${CREDENTIAL_SETTINGS}`);
    if (!bearer) return fail(`credentials refused: the origin at ${base.origin} answered ${second.status} to user ${JSON.stringify(up.username)} (Basic); check ${CREDENTIAL_SETTINGS}`);
    return fail(`the token service at ${realm} issued a token, but the origin at ${base.origin} refused it on /v2/ (${second.status}); check that the account may log in to this registry`);
  }
  return statusProblem(base, second.status);
}

function statusProblem(base: URL, status: number): CheckResult {
  const name = 'origin';
  if (status === 404) return { name, status: 'fail', message: `the origin at ${base.origin} answered 404 on /v2/: no registry there; COVE_UPSTREAM must name the registry host (Harbor's URL), without a path` };
  if (status === 429) return { name, status: 'warn', message: `the origin at ${base.origin} is rate-limiting this host (429 on /v2/); pulls of uncached images may fail until it stops` };
  if (status >= 500) return { name, status: 'fail', message: `the origin at ${base.origin} is up but failing (${status} on /v2/); pulls of uncached images fail until it recovers` };
  return { name, status: 'fail', message: `the origin at ${base.origin} answered ${status} on /v2/, which no registry does; is COVE_UPSTREAM the registry's URL?` };
}

/** Why the token flow (or Basic) could not even produce an attempt. */
function tokenProblem(err: unknown, realm: string | null, hasCredentials: boolean, up: UpstreamConfig): string {
  if (err instanceof UpstreamAuthError && realm !== null && (err.status === 401 || err.status === 403) && err.message.includes('token endpoint')) {
    return hasCredentials
      ? `credentials refused by the token service at ${realm} (${err.status}) for user ${JSON.stringify(up.username)}: check ${CREDENTIAL_SETTINGS} (a Harbor robot account's name is robot$...)`
      : `the token service at ${realm} gives no anonymous tokens (${err.status}): set ${CREDENTIAL_SETTINGS}`;
  }
  if (err instanceof UpstreamUnavailableError && realm !== null) {
    let url: URL | null = null;
    try {
      url = new URL(realm);
    } catch {
      // reported below as the plain message
    }
    if (url !== null) return explainNetworkError(err.cause ?? err, { what: 'the token service', url, timeoutMs: up.timeoutMs, timeoutSetting: 'COVE_UPSTREAM_TIMEOUT' });
  }
  if (err instanceof UpstreamStatusError && realm !== null) return `the token service at ${realm} is failing (${err.status}); pulls that need a new token fail until it recovers`;
  return `${(err as Error).message}`;
}
