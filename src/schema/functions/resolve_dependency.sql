-- A dependency reached a terminal state: its dependents that still wait
-- count it, and each follows its policy (the on_failure of its row in
-- job_dependencies) when it did not succeed. Called by the jobs_finished
-- trigger in the transaction that records the outcome, and by
-- add_jobs_after() for a dependency already finished when its dependent is
-- enqueued. Dependents that fail in turn run the trigger for their own.
--
-- All of a dependency's dependents move in one statement, and are
-- announced as one notification: thousands wake at once. Each is locked in
-- id order before its count changes, so two dependencies finishing together
-- count one after the other, and the one that counts last makes it due.
CREATE OR REPLACE FUNCTION :SCHEMA.resolve_dependency(dependency bigint, outcome text) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
  schema_name text;
  due bigint[];
  ended bigint[];
  later timestamptz;
BEGIN
  WITH edges AS (
         UPDATE :SCHEMA.job_dependencies e SET resolved = outcome
          WHERE e.depends_on = dependency AND e.resolved IS NULL
         RETURNING e.job_id,
                   CASE WHEN outcome = 'succeeded' OR e.on_failure = 'ignore' THEN 'count' ELSE e.on_failure END AS how),
       locked AS (
         SELECT d.id, e.how FROM :SCHEMA.jobs d JOIN edges e ON e.job_id = d.id
          WHERE d.state = 'waiting'
          ORDER BY d.id
            FOR NO KEY UPDATE OF d),
       changed AS (
         UPDATE :SCHEMA.jobs d
            SET waiting_for = d.waiting_for - 1,
                state = CASE
                  WHEN l.how = 'fail' THEN CASE WHEN outcome = 'cancelled' THEN 'cancelled' ELSE 'failed' END
                  WHEN l.how = 'run' OR d.waiting_for = 1 THEN 'pending'
                  ELSE 'waiting' END,
                last_error = CASE WHEN l.how = 'fail'
                  THEN format('dependency %s %s', dependency, CASE WHEN outcome = 'cancelled' THEN 'was cancelled' ELSE 'failed' END)
                  ELSE d.last_error END,
                finished_at = CASE WHEN l.how = 'fail' THEN now() ELSE d.finished_at END
           FROM locked l
          WHERE d.id = l.id AND d.state = 'waiting'
         RETURNING d.id, d.state, d.run_at, d.watched)
  SELECT array_agg(c.id) FILTER (WHERE c.state = 'pending' AND c.run_at <= now()),
         array_agg(c.id) FILTER (WHERE c.watched AND c.state IN ('failed', 'cancelled')),
         min(c.run_at) FILTER (WHERE c.state = 'pending' AND c.run_at > now())
    INTO due, ended, later
    FROM changed c;

  -- Most calls (a fan-in counting one more child) wake nobody and call nothing more.
  IF due IS NULL AND ended IS NULL AND later IS NULL THEN
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

REVOKE ALL ON FUNCTION :SCHEMA.resolve_dependency(bigint, text) FROM PUBLIC;
