-- The pull: claims up to n due jobs, marking them running for one owner with
-- one fresh claim token for the whole claim (outcomes are fenced on id and
-- token) and a lease, and returns what the thread needs to run them.
--
-- It visits the priorities that have pending jobs, highest first (one index
-- descent each), and reads each priority's due range only, so jobs scheduled
-- for later are never read: the pending index is ordered (priority DESC,
-- run_at, id), so "due" is one range per priority, not one range of it. Past
-- 16 priorities it falls back to one ordered walk over the rest.
--
-- The picked ids go into an array first, so the update is a primary-key
-- lookup per row: joining them back let the planner hash-join against a scan
-- of the whole table. Bitmap scans, sorts and sequential scans are off:
-- right after a bulk insert the statistics say "few pending rows" and the
-- planner would read every pending row per claim, or update a small table's
-- claim with a scan of all of it. PL/pgSQL, not SQL: before PostgreSQL 18 a SQL
-- function with SET options is planned again on every call, while PL/pgSQL
-- keeps its plans for the session. Columns are qualified throughout, because
-- the output columns are variables inside the function.
-- Queues with limits or paused (held_queues()) are claimed first, each by
-- claim_limited(); the walk below leaves them out. The shared advisory lock
-- lets configure_queue() wait for the claims in flight before it counts the
-- running jobs of a queue it starts limiting. JIT is off: a scan these
-- settings disable is costed far above jit_above_cost, and a small table
-- read that way (the queues table) would be compiled on every call.
-- Dropped first: CREATE OR REPLACE cannot change the columns a function
-- returns (0014 added scheduled_for, 0020 max_attempts_given), and nothing in the schema depends on it.
DROP FUNCTION IF EXISTS :SCHEMA.claim_next(integer, text[], text[], text, integer, integer);
CREATE FUNCTION :SCHEMA.claim_next(n integer, task_names text[], queue_names text[], owner text, thread integer, lease_ms integer)
RETURNS TABLE (id bigint, task text, queue text, payload jsonb, attempts integer, max_attempts integer, max_attempts_given boolean,
               timeout_ms integer, claim_token bigint, cancel_requested boolean, scheduled_for timestamptz)
LANGUAGE plpgsql
SET enable_bitmapscan = off SET enable_sort = off SET enable_seqscan = off SET jit = off
AS $fn$
DECLARE
  picked bigint[] := '{}';
  p integer;
  visited integer := 0;
  held text[];
  hq text;
  got integer;
  claimed integer := 0;
BEGIN
  PERFORM pg_advisory_xact_lock_shared(1735549298, hashtext(':SCHEMA'));
  held := :SCHEMA.held_queues();
  IF held IS NOT NULL THEN
    FOREACH hq IN ARRAY held LOOP
      EXIT WHEN claimed >= n;
      CONTINUE WHEN queue_names IS NOT NULL AND NOT hq = ANY(queue_names);
      -- A held queue with nothing pending has nothing to claim: its row lock,
      -- which every claim of the fleet would take in turn, is not worth taking.
      CONTINUE WHEN NOT EXISTS (SELECT 1 FROM :SCHEMA.jobs x WHERE x.state = 'pending' AND x.queue = hq);
      RETURN QUERY SELECT * FROM :SCHEMA.claim_limited(hq, n - claimed, task_names, owner, thread, lease_ms);
      GET DIAGNOSTICS got = ROW_COUNT;
      claimed := claimed + got;
    END LOOP;
    n := n - claimed;
    -- The walk below would read every pending row of the held queues to find
    -- none of theirs: when only held queues have pending jobs, it is skipped.
    IF NOT EXISTS (SELECT 1 FROM :SCHEMA.pending_queues() pq WHERE pq <> ALL(held)) THEN
      n := 0;
    END IF;
  END IF;
  SELECT x.priority INTO p FROM :SCHEMA.jobs x WHERE x.state = 'pending' ORDER BY x.priority DESC LIMIT 1;
  WHILE p IS NOT NULL AND cardinality(picked) < n LOOP
    IF visited = 16 THEN
      picked := picked || ARRAY(
        SELECT x.id FROM :SCHEMA.jobs x
         WHERE x.state = 'pending' AND x.priority <= p AND x.run_at <= now() AND x.task = ANY(task_names) AND (queue_names IS NULL OR x.queue = ANY(queue_names)) AND (held IS NULL OR x.queue <> ALL(held))
         ORDER BY x.priority DESC, x.run_at, x.id
         LIMIT n - cardinality(picked)
         FOR UPDATE SKIP LOCKED);
      EXIT;
    END IF;
    picked := picked || ARRAY(
      SELECT x.id FROM :SCHEMA.jobs x
       WHERE x.state = 'pending' AND x.priority = p AND x.run_at <= now() AND x.task = ANY(task_names) AND (queue_names IS NULL OR x.queue = ANY(queue_names)) AND (held IS NULL OR x.queue <> ALL(held))
       ORDER BY x.run_at, x.id
       LIMIT n - cardinality(picked)
       FOR UPDATE SKIP LOCKED);
    visited := visited + 1;
    SELECT x.priority INTO p FROM :SCHEMA.jobs x WHERE x.state = 'pending' AND x.priority < p ORDER BY x.priority DESC LIMIT 1;
  END LOOP;
  RETURN QUERY
  UPDATE :SCHEMA.jobs j
     SET state = 'running', attempts = j.attempts + 1, locked_by = owner, locked_thread = thread,
         claim_token = (SELECT nextval(':SCHEMA.claim_tokens')), lease_until = now() + lease_ms * interval '1 millisecond',
         started_at = now(), finished_at = NULL
   WHERE j.id = ANY(picked)
  RETURNING j.id, j.task, j.queue, j.payload, j.attempts, j.max_attempts, j.max_attempts_given, j.timeout_ms, j.claim_token,
            j.cancel_requested_at IS NOT NULL, j.scheduled_for;
END
$fn$;
