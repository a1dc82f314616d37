// Clock skew against the origin's Date header. Tokens the origin issues expire by its clock, peer
// signatures hold for five minutes either way, and TLS validity is read by this host's clock: a
// node whose clock is minutes off fails pulls in ways that look like credential problems.
import { formatDuration } from '../../units.js';
import type { CheckResult } from '../report.js';

/** Beyond this the node is off far enough to break token lifetimes and peer signatures. */
export const SKEW_FAIL_MS = 60_000;
/** Date has one-second resolution and the answer takes a moment: below this is noise. */
export const SKEW_WARN_MS = 5_000;

/** `date` is the origin's Date header; `receivedAt` this host's time when the answer arrived. */
export function clockCheck(date: string | undefined, receivedAt: number): CheckResult {
  const name = 'clock';
  if (date === undefined) return { name, status: 'skip', message: 'the origin sent no Date header, so this host\'s clock could not be compared with it' };
  const theirs = Date.parse(date);
  if (Number.isNaN(theirs)) return { name, status: 'skip', message: `the origin's Date header ${JSON.stringify(date.slice(0, 60))} is not a date` };
  const skew = receivedAt - theirs;
  const way = skew > 0 ? 'ahead of' : 'behind';
  // Date has whole seconds: more digits would be noise.
  const by = formatDuration(Math.max(1000, Math.round(Math.abs(skew) / 1000) * 1000));
  if (Math.abs(skew) > SKEW_FAIL_MS) {
    return {
      name,
      status: 'fail',
      message: `this host's clock is ${by} ${way} the origin's (origin Date: ${date}): tokens look expired or not yet valid, peer signatures are refused and TLS dates are misread; fix the time (timedatectl set-ntp true, or chrony/ntpd)`,
    };
  }
  if (Math.abs(skew) > SKEW_WARN_MS) {
    return { name, status: 'warn', message: `this host's clock is ${by} ${way} the origin's; not yet harmful, but check that NTP runs (timedatectl)` };
  }
  return { name, status: 'ok', message: `this host's clock agrees with the origin's (within ${formatDuration(SKEW_WARN_MS)})` };
}
