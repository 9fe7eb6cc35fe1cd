import { quoteIdent } from '../channels.ts';

export const version = 5;
export const name = 'bounded_reads';

/**
 * Finding due jobs, and pruning finished ones, no longer read the jobs that
 * are not due yet.
 *
 * The pending index is ordered (priority DESC, run_at, id), so "due" is not a
 * range of it: it is one range per priority. The pull walked the index in
 * order and filtered on run_at, and with nothing due it read every future
 * job to find that out; the look for due work (the sweep every 2 s, the look
 * after a short pull, the idle check) was planned as a sequential scan. With
 * a million jobs scheduled for later, each of those cost 30-130 ms of the
 * database, on every supervisor, even with nothing to do.
 *
 * Both now visit the priorities that have pending jobs, highest first (one
 * index descent each), and read each priority's due range only. Past 16
 * priorities they fall back to one ordered walk over the rest, so a queue
 * that uses priority as a fine-grained number costs no more than before.
 * has_due() replaces the count_due statement, which every caller asked for
 * at most one row.
 *
 * prune_finished() is the prune of migration 0004 as a function, for one
 * setting: with no finished job old enough in a table of a million pending
 * ones, the planner costed the BRIN bitmap scan and a sequential scan alike
 * and took the scan, reading the whole table once a minute (185 ms).
 *
 * Sequential scans are off in all three: every statement here is meant to be an
 * index descent or a primary-key lookup, and the planner, knowing how many
 * ids the array of picked rows holds, otherwise updates a small table's
 * claim with a scan of all of it.
 */
export function sql(schema: string): string {
  const s = quoteIdent(schema);
  const filters = `x.task = ANY(task_names) AND (queue_names IS NULL OR x.queue = ANY(queue_names))`;
  return `
CREATE OR REPLACE FUNCTION ${s}.claim_next(n integer, task_names text[], queue_names text[], owner text, thread integer, lease_ms integer)
RETURNS TABLE (id bigint, task text, queue text, payload jsonb, attempts integer, max_attempts integer,
               timeout_ms integer, claim_token bigint, cancel_requested boolean)
LANGUAGE plpgsql
SET enable_bitmapscan = off SET enable_sort = off SET enable_seqscan = off
AS $fn$
DECLARE
  picked bigint[] := '{}';
  p integer;
  visited integer := 0;
BEGIN
  SELECT x.priority INTO p FROM ${s}.jobs x WHERE x.state = 'pending' ORDER BY x.priority DESC LIMIT 1;
  WHILE p IS NOT NULL AND cardinality(picked) < n LOOP
    IF visited = 16 THEN
      picked := picked || ARRAY(
        SELECT x.id FROM ${s}.jobs x
         WHERE x.state = 'pending' AND x.priority <= p AND x.run_at <= now() AND ${filters}
         ORDER BY x.priority DESC, x.run_at, x.id
         LIMIT n - cardinality(picked)
         FOR UPDATE SKIP LOCKED);
      EXIT;
    END IF;
    picked := picked || ARRAY(
      SELECT x.id FROM ${s}.jobs x
       WHERE x.state = 'pending' AND x.priority = p AND x.run_at <= now() AND ${filters}
       ORDER BY x.run_at, x.id
       LIMIT n - cardinality(picked)
       FOR UPDATE SKIP LOCKED);
    visited := visited + 1;
    SELECT x.priority INTO p FROM ${s}.jobs x WHERE x.state = 'pending' AND x.priority < p ORDER BY x.priority DESC LIMIT 1;
  END LOOP;
  RETURN QUERY
  UPDATE ${s}.jobs j
     SET state = 'running', attempts = j.attempts + 1, locked_by = owner, locked_thread = thread,
         claim_token = (SELECT nextval('${s}.claim_tokens')), lease_until = now() + lease_ms * interval '1 millisecond',
         started_at = now(), finished_at = NULL
   WHERE j.id = ANY(picked)
  RETURNING j.id, j.task, j.queue, j.payload, j.attempts, j.max_attempts, j.timeout_ms, j.claim_token,
            j.cancel_requested_at IS NOT NULL;
END
$fn$;

-- Rows other statements hold count as due here (no SKIP LOCKED): the caller
-- wants to know whether to pull again, not what it could take right now.
CREATE FUNCTION ${s}.has_due(task_names text[], queue_names text[]) RETURNS boolean
LANGUAGE plpgsql STABLE
SET enable_seqscan = off SET enable_bitmapscan = off
AS $fn$
DECLARE
  p integer;
  visited integer := 0;
BEGIN
  SELECT x.priority INTO p FROM ${s}.jobs x WHERE x.state = 'pending' ORDER BY x.priority DESC LIMIT 1;
  WHILE p IS NOT NULL LOOP
    IF visited = 16 THEN
      RETURN EXISTS (SELECT 1 FROM ${s}.jobs x WHERE x.state = 'pending' AND x.priority <= p AND x.run_at <= now() AND ${filters});
    END IF;
    IF EXISTS (SELECT 1 FROM ${s}.jobs x WHERE x.state = 'pending' AND x.priority = p AND x.run_at <= now() AND ${filters}) THEN
      RETURN true;
    END IF;
    visited := visited + 1;
    SELECT x.priority INTO p FROM ${s}.jobs x WHERE x.state = 'pending' AND x.priority < p ORDER BY x.priority DESC LIMIT 1;
  END LOOP;
  RETURN false;
END
$fn$;

CREATE FUNCTION ${s}.prune_finished(retention_ms bigint, batch integer) RETURNS bigint
LANGUAGE plpgsql
SET enable_seqscan = off
AS $fn$
DECLARE
  pruned bigint;
BEGIN
  DELETE FROM ${s}.jobs WHERE id IN (
    SELECT x.id FROM ${s}.jobs x
     WHERE x.finished_at < now() - retention_ms * interval '1 millisecond'
       AND x.state IN ('succeeded', 'failed', 'cancelled')
     LIMIT batch);
  GET DIAGNOSTICS pruned = ROW_COUNT;
  RETURN pruned;
END
$fn$;
`;
}
