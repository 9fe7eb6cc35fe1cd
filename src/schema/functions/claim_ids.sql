-- Claims notified ids, as claim_next() claims pulled ones. Unlike the pull it
-- waits for a row lock instead of skipping the row: the other holders are
-- single short statements (another supervisor claiming the same id, which
-- then finds it taken; a waitForJob() mark), and a skipped id would only come
-- back with the next sweep. lock_timeout bounds the wait should a user's
-- transaction hold a row.
-- Dropped first: CREATE OR REPLACE cannot change the columns a function
-- returns (0014 added scheduled_for, 0020 max_attempts_given), and nothing in the schema depends on it.
DROP FUNCTION IF EXISTS :SCHEMA.claim_ids(bigint[], text[], text[], text, integer, integer);
CREATE FUNCTION :SCHEMA.claim_ids(ids bigint[], task_names text[], queue_names text[], owner text, thread integer, lease_ms integer)
RETURNS TABLE (id bigint, task text, queue text, payload jsonb, attempts integer, max_attempts integer, max_attempts_given boolean,
               timeout_ms integer, claim_token bigint, cancel_requested boolean, scheduled_for timestamptz)
LANGUAGE plpgsql
SET lock_timeout = '500ms'
AS $fn$
BEGIN
  RETURN QUERY
  UPDATE :SCHEMA.jobs j
     SET state = 'running', attempts = j.attempts + 1, locked_by = owner, locked_thread = thread,
         claim_token = (SELECT nextval(':SCHEMA.claim_tokens')), lease_until = now() + lease_ms * interval '1 millisecond',
         started_at = now(), finished_at = NULL
   WHERE j.id = ANY(ARRAY(SELECT x.id FROM :SCHEMA.jobs x
     WHERE x.id = ANY(ids) AND x.state = 'pending' AND x.run_at <= now()
       AND x.task = ANY(task_names) AND (queue_names IS NULL OR x.queue = ANY(queue_names))
     ORDER BY x.id
     FOR UPDATE))
  RETURNING j.id, j.task, j.queue, j.payload, j.attempts, j.max_attempts, j.max_attempts_given, j.timeout_ms, j.claim_token,
            j.cancel_requested_at IS NOT NULL, j.scheduled_for;
END
$fn$;
