import { rowsOf, type Queryable } from '../db.ts';
import type { JobRow, JobState } from '../job.ts';
import { quoteIdent } from '../schema/channels.ts';
import { bind, oneRow, perSchema, statement, type Statement } from './statement.ts';

/**
 * The operator's statements on jobs (find, count, retry, reschedule, purge,
 * cancel in bulk), one typed function each at the end of this file. None of
 * them writes a running job's outcome: retry and purge touch finished jobs
 * only, reschedule pending ones, and cancel only flags a running job for its
 * owner, whose fenced outcome write then records it (as a single cancel does).
 * The reads need SELECT on the jobs table; the actions go through
 * security-definer functions, which an operator role is granted.
 */
interface OperationStatements {
  list: Statement;
  stats: Statement;
  retry: Statement;
  reschedule: Statement;
  purge: Statement;
  cancel: Statement;
  measureQueues: Statement;
  queueStats: Statement;
}

const operationStatements: (schema: string) => OperationStatements = perSchema(build);

/**
 * Which jobs an operation applies to. Every field narrows; an empty filter
 * matches every job. Times are ISO 8601 text or null.
 */
export interface JobFilterParams {
  states: JobState[] | null;
  task: string | null;
  queue: string | null;
  createdAfter: string | null;
  createdBefore: string | null;
  finishedAfter: string | null;
  finishedBefore: string | null;
  /** A substring of last_error, case-insensitive. */
  errorContains: string | null;
  ids: string[] | null;
  /** The job key (held only while the job holds it: docs/keys.md). */
  key: string | null;
  /** The job's group (docs/limits.md). */
  group: string | null;
}

/** The filter's parameters take $1..$11 of every statement that uses it. */
const FILTER = `($1::text[] IS NULL OR j.state = ANY($1::text[]))
   AND ($2::text IS NULL OR j.task = $2)
   AND ($3::text IS NULL OR j.queue = $3)
   AND ($4::timestamptz IS NULL OR j.created_at >= $4)
   AND ($5::timestamptz IS NULL OR j.created_at < $5)
   AND ($6::timestamptz IS NULL OR j.finished_at >= $6)
   AND ($7::timestamptz IS NULL OR j.finished_at < $7)
   AND ($8::text IS NULL OR strpos(lower(j.last_error), lower($8)) > 0)
   AND ($9::bigint[] IS NULL OR j.id = ANY($9::bigint[]))
   AND ($10::text IS NULL OR j.key = $10)
   AND ($11::text IS NULL OR j.group_key = $11)`;

function filterValues(f: JobFilterParams): unknown[] {
  return [
    f.states,
    f.task,
    f.queue,
    f.createdAfter,
    f.createdBefore,
    f.finishedAfter,
    f.finishedBefore,
    f.errorContains,
    f.ids,
    f.key,
    f.group,
  ];
}

function build(schema: string): OperationStatements {
  const s = quoteIdent(schema);
  const st = (name: string, text: string) => statement(schema, name, text);

  return {
    // Newest first by id, which follows insertion order: the primary key
    // walked backwards finds a page by stopping after $13 matches. $12 the
    // cursor (the last id of the previous page).
    list: st(
      'ops_list',
      `SELECT j.* FROM ${s}.jobs j
        WHERE ${FILTER} AND ($12::bigint IS NULL OR j.id < $12)
        ORDER BY j.id DESC LIMIT $13`,
    ),
    // One pass over the table for the counts (an operator's question, not a
    // hot path); the oldest due job comes from the pending index and the last
    // minute's finished jobs from the finished_at range index.
    stats: st(
      'ops_stats',
      `SELECT (SELECT coalesce(json_agg(c ORDER BY c.queue, c.task, c.state), '[]')
                 FROM (SELECT queue, task, state, count(*)::integer AS jobs FROM ${s}.jobs GROUP BY 1, 2, 3) c) AS counts,
              (SELECT extract(epoch FROM now() - min(run_at))::float8 FROM ${s}.jobs
                WHERE state = 'pending' AND run_at <= now()) AS oldest_pending_seconds,
              (SELECT coalesce(json_object_agg(state, n), '{}') FROM
                 (SELECT state, count(*)::integer AS n FROM ${s}.jobs
                   WHERE finished_at >= now() - interval '1 minute' AND state IN ('succeeded', 'failed', 'cancelled')
                   GROUP BY state) f) AS last_minute`,
    ),
    // The actions select the matching ids with the caller's own read right
    // and hand them to a security-definer function (src/schema/functions/),
    // which checks each job's state again as it changes it: an operator
    // (grapevine grant --as operator) may act on jobs through these and
    // cannot otherwise write a row. Retry: failed and cancelled jobs only, a
    // running job belongs to its claim (retry_jobs.sql says how).
    retry: st(
      'ops_retry',
      `SELECT ${s}.retry_jobs(ARRAY(SELECT j.id FROM ${s}.jobs j WHERE ${FILTER} AND j.state IN ('failed', 'cancelled')))::text[] AS ids`,
    ),
    // $1 ids, $2 the new run_at. Pending jobs only.
    reschedule: st('ops_reschedule', `SELECT ${s}.reschedule_jobs($1::bigint[], $2::timestamptz)::text[] AS ids`),
    // Finished jobs only, $12 at a time so one statement never holds many
    // row locks; the caller repeats until a batch comes back short.
    purge: st(
      'ops_purge',
      `SELECT ${s}.purge_jobs(ARRAY(
         SELECT j.id FROM ${s}.jobs j
          WHERE ${FILTER} AND j.state IN ('succeeded', 'failed', 'cancelled')
          LIMIT $12)) AS purged`,
    ),
    // The single cancel (jobs.ts `cancel` and `announceCancel`) for many
    // jobs: pending and waiting ones are cancelled on the spot, running ones
    // flagged and their owners told over the control channel (cancel_jobs.sql).
    cancel: st(
      'ops_cancel',
      `SELECT cancelled::text[] AS cancelled, cancelling::text[] AS cancelling
         FROM ${s}.cancel_jobs(ARRAY(SELECT j.id FROM ${s}.jobs j WHERE ${FILTER} AND j.state IN ('pending', 'running', 'waiting')))`,
    ),
    // Run by the elected leader once per metrics interval (see migration
    // 0013): the queues' depth, for every supervisor's /metrics to serve.
    // Pending and running rows only, each through its partial index.
    measureQueues: st(
      'ops_measure_queues',
      `WITH m AS (
         SELECT queue,
                count(*) FILTER (WHERE state = 'pending' AND run_at <= now())::integer AS due,
                count(*) FILTER (WHERE state = 'pending' AND run_at > now())::integer AS scheduled,
                count(*) FILTER (WHERE state = 'running')::integer AS running,
                min(run_at) FILTER (WHERE state = 'pending' AND run_at <= now()) AS oldest_due_at
           FROM (SELECT queue, state, run_at FROM ${s}.jobs WHERE state = 'pending'
                 UNION ALL
                 SELECT queue, state, run_at FROM ${s}.jobs WHERE state = 'running') j
          GROUP BY queue),
       gone AS (DELETE FROM ${s}.queue_stats q WHERE NOT EXISTS (SELECT 1 FROM m WHERE m.queue = q.queue))
       INSERT INTO ${s}.queue_stats AS q (queue, due, scheduled, running, oldest_due_at, measured_at)
       SELECT queue, due, scheduled, running, oldest_due_at, now() FROM m
       ON CONFLICT (queue) DO UPDATE
          SET due = excluded.due, scheduled = excluded.scheduled, running = excluded.running,
              oldest_due_at = excluded.oldest_due_at, measured_at = excluded.measured_at`,
    ),
    queueStats: st(
      'ops_queue_stats',
      `SELECT queue, due, scheduled, running,
              coalesce(extract(epoch FROM now() - oldest_due_at), 0)::float8 AS oldest_due_seconds,
              extract(epoch FROM now() - measured_at)::float8 AS measured_seconds_ago
         FROM ${s}.queue_stats ORDER BY queue`,
    ),
  };
}

export interface StatsRow {
  counts: Array<{ queue: string; task: string; state: JobState; jobs: number }>;
  /** Seconds since the oldest due pending job became due; null when none is due. */
  oldest_pending_seconds: number | null;
  /** Jobs that finished in the last minute, by state. */
  last_minute: Partial<Record<'succeeded' | 'failed' | 'cancelled', number>>;
}

export interface BulkCancelRow {
  /** Pending jobs now cancelled. */
  cancelled: string[];
  /** Running jobs whose owners were asked to abort them. */
  cancelling: string[];
}

export interface QueueStatsRow {
  queue: string;
  due: number;
  scheduled: number;
  running: number;
  oldest_due_seconds: number;
  /** How old the measurement is. */
  measured_seconds_ago: number;
}

/** A page of jobs matching the filter, newest first, after the cursor `after` (an id). */
export function listJobs(
  db: Queryable,
  schema: string,
  p: { filter: JobFilterParams; after: string | null; limit: number },
): Promise<JobRow[]> {
  return rowsOf(db, bind(operationStatements(schema).list, [...filterValues(p.filter), p.after, p.limit]));
}

export function jobStats(db: Queryable, schema: string): Promise<StatsRow> {
  return oneRow(db, bind(operationStatements(schema).stats, []));
}

/** Failed and cancelled jobs matching the filter back to pending, due now; the ids. */
export async function retryJobs(db: Queryable, schema: string, p: { filter: JobFilterParams }): Promise<string[]> {
  return (await oneRow<{ ids: string[] }>(db, bind(operationStatements(schema).retry, filterValues(p.filter)))).ids;
}

/** Pending jobs among `ids` due at `runAt` (ISO 8601) instead; the ids changed. */
export async function rescheduleJobs(db: Queryable, schema: string, p: { ids: string[]; runAt: string }): Promise<string[]> {
  return (await oneRow<{ ids: string[] }>(db, bind(operationStatements(schema).reschedule, [p.ids, p.runAt]))).ids;
}

/** Deletes up to `batchSize` finished jobs matching the filter; how many. */
export async function purgeJobs(db: Queryable, schema: string, p: { filter: JobFilterParams; batchSize: number }): Promise<number> {
  return (await oneRow<{ purged: number }>(db, bind(operationStatements(schema).purge, [...filterValues(p.filter), p.batchSize]))).purged;
}

/** Cancels the pending jobs matching the filter and asks the owners of the running ones to abort them. */
export async function cancelJobs(db: Queryable, schema: string, p: { filter: JobFilterParams }): Promise<BulkCancelRow> {
  const row = await oneRow<BulkCancelRow>(db, bind(operationStatements(schema).cancel, filterValues(p.filter)));
  return { cancelled: row.cancelled, cancelling: row.cancelling };
}

/** Measures every queue's pending and running jobs into the queue_stats table (the leader's chore). */
export async function measureQueues(db: Queryable, schema: string): Promise<void> {
  await db.query(bind(operationStatements(schema).measureQueues, []));
}

/** The leader's last measurement of the queues. */
export function queueStats(db: Queryable, schema: string): Promise<QueueStatsRow[]> {
  return rowsOf(db, bind(operationStatements(schema).queueStats, []));
}
