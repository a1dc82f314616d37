// The pino root logger. Credentials never reach a log line: authorization headers, tokens and
// passwords are redacted wherever they appear in the objects handed to the logger.
import { pino, type Logger } from 'pino';

export type { Logger };

const REDACT = [
  'authorization',
  'headers.authorization',
  'req.headers.authorization',
  '*.authorization',
  'password',
  '*.password',
  'token',
  '*.token',
  'access_token',
  '*.access_token',
];

/** Creates the root logger: JSON lines on stdout (or `destination`), credentials redacted. */
export function createLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { service: 'cove' },
      redact: { paths: REDACT, censor: '[redacted]' },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}
