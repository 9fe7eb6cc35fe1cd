-- grapevine reschedule: pending jobs among `job_ids` due at `due_at` instead;
-- the ids changed. Made due now, they are announced to supervisors; due
-- later, supervisors get the time as a hint, like every other write. Pending
-- jobs only. A function for the same reason as retry_jobs(), with the same rights.
CREATE OR REPLACE FUNCTION :SCHEMA.reschedule_jobs(job_ids bigint[], due_at timestamptz) RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  changed bigint[];
  channel text := (parse_ident(':SCHEMA'))[1] || '_jobs';
BEGIN
  WITH done AS (
    UPDATE :SCHEMA.jobs j SET run_at = due_at
     WHERE j.id = ANY(job_ids) AND j.state = 'pending'
    RETURNING j.id)
  SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO changed FROM done;
  IF due_at <= now() THEN
    PERFORM :SCHEMA.notify_ids(channel, changed);
  ELSIF cardinality(changed) > 0 THEN
    PERFORM :SCHEMA.notify(channel, 'at:' || floor(extract(epoch FROM due_at) * 1000)::bigint);
  END IF;
  RETURN changed;
END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.reschedule_jobs(bigint[], timestamptz) FROM PUBLIC;
