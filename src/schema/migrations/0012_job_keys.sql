-- Job keys (docs/keys.md): a job enqueued with a key stands for every later
-- enqueue with the same key for as long as its mode holds the key.
--
-- key:       set while the job may hold its key. A job stops holding when its
--            mode's hold ends (it starts running, it finishes, its window
--            passes), and the next enqueue with the key then clears the column
--            before it adds its own job, so the index below only ever holds
--            one row per key.
-- key_mode:  how long the key holds and what a conflicting enqueue does:
--            replace, preserve_run_at, dedupe, dedupe_running or throttle.
-- key_until: throttle only: the end of the window opened by the first enqueue.
ALTER TABLE :SCHEMA.jobs
  ADD COLUMN key text CHECK (length(key) BETWEEN 1 AND 512),
  ADD COLUMN key_mode text CHECK (key_mode IN ('replace', 'preserve_run_at', 'dedupe', 'dedupe_running', 'throttle')),
  ADD COLUMN key_until timestamptz;

-- The arbiter of the enqueues' INSERT ... ON CONFLICT: concurrent enqueuers
-- with one key, in any process or transaction, meet here and not in a read.
-- Partial, so that a job without a key adds no index entry. It cannot also
-- name a state: a throttle's key holds after its job finished.
CREATE UNIQUE INDEX jobs_key_idx ON :SCHEMA.jobs (key) WHERE key IS NOT NULL;
