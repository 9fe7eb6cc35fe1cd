-- Which due jobs wait for a task (or a queue) that no live supervisor
-- handles: a typo in a task name, a task module that was renamed, a deploy
-- that has not reached any supervisor yet. The maintenance leader asks once a
-- minute and warns. It looks only at the oldest due jobs of each priority (at
-- most `per_priority` of each, at most 16 priorities, one index descent each,
-- as has_due() does), so it costs the same however many jobs are pending;
-- jobs nobody claims stay at the front of their priority, so they are the
-- ones it sees.
CREATE OR REPLACE FUNCTION :SCHEMA.unhandled_tasks(live_within_ms integer, per_priority integer)
RETURNS TABLE (task text, queue text, jobs bigint)
LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off
AS $fn$
DECLARE
  p integer;
  visited integer := 0;
  sample bigint[] := '{}';
BEGIN
  SELECT x.priority INTO p FROM :SCHEMA.jobs x WHERE x.state = 'pending' ORDER BY x.priority DESC LIMIT 1;
  WHILE p IS NOT NULL AND visited < 16 LOOP
    sample := sample || ARRAY(
      SELECT x.id FROM :SCHEMA.jobs x
       WHERE x.state = 'pending' AND x.priority = p AND x.run_at <= now()
       ORDER BY x.run_at, x.id
       LIMIT per_priority);
    visited := visited + 1;
    SELECT x.priority INTO p FROM :SCHEMA.jobs x WHERE x.state = 'pending' AND x.priority < p ORDER BY x.priority DESC LIMIT 1;
  END LOOP;
  RETURN QUERY
  SELECT j.task, j.queue, count(*)
    FROM :SCHEMA.jobs j
   WHERE j.id = ANY(sample) AND j.state = 'pending'
     AND NOT EXISTS (
       SELECT 1 FROM :SCHEMA.supervisors v
        WHERE v.status NOT IN ('EXITED', 'LOST')
          AND v.heartbeat_at >= now() - live_within_ms * interval '1 millisecond'
          AND j.task = ANY(v.tasks)
          AND (v.queues IS NULL OR j.queue = ANY(v.queues)))
   GROUP BY j.task, j.queue
   ORDER BY count(*) DESC, j.task, j.queue;
END
$fn$;
