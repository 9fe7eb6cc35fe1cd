-- False while a job's attempts may still come from its task's policy
-- (docs/jobs.md#a-tasks-retry-policy): it was enqueued without max_attempts.
-- Only the threads that load the task module know the policy, so the row
-- keeps the default (5, plus one for each run handed back without costing
-- an attempt) until its first failed run writes the task's number in, and
-- sets this. Jobs already queued keep theirs; adding it rewrites nothing.
ALTER TABLE :SCHEMA.jobs ADD COLUMN max_attempts_given boolean NOT NULL DEFAULT true;
