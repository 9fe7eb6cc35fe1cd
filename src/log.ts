import pino, { type Logger } from 'pino';

export type { Logger };

/** pretty: one readable line per event, for a terminal; json: pino's lines, for a log collector. */
export type LogFormat = 'pretty' | 'json';

/**
 * grapevine's default logger. Secrets are redacted by path as a second line
 * of defence; the first is that connection strings are never logged at all
 * (see redact.ts).
 */
export function createLogger(options: { level?: string; name?: string; format?: LogFormat } = {}): Logger {
  const settings = {
    name: options.name ?? 'grapevine',
    level: options.level ?? process.env.GRAPEVINE_LOG_LEVEL ?? 'info',
    redact: {
      paths: ['password', 'connectionString', '*.password', '*.connectionString', 'config.connectionString'],
      censor: '[redacted]',
    },
  };
  if (options.format !== 'pretty') return pino(settings);
  const logger = pino(settings, { write: (line: string) => void process.stdout.write(prettyLine(line)) });
  // Child loggers inherit it (pino makes them with the parent as prototype).
  Object.defineProperty(logger, FORMAT, { value: 'pretty' });
  return logger;
}

const FORMAT = Symbol('grapevine.logFormat');

/** How a logger from createLogger writes, so threads can write the same way; json for any other logger. */
export function logFormatOf(logger: Logger): LogFormat {
  return (logger as unknown as Record<symbol, LogFormat | undefined>)[FORMAT] ?? 'json';
}

const LEVEL_NAMES: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' };

/**
 * One pino JSON line as a person reads it: time of day, level, message, then
 * the remaining fields as key=value. The process's name, pid and host are
 * the same on every line of a terminal, so they are left out.
 */
export function prettyLine(json: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  const { time, level, msg, name: _name, pid: _pid, hostname: _hostname, ...fields } = entry;
  const clock = typeof time === 'number' ? new Date(time).toISOString().slice(11, 23) : '';
  const label = (LEVEL_NAMES[level as number] ?? String(level)).padEnd(5);
  const pairs = Object.entries(fields).map(
    ([key, value]) => `${key}=${typeof value === 'string' && /^\S+$/.test(value) ? value : JSON.stringify(value)}`,
  );
  return `${[clock, label, msg ?? '', ...pairs].filter((part) => part !== '').join(' ')}\n`;
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
