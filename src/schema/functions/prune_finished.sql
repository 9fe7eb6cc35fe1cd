-- Deletes up to `batch` finished jobs older than the retention. It walks the
-- BRIN index on finished_at; sequential scans are off because with no
-- finished job old enough in a large table of pending ones the planner costs
-- the BRIN bitmap scan and a sequential scan alike and takes the scan. JIT
-- is off for the reason given in claim_next().
CREATE OR REPLACE FUNCTION :SCHEMA.prune_finished(retention_ms bigint, batch integer) RETURNS bigint
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off
AS $fn$
DECLARE
  pruned bigint[];
BEGIN
  WITH gone AS (
    DELETE FROM :SCHEMA.jobs WHERE id IN (
      SELECT x.id FROM :SCHEMA.jobs x
       WHERE x.finished_at < now() - retention_ms * interval '1 millisecond'
         AND x.state IN ('succeeded', 'failed', 'cancelled')
       LIMIT batch)
    RETURNING id)
  SELECT ARRAY(SELECT id FROM gone) INTO pruned;
  -- A pruned dependent's dependencies go with it (no foreign key does it:
  -- see migration 0016). Its dependencies' own rows were resolved when they finished.
  DELETE FROM :SCHEMA.job_dependencies e WHERE e.job_id = ANY(pruned);
  RETURN cardinality(pruned);
END
$fn$;
