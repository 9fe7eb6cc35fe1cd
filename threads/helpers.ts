import { threadId } from 'node:worker_threads';
import type pg from 'pg';
import type { Logger } from 'pino';
import { createClient, type Client } from '../src/client.ts';
import { inTransaction } from '../src/db.ts';
import { GrapevineError } from '../src/errors.ts';
import type { TaskHelpers } from '../src/task.ts';
import type { ClaimedJobRow } from '../src/sql/jobs.ts';
import type { ThreadPools } from './pools.ts';
import { progressJson } from './progress.ts';

/** The helpers that reach the database, shared by every job of a thread. */
export type DatabaseHelpers = Pick<TaskHelpers, 'query' | 'transaction' | 'addJob'>;

/** What executeJob() needs besides the job: the thread's logger, its identity and the database helpers. */
export interface ExecuteContext extends DatabaseHelpers {
  logger: Logger;
  worker: TaskHelpers['worker'];
  /** The thread's connection string: handlers' errors may echo it (apps often share DATABASE_URL), so its password is cut from stored errors. */
  connectionString: string;
  /** A result whose JSON is larger fails its job instead of being stored. */
  maxResultBytes: number;
  /** Stores a job's progress (JSON text already checked), throttled: the batch's ProgressWriter.set. */
  progress(job: ClaimedJobRow, json: string): void;
}

/** The database helpers of one thread, on its handlers' pool. */
export function databaseHelpers(pools: ThreadPools, schema: string, preparedStatements: boolean): DatabaseHelpers {
  let client: Client | null = null;
  return {
    query: ((text: string, params?: unknown[]) => handlerQuery(pools, text, params)) as TaskHelpers['query'],
    transaction: (fn) => handlerTransaction(pools, fn),
    addJob: (...args) => {
      client ??= createClient({ pool: pools.handlers(), schema, migrate: false, preparedStatements });
      return client.addJob(...args);
    },
  };
}

/**
 * The same helpers, each waiting for the claim's commit first (see
 * claimBatch). If the commit failed, the claim may have rolled back and the
 * job may run again under the same attempt: this run must not reach the
 * database.
 */
export function afterCommit(helpers: DatabaseHelpers, committed: Promise<Error | null>): DatabaseHelpers {
  const confirmed = async () => {
    const err = await committed;
    if (err) {
      throw new GrapevineError(
        'GRAPEVINE_CLAIM_NOT_COMMITTED',
        `the claim of this job could not be committed (${err.message}); it may run again, so this run's statements are refused`,
      );
    }
  };
  return {
    query: ((text: string, params?: unknown[]) => confirmed().then(() => helpers.query(text, params))) as TaskHelpers['query'],
    transaction: (fn) => confirmed().then(() => helpers.transaction(fn)),
    addJob: (...args) => confirmed().then(() => helpers.addJob(...args)),
  };
}

// A transaction left open on a pooled connection would hold its locks and
// take in the statements of whichever job gets that connection next, none
// of them ever committed.
async function handlerQuery(pools: ThreadPools, text: string, params?: unknown[]) {
  const { client, release } = await pools.checkOutHandlerClient();
  let result: pg.QueryResult;
  try {
    result = await client.query(text, params as unknown[]);
  } catch (err) {
    // Discarded, as pool.query() does: the error arrives before the server
    // says whether it left an aborted transaction ("BEGIN; ...; bad").
    release(err as Error);
    throw err;
  }
  // Known here: a statement's promise resolves when the server says it is ready for the next.
  if (client.getTransactionStatus() === 'I') {
    release();
    return result;
  }
  await client.query('ROLLBACK').then(
    () => release(),
    (err: Error) => release(err),
  );
  throw new GrapevineError(
    'GRAPEVINE_TRANSACTION_LEFT_OPEN',
    'query() ended inside a transaction (a BEGIN without its COMMIT in the same call), so it was rolled back: ' +
      'each query() call may run on another connection. Run statements that belong together in ' +
      'helpers.transaction(async (query) => { ... }).',
  );
}

async function handlerTransaction<T>(pools: ThreadPools, fn: (query: TaskHelpers['query']) => Promise<T>): Promise<T> {
  const { client, release } = await pools.checkOutHandlerClient();
  let open = true;
  const ended = (why: string) => new GrapevineError('GRAPEVINE_TRANSACTION_ENDED', why);
  const query = (async (text: string, params?: unknown[]) => {
    if (!open) throw ended('this transaction has ended: its query() cannot be used after it');
    const result = await client.query(text, params as unknown[]);
    if (client.getTransactionStatus() === 'I') {
      open = false;
      throw ended(
        `"${text.slice(0, 40)}" ended the transaction inside transaction(): return from the function to commit, throw to roll back`,
      );
    }
    return result;
  }) as TaskHelpers['query'];
  try {
    const value = await inTransaction(client, async () => {
      try {
        return await fn(query);
      } finally {
        open = false;
      }
    });
    release();
    return value;
  } catch (err) {
    // Whatever went wrong, the connection goes: it may still be inside the transaction.
    release(err instanceof Error ? err : new Error('the transaction failed'));
    throw err;
  }
}

/**
 * What a handler gets besides its payload. A class rather than an object
 * literal: the literal's two getters were two closures, a scope and two
 * accessor pairs made for every job, though most handlers read neither. The
 * logger and the signal are made on first use.
 */
export class JobHelpers implements TaskHelpers {
  readonly job: TaskHelpers['job'];
  readonly worker: TaskHelpers['worker'];
  readonly query: TaskHelpers['query'];
  readonly transaction: TaskHelpers['transaction'];
  readonly addJob: TaskHelpers['addJob'];
  #logger: TaskHelpers['logger'] | null = null;
  readonly #abort: { readonly signal: AbortSignal };
  readonly #context: ExecuteContext;
  readonly #row: ClaimedJobRow;

  /** `abort` makes the job's signal when first asked (JobAbortSwitch in execute.ts). */
  constructor(job: ClaimedJobRow, abort: { readonly signal: AbortSignal }, context: ExecuteContext) {
    this.job = {
      id: job.id,
      task: job.task,
      queue: job.queue,
      attempt: job.attempts,
      maxAttempts: job.max_attempts,
      scheduledFor: job.scheduled_for ?? null,
    };
    this.worker = context.worker;
    this.query = context.query;
    this.transaction = context.transaction;
    this.addJob = context.addJob;
    this.#abort = abort;
    this.#context = context;
    this.#row = job;
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

  // A method, not a closure per job: most handlers never report progress.
  progress(value: unknown): void {
    this.#context.progress(this.#row, progressJson(value));
  }
}
