-- Whether the job was enqueued with its own max_attempts. A job that was not
-- takes the one its task module exports (docs/jobs.md#retries), which only
-- the threads that load the module know: the row keeps the default (5) for
-- the paths that run without it, and the thread's first failure writes the
-- task's number in. Jobs already queued were given theirs; adding it
-- rewrites nothing.
ALTER TABLE :SCHEMA.jobs ADD COLUMN max_attempts_given boolean NOT NULL DEFAULT true;
