-- Dependencies reached a terminal state (`outcomes`, in the order of
-- `dependencies`): their dependents that still wait count them, and each
-- follows its policy (the on_failure of its row in job_dependencies) for
-- one that did not succeed, in the transaction that records the outcome.
-- Called by the outcome writes (complete, fail in src/sql/jobs.ts) for
-- their batch, by the jobs_finished trigger for every other path, and by
-- add_jobs_after() for dependencies already finished when their dependent
-- is enqueued. Owner's rights: a worker role runs the outcome writes and has
-- no right on job_dependencies; `grapevine grant --as worker` gives it this
-- function, which does no more than the UPDATEs a worker may run anyway.
--
-- All the dependents move in one statement per round, and the woken are
-- announced together at the end: thousands wake at once. Each is locked in
-- id order before its count changes, so two dependencies finishing together
-- count one after the other, and the one that counts last makes it due.
-- Dependents that fail in turn are resolved here, round after round, not by
-- the trigger (their update clears has_dependents, which the trigger's
-- condition reads): a failure running down a long chain nests no calls.
CREATE OR REPLACE FUNCTION :SCHEMA.resolve_dependencies(dependencies bigint[], outcomes text[]) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  schema_name text;
  due bigint[] := '{}';
  ended bigint[] := '{}';
  later timestamptz;
  round_due bigint[];
  round_ended bigint[];
  round_later timestamptz;
BEGIN
  WHILE cardinality(dependencies) > 0 LOOP
    WITH edges AS (
           -- = ANY as well as the join, so that the index on depends_on is used however many rows the planner guesses.
           UPDATE :SCHEMA.job_dependencies e SET resolved = f.outcome
             FROM unnest(dependencies, outcomes) AS f(id, outcome)
            WHERE e.depends_on = ANY(dependencies) AND e.depends_on = f.id AND e.resolved IS NULL
           RETURNING e.job_id, e.depends_on, f.outcome,
                     CASE WHEN f.outcome = 'succeeded' OR e.on_failure = 'ignore' THEN 'count' ELSE e.on_failure END AS how),
         per AS (
           -- Per dependent: how many dependencies count now, and the first (lowest id) that fails it.
           SELECT e.job_id, count(*)::integer AS n, bool_or(e.how = 'run') AS run,
                  (array_agg(e.depends_on ORDER BY e.depends_on) FILTER (WHERE e.how = 'fail'))[1] AS failed_by,
                  (array_agg(e.outcome ORDER BY e.depends_on) FILTER (WHERE e.how = 'fail'))[1] AS failed_as
             FROM edges e
            GROUP BY e.job_id),
         locked AS (
           SELECT d.id, d.has_dependents, p.n, p.run, p.failed_by, p.failed_as
             FROM :SCHEMA.jobs d JOIN per p ON p.job_id = d.id
            WHERE d.state = 'waiting'
            ORDER BY d.id
              FOR NO KEY UPDATE OF d),
         changed AS (
           UPDATE :SCHEMA.jobs d
              SET waiting_for = d.waiting_for - l.n,
                  state = CASE
                    WHEN l.failed_by IS NOT NULL THEN CASE WHEN l.failed_as = 'cancelled' THEN 'cancelled' ELSE 'failed' END
                    WHEN l.run OR d.waiting_for = l.n THEN 'pending'
                    ELSE 'waiting' END,
                  last_error = CASE WHEN l.failed_by IS NOT NULL
                    THEN format('dependency %s %s', l.failed_by, CASE WHEN l.failed_as = 'cancelled' THEN 'was cancelled' ELSE 'failed' END)
                    ELSE d.last_error END,
                  finished_at = CASE WHEN l.failed_by IS NOT NULL THEN now() ELSE d.finished_at END,
                  has_dependents = d.has_dependents AND l.failed_by IS NULL
             FROM locked l
            WHERE d.id = l.id AND d.state = 'waiting'
           RETURNING d.id, d.state, d.run_at, d.watched, l.has_dependents AS had_dependents)
    SELECT array_agg(c.id) FILTER (WHERE c.state = 'pending' AND c.run_at <= now()),
           array_agg(c.id) FILTER (WHERE c.watched AND c.state IN ('failed', 'cancelled')),
           min(c.run_at) FILTER (WHERE c.state = 'pending' AND c.run_at > now()),
           coalesce(array_agg(c.id) FILTER (WHERE c.had_dependents AND c.state IN ('failed', 'cancelled')), '{}'),
           coalesce(array_agg(c.state) FILTER (WHERE c.had_dependents AND c.state IN ('failed', 'cancelled')), '{}')
      INTO round_due, round_ended, round_later, dependencies, outcomes
      FROM changed c;
    due := due || coalesce(round_due, '{}');
    ended := ended || coalesce(round_ended, '{}');
    later := least(later, round_later);
  END LOOP;

  -- Most calls (a fan-in counting one more child) wake nobody and call nothing more.
  IF cardinality(due) = 0 AND cardinality(ended) = 0 AND later IS NULL THEN
    RETURN;
  END IF;
  schema_name := (parse_ident(':SCHEMA'))[1];
  PERFORM :SCHEMA.notify_ids(schema_name || '_jobs', due);
  PERFORM :SCHEMA.notify_ids(schema_name || '_done', ended);
  IF later IS NOT NULL THEN
    PERFORM :SCHEMA.notify(schema_name || '_jobs', 'at:' || floor(extract(epoch FROM later) * 1000)::bigint);
  END IF;
END
$fn$;

REVOKE ALL ON FUNCTION :SCHEMA.resolve_dependencies(bigint[], text[]) FROM PUBLIC;
