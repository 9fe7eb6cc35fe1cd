import { formatStoredError, MAX_STORED_ERROR_CHARS, serializeError, storedErrorText } from '../src/errors.ts';
import type { AbortKind } from '../src/protocol.ts';
import { redactSecret } from '../src/redact.ts';
import { storableText } from '../src/text.ts';
import type { TaskHandler } from '../src/task.ts';
import type { ClaimedJobRow } from '../src/sql/jobs.ts';
import { JobHelpers, type ExecuteContext } from './helpers.ts';
import type { Outcome } from './outcomes.ts';

/**
 * Runs one claimed job's handler and turns whatever happens into an outcome.
 * Nothing a handler does (throw null, return a function, a circular result)
 * escapes as an exception: the job always gets a readable record.
 */
export async function executeJob(job: ClaimedJobRow, handler: TaskHandler, abort: JobAbortSwitch, context: ExecuteContext): Promise<Outcome> {
  const helpers = new JobHelpers(job, abort, context);
  try {
    const value = await handler(job.payload, helpers);
    if (abort.reason) return aborted(job, abort.reason, context);
    const result = toJson(value);
    if (result instanceof Error) return failure(job, `${result.message}`, false, context);
    const refused = unstorableResult(result, context.maxResultBytes);
    if (refused !== null) return failure(job, refused, false, context);
    return { kind: 'success', id: job.id, token: job.claim_token, result };
  } catch (err) {
    if (abort.reason) return aborted(job, abort.reason, context);
    return failure(job, formatStoredError(serializeError(err)), isRetryable(err), context);
  }
}

/**
 * A job's AbortSignal, made only if the handler asks for it. Most handlers
 * never look, and an AbortController (an EventTarget) per job was a visible
 * share of a short job's cost. An abort that comes first is remembered and
 * applied when the signal is made.
 */
export class JobAbortSwitch {
  private controller: AbortController | null = null;
  reason: { kind: AbortKind; message: string } | null = null;

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.reason) this.controller.abort(this.reason);
    }
    return this.controller.signal;
  }

  abort(reason: Error & { kind: AbortKind }): void {
    if (this.reason) return;
    this.reason = reason;
    this.controller?.abort(reason);
  }
}

/** PermanentError (or any `retryable = false`) is not retried; reading the flag must not throw either. */
function isRetryable(err: unknown): boolean {
  try {
    return (err as { retryable?: unknown } | null)?.retryable !== false;
  } catch {
    return true;
  }
}

/**
 * Handlers' errors may echo the connection string: its password is cut
 * before the error is stored. The text is bounded and made storable, so that
 * PostgreSQL never refuses it.
 */
function failure(job: ClaimedJobRow, error: string, retryable: boolean, context: ExecuteContext): Outcome {
  const text = storableText(redactSecret(error, context.connectionString), MAX_STORED_ERROR_CHARS);
  return { kind: 'failure', id: job.id, token: job.claim_token, error: text, retryable };
}

/** A timed-out attempt is retried like any failure; a cancelled job is not. */
function aborted(job: ClaimedJobRow, reason: { kind: AbortKind; message: string }, context: ExecuteContext): Outcome {
  return failure(job, `AbortError: ${reason.message}`, reason.kind === 'timeout', context);
}

/** The handler's return value as JSON text, or an error naming why it cannot be stored. */
function toJson(value: unknown): string | Error {
  if (value === undefined) return 'null';
  try {
    const text = JSON.stringify(value);
    if (text === undefined) return new Error(`result is not JSON-serializable: handler returned a ${typeof value}`);
    return text;
  } catch (err) {
    // A toJSON() may throw anything, null included.
    return new Error(`result is not JSON-serializable: ${serializeError(err).message}`);
  }
}

/**
 * JSON escapes as JSON.stringify writes them. Group 1: \u0000 (jsonb cannot
 * hold NUL); group 2: a surrogate escape not part of an escaped pair (lone
 * surrogates are escaped, whole pairs written as they are, except by a
 * JSON.rawJSON). Matched left to right, so "\\u0000" (a backslash, then
 * the text u0000) is not taken for one.
 */
const JSON_ESCAPE = /\\(?:u(?:(0000)|d[89ab][0-9a-f]{2}\\ud[c-f][0-9a-f]{2}|(d[89a-f][0-9a-f]{2})|[0-9a-f]{4})|.)/gi;

/**
 * Why a result's JSON cannot be stored, as the job's error, or null if it
 * can: over `maxResultBytes`, or holding what jsonb refuses. Checked here,
 * before the write, so that the batch it would share is written as usual;
 * whatever slips through is caught by the write itself (outcomes.ts).
 */
export function unstorableResult(json: string, maxResultBytes: number): string | null {
  // A UTF-16 unit takes one to three bytes: a short result needs no count.
  if (json.length * 3 > maxResultBytes) {
    const bytes = Buffer.byteLength(json);
    if (bytes > maxResultBytes) {
      return storedErrorText(
        'GRAPEVINE_RESULT_TOO_LARGE',
        `the result is ${bytes} bytes of JSON, over maxResultBytes (${maxResultBytes} bytes), so it was not stored: ` +
          'store large data elsewhere and return a reference to it, or raise maxResultBytes',
      );
    }
  }
  if (!json.includes('\\u')) return null;
  for (const m of json.matchAll(JSON_ESCAPE)) {
    if (m[1] !== undefined) {
      return storedErrorText(
        'GRAPEVINE_RESULT_UNSTORABLE',
        'the result holds a NUL character (\\u0000), which PostgreSQL cannot store in jsonb, so it was not stored: ' +
          'remove it, or return binary data encoded (base64, hex)',
      );
    }
    if (m[2] !== undefined) {
      return storedErrorText(
        'GRAPEVINE_RESULT_UNSTORABLE',
        `the result holds a lone UTF-16 surrogate (\\u${m[2].toLowerCase()} without its other half, often a string cut inside an emoji), ` +
          'which PostgreSQL cannot store in jsonb, so it was not stored: cut strings on code-point boundaries',
      );
    }
  }
  return null;
}
