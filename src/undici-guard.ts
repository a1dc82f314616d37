// One known way for an upstream to end the process, contained. undici 7 asserts `!this.paused`
// from a socket 'end' handler when an upstream closes a connection while Cove holds back reading
// its body (a fill waiting for the disk): an exception no caller can catch (nodejs/undici#5360,
// fixed in undici 8, which needs Node 22). The response it belonged to never completes; the body
// timeout then ends it as a broken transfer, which a fill resumes. Every other uncaught exception
// still ends the process, as it would without this guard. Installed by `cove serve` only.
import type { Logger } from './log.js';

/** True for undici's paused-parser assertion, and nothing else. */
export function isPausedParserAssertion(err: unknown): boolean {
  if (!(err instanceof Error) || (err as { code?: unknown }).code !== 'ERR_ASSERTION') return false;
  const stack = err.stack ?? '';
  return /assert\(!this\.paused\)/.test(`${err.message}\n${stack}`) && /undici[\\/]lib[\\/]dispatcher[\\/]client-h1\.js/.test(stack);
}

/** Installs the guard; returns a function that removes it. */
export function guardUndiciPausedParser(log: Logger): () => void {
  const onUncaught = (err: Error) => {
    if (isPausedParserAssertion(err)) {
      log.error({ err: err.message }, 'an upstream closed its connection while its body was paused (undici #5360); the transfer will time out and resume');
      return;
    }
    // Anything else: end the process as Node would have.
    log.fatal({ err: err.stack ?? String(err) }, 'uncaught exception');
    process.exit(1);
  };
  process.on('uncaughtException', onUncaught);
  return () => process.off('uncaughtException', onUncaught);
}
