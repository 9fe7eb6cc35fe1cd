import type { Logger } from 'pino';
import type { AddJobOptions, FlowJob } from './client.ts';
import type { JobState } from './job.ts';

/** What a handler learns about the job it runs. */
export interface JobInfo {
  id: string;
  task: string;
  queue: string;
  /** 1 on the first run, 2 on the first retry, ... */
  attempt: number;
  maxAttempts: number;
  /** The tick a schedule added the job for (docs/schedules.md); null for a job no schedule added. */
  scheduledFor: Date | null;
}

/** Where the handler runs: which supervisor, which of its threads, which schema. */
export interface HandlerThread {
  supervisorId: string;
  threadId: number;
  schema: string;
}

export interface TaskHelpers {
  job: JobInfo;
  worker: HandlerThread;
  /** A pino child logger bound to the job. */
  logger: Logger;
  /** Aborted when the job is cancelled, times out, or the supervisor shuts down. */
  signal: AbortSignal;
  /**
   * Runs a statement on the thread's own pool. Each call may run on another
   * connection, so a call that leaves a transaction open (a BEGIN without
   * its COMMIT) is rolled back and fails with GRAPEVINE_TRANSACTION_LEFT_OPEN:
   * use `transaction` for statements that belong together.
   */
  query<R extends Record<string, any> = Record<string, any>>(
    sql: string,
    params?: unknown[],
  ): Promise<{ rows: R[]; rowCount: number | null }>;
  /**
   * Runs `fn` in one transaction on one connection of the thread's pool:
   * committed when `fn` resolves, rolled back when it throws. Inside, use
   * only the `query` and `addJob` given to `fn`: the helpers' own `query`
   * and `addJob` run on other connections, outside the transaction (and
   * would wait for ever on a row it locked). A transaction that failed
   * inside (an error `fn` caught) is rolled back and fails with
   * GRAPEVINE_TRANSACTION_ROLLED_BACK rather than seeming committed; a
   * COMMIT or ROLLBACK sent through `query` fails with
   * GRAPEVINE_TRANSACTION_ENDED.
   *
   * With `{ exactlyOnce: true }` the job's success, with `fn`'s value as its
   * result, commits in the same transaction, which commits only if this run
   * still holds the job's claim; otherwise it rolls back and fails with
   * GRAPEVINE_CLAIM_LOST (docs/exactly-once.md).
   */
  transaction<T>(fn: TransactionFunction<T>, options?: TransactionOptions): Promise<T>;
  /**
   * Reports how far the job has got: a number or small JSON (at most 4,096
   * bytes of it), stored in the job's `progress` column at most every
   * `progressIntervalMs` (the latest value wins; the last one is always
   * stored, with the outcome) and pushed to watchers (waitForJob's
   * onProgress, `grapevine job ID --follow`) only while someone watches.
   * Returns at once; a value that is not JSON or too large throws
   * GRAPEVINE_PROGRESS_INVALID. A run that lost its claim stores nothing,
   * and a value reported after the handler returned (or threw) is dropped.
   */
  progress(value: unknown): void;
  /** Enqueues a follow-up job. */
  addJob(task: string, payload?: unknown, options?: Omit<AddJobOptions, 'db'>): Promise<string>;
  /** Enqueues a flow of jobs, all or none (the client's addFlow; docs/workflows.md); resolves to each name's id. */
  addFlow(jobs: FlowJob[]): Promise<Record<string, string>>;
  /** This job's dependencies in id order, with their states and results (docs/workflows.md); empty for a job without. */
  dependencies(): Promise<Dependency[]>;
}

/** A dependency of the running job, as helpers.dependencies() reads it. */
export interface Dependency {
  id: string;
  /** null (and state null) for a job pruned or deleted since it finished. */
  task: string | null;
  /** 'succeeded', or for a dependent that runs anyway 'failed' or 'cancelled' (or still running). */
  state: JobState | null;
  /** What this job does should the dependency fail: 'fail', 'run' or 'ignore'. */
  onFailure: 'fail' | 'run' | 'ignore';
  /** The dependency's result (its handler's return value) once it succeeded, else null. */
  result: unknown;
  /** Its last error, if it failed or was retried. */
  error: string | null;
}

/** What `transaction(fn)` gives `fn`: the transaction's own statements and enqueues. */
export type TransactionFunction<T> = (query: TaskHelpers['query'], tx: TransactionHelpers) => Promise<T>;

export interface TransactionHelpers {
  /** Enqueues a job inside the transaction: it exists (and is announced) only if the transaction commits. */
  addJob(task: string, payload?: unknown, options?: Omit<AddJobOptions, 'db'>): Promise<string>;
}

export interface TransactionOptions {
  /**
   * Commit the job's success (`fn`'s value as its result) in this
   * transaction, and the transaction only while this run holds the job's
   * claim. Once it commits, the job has succeeded whatever the handler does
   * next. See docs/exactly-once.md.
   */
  exactlyOnce?: boolean;
}

/** A task module's default export (or a named export of a tasks module). */
export type TaskHandler<P = any, R = unknown> = (payload: P, helpers: TaskHelpers) => R | Promise<R>;

/** Throw this (or any error with `retryable = false`) to fail a job without retrying it. */
export class PermanentError extends Error {
  readonly retryable = false;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PermanentError';
  }
}
