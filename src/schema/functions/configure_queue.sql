-- Changes a queue's settings (grapevine queue set/pause/resume, and
-- createQueues() in src/queues.ts): each field present in `patch` is set, a
-- JSON null clearing it (concurrency, group_concurrency, rate_limit and
-- rate_interval_ms, group_rate_limit and group_rate_interval_ms, paused).
-- Returns the queue's row as it now is.
--
-- The exclusive advisory lock waits for every claim in flight (they hold it
-- shared), so that the running jobs of a queue that starts being limited
-- here, claimed by the unlimited path, are all marked `limited` and counted
-- by the claims after it. A change announces 'at:' now: a limit lifted or
-- raised, or a resume, frees slots that nobody would otherwise claim.
-- Owner's rights, so that an operator changes settings without a right on jobs.
CREATE OR REPLACE FUNCTION :SCHEMA.configure_queue(q text, patch jsonb) RETURNS SETOF :SCHEMA.queues
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  result :SCHEMA.queues;
BEGIN
  PERFORM pg_advisory_xact_lock(1735549298, hashtext(':SCHEMA'));
  INSERT INTO :SCHEMA.queues AS x (queue) VALUES (q) ON CONFLICT ON CONSTRAINT queues_pkey DO NOTHING;
  UPDATE :SCHEMA.queues x SET
      concurrency = CASE WHEN patch ? 'concurrency' THEN (patch->>'concurrency')::integer ELSE x.concurrency END,
      group_concurrency = CASE WHEN patch ? 'group_concurrency' THEN (patch->>'group_concurrency')::integer ELSE x.group_concurrency END,
      rate_limit = CASE WHEN patch ? 'rate_limit' THEN (patch->>'rate_limit')::integer ELSE x.rate_limit END,
      rate_interval_ms = CASE WHEN patch ? 'rate_interval_ms' THEN (patch->>'rate_interval_ms')::integer ELSE x.rate_interval_ms END,
      group_rate_limit = CASE WHEN patch ? 'group_rate_limit' THEN (patch->>'group_rate_limit')::integer ELSE x.group_rate_limit END,
      group_rate_interval_ms = CASE WHEN patch ? 'group_rate_interval_ms' THEN (patch->>'group_rate_interval_ms')::integer
                                    ELSE x.group_rate_interval_ms END,
      paused = CASE WHEN patch ? 'paused' THEN coalesce((patch->>'paused')::boolean, false) ELSE x.paused END,
      wake_at = NULL,
      updated_at = now()
   WHERE x.queue = q
  RETURNING x.* INTO result;
  UPDATE :SCHEMA.jobs j SET limited = true WHERE j.state = 'running' AND j.queue = q AND NOT j.limited;
  PERFORM :SCHEMA.notify(ns.nspname || '_jobs', 'at:' || floor(extract(epoch FROM now()) * 1000)::bigint)
     FROM pg_class c JOIN pg_namespace ns ON ns.oid = c.relnamespace WHERE c.oid = ':SCHEMA.jobs'::regclass;
  RETURN NEXT result;
END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.configure_queue(text, jsonb) FROM PUBLIC;
