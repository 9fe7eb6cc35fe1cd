-- The jobs that depend on a job, with their task and state, at most `max`
-- of them in id order (a fan-out may have thousands): `grapevine job ID`.
-- Owner's rights, fixed search_path and no PUBLIC, as for get_job().
CREATE OR REPLACE FUNCTION :SCHEMA.dependents_of(job_id bigint, max integer)
RETURNS TABLE (id bigint, task text, state text, on_failure text)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT e.job_id, j.task, j.state, e.on_failure
    FROM :SCHEMA.job_dependencies e LEFT JOIN :SCHEMA.jobs j ON j.id = e.job_id
   WHERE e.depends_on = dependents_of.job_id
   ORDER BY e.job_id
   LIMIT max
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.dependents_of(bigint, integer) FROM PUBLIC;
