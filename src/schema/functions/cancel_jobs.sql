-- grapevine cancel for many jobs: cancel_job() for each of `job_ids`, and
-- the owners told here. Pending and waiting jobs are cancelled on the spot (their
-- watchers told on the done channel); running ones are flagged and their
-- owners told over the control channel, and each owner's fenced outcome
-- write records the cancellation (its heartbeat also reads the flag, should
-- the notification be lost). Finished jobs are left alone. Same rights as
-- cancel_job().
CREATE OR REPLACE FUNCTION :SCHEMA.cancel_jobs(job_ids bigint[]) RETURNS TABLE (cancelled bigint[], cancelling bigint[])
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  watched bigint[];
  told text[];
  prefix text := (parse_ident(':SCHEMA'))[1];
BEGIN
  WITH done AS (
    UPDATE :SCHEMA.jobs j
       SET cancel_requested_at = coalesce(j.cancel_requested_at, now()),
           state = CASE WHEN j.state IN ('pending', 'waiting') THEN 'cancelled' ELSE j.state END,
           finished_at = CASE WHEN j.state IN ('pending', 'waiting') THEN now() ELSE j.finished_at END
     WHERE j.id = ANY(job_ids) AND j.state IN ('pending', 'running', 'waiting')
    RETURNING j.id, j.state, j.locked_by, j.watched)
  SELECT coalesce(array_agg(d.id ORDER BY d.id) FILTER (WHERE d.state = 'cancelled'), '{}'),
         coalesce(array_agg(d.id ORDER BY d.id) FILTER (WHERE d.state = 'running'), '{}'),
         coalesce(array_agg(d.id) FILTER (WHERE d.watched AND d.state = 'cancelled'), '{}'),
         coalesce(array_agg(json_build_object('type', 'cancel', 'job', d.id::text, 'to', d.locked_by)::text)
                    FILTER (WHERE d.state = 'running' AND d.locked_by IS NOT NULL), '{}')
    INTO cancelled, cancelling, watched, told
    FROM done d;
  PERFORM :SCHEMA.notify_ids(prefix || '_done', watched);
  PERFORM :SCHEMA.notify(prefix || '_control', message) FROM unnest(told) AS message;
  RETURN NEXT;
END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.cancel_jobs(bigint[]) FROM PUBLIC;
