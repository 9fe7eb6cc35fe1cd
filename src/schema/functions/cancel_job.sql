-- Cancels a pending or waiting job on the spot (its dependents follow their
-- policy: the jobs_finished trigger); a running one is flagged, and the caller
-- tells its owner (locked_by) over the control channel. Returns the state the
-- job was found in (NULL: no such job, or already finished). A function, so
-- that an operator (grapevine grant --as operator) can cancel without any
-- right to change jobs otherwise; owner's rights, fixed search_path and no
-- PUBLIC, as for add_job().
CREATE OR REPLACE FUNCTION :SCHEMA.cancel_job(job_id bigint) RETURNS TABLE (state text, locked_by text)
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  was text;
  owner text;
  waited boolean;
BEGIN
  UPDATE :SCHEMA.jobs j
     SET cancel_requested_at = coalesce(j.cancel_requested_at, now()),
         state = CASE WHEN j.state IN ('pending', 'waiting') THEN 'cancelled' ELSE j.state END,
         finished_at = CASE WHEN j.state IN ('pending', 'waiting') THEN now() ELSE j.finished_at END
   WHERE j.id = job_id AND j.state IN ('pending', 'running', 'waiting')
  RETURNING j.state, j.locked_by, j.watched INTO was, owner, waited;
  IF waited AND was = 'cancelled' THEN
    PERFORM :SCHEMA.notify_ids((parse_ident(':SCHEMA'))[1] || '_done', ARRAY[job_id]);
  END IF;
  RETURN QUERY SELECT was, owner;
END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.cancel_job(bigint) FROM PUBLIC;
