-- Which due jobs wait for a task (or a queue) that no live supervisor
-- handles: a typo in a task name, a task module that was renamed, a deploy
-- that has not reached any supervisor yet. The maintenance leader asks once a
-- minute and warns. It looks only at the oldest due jobs of each priority (at
-- most `per_priority` of each, at most 16 priorities, one index descent each,
-- as has_due() does), so it costs the same however many jobs are pending;
-- jobs nobody claims stay at the front of their priority, so they are the
-- ones it sees. It also names the active schedules (a handful of rows) whose
-- task or queue nobody handles, before their first job is even due.
--
-- JIT is off, as in claim_next(): the scans these settings disable are costed
-- far above jit_above_cost, and compiling the final query took a quarter of
-- a second of the server's CPU per look on a table of a million jobs.
--
-- Dropped first: CREATE OR REPLACE cannot change the columns a function
-- returns (0014 added schedules).
DROP FUNCTION IF EXISTS :SCHEMA.unhandled_tasks(integer, integer);
CREATE FUNCTION :SCHEMA.unhandled_tasks(live_within_ms integer, per_priority integer)
RETURNS TABLE (task text, queue text, jobs bigint, schedules text[])
LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off SET enable_sort = off SET jit = off
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
  WITH live AS (
    SELECT v.tasks, v.queues FROM :SCHEMA.supervisors v
     WHERE v.status NOT IN ('EXITED', 'LOST')
       AND v.heartbeat_at >= now() - live_within_ms * interval '1 millisecond'
  ), waiting AS (
    SELECT j.task, j.queue, count(*) AS jobs
      FROM :SCHEMA.jobs j
     WHERE j.id = ANY(sample) AND j.state = 'pending'
       AND NOT EXISTS (SELECT 1 FROM live v WHERE j.task = ANY(v.tasks) AND (v.queues IS NULL OR j.queue = ANY(v.queues)))
     GROUP BY j.task, j.queue
  ), scheduled AS (
    SELECT c.task, c.queue, array_agg(c.name ORDER BY c.name) AS schedules
      FROM :SCHEMA.schedules c
     WHERE NOT c.paused
       AND NOT EXISTS (SELECT 1 FROM live v WHERE c.task = ANY(v.tasks) AND (v.queues IS NULL OR c.queue = ANY(v.queues)))
     GROUP BY c.task, c.queue
  )
  SELECT coalesce(w.task, c.task), coalesce(w.queue, c.queue), coalesce(w.jobs, 0), coalesce(c.schedules, '{}')
    FROM waiting w FULL JOIN scheduled c ON c.task = w.task AND c.queue = w.queue
   ORDER BY coalesce(w.jobs, 0) DESC, 1, 2;
END
$fn$;
