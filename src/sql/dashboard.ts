import { rowsOf, type Queryable } from '../db.ts';
import { quoteIdent } from '../schema/channels.ts';
import type { LogRow } from './control.ts';
import type { QueueSettingsRow } from './queues.ts';
import { bind, oneRow, perSchema, statement, type Statement } from './statement.ts';

/**
 * The dashboard's own reads (src/dashboard/), one typed function each at the
 * end of this file. Its job list and actions are the operator's
 * (src/sql/operations.ts). Every statement here must stay fast with millions
 * of finished jobs in the table: none of them counts finished rows beyond
 * the last few minutes.
 */
interface DashboardStatements {
  queues: Statement;
  stateEstimate: Statement;
  stateCounts: Statement;
  timeline: Statement;
}

const dashboardStatements: (schema: string) => DashboardStatements = perSchema(build);

function build(schema: string): DashboardStatements {
  const s = quoteIdent(schema);
  const st = (name: string, text: string) => statement(schema, name, text);
  return {
    // Per queue: pending (due now, due later) and running rows, each through
    // its partial index, and the jobs finished in the last five minutes
    // through the BRIN index on finished_at (rows are finished in heap
    // order, so those pages are the table's last few). Joined to the queue
    // settings (docs/limits.md), so a limited or paused queue shows even idle.
    queues: st(
      'dash_queues',
      `SELECT coalesce(a.queue, q.queue) AS queue,
              coalesce(a.due, 0) AS due, coalesce(a.scheduled, 0) AS scheduled, coalesce(a.running, 0) AS running,
              coalesce(a.succeeded_1m, 0) AS succeeded_1m, coalesce(a.failed_1m, 0) AS failed_1m,
              coalesce(a.succeeded_5m, 0) AS succeeded_5m, coalesce(a.failed_5m, 0) AS failed_5m,
              coalesce(a.oldest_due_seconds, 0) AS oldest_due_seconds,
              q.concurrency, q.group_concurrency, q.rate_limit, q.rate_interval_ms, q.group_rate_limit, q.group_rate_interval_ms,
              coalesce(q.paused, false) AS paused
         FROM (SELECT queue,
              count(*) FILTER (WHERE k = 'due')::integer AS due,
              count(*) FILTER (WHERE k = 'scheduled')::integer AS scheduled,
              count(*) FILTER (WHERE k = 'running')::integer AS running,
              count(*) FILTER (WHERE k = 'succeeded' AND last_minute)::integer AS succeeded_1m,
              count(*) FILTER (WHERE k = 'failed' AND last_minute)::integer AS failed_1m,
              count(*) FILTER (WHERE k = 'succeeded')::integer AS succeeded_5m,
              count(*) FILTER (WHERE k = 'failed')::integer AS failed_5m,
              coalesce(extract(epoch FROM now() - min(run_at) FILTER (WHERE k = 'due')), 0)::float8 AS oldest_due_seconds
         FROM (SELECT queue, CASE WHEN run_at <= now() THEN 'due' ELSE 'scheduled' END AS k, run_at, false AS last_minute
                 FROM ${s}.jobs WHERE state = 'pending'
               UNION ALL
               SELECT queue, 'running', NULL, false FROM ${s}.jobs WHERE state = 'running'
               UNION ALL
               SELECT queue, state, NULL, finished_at >= now() - interval '1 minute'
                 FROM ${s}.jobs
                WHERE finished_at >= now() - interval '5 minutes' AND state IN ('succeeded', 'failed', 'cancelled')) j
               GROUP BY queue) a
         FULL JOIN ${s}.queues q ON q.queue = a.queue
        ORDER BY 1`,
    ),
    // The planner's own figures for the whole table: its row count and the
    // share of each state, as ANALYZE last sampled them. Free to read.
    stateEstimate: st(
      'dash_state_estimate',
      `SELECT greatest(c.reltuples, 0)::float8 AS rows,
              coalesce((SELECT json_object_agg(v, f) FROM unnest(st.most_common_vals::text::text[], st.most_common_freqs) AS m(v, f)), '{}') AS shares
         FROM pg_class c
         LEFT JOIN pg_stats st ON st.schemaname = $1 AND st.tablename = 'jobs' AND st.attname = 'state'
        WHERE c.oid = $2::regclass`,
    ),
    // Exact counts by state: only run on a table the estimate says is small.
    stateCounts: st('dash_state_counts', `SELECT state, count(*)::integer AS jobs FROM ${s}.jobs GROUP BY state`),
    // The supervisor log's entries about one job: per-job entries name it
    // first in their detail ("123 send-email"). The log is pruned per
    // supervisor, so this reads a bounded table.
    timeline: st(
      'dash_timeline',
      `SELECT id::text AS id, worker AS supervisor, at, event, thread, detail FROM ${s}.worker_log
        WHERE detail = $1 OR detail LIKE $1 || ' %'
        ORDER BY id LIMIT 200`,
    ),
  };
}

/** A queue's activity, and its limits and pause (null: no such limit). */
export interface QueueRow extends QueueSettingsRow {
  due: number;
  scheduled: number;
  running: number;
  succeeded_1m: number;
  failed_1m: number;
  succeeded_5m: number;
  failed_5m: number;
  oldest_due_seconds: number;
}

export interface StateEstimateRow {
  rows: number;
  /** State to its share of the rows (0-1), for the states ANALYZE found common. */
  shares: Record<string, number>;
}

/** A job's timeline: the supervisors' log rows that name it. */
export type TimelineRow = LogRow;

/** Queues with pending or running jobs, jobs finished in the last five minutes, or settings. */
export function queueActivity(db: Queryable, schema: string): Promise<QueueRow[]> {
  return rowsOf(db, bind(dashboardStatements(schema).queues, []));
}

export function stateEstimate(db: Queryable, schema: string): Promise<StateEstimateRow> {
  return oneRow(db, bind(dashboardStatements(schema).stateEstimate, [schema, `${quoteIdent(schema)}.jobs`]));
}

export function stateCounts(db: Queryable, schema: string): Promise<Array<{ state: string; jobs: number }>> {
  return rowsOf(db, bind(dashboardStatements(schema).stateCounts, []));
}

/** What the supervisor log says about job `id`, oldest first. */
export function jobTimeline(db: Queryable, schema: string, p: { id: string }): Promise<TimelineRow[]> {
  return rowsOf(db, bind(dashboardStatements(schema).timeline, [p.id]));
}
