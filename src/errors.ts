/**
 * Every error grapevine throws on purpose is a GrapevineError with a stable
 * `code`. Callers branch on the code; messages are for people and may change.
 */
export type ErrorCode =
  | 'GRAPEVINE_CONFIG_INVALID'
  | 'GRAPEVINE_DATABASE_UNREACHABLE'
  | 'GRAPEVINE_SCHEMA_TOO_NEW'
  | 'GRAPEVINE_SCHEMA_TOO_OLD'
  | 'GRAPEVINE_SCHEMA_UNKNOWN'
  | 'GRAPEVINE_PERMISSION_DENIED'
  | 'GRAPEVINE_PAYLOAD_INVALID'
  | 'GRAPEVINE_TASKS_INVALID'
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
  | 'GRAPEVINE_WORKER_NOT_FOUND'
  | 'GRAPEVINE_CLAIM_NOT_COMMITTED'
  | 'GRAPEVINE_TRANSACTION_LEFT_OPEN'
  | 'GRAPEVINE_TRANSACTION_ROLLED_BACK'
  | 'GRAPEVINE_TRANSACTION_ENDED';

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
}

export function serializeError(err: unknown): SerializedError {
  // Handlers may throw anything (`throw null`, a string, an object whose
  // toString throws, a Proxy that throws on every access); the job must
  // still get a readable failure record, so no read here may throw.
  if (safeRead(() => err instanceof Error, false)) {
    const error = err as Error;
    const code = safeRead(() => (error as { code?: unknown }).code, undefined);
    return {
      name: safeString(() => error.name, 'Error'),
      message: safeString(() => error.message, '(the error message could not be read)'),
      stack: safeString(() => error.stack ?? '', '') || undefined,
      code: typeof code === 'string' ? code : undefined,
    };
  }
  return { name: 'NonErrorThrown', message: safeString(() => describeThrown(err), 'unprintable value thrown') };
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

/** The text kept in jobs.last_error: message first, then the stack. */
export function formatStoredError(err: SerializedError): string {
  const head = err.code ? `${err.name} [${err.code}]: ${err.message}` : `${err.name}: ${err.message}`;
  return head + stackFrames(err.stack);
}

/** A stack's frames, from the newline before the first one; '' for none. V8 stacks start with "Name: message", which the caller has already printed. */
export function stackFrames(stack: string | undefined): string {
  const firstNewline = stack?.indexOf('\n') ?? -1;
  return firstNewline === -1 ? '' : stack!.slice(firstNewline);
}
