-- One job by id: getJob() and waitForJob(). A function, so that a role that
-- may only enqueue (no right on the jobs table) can follow a job it added.
-- Owner's rights, fixed search_path and no PUBLIC, as for add_job().
CREATE OR REPLACE FUNCTION :SCHEMA.get_job(job_id bigint) RETURNS SETOF :SCHEMA.jobs
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
  SELECT * FROM :SCHEMA.jobs WHERE id = job_id
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.get_job(bigint) FROM PUBLIC;
