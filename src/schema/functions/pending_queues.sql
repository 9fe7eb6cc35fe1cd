-- The queues that have pending jobs, one index descent each (a loose scan of
-- jobs_queue_pending_idx) rather than a read of every pending row.
CREATE OR REPLACE FUNCTION :SCHEMA.pending_queues() RETURNS SETOF text
LANGUAGE sql STABLE
AS $fn$
  WITH RECURSIVE qs(q) AS (
    (SELECT x.queue FROM :SCHEMA.jobs x WHERE x.state = 'pending' ORDER BY x.queue LIMIT 1)
    UNION ALL
    SELECT (SELECT x.queue FROM :SCHEMA.jobs x WHERE x.state = 'pending' AND x.queue > qs.q ORDER BY x.queue LIMIT 1)
      FROM qs WHERE qs.q IS NOT NULL)
  SELECT qs.q FROM qs WHERE qs.q IS NOT NULL
$fn$;
