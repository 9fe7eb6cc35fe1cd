-- Wakes a finished job's dependents in the transaction that records its
-- outcome, whichever path records it (an outcome write, a release, the
-- reaper, a cancel, an operator's UPDATE). A row trigger whose condition
-- PostgreSQL checks before calling anything: a job nobody depends on
-- (has_dependents false) costs its outcome write no call. Dependents that
-- fail in turn are resolved by resolve_dependencies() itself.
--
-- Race-free with an enqueue adding a dependent of this job: the enqueue
-- locks this row before reading its state (add_jobs_after()), so either it
-- commits first and this function, whose statements each take a fresh
-- snapshot, sees its job_dependencies rows, or it waits for this
-- transaction and reads the finished state. Outcome writes run at READ
-- COMMITTED, as every grapevine statement does.
CREATE OR REPLACE FUNCTION :SCHEMA.jobs_finished() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
  -- The outcome writes resolve their batch themselves before this runs
  -- (complete and fail in src/sql/jobs.ts); one index probe says so.
  IF EXISTS (SELECT 1 FROM :SCHEMA.job_dependencies e WHERE e.depends_on = NEW.id AND e.resolved IS NULL) THEN
    PERFORM :SCHEMA.resolve_dependencies(ARRAY[NEW.id], ARRAY[NEW.state]);
  END IF;
  RETURN NULL;
END
$fn$;

CREATE OR REPLACE TRIGGER jobs_finished AFTER UPDATE OF state ON :SCHEMA.jobs
  FOR EACH ROW
  WHEN (NEW.has_dependents AND NEW.state IN ('succeeded', 'failed', 'cancelled')
        AND OLD.state NOT IN ('succeeded', 'failed', 'cancelled'))
  EXECUTE FUNCTION :SCHEMA.jobs_finished();
