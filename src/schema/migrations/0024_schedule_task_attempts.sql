-- A schedule declared without maxAttempts stores NULL, so that its jobs are
-- enqueued as a job without maxAttempts is (max_attempts_given false) and take
-- their task's retry policy (docs/jobs.md#a-tasks-retry-policy), else 5.
-- Schedules stored before keep their number until declared again.
ALTER TABLE :SCHEMA.schedules ALTER COLUMN max_attempts DROP NOT NULL, ALTER COLUMN max_attempts DROP DEFAULT;
-- A tick's job now sets max_attempts_given too, so a worker role granted
-- before needs `grapevine grant` again (src/schema/roles.ts).
