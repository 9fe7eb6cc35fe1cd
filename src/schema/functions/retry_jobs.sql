-- grapevine retry: failed and cancelled jobs among `job_ids` back to pending,
-- due now, with their attempts allowance again (retry_allowance, migration
-- 0013: `attempts` only grows, so max_attempts becomes attempts plus the
-- allowance); the ids retried, each announced to supervisors. Finished jobs
-- only: a running job belongs to its claim, and its fenced outcome write must
-- find it as it left it. A function, so that an operator (grapevine grant
-- --as operator) can retry without any right to change jobs otherwise;
-- owner's rights, fixed search_path and no PUBLIC, as for cancel_job().
CREATE OR REPLACE FUNCTION :SCHEMA.retry_jobs(job_ids bigint[]) RETURNS bigint[]
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  retried bigint[];
BEGIN
  WITH done AS (
    UPDATE :SCHEMA.jobs j
       SET state = 'pending', run_at = now(),
           retry_allowance = coalesce(j.retry_allowance, j.max_attempts),
           max_attempts = j.attempts + coalesce(j.retry_allowance, j.max_attempts),
           finished_at = NULL, cancel_requested_at = NULL, claim_token = NULL, lease_until = NULL,
           locked_by = NULL, locked_thread = NULL, result = NULL
     WHERE j.id = ANY(job_ids) AND j.state IN ('failed', 'cancelled')
    RETURNING j.id)
  SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO retried FROM done;
  PERFORM :SCHEMA.notify_ids((parse_ident(':SCHEMA'))[1] || '_jobs', retried);
  RETURN retried;
END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.retry_jobs(bigint[]) FROM PUBLIC;
