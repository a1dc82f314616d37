// What `cove doctor` found: one result per check, printed one line each for an operator (or as
// JSON for a script), and the exit code: 0 when nothing failed, 1 when any check failed.

/** ok: nothing in the way. warn: pulls work now but something is about to go wrong or is odd. fail: pulls break. skip: nothing to check here. */
export type Status = 'ok' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  /** Which check: "origin", "clock", "data-dir", "certificate", "peer http://10.0.0.2:5000", "docker daemon.json", ... */
  name: string;
  status: Status;
  /** One sentence in plain words: what was found and, when something is wrong, what to do. */
  message: string;
}

export interface Report {
  ok: boolean;
  counts: Record<Status, number>;
  checks: CheckResult[];
}

export function report(checks: CheckResult[]): Report {
  const counts: Record<Status, number> = { ok: 0, warn: 0, fail: 0, skip: 0 };
  for (const c of checks) counts[c.status]++;
  return { ok: counts.fail === 0, counts, checks };
}

const MARKS: Record<Status, string> = { ok: 'ok  ', warn: 'WARN', fail: 'FAIL', skip: 'skip' };

/** One line per check (mark, name, explanation) and a last line with the counts. */
export function formatReport(r: Report): string {
  const width = Math.max(0, ...r.checks.map((c) => c.name.length));
  const lines = r.checks.map((c) => `${MARKS[c.status]}  ${c.name.padEnd(width)}  ${c.message}`);
  const { ok, warn, fail, skip } = r.counts;
  lines.push(`${fail === 0 ? 'nothing stops pulls' : `${fail} problem(s) stop pulls`}: ${ok} ok, ${warn} warning(s), ${fail} failed, ${skip} skipped`);
  return `${lines.join('\n')}\n`;
}

/** The exit code of `cove doctor`: 0 when no check failed (warnings allowed), 1 otherwise. */
export function exitCode(r: Report): number {
  return r.ok ? 0 : 1;
}
