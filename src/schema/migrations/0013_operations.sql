-- The queues' depth as the elected leader last measured it, once per metrics
-- interval (the 'stats' chore), so that every supervisor's /metrics serves
-- the same numbers without each of them counting the jobs table at every
-- scrape. Only supervisors started with a metrics port run the chore.
CREATE TABLE :SCHEMA.queue_stats (
  queue         text PRIMARY KEY,
  -- Pending jobs due now, and pending jobs due later.
  due           integer NOT NULL,
  scheduled     integer NOT NULL,
  running       integer NOT NULL,
  oldest_due_at timestamptz,
  measured_at   timestamptz NOT NULL
);

ALTER TABLE :SCHEMA.maintenance DROP CONSTRAINT maintenance_chore_check;
ALTER TABLE :SCHEMA.maintenance ADD CONSTRAINT maintenance_chore_check CHECK (chore IN ('reap', 'prune', 'stats'));
INSERT INTO :SCHEMA.maintenance (chore) VALUES ('stats');

-- The attempts an operator's retry grants (grapevine retry): the job's
-- max_attempts when it was first retried. `attempts` only ever grows, so a
-- retry raises max_attempts to attempts + this, and a job retried again gets
-- the same allowance again rather than one that grows with each retry. NULL
-- until the first retry; adding it rewrites nothing.
ALTER TABLE :SCHEMA.jobs ADD COLUMN retry_allowance integer CHECK (retry_allowance >= 1);
