-- Job dependencies (docs/workflows.md). A job enqueued with dependencies
-- waits in the state 'waiting', which no claim reads, until the last of
-- them succeeds; the row trigger of functions/jobs_finished.sql moves it on
-- in the transaction that records that outcome, and notifies it.
--
-- waiting_for:     while waiting, how many of its dependencies have not
--                  finished yet. Counted at enqueue under each dependency's
--                  row lock and decremented under the dependent's, so that a
--                  dependency finishing while its dependent is inserted is
--                  counted exactly once. NULL for a job without dependencies.
-- has_dependents:  some job depends on this one: its end runs the trigger.
--                  Set under the same row lock as the count; false for every
--                  other job, whose outcome then costs nothing more.
ALTER TABLE :SCHEMA.jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE :SCHEMA.jobs ADD CONSTRAINT jobs_state_check
  CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'waiting'));
ALTER TABLE :SCHEMA.jobs
  ADD COLUMN waiting_for integer CHECK (waiting_for >= 0),
  ADD COLUMN has_dependents boolean NOT NULL DEFAULT false;

-- One row per (dependent, dependency). No foreign keys: a key on jobs would
-- add a trigger call to every job's delete. Pruning deletes a pruned
-- dependent's rows (functions/prune_finished.sql); a pruned dependency
-- leaves rows that read as a job no longer there.
--
-- on_failure: what the dependent does when this dependency fails for good
--             or is cancelled: 'fail' (it fails, or is cancelled with a
--             cancelled dependency), 'run' (it becomes due at once), or
--             'ignore' (the dependency counts as done).
-- resolved:   the dependency's state when it finished; NULL before. A
--             dependency retried by an operator and finishing again is
--             not counted twice.
CREATE TABLE :SCHEMA.job_dependencies (
  job_id     bigint NOT NULL,
  depends_on bigint NOT NULL,
  on_failure text NOT NULL DEFAULT 'fail' CHECK (on_failure IN ('fail', 'run', 'ignore')),
  resolved   text CHECK (resolved IN ('succeeded', 'failed', 'cancelled')),
  PRIMARY KEY (job_id, depends_on)
);
-- The trigger finds a finished job's dependents here.
CREATE INDEX job_dependencies_depends_on_idx ON :SCHEMA.job_dependencies (depends_on);
