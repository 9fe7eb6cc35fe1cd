import { threadId } from 'node:worker_threads';
import type { Logger } from 'pino';
import { formatStoredError, serializeError } from '../src/errors.ts';
import type { AbortKind } from '../src/protocol.ts';
import { redactSecret } from '../src/redact.ts';
import type { TaskHandler, TaskHelpers } from '../src/task.ts';
import type { ClaimedJobRow } from '../src/sql/jobs.ts';
import type { Outcome } from './outcomes.ts';

export interface ExecuteContext {
  logger: Logger;
  worker: TaskHelpers['worker'];
  query: TaskHelpers['query'];
  transaction: TaskHelpers['transaction'];
  addJob: TaskHelpers['addJob'];
  /** The thread's connection string: handlers' errors may echo it (apps often share DATABASE_URL), so its password is cut from stored errors. */
  connectionString: string;
}

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
    return { kind: 'success', id: job.id, token: job.claim_token, result };
  } catch (err) {
    if (abort.reason) return aborted(job, abort.reason, context);
    return failure(job, formatStoredError(serializeError(err)), isRetryable(err), context);
  }
}

/**
 * What a handler gets besides its payload. A class rather than an object
 * literal: the literal's two getters were two closures, a scope and two
 * accessor pairs made for every job, though most handlers read neither. The
 * logger and the signal are made on first use.
 */
class JobHelpers implements TaskHelpers {
  readonly job: TaskHelpers['job'];
  readonly worker: TaskHelpers['worker'];
  readonly query: TaskHelpers['query'];
  readonly transaction: TaskHelpers['transaction'];
  readonly addJob: TaskHelpers['addJob'];
  #logger: TaskHelpers['logger'] | null = null;
  readonly #abort: JobAbortSwitch;
  readonly #context: ExecuteContext;

  constructor(job: ClaimedJobRow, abort: JobAbortSwitch, context: ExecuteContext) {
    this.job = { id: job.id, task: job.task, queue: job.queue, attempt: job.attempts, maxAttempts: job.max_attempts };
    this.worker = context.worker;
    this.query = context.query;
    this.transaction = context.transaction;
    this.addJob = context.addJob;
    this.#abort = abort;
    this.#context = context;
  }

  /** A pino child per job costs more than a short job, so it is made only when used. */
  get logger(): TaskHelpers['logger'] {
    const { job } = this;
    this.#logger ??= this.#context.logger.child({ jobId: job.id, task: job.task, attempt: job.attempt, threadId });
    return this.#logger;
  }

  get signal(): AbortSignal {
    return this.#abort.signal;
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

/** Handlers' errors may echo the connection string: its password is cut before the error is stored. */
function failure(job: ClaimedJobRow, error: string, retryable: boolean, context: ExecuteContext): Outcome {
  return { kind: 'failure', id: job.id, token: job.claim_token, error: redactSecret(error, context.connectionString), retryable };
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
