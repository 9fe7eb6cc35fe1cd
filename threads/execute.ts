import { formatStoredError, MAX_STORED_ERROR_CHARS, serializeError } from '../src/errors.ts';
import type { AbortKind } from '../src/protocol.ts';
import { redactSecret } from '../src/redact.ts';
import { storableText } from '../src/text.ts';
import type { TaskHandler } from '../src/task.ts';
import type { ClaimedJobRow } from '../src/sql/jobs.ts';
import { JobHelpers, type ExecuteContext } from './helpers.ts';
import { toJson, unstorableResult, type Outcome } from './outcomes.ts';
import { retryDecision, type RetryPolicy } from './retry-policy.ts';

/**
 * Runs one claimed job's handler and turns whatever happens into an outcome.
 * Nothing a handler does (throw null, return a function, a circular result)
 * escapes as an exception: the job always gets a readable record.
 */
export async function executeJob(
  job: ClaimedJobRow,
  handler: TaskHandler,
  abort: JobAbortSwitch,
  context: ExecuteContext,
  retry: RetryPolicy | null = null,
  /** Whether job.max_attempts is its task's (taskMaxAttempts), to be written into its row on a failure. */
  attemptsFromTask = false,
): Promise<Outcome> {
  const helpers = new JobHelpers(job, abort, context);
  try {
    const value = await handler(job.payload, helpers);
    // Its exactly-once transaction recorded the outcome: whatever came after cannot change it.
    if (helpers.committedResult !== null) return committed(job, helpers.committedResult);
    if (abort.reason) return aborted(job, abort.reason, context, { retry, attemptsFromTask });
    const result = toJson(value);
    if (result instanceof Error) return failure(job, `${result.message}`, false, context);
    const refused = unstorableResult(result, context.maxResultBytes);
    if (refused !== null) return failure(job, refused, false, context);
    return { kind: 'success', id: job.id, token: job.claim_token, result };
  } catch (err) {
    if (helpers.committedResult !== null) return committed(job, helpers.committedResult);
    if (abort.reason) return aborted(job, abort.reason, context, { retry, attemptsFromTask });
    return failure(job, formatStoredError(serializeError(err)), isRetryable(err), context, { retry, attemptsFromTask }, err);
  } finally {
    JobHelpers.settle(helpers);
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
function failure(
  job: ClaimedJobRow,
  error: string,
  retryable: boolean,
  context: ExecuteContext,
  policy: TaskRetry = NO_POLICY,
  thrown?: unknown,
): Outcome {
  const text = storableText(redactSecret(error, context.connectionString), MAX_STORED_ERROR_CHARS);
  if (policy.retry === null) return { kind: 'failure', id: job.id, token: job.claim_token, error: text, retryable };
  const decided = retryDecision(
    policy.retry,
    { attempt: job.attempts, maxAttempts: job.max_attempts, fromTask: policy.attemptsFromTask },
    thrown,
    retryable,
  );
  if (decided.problem) context.logger.warn({ jobId: job.id, task: job.task, problem: decided.problem }, "the supervisor's backoff applies");
  return {
    kind: 'failure',
    id: job.id,
    token: job.claim_token,
    error: text,
    retryable: decided.retryable,
    maxAttempts: decided.maxAttempts,
    delayMs: decided.delayMs,
  };
}

/** A timed-out attempt is retried like any failure (its task's backoff sees the abort reason); a cancelled job is not. */
function aborted(job: ClaimedJobRow, reason: { kind: AbortKind; message: string }, context: ExecuteContext, policy: TaskRetry): Outcome {
  return failure(job, `AbortError: ${reason.message}`, reason.kind === 'timeout', context, policy, reason);
}

/** A job's retry policy as executeJob() was given it. */
interface TaskRetry {
  retry: RetryPolicy | null;
  attemptsFromTask: boolean;
}

const NO_POLICY: TaskRetry = { retry: null, attemptsFromTask: false };

function committed(job: ClaimedJobRow, result: string): Outcome {
  return { kind: 'committed', id: job.id, token: job.claim_token, result };
}
