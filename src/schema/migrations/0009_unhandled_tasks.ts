import { quoteIdent } from '../channels.ts';

export const version = 9;
export const name = 'unhandled_tasks';

/**
 * Which due jobs wait for a task (or a queue) that no live supervisor
 * handles. A supervisor claims only its own tasks, so such a job stays
 * pending for good without anyone saying why: a typo in a task name, a task
 * module that was renamed, or a deploy that has not reached any supervisor
 * yet. The reaper's leader asks once a minute and warns
 * (supervisor/maintenance.ts).
 *
 * It looks only at the oldest due jobs of each priority (at most `per_priority`
 * of each, at most 16 priorities, one index descent each, as has_due() does),
 * so it costs the same with a million pending jobs. Jobs nobody claims stay
 * at the front of their priority, so they are the ones it sees.
 */
export function sql(schema: string): string {
  const s = quoteIdent(schema);
  return `
CREATE FUNCTION ${s}.unhandled_tasks(live_within_ms integer, per_priority integer)
RETURNS TABLE (task text, queue text, jobs bigint)
LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
AS $fn$
DECLARE
  p integer;
  visited integer := 0;
  sample bigint[] := '{}';
BEGIN
  SELECT x.priority INTO p FROM ${s}.jobs x WHERE x.state = 'pending' ORDER BY x.priority DESC LIMIT 1;
  WHILE p IS NOT NULL AND visited < 16 LOOP
    sample := sample || ARRAY(
      SELECT x.id FROM ${s}.jobs x
       WHERE x.state = 'pending' AND x.priority = p AND x.run_at <= now()
       ORDER BY x.run_at, x.id
       LIMIT per_priority);
    visited := visited + 1;
    SELECT x.priority INTO p FROM ${s}.jobs x WHERE x.state = 'pending' AND x.priority < p ORDER BY x.priority DESC LIMIT 1;
  END LOOP;
  RETURN QUERY
  SELECT j.task, j.queue, count(*)
    FROM ${s}.jobs j
   WHERE j.id = ANY(sample) AND j.state = 'pending'
     AND NOT EXISTS (
       SELECT 1 FROM ${s}.supervisors v
        WHERE v.status NOT IN ('EXITED', 'LOST')
          AND v.heartbeat_at >= now() - live_within_ms * interval '1 millisecond'
          AND j.task = ANY(v.tasks)
          AND (v.queues IS NULL OR j.queue = ANY(v.queues)))
   GROUP BY j.task, j.queue
   ORDER BY count(*) DESC, j.task, j.queue;
END
$fn$;
`;
}
