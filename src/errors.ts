import { storableText } from './text.ts';

/**
 * Every error grapevine throws on purpose is a GrapevineError with a stable
 * `code`. Callers branch on the code; messages are for people and may change.
 */
export type ErrorCode =
  | 'GRAPEVINE_CONFIG_INVALID'
  | 'GRAPEVINE_DATABASE_UNREACHABLE'
  | 'GRAPEVINE_EMBEDDED_NOT_INSTALLED'
  | 'GRAPEVINE_SCHEMA_TOO_NEW'
  | 'GRAPEVINE_SCHEMA_TOO_OLD'
  | 'GRAPEVINE_SCHEMA_UNKNOWN'
  | 'GRAPEVINE_PERMISSION_DENIED'
  | 'GRAPEVINE_PAYLOAD_INVALID'
  | 'GRAPEVINE_TASKS_INVALID'
  | 'GRAPEVINE_SCHEDULE_INVALID'
  | 'GRAPEVINE_SCHEDULE_NOT_FOUND'
  | 'GRAPEVINE_QUEUE_LIMIT_INVALID'
  | 'GRAPEVINE_JOB_NOT_FOUND'
  | 'GRAPEVINE_WAIT_TIMEOUT'
  | 'GRAPEVINE_THREAD_CRASHED'
  | 'GRAPEVINE_JOB_TIMEOUT'
  | 'GRAPEVINE_CANCELLED'
  | 'GRAPEVINE_SHUTDOWN'
  | 'GRAPEVINE_RESPONSE_MISSING'
  | 'GRAPEVINE_COMMAND_INVALID'
  | 'GRAPEVINE_COMMAND_REFUSED'
  | 'GRAPEVINE_COMMAND_FAILED'
  | 'GRAPEVINE_SUPERVISOR_NOT_FOUND'
  | 'GRAPEVINE_CLAIM_NOT_COMMITTED'
  | 'GRAPEVINE_CLAIM_LOST'
  | 'GRAPEVINE_TRANSACTION_LEFT_OPEN'
  | 'GRAPEVINE_TRANSACTION_ROLLED_BACK'
  | 'GRAPEVINE_TRANSACTION_ENDED'
  | 'GRAPEVINE_RESULT_TOO_LARGE'
  | 'GRAPEVINE_RESULT_UNSTORABLE'
  | 'GRAPEVINE_ERROR_UNSTORABLE'
  | 'GRAPEVINE_PROGRESS_INVALID'
  | 'GRAPEVINE_DEPENDENCY_INVALID'
  | 'GRAPEVINE_RESPONSE_UNSTORABLE';

export class GrapevineError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GrapevineError';
    this.code = code;
  }
}

export function configError(message: string): GrapevineError {
  return new GrapevineError('GRAPEVINE_CONFIG_INVALID', message);
}

/** Plain-data form of an error, safe to clone between threads and store as text. */
export interface SerializedError {
  name: string;
  message: string;
  stack?: string;
  code?: string;
  /** The error's `cause`, when it is an Error that has one: a wrapped error's reason is often the useful part. */
  cause?: SerializedError;
}

/**
 * Bounds on what is kept of a handler's error: it is stored in last_error
 * and logged, and a message may be a whole response body or a value in a loop.
 */
const MAX_MESSAGE_CHARS = 8_192;
const MAX_STACK_CHARS = 16_384;
/** The longest last_error stored: a message and its stack, with a few causes. */
export const MAX_STORED_ERROR_CHARS = 65_536;

/** Causes kept below an error: enough for errors wrapped a few times, bounded for a chain built in a loop. */
const MAX_CAUSES = 8;

export function serializeError(err: unknown): SerializedError {
  const seen = new Set<unknown>();
  const top = serializeOne(err);
  let at = top;
  let current = err;
  // A cycle of causes (a.cause = b, b.cause = a) ends where it comes back.
  for (let depth = 0; depth < MAX_CAUSES && isError(current); depth++) {
    seen.add(current);
    const error = current;
    const cause = safeRead(() => (error as { cause?: unknown }).cause, undefined);
    if (cause === undefined || cause === null || seen.has(cause)) break;
    at = at.cause = serializeOne(cause);
    current = cause;
  }
  return top;
}

function serializeOne(err: unknown): SerializedError {
  // Handlers may throw anything (`throw null`, a string, an object whose
  // toString throws, a Proxy that throws on every access); the job must
  // still get a readable failure record, so no read here may throw. The
  // texts are made storable here (see storableText): a NUL or a lone
  // surrogate in them would make PostgreSQL refuse the job's outcome.
  if (isError(err)) {
    const error = err as Error;
    const code = safeRead(() => (error as { code?: unknown }).code, undefined);
    return {
      name: storableText(
        safeString(() => error.name, 'Error'),
        MAX_MESSAGE_CHARS,
      ),
      message: storableText(
        safeString(() => error.message, '(the error message could not be read)'),
        MAX_MESSAGE_CHARS,
      ),
      stack:
        storableText(
          safeString(() => error.stack ?? '', ''),
          MAX_STACK_CHARS,
        ) || undefined,
      code: typeof code === 'string' ? storableText(code, MAX_MESSAGE_CHARS) : undefined,
    };
  }
  return {
    name: 'NonErrorThrown',
    message: storableText(
      safeString(() => describeThrown(err), 'unprintable value thrown'),
      MAX_MESSAGE_CHARS,
    ),
  };
}

function isError(value: unknown): value is Error {
  return safeRead(() => value instanceof Error, false);
}

function safeRead<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch {
    return fallback;
  }
}

function describeThrown(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value === null || value === undefined) return `${value} was thrown`;
  try {
    return `non-Error thrown: ${JSON.stringify(value)}`;
  } catch {
    return `non-Error thrown: ${String(value)}`;
  }
}

function safeString(read: () => string, fallback: string): string {
  try {
    const value = read();
    return typeof value === 'string' ? value : String(value);
  } catch {
    return fallback;
  }
}

/**
 * The stored text of an error grapevine itself gives a job, such as a result
 * it could not store: no stack, since where grapevine noticed tells the
 * reader nothing.
 */
export function storedErrorText(code: ErrorCode, message: string): string {
  return formatStoredError({ name: 'GrapevineError', code, message });
}

/** The text kept in jobs.last_error: message first, then the stack, then each cause the same way. */
export function formatStoredError(err: SerializedError): string {
  let text = describeOne(err);
  for (let cause = err.cause; cause; cause = cause.cause) text += `\nCaused by: ${describeOne(cause)}`;
  return text;
}

function describeOne(err: SerializedError): string {
  const head = err.code ? `${err.name} [${err.code}]: ${err.message}` : `${err.name}: ${err.message}`;
  return head + stackFrames(err.stack);
}

/** A stack's frames, from the newline before the first one; '' for none. V8 stacks start with "Name: message", which the caller has already printed. */
export function stackFrames(stack: string | undefined): string {
  const firstNewline = stack?.indexOf('\n') ?? -1;
  return firstNewline === -1 ? '' : stack!.slice(firstNewline);
}
