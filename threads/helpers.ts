import { threadId } from 'node:worker_threads';
import type pg from 'pg';
import type { Logger } from 'pino';
import { createClient, type Client } from '../src/client.ts';
import { inTransaction } from '../src/db.ts';
import { configError, GrapevineError } from '../src/errors.ts';
import type { Dependency, TaskHelpers, TransactionFunction, TransactionHelpers } from '../src/task.ts';
import {
  completeJobs,
  dependenciesOf,
  deleteSucceeded,
  lockClaim,
  readClaim,
  type ClaimedJobRow,
  type ClaimStateRow,
} from '../src/sql/jobs.ts';
import { resultJson } from './outcomes.ts';
import type { ThreadPools } from './pools.ts';
import { progressJson } from './progress.ts';

/**
 * The claim an exactly-once transaction commits under: the job's id and
 * token, why the thread was told to stop it (a timeout, a cancel, a
 * shutdown) if it was, and where the committed result goes.
 */
export interface HeldClaim {
  readonly id: string;
  readonly token: string;
  /** The abort's message once the job's signal fired, else null. */
  stopped(): string | null;
  /** Called once the transaction committed the job's success: the outcome writer then leaves the job alone. */
  committed(result: string): void;
  /** The job's last progress value not yet stored (JSON text), for the success's own write; undefined if none. */
  takeProgress(): string | undefined;
}

/** The helpers that reach the database, shared by every job of a thread. */
export interface DatabaseHelpers extends Pick<TaskHelpers, 'query' | 'addJob' | 'addFlow'> {
  /** transaction(fn), or with a claim, transaction(fn, { exactlyOnce: true }) for that claim's job. */
  transaction<T>(fn: TransactionFunction<T>, claim?: HeldClaim): Promise<T>;
  /** helpers.dependencies() of the job with this id. */
  dependenciesOf(id: string): Promise<Dependency[]>;
}

/** What an exactly-once transaction needs to record a success as the outcome writer would. */
interface OutcomeSettings {
  schema: string;
  deleteSucceeded: boolean;
  maxResultBytes: number;
}

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
  /** The job's last progress value not yet stored, taken for its outcome's write: ProgressWriter.take. */
  takeProgress(id: string): string | undefined;
}

/** The database helpers of one thread, on its handlers' pool. */
export function databaseHelpers(pools: ThreadPools, settings: OutcomeSettings & { preparedStatements: boolean }): DatabaseHelpers {
  let client: Client | null = null;
  const enqueuer = () => {
    client ??= createClient({
      pool: pools.handlers(),
      schema: settings.schema,
      migrate: false,
      preparedStatements: settings.preparedStatements,
    });
    return client;
  };
  return {
    query: ((text: string, params?: unknown[]) => handlerQuery(pools, text, params)) as TaskHelpers['query'],
    transaction: (fn, claim) => handlerTransaction(pools, enqueuer, settings, fn, claim),
    addJob: (...args) => enqueuer().addJob(...args),
    addFlow: (jobs) => enqueuer().addFlow(jobs),
    dependenciesOf: async (id) =>
      (await dependenciesOf(pools.handlers(), settings.schema, { id })).map((row) => ({
        id: row.id,
        task: row.task,
        state: row.state,
        onFailure: row.on_failure,
        result: row.result ?? null,
        error: row.last_error,
      })),
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
    transaction: (fn, claim) => confirmed().then(() => helpers.transaction(fn, claim)),
    addJob: (...args) => confirmed().then(() => helpers.addJob(...args)),
    addFlow: (jobs) => confirmed().then(() => helpers.addFlow(jobs)),
    dependenciesOf: (id) => confirmed().then(() => helpers.dependenciesOf(id)),
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

async function handlerTransaction<T>(
  pools: ThreadPools,
  enqueuer: () => Client,
  settings: OutcomeSettings,
  fn: TransactionFunction<T>,
  claim: HeldClaim | undefined,
): Promise<T> {
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
  const tx: TransactionHelpers = {
    addJob: (task, payload, options) => {
      if (!open) return Promise.reject(ended('this transaction has ended: its addJob() cannot be used after it'));
      return enqueuer().addJob(task, payload, { ...options, db: client });
    },
  };
  let result = '';
  try {
    const value = await inTransaction(client, async () => {
      // Checked first, unlocked, so that a run whose claim is already gone does none of its work.
      if (claim) refuseLostClaim(claim, await readClaim(client, settings.schema, { id: claim.id }));
      let returned: T;
      try {
        returned = await fn(query, tx);
      } finally {
        open = false;
      }
      if (claim) result = await finishClaimed(client, settings, claim, returned);
      return returned;
    });
    release();
    claim?.committed(result);
    return value;
  } catch (err) {
    // Whatever went wrong, the connection goes: it may still be inside the transaction.
    // A COMMIT whose answer never came may have committed: the job's row then says
    // it succeeded, and the failure this run records next is fenced out.
    release(err instanceof Error ? err : new Error('the transaction failed'));
    throw err;
  }
}

/**
 * The end of an exactly-once transaction: the job's row is locked and
 * checked against the claim, then its success is written as the outcome
 * writer would (deleted under deleteSucceeded unless someone waits for it).
 * Locked last, so the heartbeat, the reaper and cancel (single statements
 * that lock only job rows) wait at most for this commit, never for the
 * handler's statements, and no lock cycle can form through them. Returns
 * the result as stored.
 */
async function finishClaimed(client: pg.ClientBase, settings: OutcomeSettings, claim: HeldClaim, value: unknown): Promise<string> {
  const result = resultJson(value, settings.maxResultBytes);
  if (typeof result !== 'string') throw new GrapevineError(result.code, `the exactly-once transaction was rolled back: ${result.message}`);
  const stopped = claim.stopped();
  if (stopped !== null) {
    throw new GrapevineError(
      'GRAPEVINE_CLAIM_LOST',
      `this run was stopped (${stopped}), so its exactly-once transaction was rolled back and none of its writes were committed`,
    );
  }
  refuseLostClaim(claim, await lockClaim(client, settings.schema, { id: claim.id }));
  const { schema } = settings;
  if (settings.deleteSucceeded) {
    const kept = await deleteSucceeded(client, schema, { ids: [claim.id], tokens: [claim.token] });
    if (kept.length === 0) return result;
  }
  // Under the lock taken above the fence cannot turn it away; checked all the same.
  // The job's last progress goes in the same write: a progress write after it would be fenced out.
  const progress = claim.takeProgress();
  const { rejected } = await completeJobs(client, schema, { jobs: [{ id: claim.id, token: claim.token, result, progress }] });
  if (rejected.length > 0) refuseLostClaim(claim, undefined);
  return result;
}

/** Throws GRAPEVINE_CLAIM_LOST, saying why, unless `row` is this run's claim, running and not asked to cancel. */
function refuseLostClaim(claim: HeldClaim, row: ClaimStateRow | undefined): void {
  const why = lostClaimReason(claim, row);
  if (why === null) return;
  throw new GrapevineError(
    'GRAPEVINE_CLAIM_LOST',
    `this run no longer holds job ${claim.id} (${why}), so its exactly-once transaction was rolled back and none of its writes were committed`,
  );
}

/** Why a job's row no longer belongs to this claim, or null if it does. */
export function lostClaimReason(claim: { token: string }, row: ClaimStateRow | undefined): string | null {
  if (!row) return 'the job was deleted';
  if (row.claim_token !== claim.token) {
    if (row.state === 'running') return `it runs again as attempt ${row.attempts} on ${row.locked_by ?? 'another supervisor'}`;
    if (row.state === 'pending') return 'it was released or its lease expired, and it waits to run again';
    return `it was reassigned and has ${row.state}`;
  }
  if (row.state !== 'running') return `it has already ${row.state}`;
  if (row.cancel_requested) return 'it was cancelled';
  return null;
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
  readonly addJob: TaskHelpers['addJob'];
  readonly addFlow: TaskHelpers['addFlow'];
  /** The result an exactly-once transaction committed as the job's outcome; null until one does. */
  committedResult: string | null = null;
  #logger: TaskHelpers['logger'] | null = null;
  #transaction: TaskHelpers['transaction'] | null = null;
  #progress: TaskHelpers['progress'] | null = null;
  readonly #token: string;
  readonly #abort: JobAbort;
  readonly #context: ExecuteContext;
  readonly #row: ClaimedJobRow;
  #settled = false;

  /** `abort` makes the job's signal when first asked (JobAbortSwitch in execute.ts). */
  constructor(job: ClaimedJobRow, abort: JobAbort, context: ExecuteContext) {
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
    this.addJob = context.addJob;
    this.addFlow = context.addFlow;
    this.#token = job.claim_token;
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

  /** A getter, so that a handler may destructure it, and only a handler that does pays for the closure. */
  get dependencies(): () => Promise<Dependency[]> {
    const { id } = this.job;
    const context = this.#context;
    return () => context.dependenciesOf(id);
  }

  /**
   * The handler returned or threw: its run is over. Progress it reports
   * after that (a timer it left behind) is dropped: its last value is
   * already on the way, and the outcome must not wait for later ones.
   */
  static settle(helpers: JobHelpers): void {
    helpers.#settled = true;
  }

  /** Bound to the job (handlers destructure `{ progress }`), and made on first use: most handlers never report progress. */
  get progress(): TaskHelpers['progress'] {
    this.#progress ??= (value) => {
      // Not even checked: a throw from a leftover timer would end the thread.
      if (this.#settled) return;
      this.#context.progress(this.#row, progressJson(value));
    };
    return this.#progress;
  }

  /** Bound to the job (handlers destructure it), and made on first use like the logger. */
  get transaction(): TaskHelpers['transaction'] {
    this.#transaction ??= (fn, options) => {
      const once = exactlyOnce(options);
      if (once instanceof Error) return Promise.reject(once);
      if (!once) return this.#context.transaction(fn);
      const claim: HeldClaim = {
        id: this.job.id,
        token: this.#token,
        stopped: () => this.#abort.reason?.message ?? null,
        committed: (result) => {
          this.committedResult = result;
        },
        takeProgress: () => this.#context.takeProgress(this.job.id),
      };
      return this.#context.transaction(fn, claim);
    };
    return this.#transaction;
  }
}

/**
 * Whether transaction() was asked for exactly-once. A misspelt option would
 * quietly give a plain transaction, so anything but the one known is refused.
 */
function exactlyOnce(options: unknown): boolean | GrapevineError {
  if (options === undefined) return false;
  const wrong = (what: string) => configError(`transaction(fn, options): ${what}; the only option is { exactlyOnce: true | false }`);
  if (options === null || typeof options !== 'object') return wrong(`options must be an object, not ${String(options)}`);
  const other = Object.keys(options).find((k) => k !== 'exactlyOnce');
  if (other !== undefined) return wrong(`unknown option ${JSON.stringify(other)}`);
  const value = (options as { exactlyOnce?: unknown }).exactlyOnce;
  if (value !== undefined && typeof value !== 'boolean') return wrong(`exactlyOnce must be true or false, not ${String(value)}`);
  return value === true;
}

/** The part of a job's abort switch (execute.ts) the helpers use. */
interface JobAbort {
  readonly signal: AbortSignal;
  readonly reason: { message: string } | null;
}
