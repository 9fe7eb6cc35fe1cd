-- The jobs a claim of limited queue `q` may start now, at most n, in claim
-- order (priority, run time, id) across groups: the first free-slot's worth of
-- each group with room (its running jobs under group_concurrency and its starts
-- in the group rate's window under the group rate), and the queue's jobs
-- without a group. Taking each group's head rather than walking the queue in
-- order is what keeps the oldest job of every group in reach: with one group
-- holding a long backlog, the walk would read all of it before the next group.
-- Only the heads this thread can run are returned: a serial group whose head
-- another host runs waits for it, never running its later jobs first.
--
-- Reads only, so has_due() asks it too. claim_limited() calls it under the
-- queue's row lock, which makes its counts exact.
CREATE OR REPLACE FUNCTION :SCHEMA.limited_candidates(q text, per_group integer, group_rate integer, group_interval_ms integer,
                                                     task_names text[], n integer, at timestamptz)
RETURNS TABLE (job_id bigint, job_group text)
LANGUAGE plpgsql STABLE
SET enable_bitmapscan = off SET enable_sort = on SET enable_seqscan = off SET jit = off
AS $fn$
BEGIN
  RETURN QUERY
  WITH RECURSIVE groups(g) AS (
    (SELECT x.group_key FROM :SCHEMA.jobs x
      WHERE x.state = 'pending' AND x.queue = q AND x.group_key IS NOT NULL
      ORDER BY x.group_key LIMIT 1)
    UNION ALL
    SELECT (SELECT x.group_key FROM :SCHEMA.jobs x
             WHERE x.state = 'pending' AND x.queue = q AND x.group_key > groups.g
             ORDER BY x.group_key LIMIT 1)
      FROM groups WHERE groups.g IS NOT NULL),
  room AS (
    SELECT groups.g, least(n,
             -- least() passes over NULL: a limit not set bounds nothing.
             CASE WHEN per_group IS NOT NULL THEN
               per_group - (SELECT count(*) FROM :SCHEMA.jobs r
                             WHERE r.state = 'running' AND r.limited AND r.queue = q AND r.group_key = groups.g)::integer END,
             CASE WHEN group_rate IS NOT NULL THEN
               group_rate - (SELECT count(*) FROM :SCHEMA.group_starts s, unnest(s.starts) t
                              WHERE s.queue = q AND s.group_key = groups.g
                                AND t > at - group_interval_ms * interval '1 millisecond')::integer END) AS free
      FROM groups WHERE groups.g IS NOT NULL),
  heads AS (
    SELECT h.id, h.group_key, h.priority, h.run_at
      FROM room, LATERAL (
        SELECT x.id, x.group_key, x.priority, x.run_at, x.task FROM :SCHEMA.jobs x
         WHERE x.state = 'pending' AND x.queue = q AND x.group_key = room.g AND x.run_at <= at
         ORDER BY x.priority DESC, x.run_at, x.id
         LIMIT greatest(room.free, 0)) h
     WHERE h.task = ANY(task_names)),
  loose AS (
    SELECT x.id, x.group_key, x.priority, x.run_at FROM :SCHEMA.jobs x
     WHERE x.state = 'pending' AND x.queue = q AND x.group_key IS NULL AND x.run_at <= at AND x.task = ANY(task_names)
     ORDER BY x.priority DESC, x.run_at, x.id
     LIMIT n)
  SELECT c.id, c.group_key FROM (SELECT * FROM heads UNION ALL SELECT * FROM loose) c
   ORDER BY c.priority DESC, c.run_at, c.id
   LIMIT greatest(n, 0);
END
$fn$;
