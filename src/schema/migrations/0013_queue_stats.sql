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
