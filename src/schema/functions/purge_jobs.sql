-- grapevine purge: deletes the finished jobs (succeeded, failed, cancelled)
-- among `job_ids`; how many. Pending and running jobs are left alone. A
-- function for the same reason as retry_jobs(), with the same rights.
CREATE OR REPLACE FUNCTION :SCHEMA.purge_jobs(job_ids bigint[]) RETURNS integer
LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
  WITH gone AS (
    DELETE FROM :SCHEMA.jobs j
     WHERE j.id = ANY(job_ids) AND j.state IN ('succeeded', 'failed', 'cancelled')
    RETURNING 1)
  SELECT count(*)::integer FROM gone
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.purge_jobs(bigint[]) FROM PUBLIC;
