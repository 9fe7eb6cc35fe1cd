import { threadId } from 'node:worker_threads';
import type { Logger } from 'pino';
import { formatStoredError, serializeError } from '../src/errors.ts';
import { redactSecret } from '../src/redact.ts';
import type { TaskHandler, TaskHelpers } from '../src/task.ts';
import type { Outcome } from './outcomes.ts';

export interface ClaimedJob {
  id: string;
  task: string;
  queue: string;
  payload: unknown;
  attempts: number;
  max_attempts: number;
  timeout_ms: number | null;
  claim_token: string;
  cancel_requested: boolean;
}

export interface ExecuteContext {
  logger: Logger;
  worker: TaskHelpers['worker'];
  query: TaskHelpers['query'];
  addJob: TaskHelpers['addJob'];
  /** The thread's connection string: handlers' errors may echo it (apps often share DATABASE_URL), so its password is cut from stored errors. */
  connectionString: string;
}

/**
 * Runs one claimed job's handler and turns whatever happens into an outcome.
 * Nothing a handler does (throw null, return a function, a circular result)
 * escapes as an exception: the job always gets a readable record.
 */
export async function executeJob(
  job: ClaimedJob,
  handler: TaskHandler,
  signal: AbortSignal,
  context: ExecuteContext,
): Promise<Outcome> {
  const outcome = await runHandler(job, handler, signal, context);
  if (outcome.kind === 'failure') outcome.error = redactSecret(outcome.error, context.connectionString);
  return outcome;
}

async function runHandler(job: ClaimedJob, handler: TaskHandler, signal: AbortSignal, context: ExecuteContext): Promise<Outcome> {
  const logger = context.logger.child({ jobId: job.id, task: job.task, attempt: job.attempts, threadId });
  const helpers: TaskHelpers = {
    job: { id: job.id, task: job.task, queue: job.queue, attempt: job.attempts, maxAttempts: job.max_attempts },
    worker: context.worker,
    logger,
    signal,
    query: context.query,
    addJob: context.addJob,
  };
  try {
    const value = await handler(job.payload, helpers);
    if (signal.aborted) return aborted(job, signal);
    const result = toJson(value);
    if (result instanceof Error) return failure(job, `${result.message}`, false);
    return { kind: 'success', id: job.id, token: job.claim_token, result };
  } catch (err) {
    if (signal.aborted) return aborted(job, signal);
    return failure(job, formatStoredError(serializeError(err)), isRetryable(err));
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

function failure(job: ClaimedJob, error: string, retryable: boolean): Outcome {
  return { kind: 'failure', id: job.id, token: job.claim_token, error, retryable };
}

/** A timed-out attempt is retried like any failure; a cancelled job is not. */
function aborted(job: ClaimedJob, signal: AbortSignal): Outcome {
  const reason = signal.reason as { kind?: string; message?: string } | undefined;
  return failure(job, `AbortError: ${reason?.message ?? 'aborted'}`, reason?.kind === 'timeout');
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
