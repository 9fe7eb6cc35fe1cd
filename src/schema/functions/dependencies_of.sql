-- A job's dependencies with their task, state and result (or error):
-- helpers.dependencies() in a handler and `grapevine job ID`. A dependency
-- pruned since (or deleted by deleteSucceeded) comes back with a NULL task
-- and state. Owner's rights, fixed search_path and no PUBLIC, as for
-- get_job(): a worker or operator role needs no right on the tables.
CREATE OR REPLACE FUNCTION :SCHEMA.dependencies_of(job_id bigint)
RETURNS TABLE (id bigint, task text, state text, on_failure text, result jsonb, last_error text)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT e.depends_on, j.task, j.state, e.on_failure, j.result, j.last_error
    FROM :SCHEMA.job_dependencies e LEFT JOIN :SCHEMA.jobs j ON j.id = e.depends_on
   WHERE e.job_id = dependencies_of.job_id
   ORDER BY e.depends_on
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.dependencies_of(bigint) FROM PUBLIC;
