-- waitForJob() marks the job as waited for, so that its end is announced on
-- <schema>_done; the mark and the outcome write lock the same row. A function
-- for the same reason as get_job(), and with the same rights.
CREATE OR REPLACE FUNCTION :SCHEMA.watch_job(job_id bigint) RETURNS void
LANGUAGE sql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
  UPDATE :SCHEMA.jobs SET watched = true WHERE id = job_id AND NOT watched AND state IN ('pending', 'running', 'waiting')
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.watch_job(bigint) FROM PUBLIC;
