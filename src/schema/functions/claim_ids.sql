-- Claims notified ids, as claim_next() claims pulled ones. Unlike the pull it
-- waits for a row lock instead of skipping the row: the other holders are
-- single short statements (another supervisor claiming the same id, which
-- then finds it taken; a waitForJob() mark), and a skipped id would only come
-- back with the next sweep. lock_timeout bounds the wait should a user's
-- transaction hold a row.
--
-- Ids of a queue with limits or paused (held_queues()) are not claimed as
-- named: they stand for as many jobs of their queue, which claim_limited()
-- picks in its order under the queue's limits (a serial group's next job is
-- its oldest, not the one just announced).
-- Sequential and bitmap scans are off, as in claim_next(): on a small table
-- the planner updated the notified row by reading every row of the table,
-- which one claim per job (the latency workload) paid each time.
-- Dropped first: CREATE OR REPLACE cannot change the columns a function
-- returns (0014 added scheduled_for, 0020 max_attempts_given), and nothing in the schema depends on it.
DROP FUNCTION IF EXISTS :SCHEMA.claim_ids(bigint[], text[], text[], text, integer, integer);
CREATE FUNCTION :SCHEMA.claim_ids(ids bigint[], task_names text[], queue_names text[], owner text, thread integer, lease_ms integer)
RETURNS TABLE (id bigint, task text, queue text, payload jsonb, attempts integer, max_attempts integer, max_attempts_given boolean,
               timeout_ms integer, claim_token bigint, cancel_requested boolean, scheduled_for timestamptz)
LANGUAGE plpgsql
SET lock_timeout = '500ms' SET enable_seqscan = off SET enable_bitmapscan = off SET jit = off
AS $fn$
DECLARE
  held text[];
  hq text;
  wanted integer;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(1735549298, hashtext(':SCHEMA'));
  held := :SCHEMA.held_queues();
  IF held IS NOT NULL THEN
    FOR hq, wanted IN
      SELECT x.queue, count(*) FROM :SCHEMA.jobs x
       WHERE x.id = ANY(ids) AND x.state = 'pending' AND x.queue = ANY(held)
         AND (queue_names IS NULL OR x.queue = ANY(queue_names))
       GROUP BY x.queue ORDER BY x.queue
    LOOP
      RETURN QUERY SELECT * FROM :SCHEMA.claim_limited(hq, wanted, task_names, owner, thread, lease_ms);
    END LOOP;
  END IF;
  RETURN QUERY
  UPDATE :SCHEMA.jobs j
     SET state = 'running', attempts = j.attempts + 1, locked_by = owner, locked_thread = thread,
         claim_token = (SELECT nextval(':SCHEMA.claim_tokens')), lease_until = now() + lease_ms * interval '1 millisecond',
         started_at = now(), finished_at = NULL
   WHERE j.id = ANY(ARRAY(SELECT x.id FROM :SCHEMA.jobs x
     WHERE x.id = ANY(ids) AND x.state = 'pending' AND x.run_at <= now()
       AND x.task = ANY(task_names) AND (queue_names IS NULL OR x.queue = ANY(queue_names))
       AND (held IS NULL OR x.queue <> ALL(held))
     ORDER BY x.id
     FOR UPDATE))
  RETURNING j.id, j.task, j.queue, j.payload, j.attempts, j.max_attempts, j.max_attempts_given, j.timeout_ms, j.claim_token,
            j.cancel_requested_at IS NOT NULL, j.scheduled_for;
END
$fn$;
