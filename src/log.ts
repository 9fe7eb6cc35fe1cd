import pino, { type Logger } from 'pino';

export type { Logger };

/**
 * grapevine's default logger. Secrets are redacted by path as a second line
 * of defence; the first is that connection strings are never logged at all
 * (see redact.ts).
 */
export function createLogger(options: { level?: string; name?: string } = {}): Logger {
  return pino({
    name: options.name ?? 'grapevine',
    level: options.level ?? process.env.GRAPEVINE_LOG_LEVEL ?? 'info',
    redact: {
      paths: ['password', 'connectionString', '*.password', '*.connectionString', 'config.connectionString'],
      censor: '[redacted]',
    },
  });
}

/** A logger that says nothing: the default for library use inside tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/**
 * Lets one message through per interval and counts the rest, so a component
 * that fails on every attempt while PostgreSQL is down logs about once a
 * second instead of flooding.
 */
export function throttled(intervalMs: number): (emit: (suppressed: number) => void) => void {
  let last = 0;
  let suppressed = 0;
  return (emit) => {
    const now = Date.now();
    if (now - last >= intervalMs) {
      last = now;
      const count = suppressed;
      suppressed = 0;
      emit(count);
    } else {
      suppressed++;
    }
  };
}

/**
 * A warning throttled per message, as throttled() does for one: when
 * several things fail at once, a burst of one must not hide the first
 * report of another (a sweep failing every tick would otherwise swallow
 * "heartbeat failed").
 */
export function throttledWarnings(intervalMs: number): (logger: Logger, fields: Record<string, unknown>, message: string) => void {
  const byMessage = new Map<string, (emit: (suppressed: number) => void) => void>();
  return (logger, fields, message) => {
    let throttle = byMessage.get(message);
    if (!throttle) byMessage.set(message, (throttle = throttled(intervalMs)));
    throttle((suppressed) => logger.warn({ ...fields, suppressed }, message));
  };
}
