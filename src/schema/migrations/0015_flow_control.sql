-- Flow control (docs/limits.md): groups, queue limits and pauses shared by
-- every supervisor.
--
-- group_key: the job's group ("group" in the client; GROUP is an SQL keyword).
--            A queue's group_concurrency bounds how many jobs of one group run.
-- limited:   set by the claim of a queue with limits (claim_limited()): only
--            such running jobs are counted, so that an unlimited queue's claims
--            and outcome writes touch no index of this migration.
ALTER TABLE :SCHEMA.jobs
  ADD COLUMN group_key text CHECK (length(group_key) BETWEEN 1 AND 128),
  ADD COLUMN limited boolean NOT NULL DEFAULT false;

-- One row per queue that has a setting; a queue without a row has no limit.
-- The claim of a limited queue locks its row: claims of one limited queue
-- take turns across the fleet, which is what makes its limits exact.
CREATE TABLE :SCHEMA.queues (
  queue              text PRIMARY KEY CHECK (length(queue) BETWEEN 1 AND 128),
  -- Jobs of the queue running at once, across every supervisor.
  concurrency        integer CHECK (concurrency >= 1),
  -- Jobs of one group running at once (1: the group runs serially, in order).
  group_concurrency  integer CHECK (group_concurrency >= 1),
  -- At most rate_limit starts in any rate_interval_ms: of the queue, and of each group.
  rate_limit         integer CHECK (rate_limit >= 1),
  rate_interval_ms   integer CHECK (rate_interval_ms >= 1),
  group_rate_limit   integer CHECK (group_rate_limit >= 1),
  group_rate_interval_ms integer CHECK (group_rate_interval_ms >= 1),
  -- No claims in the queue anywhere while true (grapevine queue pause).
  paused             boolean NOT NULL DEFAULT false,
  -- The queue's starts within its last rate interval, oldest first, and the
  -- window's opening last announced (so that each is announced once).
  starts             timestamptz[] NOT NULL DEFAULT '{}',
  wake_at            timestamptz,
  updated_at         timestamptz NOT NULL DEFAULT now(),
  CHECK ((rate_limit IS NULL) = (rate_interval_ms IS NULL)),
  CHECK ((group_rate_limit IS NULL) = (group_rate_interval_ms IS NULL))
);

-- A group's starts within its last rate interval (only for queues with a
-- group rate). Written under the queue's row lock; rows whose starts are all
-- older than the interval are deleted by the next claim of the queue.
CREATE TABLE :SCHEMA.group_starts (
  queue     text NOT NULL REFERENCES :SCHEMA.queues ON DELETE CASCADE,
  group_key text NOT NULL,
  starts    timestamptz[] NOT NULL,
  last_at   timestamptz NOT NULL,
  PRIMARY KEY (queue, group_key)
);

-- The running jobs a limited claim counts, per queue and per group.
CREATE INDEX jobs_limited_running_idx ON :SCHEMA.jobs (queue, group_key) WHERE state = 'running' AND limited;
-- A limited queue's due jobs, group by group in claim order: the heads of its
-- groups are one descent each, and its jobs without a group (NULL, last) one range.
CREATE INDEX jobs_queue_pending_idx ON :SCHEMA.jobs (queue, group_key, priority DESC, run_at, id) WHERE state = 'pending';
