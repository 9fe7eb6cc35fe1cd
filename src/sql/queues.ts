import { rowsOf, type Queryable } from '../db.ts';
import { quoteIdent } from '../schema/channels.ts';
import { bind, oneRow, perSchema, statement, type Statement } from './statement.ts';

/**
 * The statements on queue settings (docs/limits.md), one typed function each
 * at the end of this file. Changes go through configure_queue(), which waits
 * for the claims in flight and runs with its owner's rights.
 */
interface QueueStatements {
  configure: Statement;
  list: Statement;
}

const queueStatements: (schema: string) => QueueStatements = perSchema(build);

const SETTINGS = `queue, concurrency, group_concurrency, rate_limit, rate_interval_ms, group_rate_limit, group_rate_interval_ms, paused`;

function build(schema: string): QueueStatements {
  const s = quoteIdent(schema);
  const st = (name: string, text: string) => statement(schema, name, text);
  return {
    // $1 queue, $2 the fields to change as JSON (null clears one).
    configure: st('queue_configure', `SELECT ${SETTINGS} FROM ${s}.configure_queue($1, $2::jsonb)`),
    // Every queue with a setting or a pending or running job: its settings,
    // its jobs by state and its oldest due job's wait. One pass over the
    // table, as `stats` (an operator's question, not a hot path).
    list: st(
      'queue_list',
      `WITH counts AS (
         SELECT queue, json_object_agg(state, n) AS jobs,
                max(oldest) AS oldest_pending_seconds
           FROM (SELECT queue, state, count(*)::integer AS n,
                        extract(epoch FROM now() - min(run_at) FILTER (WHERE state = 'pending' AND run_at <= now()))::float8 AS oldest
                   FROM ${s}.jobs GROUP BY queue, state) c
          GROUP BY queue)
       SELECT coalesce(q.queue, c.queue) AS queue, q.concurrency, q.group_concurrency, q.rate_limit, q.rate_interval_ms,
              q.group_rate_limit, q.group_rate_interval_ms, coalesce(q.paused, false) AS paused,
              coalesce(c.jobs, '{}') AS jobs, c.oldest_pending_seconds
         FROM ${s}.queues q FULL JOIN counts c ON c.queue = q.queue
        ORDER BY 1`,
    ),
  };
}

/** A queue's settings as stored; null: not set. */
export interface QueueSettingsRow {
  queue: string;
  concurrency: number | null;
  group_concurrency: number | null;
  rate_limit: number | null;
  rate_interval_ms: number | null;
  group_rate_limit: number | null;
  group_rate_interval_ms: number | null;
  paused: boolean;
}

export interface QueueListRow extends QueueSettingsRow {
  /** Jobs by state (states with none left out). */
  jobs: Partial<Record<string, number>>;
  /** Seconds since the oldest due pending job became due; null when none is due. */
  oldest_pending_seconds: number | null;
}

/** The fields of a queue's row to change; null clears one, a missing field stays. */
export type QueueSettingsPatch = Partial<Omit<QueueSettingsRow, 'queue'>>;

export function configureQueue(db: Queryable, schema: string, p: { queue: string; patch: QueueSettingsPatch }): Promise<QueueSettingsRow> {
  return oneRow(db, bind(queueStatements(schema).configure, [p.queue, JSON.stringify(p.patch)]));
}

export function listQueues(db: Queryable, schema: string): Promise<QueueListRow[]> {
  return rowsOf(db, bind(queueStatements(schema).list, []));
}
