import type pg from 'pg';
import { GrapevineError } from './errors.ts';
import { jobFromRow, TERMINAL_STATES, type Job, type JobState } from './job.ts';
import { dependenciesOf, dependentsOf, type DependencyRow } from './sql/jobs.ts';
import { cancelJobs, jobStats, listJobs, purgeJobs, rescheduleJobs, retryJobs, type JobFilterParams } from './sql/operations.ts';

/** Which jobs an operation applies to. Every field narrows the match; times are Dates or ISO 8601 text. */
export interface JobFilter {
  state?: JobState | JobState[];
  task?: string;
  queue?: string;
  /** The job's key; a job holds its key only while its mode does (docs/keys.md). */
  key?: string;
  /** The job's group (docs/limits.md). */
  group?: string;
  /** Created at or after this time. */
  createdAfter?: Date | string;
  /** Created before this time. */
  createdBefore?: Date | string;
  finishedAfter?: Date | string;
  finishedBefore?: Date | string;
  /** Text the job's last error contains, case-insensitive. */
  errorContains?: string;
}

export interface JobPage {
  /** Newest first. */
  jobs: Job[];
  /** Pass as `after` for the next page; null on the last page. Opaque: do not build one. */
  next: string | null;
}

export interface JobStats {
  /** Jobs per queue, task and state. */
  counts: Array<{ queue: string; task: string; state: JobState; jobs: number }>;
  /** Seconds since the oldest due pending job became due; null when none is due. */
  oldestPendingSeconds: number | null;
  /** Jobs that finished in the last minute, by state (deleteSucceeded supervisors delete their successes, which are not counted). */
  lastMinute: { succeeded: number; failed: number; cancelled: number };
}

/**
 * Finding and acting on jobs. Actions never take a running job from its
 * claim: retry and purge apply to finished jobs only, reschedule to pending
 * ones, and cancel asks a running job's owner to abort it.
 */
export interface JobOperations {
  /** Jobs matching the filter, newest first, `limit` (default 50, at most 1000) per page after the cursor `after`. */
  listJobs(filter?: JobFilter, page?: { limit?: number; after?: string | null }): Promise<JobPage>;
  /** Counts by queue, task and state; the oldest due job's wait; the last minute's finished jobs. */
  stats(): Promise<JobStats>;
  /**
   * Failed and cancelled jobs (these ids, or those matching the filter) back
   * to pending, due now, with their attempts allowance again; the ids retried.
   */
  retryJobs(target: string[] | JobFilter): Promise<string[]>;
  /** Pending jobs among `ids` due at `runAt` instead; the ids changed. */
  rescheduleJobs(ids: string[], runAt: Date | string): Promise<string[]>;
  /** Deletes finished jobs (succeeded, failed, cancelled) matching the filter; how many. */
  purgeJobs(filter: JobFilter): Promise<number>;
  /** Cancels pending jobs at once and asks running ones' owners to abort them (these ids, or a non-empty filter). */
  cancelJobs(target: string[] | JobFilter): Promise<{ cancelled: string[]; cancelling: string[] }>;
  /** A job's dependencies and the first `limit` (default 100) of its dependents, in id order (docs/workflows.md). */
  links(id: string, options?: { limit?: number }): Promise<JobLinks>;
}

/** A job linked to another by a dependency; task and state are null for a job pruned since. */
export interface JobLink {
  id: string;
  task: string | null;
  state: JobState | null;
  /** The dependent's policy should the dependency fail. */
  onFailure: 'fail' | 'run' | 'ignore';
}

export interface JobLinks {
  dependencies: JobLink[];
  dependents: JobLink[];
}

const STATES: readonly JobState[] = ['waiting', 'pending', 'running', ...TERMINAL_STATES];
const PURGE_BATCH = 10_000;
const MAX_PAGE = 1_000;

/** The operations on `pool`'s schema; `outer` wraps each (migration, connection errors). */
export function jobOperations(pool: pg.Pool, schema: string, outer: <T>(fn: () => Promise<T>) => Promise<T>): JobOperations {
  const run = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await outer(fn);
    } catch (err) {
      throw explainPermissionDenied(err, schema);
    }
  };
  return {
    async listJobs(filter = {}, { limit = 50, after = null } = {}) {
      if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
        throw new GrapevineError(
          'GRAPEVINE_CONFIG_INVALID',
          `limit must be an integer from 1 to ${MAX_PAGE}, got ${JSON.stringify(limit)}`,
        );
      }
      const params = toParams(filter, null);
      const cursor = after === null ? null : toId(after, 'cursor');
      return run(async () => {
        const rows = await listJobs(pool, schema, { filter: params, after: cursor, limit });
        return { jobs: rows.map(jobFromRow), next: rows.length === limit ? String(rows[rows.length - 1].id) : null };
      });
    },

    async stats() {
      return run(async () => {
        const row = await jobStats(pool, schema);
        return {
          counts: row.counts,
          oldestPendingSeconds: row.oldest_pending_seconds,
          lastMinute: { succeeded: 0, failed: 0, cancelled: 0, ...row.last_minute },
        };
      });
    },

    async retryJobs(target) {
      const filter = toTarget(target, 'retryJobs');
      return run(() => retryJobs(pool, schema, { filter }));
    },

    async rescheduleJobs(ids, runAt) {
      const filter = toTarget(ids, 'rescheduleJobs');
      const at = toTime(runAt, 'runAt');
      if (filter.ids === null || at === null)
        throw new GrapevineError('GRAPEVINE_CONFIG_INVALID', 'rescheduleJobs() takes job ids and a time');
      return run(() => rescheduleJobs(pool, schema, { ids: filter.ids!, runAt: at }));
    },

    async purgeJobs(filter) {
      const params = toParams(filter, null);
      if (params.states?.some((s) => !TERMINAL_STATES.includes(s))) {
        throw new GrapevineError(
          'GRAPEVINE_CONFIG_INVALID',
          `purgeJobs() deletes finished jobs only: state must be succeeded, failed or cancelled, got ${JSON.stringify(filter.state)}`,
        );
      }
      return run(async () => {
        let total = 0;
        for (;;) {
          const n = await purgeJobs(pool, schema, { filter: params, batchSize: PURGE_BATCH });
          total += n;
          if (n < PURGE_BATCH) return total;
        }
      });
    },

    async links(id, { limit = 100 } = {}) {
      const jobId = toId(id, 'job id');
      if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) {
        throw new GrapevineError(
          'GRAPEVINE_CONFIG_INVALID',
          `limit must be an integer from 1 to ${MAX_PAGE}, got ${JSON.stringify(limit)}`,
        );
      }
      const link = (row: DependencyRow): JobLink => ({ id: row.id, task: row.task, state: row.state, onFailure: row.on_failure });
      return run(async () => ({
        dependencies: (await dependenciesOf(pool, schema, { id: jobId })).map(link),
        dependents: (await dependentsOf(pool, schema, { id: jobId, limit })).map(link),
      }));
    },

    async cancelJobs(target) {
      const filter = toTarget(target, 'cancelJobs');
      return run(() => cancelJobs(pool, schema, { filter }));
    },
  };
}

/**
 * PostgreSQL's bare "permission denied" names a table or function; say which
 * kind of role the operations need, and how to give it.
 */
export function explainPermissionDenied(err: unknown, schema: string): unknown {
  if ((err as { code?: string }).code !== '42501') return err;
  return new GrapevineError(
    'GRAPEVINE_PERMISSION_DENIED',
    `this role may not find or act on jobs in schema "${schema}" (${(err as Error).message}): ` +
      `have the schema's owner run \`grapevine grant ROLE --as operator --schema ${schema}\` for it`,
    { cause: err },
  );
}

/** Ids, or a filter that names at least one thing: an empty one would act on every job. */
function toTarget(target: string[] | JobFilter, method: string): JobFilterParams {
  if (Array.isArray(target)) {
    if (target.length === 0) throw new GrapevineError('GRAPEVINE_CONFIG_INVALID', `${method}() needs at least one job id`);
    return toParams(
      {},
      target.map((id) => toId(id, 'job id')),
    );
  }
  const params = toParams(target, null);
  if (Object.values(params).every((v) => v === null)) {
    throw new GrapevineError(
      'GRAPEVINE_CONFIG_INVALID',
      `${method}() with an empty filter would act on every job: pass ids, or a filter such as { state: 'failed', task: 'send-email' }`,
    );
  }
  return params;
}

function toParams(filter: JobFilter | null | undefined, ids: string[] | null): JobFilterParams {
  if (typeof filter !== 'object' || filter === null) {
    throw new GrapevineError(
      'GRAPEVINE_CONFIG_INVALID',
      `a job filter is an object such as { state: 'failed' }, got ${JSON.stringify(filter)}`,
    );
  }
  const states = filter.state === undefined ? null : Array.isArray(filter.state) ? filter.state : [filter.state];
  for (const state of states ?? []) {
    if (!STATES.includes(state)) {
      throw new GrapevineError('GRAPEVINE_CONFIG_INVALID', `unknown job state ${JSON.stringify(state)}: use one of ${STATES.join(', ')}`);
    }
  }
  return {
    states,
    task: filter.task ?? null,
    queue: filter.queue ?? null,
    createdAfter: toTime(filter.createdAfter, 'createdAfter'),
    createdBefore: toTime(filter.createdBefore, 'createdBefore'),
    finishedAfter: toTime(filter.finishedAfter, 'finishedAfter'),
    finishedBefore: toTime(filter.finishedBefore, 'finishedBefore'),
    errorContains: filter.errorContains === undefined || filter.errorContains === '' ? null : filter.errorContains,
    ids,
    key: filter.key === undefined || filter.key === '' ? null : filter.key,
    group: filter.group === undefined || filter.group === '' ? null : filter.group,
  };
}

function toTime(value: Date | string | undefined, field: string): string | null {
  if (value === undefined) return null;
  const date = value instanceof Date ? value : new Date(value);
  if (Number.isNaN(date.getTime())) {
    throw new GrapevineError(
      'GRAPEVINE_CONFIG_INVALID',
      `${field} is not a valid time (${JSON.stringify(value)}): pass a Date or ISO 8601 text such as 2026-01-31T12:00:00Z`,
    );
  }
  return date.toISOString();
}

function toId(id: unknown, what: string): string {
  const text = String(id);
  if (!/^[1-9][0-9]{0,18}$/.test(text)) {
    throw new GrapevineError(
      'GRAPEVINE_CONFIG_INVALID',
      `invalid ${what} ${JSON.stringify(id)}: job ids (and cursors) are positive integers`,
    );
  }
  return text;
}
